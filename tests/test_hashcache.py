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


def _first_run(files, cache_path):
    with HashCache(cache_path) as cache:
        return hash_files(files, cache, jobs=1)


@pytest.mark.parametrize("meta", ["not json {", "[]", '{"width": 1}', "null"])
def test_a_damaged_fingerprint_row_is_dropped_and_recomputed_with_one_warning(files, tmp_path, meta):
    import sqlite3

    cache_path = tmp_path / "c.sqlite"
    first = _first_run(files, cache_path)
    with sqlite3.connect(cache_path) as conn:
        conn.execute("UPDATE leakage_fingerprint SET meta = ? WHERE sha256 = ?", (meta, first[1].sha256))
    with HashCache(cache_path) as cache:
        again = hash_files(files, cache, jobs=1)
        warnings = list(cache.warnings)
    assert [o.cached for o in again] == [True, False, True]
    assert [o.fingerprint for o in again] == [o.fingerprint for o in first]
    assert warnings == [f"{cache_path}: 1 damaged row(s) of leakage_fingerprint dropped; recomputed"]
    with HashCache(cache_path) as cache:  # the row was stored again: the third run is clean
        assert [o.cached for o in hash_files(files, cache, jobs=1)] == [True, True, True]
        assert cache.warnings == []


def test_a_damaged_verdict_row_is_dropped(tmp_path):
    import sqlite3

    cache_path = tmp_path / "c.sqlite"
    good = {"duplicate": True, "score": 0.9, "mirrored": False, "evidence": {}}
    with HashCache(cache_path) as cache:
        cache.put_verdicts([("k1", good), ("k2", good)])
    with sqlite3.connect(cache_path) as conn:
        conn.execute("UPDATE leakage_verdict SET verdict = 'not json {' WHERE pair = 'k2'")
    with HashCache(cache_path) as cache:
        assert cache.get_verdicts(["k1", "k2"]) == {"k1": good}
        assert len(cache.warnings) == 1 and "leakage_verdict" in cache.warnings[0]


@pytest.mark.parametrize("damage", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_damaged_cache_file_is_moved_aside_and_rebuilt(files, tmp_path, damage):
    cache_path = tmp_path / "c.sqlite"
    cache_path.write_bytes(damage)
    with HashCache(cache_path) as cache:
        out = hash_files(files, cache, jobs=1)
        warnings = list(cache.warnings)
    assert all(o.fingerprint is not None for o in out)
    assert len(warnings) == 1 and "damaged cache file" in warnings[0] and "c.sqlite.damaged-1" in warnings[0]
    assert (tmp_path / "c.sqlite.damaged-1").read_bytes() == damage  # kept for a person to look at
    with HashCache(cache_path) as cache:
        assert all(o.cached for o in hash_files(files, cache, jobs=1))


def test_a_table_of_another_shape_is_rebuilt(files, tmp_path):
    import sqlite3

    cache_path = tmp_path / "c.sqlite"
    with sqlite3.connect(cache_path) as conn:
        conn.execute("CREATE TABLE leakage_fingerprint (x TEXT)")
    with HashCache(cache_path) as cache:
        assert all(o.fingerprint is not None for o in hash_files(files, cache, jobs=1))
        assert cache.warnings == [f"{cache_path}: table leakage_fingerprint had unexpected columns; rebuilt"]


def test_a_remembered_keypoint_search_round_trips_and_is_not_a_damaged_verdict(tmp_path):
    rows = [[0, 3, True, [1.0, 0.0, 2.5, 0.0, 1.0, -1.5], 40, 52]]
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert cache.get_search("keypoint-search:x") is None
        cache.put_search("keypoint-search:x", rows)
        assert cache.get_search("keypoint-search:x") == rows
        assert cache.warnings == []  # a search row is not read as a damaged verdict
        cache.conn.execute("UPDATE leakage_verdict SET verdict = 'not json {' WHERE pair = 'keypoint-search:x'")
        assert cache.get_search("keypoint-search:x") is None  # dropped, so the search runs again
        assert cache.warnings == [f"{cache.path}: 1 damaged row(s) of leakage_verdict dropped; recomputed"]


@pytest.mark.parametrize(("with_cache", "held"), [(True, 0), (True, 4096), (False, 4096)])
def test_the_cache_backed_keypoint_source_reads_what_the_keypoints_hold(files, tmp_path, real_data, with_cache, held, monkeypatch):
    """The keypoint search reads descriptors chunk by chunk from the cache (never all at once), or
    from the fresh descriptions held beside it: the views it sees are those of the keypoints
    themselves, in the same order, cross or not."""
    from ctcurate.leakage.hashcache import IndexKeypoints, index_files
    from ctcurate.leakage.keypoints import KeypointSource, search

    monkeypatch.setattr(hashcache, "HELD_MOST", held)
    copy = tmp_path / "copy.png"
    real_image(real_data, "CT_NonCOVID/1330.png").rotate(7, expand=True).save(copy)
    cache = HashCache(tmp_path / "c.sqlite") if with_cache else None
    left, right = index_files(files, cache), index_files([copy, tmp_path / "missing.png"], cache)
    lkp = [left.keypoints_of([k]).get(k) for k in range(len(left))]
    rkp = [right.keypoints_of([k]).get(k) for k in range(len(right))]
    assert rkp[1] is None  # an unreadable file has no views' descriptors
    for ours, theirs in ((IndexKeypoints(left, None), KeypointSource(lkp, None)),
                         (IndexKeypoints(left, right), KeypointSource(lkp, rkp))):
        assert ours.sizes().tolist() == theirs.sizes().tolist()
        views = len(ours.sizes())
        assert all((a == b).all() for a, b in zip(ours.words(1, views, (0, 16)), theirs.words(1, views, (0, 16))))
        assert (ours.descriptors(2) == theirs.descriptors(2)).all() and (ours.points(3) == theirs.points(3)).all()
    found = search(IndexKeypoints(left, right), cross=True)
    assert [(c.a, c.b) for c in found] == [(0, 0)]  # the rotated copy of 1330.png


def test_remembered_found_pairs_round_trip_and_a_damaged_row_is_searched_again(tmp_path):
    found = [{"i": 0, "j": 3, "stage": "keypoints", "distance": None, "exact": None,
              "verdict": {"duplicate": True, "score": 0.97, "mirrored": False, "evidence": {"blocks": 40}},
              "transform": [[1.0, 0.0, 2.5, 0.0, 1.0, -1.5], 40, 52]},
             {"i": 1, "j": 2, "stage": "hash", "distance": 0, "exact": "exact-bytes", "verdict": None, "transform": None}]
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert cache.get_found("pairs-found:x") is None
        cache.put_found("pairs-found:x", found)
        assert cache.get_found("pairs-found:x") == found
        cache.put_found("pairs-found:x", [{**found[0], "i": "0"}])  # well-formed JSON, wrong type
        assert cache.get_found("pairs-found:x") is None
        assert cache.warnings == [f"{cache.path}: 1 damaged row(s) of leakage_verdict dropped; recomputed"]


def test_a_sheets_keys_are_remembered_until_the_file_changes(tmp_path, real_data, monkeypatch):
    """A warm run reads the metadata sheets' keys from the cache (no openpyxl); an edited sheet is read again."""
    import os
    import shutil

    from ctcurate.core import dataset

    sheet = tmp_path / "COVID-CT-MetaInfo.xlsx"
    shutil.copyfile(real_data / "COVID-CT-MetaInfo.xlsx", sheet)
    truth = dataset.read_sheet_keys(sheet, "CT_COVID")
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert cache.sheet_keys(sheet, "CT_COVID") == truth
    monkeypatch.setattr(hashcache, "read_sheet_keys", lambda *a: pytest.fail("the unchanged sheet was parsed again"))
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert cache.sheet_keys(sheet, "CT_COVID") == truth
        assert cache.warnings == []
    monkeypatch.setattr(hashcache, "read_sheet_keys", lambda path, class_dir: truth[:3])
    os.utime(sheet, ns=(1, 1))  # saved again (same size)
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert cache.sheet_keys(sheet, "CT_COVID") == truth[:3]
        cache.put_verdicts([(f"sheet-keys:CT_COVID:{sheet.resolve()}", {"stamp": [sheet.stat().st_size, 1, "1"], "rows": [["x"]]})])
        assert cache.sheet_keys(sheet, "CT_COVID") == truth[:3]  # a damaged row is read again, and said once
        assert len(cache.warnings) == 1


def test_a_small_cold_collection_is_not_read_back_from_the_cache_it_was_written_to(files, tmp_path, monkeypatch):
    """Fresh descriptions are written to the cache (a warm run reads them) and, up to `HELD_MOST`,
    held: the steps of the same run take those, and the rest from the cache, equal either way."""
    from ctcurate.leakage.hashcache import index_files

    cache = HashCache(tmp_path / "c.sqlite")
    index = index_files(files, cache)
    rows = list(range(len(files)))

    def no_read(*args: object) -> None:
        raise AssertionError("read back from the cache")

    with monkeypatch.context() as m:
        for name in ("get_many", "get_keypoints", "get_descriptors", "keypoint_sizes"):
            m.setattr(HashCache, name, no_read)
        fingerprints, keypoints = index.fingerprints(rows), index.keypoints_of(rows)
        descriptors, sizes = index.descriptors_of(rows), index.keypoint_sizes()
    assert len(cache.get_many([index.sha(k) for k in rows])) == len(files)  # written all the same
    monkeypatch.setattr(hashcache, "HELD_MOST", 1)
    partly = index_files(files, HashCache(tmp_path / "other.sqlite"))
    assert len(partly.held) == 1
    assert partly.fingerprints(rows) == fingerprints and partly.keypoints_of(rows) == keypoints
    assert partly.descriptors_of(rows) == descriptors and (partly.keypoint_sizes() == sizes).all()
