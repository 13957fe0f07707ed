"""The fingerprint cache: a second run hashes nothing; a changed file is hashed again."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ctcurate.leakage import hashcache
from ctcurate.leakage.hashcache import HashCache, hash_files

from leakage_helpers import real_image


@pytest.fixture()
def files(tmp_path, real_data) -> list[Path]:
    out = []
    for k, rel in enumerate(["CT_NonCOVID/1330.png", "CT_NonCOVID/25.png", "CT_COVID/kjr-21-e24-p5-29.png"]):
        p = tmp_path / f"img{k}.png"
        real_image(real_data, rel).save(p)
        out.append(p)
    return out


def test_second_run_hashes_nothing(files, tmp_path, monkeypatch):
    cache_path = tmp_path / "c.sqlite"
    with HashCache(cache_path) as cache:
        first = hash_files(files, cache, jobs=1)
    assert [o.cached for o in first] == [False, False, False]

    def forbidden(path: Path):
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(hashcache, "_hash_one", forbidden)
    with HashCache(cache_path) as cache:
        second = hash_files(files, cache, jobs=1)
    assert [o.cached for o in second] == [True, True, True]
    assert [o.fingerprint for o in second] == [o.fingerprint for o in first]


def test_changed_file_is_hashed_again(files, tmp_path, monkeypatch):
    cache_path = tmp_path / "c.sqlite"
    with HashCache(cache_path) as cache:
        hash_files(files, cache, jobs=1)
    with Image.open(files[1]) as im:
        im.rotate(90, expand=True).save(files[1])
    hashed: list[Path] = []
    real = hashcache._hash_one
    monkeypatch.setattr(hashcache, "_hash_one", lambda p: (hashed.append(p), real(p))[1])
    with HashCache(cache_path) as cache:
        out = hash_files(files, cache, jobs=1)
    assert hashed == [files[1]]
    assert [o.cached for o in out] == [True, False, True]


def test_renamed_file_is_not_hashed_again(files, tmp_path, monkeypatch):
    cache_path = tmp_path / "c.sqlite"
    with HashCache(cache_path) as cache:
        hash_files(files, cache, jobs=1)
    moved = files[0].rename(tmp_path / "renamed.png")
    monkeypatch.setattr(hashcache, "_hash_one", lambda p: pytest.fail("hashed again"))
    with HashCache(cache_path) as cache:
        assert hash_files([moved], cache, jobs=1)[0].cached


def test_unreadable_file_is_an_outcome_not_an_exception(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    missing = tmp_path / "missing.png"
    out = hash_files([bad, missing], None, jobs=1)
    assert out[0].fingerprint is None and "cannot decode" in (out[0].error or "")
    assert out[1].fingerprint is None and "cannot read" in (out[1].error or "")


def test_parallel_hashing_matches_serial(files, tmp_path):
    many = []
    for k in range(18):  # distinct files, so that the process pool really runs
        with Image.open(files[k % 3]) as im:
            p = tmp_path / f"many{k}.png"
            im.crop((k, k, im.width - k, im.height)).save(p)
            many.append(p)
    serial = hash_files(many, None, jobs=1)
    parallel = hash_files(many, None, jobs=2)
    assert [o.fingerprint for o in serial] == [o.fingerprint for o in parallel]
    assert all(o.fingerprint is not None for o in parallel)


def test_touched_file_is_reread_but_not_rehashed(files, tmp_path, monkeypatch):
    cache_path = tmp_path / "c.sqlite"
    with HashCache(cache_path) as cache:
        hash_files(files, cache, jobs=1)
    import os

    st = files[2].stat()
    os.utime(files[2], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, new mtime
    read: list[Path] = []
    real_sha = hashcache.file_sha256
    monkeypatch.setattr(hashcache, "file_sha256", lambda p: (read.append(p), real_sha(p))[1])
    monkeypatch.setattr(hashcache, "_hash_one", lambda p: pytest.fail("hashed again"))
    with HashCache(cache_path) as cache:
        out = hash_files(files, cache, jobs=1)
    assert read == [files[2]]  # only the touched file's bytes are read again
    assert all(o.cached for o in out)
