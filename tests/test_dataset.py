"""core.dataset: the one reader of the sheets' key columns and the split lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctcurate.core.dataset import read_key_rows, read_split_lines, split_of
from ctcurate.core.sheets import SheetError

from contribution_helpers import make_synthetic_dataset


def test_key_rows_of_both_sheets(tmp_path: Path) -> None:
    meta = make_synthetic_dataset(tmp_path / "ds") / "metadata"
    rows = read_key_rows(meta)
    covid = [r for r in rows if r.class_dir == "CT_COVID"]
    assert [(r.row, r.file_name, r.patient_id) for r in covid[:2]] == [
        (2, "2020.02.10.20021580-p6-50%0.png", "Patient 1"), (3, "2020.02.10.20021581-p6-51%0.png", "Patient 1")]
    assert covid[2].doi == "https://doi.org/10.1016/J.Test.2020.1"  # stripped, not normalized
    noncovid = [r for r in rows if r.class_dir == "CT_NonCOVID"]
    assert [(r.image, r.patient_id) for r in noncovid] == [
        ("CT_NonCOVID/0.jpg", "crawled_patient_0"), ("CT_NonCOVID/1%0.jpg", "crawled_patient_1"),
        ("CT_NonCOVID/1%1.jpg", "crawled_patient_2"), ("CT_NonCOVID/2.png", "crawled_patient_3")]


def test_a_name_without_extension_means_png(tmp_path: Path) -> None:
    (tmp_path / "NonCOVID-CT-MetaInfo.csv").write_text("image name,patient id\nx,p\n")
    assert [r.image for r in read_key_rows(tmp_path)] == ["CT_NonCOVID/x.png"]


def test_a_missing_key_column_is_a_sheet_error(tmp_path: Path) -> None:
    (tmp_path / "NonCOVID-CT-MetaInfo.csv").write_text("image name,age\nx,3\n")
    with pytest.raises(SheetError, match=r"missing column\(s\) 'patient id'"):
        read_key_rows(tmp_path)


@pytest.mark.parametrize("data", [b"\xef\xbb\xbfa.png\r\n\r\n b.png\n", b"a.png\n\n b.png"])
def test_split_lines_keep_text_and_line_numbers_whatever_the_encoding(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "COVID").mkdir()
    (tmp_path / "COVID" / "trainCT_COVID.txt").write_bytes(data)
    lines = read_split_lines(tmp_path)
    assert [(s.class_dir, s.split, s.line, s.text, s.name) for s in lines] == [
        ("CT_COVID", "train", 1, "a.png", "a.png"), ("CT_COVID", "train", 3, " b.png", "b.png")]
    assert split_of(tmp_path) == {"CT_COVID/a.png": "train", "CT_COVID/b.png": "train"}


def test_latin1_split_list_is_read(tmp_path: Path) -> None:
    (tmp_path / "NonCOVID").mkdir()
    (tmp_path / "NonCOVID" / "valCT_NonCOVID.txt").write_bytes("caf\xe9.png\n".encode("latin-1"))
    assert split_of(tmp_path) == {"CT_NonCOVID/caf\u00e9.png": "val"}
    assert split_of(tmp_path / "absent") == {}
