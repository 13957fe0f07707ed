"""Zip safety: nothing outside the target, no links, limits on count, size and ratio."""

from __future__ import annotations

import stat
import zipfile

import pytest

from ctcurate.contribution.zipsafe import ZipLimits, check_zip, extract


def _zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            if isinstance(data, zipfile.ZipInfo):
                zf.writestr(data, b"target")
            else:
                zf.writestr(name, data)
    return path


def _codes(check):
    return sorted(f.code for f in check.findings if f.severity.value == "error")


@pytest.mark.parametrize(
    ("name", "code"),
    [("../evil.png", "zip.path-traversal"), ("a/../../evil.png", "zip.path-traversal"),
     ("..\\evil.png", "zip.path-traversal"), ("/etc/evil.png", "zip.absolute-path"),
     ("C:/evil.png", "zip.absolute-path"), ("\\\\server\\evil.png", "zip.absolute-path")],
)
def test_paths_leaving_the_target_are_refused_and_nothing_is_written(tmp_path, name, code):
    z = _zip(tmp_path / "c.zip", [("ok.png", b"x"), (name, b"y")])
    dest = tmp_path / "out"
    check = extract(z, dest)
    assert _codes(check) == [code]
    assert not dest.exists()
    assert not (tmp_path / "evil.png").exists()


def test_symlink_member_is_refused(tmp_path):
    link = zipfile.ZipInfo("link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = _zip(tmp_path / "c.zip", [("link.png", link)])
    assert _codes(check_zip(z)) == ["zip.link"]


def test_limits(tmp_path):
    z = _zip(tmp_path / "c.zip", [(f"{i}.png", b"x") for i in range(5)])
    assert _codes(check_zip(z, ZipLimits(max_files=4))) == ["zip.too-many-files"]
    z = _zip(tmp_path / "big.zip", [("a.png", b"\0" * 3_000_000)])
    codes = _codes(check_zip(z, ZipLimits(max_file_bytes=1_000_000, max_ratio=10_000)))
    assert codes == ["zip.too-large"]
    assert _codes(check_zip(z)) == ["zip.ratio"]  # 3 MB of zeros deflates ~1000x: a bomb's shape
    assert _codes(check_zip(z, ZipLimits(max_total_bytes=1_000, max_ratio=10_000))) == ["zip.too-large"]


def test_header_that_understates_size_is_cut_off(tmp_path):
    z = _zip(tmp_path / "c.zip", [("a.png", b"A" * 100_000)])
    # Rewrite the central directory's size field to claim 10 bytes.
    data = bytearray(z.read_bytes())
    with zipfile.ZipFile(z) as zf:
        info = zf.infolist()[0]
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    lh = 0
    data[lh + 22:lh + 26] = (10).to_bytes(4, "little")
    z.write_bytes(bytes(data))
    check = extract(z, tmp_path / "out")
    # zipfile stops at the declared size, so the member fails its CRC instead of growing unbounded.
    assert _codes(check) == ["zip.corrupt"]
    assert not (tmp_path / "out").exists()
    assert info.file_size == 100_000


def test_clean_zip_extracts_and_skips_litter(tmp_path):
    z = _zip(tmp_path / "c.zip", [("sub/a.png", b"x"), ("__MACOSX/sub/._a.png", b"junk"), ("sheet.csv", b"h\n")])
    check = extract(z, tmp_path / "out")
    assert check.ok
    assert sorted(check.members) == ["sheet.csv", "sub/a.png"]
    assert [f.code for f in check.findings] == ["zip.skipped"]
    assert (tmp_path / "out" / "sub" / "a.png").read_bytes() == b"x"
    assert not (tmp_path / "out" / "__MACOSX").exists()


def test_not_a_zip(tmp_path):
    p = tmp_path / "c.zip"
    p.write_bytes(b"not a zip")
    assert _codes(check_zip(p)) == ["zip.corrupt"]


def test_corrupted_deflate_data_is_zip_corrupt_and_nothing_is_left(tmp_path):
    payload = bytes(range(256)) * 400
    z = _zip(tmp_path / "c.zip", [("a.png", payload)])
    data = bytearray(z.read_bytes())
    start = 30 + len("a.png")  # the member's compressed bytes follow its local header
    for k in range(start + 2, start + 40):
        data[k] ^= 0x5A
    z.write_bytes(bytes(data))
    check = extract(z, tmp_path / "out")
    assert _codes(check) == ["zip.corrupt"]
    assert not (tmp_path / "out").exists()
