"""`ctcurate add-contribution` on a small synthetic dataset: verdicts, reason codes, exit codes."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from contribution_helpers import make_synthetic_dataset, noise_png, tree_hashes, write_contribution_sheet
from ctcurate.cli import main


@pytest.fixture()
def ds(tmp_path: Path) -> Path:
    return make_synthetic_dataset(tmp_path / "ds")


def run(ds: Path, contrib: Path, *extra: str):
    args = ["add-contribution", str(contrib), "--data", str(ds), "--metadata", str(ds / "metadata"), *extra]
    return CliRunner().invoke(main, args)


def row(name, label="COVID", patient="A", doi="10.5555/fresh", captions="Figure 1.", **more):
    return {"File name": name, "Label": label, "Patient ID": patient, "DOI": doi, "Captions": captions, **more}


def make(tmp_path: Path, images: dict[str, int], rows: list[dict], sheet="sheet.xlsx") -> Path:
    contrib = tmp_path / "contrib"
    for name, seed in images.items():
        noise_png(contrib / name, seed)
    write_contribution_sheet(contrib / sheet, rows)
    return contrib


def test_clean_contribution_is_applied(ds, tmp_path):
    contrib = make(tmp_path, {"a%0.png": 1, "a%1.png": 2, "b.png": 3, "0.jpg": 4},
                   [row("a%0.png", patient="Patient 1", Age=61, Gender="F"), row("a%1.png", patient=" patient  1 "),
                    row("b.png", patient="P2"), row("0.jpg", label="NonCOVID", patient="P3")])
    res = run(ds, contrib, "--contributor", "Dr. X", "--split", "val")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "warning: cell.whitespace row 3: " in res.output  # validate's own row check
    assert [x for x in lines if x.startswith(("accepted", "rejected"))] == [
        "accepted  a%0.png -> CT_COVID/a%0.png (Patient 3, val)",
        "accepted  a%1.png -> CT_COVID/a%1.png (Patient 3, val)",
        "accepted  b.png -> CT_COVID/b.png (Patient 4, val)",
        # 0.jpg is taken in the dataset: the new image gets the next free name
        "accepted  0.jpg -> CT_NonCOVID/0_2.jpg (Patient 5, val)",
    ]
    assert lines[-1].startswith("4 accepted, 0 rejected; applied 4 image(s) (transaction ")
    img = ds / "Images-processed"
    assert (img / "CT_COVID" / "a%0.png").read_bytes() == (contrib / "a%0.png").read_bytes()
    assert (img / "CT_NonCOVID" / "0_2.jpg").read_bytes() == (contrib / "0.jpg").read_bytes()
    ws = openpyxl.load_workbook(ds / "metadata" / "COVID-CT-MetaInfo.xlsx").worksheets[0]
    new_rows = [[c.value for c in r] for r in ws.iter_rows(min_row=ws.max_row - 2)]
    assert new_rows[0] == ["a%0.png", "Patient 3", 61, "F", None, None, None, None, None, "10.5555/fresh", "Figure 1."]
    assert [r[1] for r in new_rows] == ["Patient 3", "Patient 3", "Patient 4"]
    with open(ds / "metadata" / "NonCOVID-CT-MetaInfo.csv", newline="") as fh:
        assert list(csv.reader(fh))[-1] == ["4", "0_2.jpg", "Patient 5"]
    assert (ds / "metadata" / "Data-split" / "COVID" / "valCT_COVID.txt").read_text().splitlines()[-3:] == [
        "a%0.png", "a%1.png", "b.png"]
    log = [json.loads(x) for x in (ds / "metadata" / "contributions.jsonl").read_text().splitlines()]
    assert [(r["original_file_name"], r["new_file_name"], r["dataset_patient_id"], r["split"]) for r in log] == [
        ("a%0.png", "a%0.png", "Patient 3", "val"), ("a%1.png", "a%1.png", "Patient 3", "val"),
        ("b.png", "b.png", "Patient 4", "val"), ("0.jpg", "0_2.jpg", "Patient 5", "val")]
    assert {r["contributor"] for r in log} == {"Dr. X"} and {r["source_doi"] for r in log} == {"10.5555/fresh"}
    assert log[0]["sha256"] and log[0]["time"].endswith("Z")
    # The next contribution continues the numbering and sees this paper as part of the dataset.
    shutil.rmtree(contrib)
    again = make(tmp_path, {"c.png": 9}, [row("c.png", doi="https://doi.org/10.5555/FRESH")])
    res = run(ds, again)
    assert res.exit_code == 1
    assert "rejected  c.png: doi.in-dataset collides with 10.5555/fresh" in res.output
    shutil.rmtree(again)
    third = make(tmp_path, {"d.png": 10}, [row("d.png", doi="10.5555/other", patient="Patient 1")])
    res = run(ds, third)
    assert res.exit_code == 0, res.output
    assert "accepted  d.png -> CT_COVID/d.png (Patient 6, " in res.output  # numbering continues past the log


def test_doi_already_in_the_sheet_is_rejected_in_any_spelling(ds, tmp_path):
    before = tree_hashes(ds)
    contrib = make(tmp_path, {"x.png": 1}, [row("x.png", doi="  DOI: 10.1016/j.TEST.2020.1 ")])
    res = run(ds, contrib)
    assert res.exit_code == 1
    assert "rejected  x.png: doi.in-dataset collides with 10.1016/j.test.2020.1" in res.output
    assert "hint: 10.1016/j.test.2020.1 is cited by paper-a-p1-1%0.png" in res.output
    assert res.output.splitlines()[-1] == "0 accepted, 1 rejected; nothing applied"
    assert tree_hashes(ds) == before


def test_preprint_id_in_the_name_must_agree_with_the_doi(ds, tmp_path):
    contrib = make(tmp_path, {"2020.05.01.20087000-p3-1.png": 1},
                   [row("2020.05.01.20087000-p3-1.png", doi="10.1101/2020.05.01.20087999")])
    res = run(ds, contrib, "--dry-run")
    assert res.exit_code == 1
    assert "rejected  2020.05.01.20087000-p3-1.png: doi.mismatch" in res.output


def test_every_reason_is_reported_and_partial_applies_the_rest(ds, tmp_path):
    contrib = make(tmp_path, {"ok.png": 1, "dup.png": 1000, "twin1.png": 7, "orphan.png": 8, "badlabel.png": 11},
                   [row("ok.png"), row("dup.png", patient="B"), row("twin1.png", patient="C"),
                    row("twin2.png", patient="C"), row("gone.png", patient="D"), row("badlabel.png", label="covid-19")])
    shutil.copyfile(contrib / "twin1.png", contrib / "twin2.png")
    (contrib / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    write_contribution_sheet(contrib / "sheet.xlsx", [*openpyxl_rows(contrib / "sheet.xlsx"), row("broken.png", patient="E")])
    before = tree_hashes(ds)
    res = run(ds, contrib)
    assert res.exit_code == 1
    assert tree_hashes(ds) == before  # nothing applied without --partial
    verdicts = {line.split(":")[0].split()[1]: line for line in res.output.splitlines() if line.startswith(("accepted", "rejected"))}
    assert verdicts["ok.png"].startswith("accepted  ok.png -> CT_COVID/ok.png")
    assert verdicts["dup.png"] == ("rejected  dup.png: image.duplicate collides with "
                                   "Images-processed/CT_COVID/2020.02.10.20021580-p6-50%0.png")
    assert verdicts["twin1.png"].startswith("accepted")
    assert verdicts["twin2.png"] == "rejected  twin2.png: image.duplicate-in-contribution collides with twin1.png"
    assert verdicts["gone.png"] == "rejected  gone.png: file.missing"
    assert verdicts["orphan.png"] == "rejected  orphan.png: file.no-row"
    assert verdicts["badlabel.png"] == "rejected  badlabel.png: label.invalid"
    assert verdicts["broken.png"] == "rejected  broken.png: image.unreadable"
    res = run(ds, contrib, "--partial", "--format", "json")
    assert res.exit_code == 1
    body = json.loads(res.output)
    assert body["applied"] is True
    assert sorted(f["source"] for f in body["files"] if f["status"] == "accepted") == ["ok.png", "twin1.png"]
    dup = next(f for f in body["files"] if f["source"] == "dup.png")
    assert dup["reasons"] == ["image.duplicate"]
    assert dup["collides_with"] == "Images-processed/CT_COVID/2020.02.10.20021580-p6-50%0.png"
    assert (ds / "Images-processed" / "CT_COVID" / "ok.png").is_file()
    assert not (ds / "Images-processed" / "CT_COVID" / "dup.png").exists()


def openpyxl_rows(path: Path) -> list[dict]:
    ws = openpyxl.load_workbook(path).worksheets[0]
    values = [[c.value for c in r] for r in ws.iter_rows()]
    return [dict(zip(values[0], r)) for r in values[1:]]


def test_one_patient_in_both_classes_is_rejected(ds, tmp_path):
    contrib = make(tmp_path, {"p.png": 1, "q.png": 2}, [row("p.png", patient="Z"), row("q.png", label="NonCOVID", patient="Z")])
    res = run(ds, contrib, "--dry-run")
    assert res.exit_code == 1
    assert res.output.count("patient.label-conflict") == 4  # verdict line + finding, per file


def test_zip_with_parent_paths_is_refused(ds, tmp_path):
    z = tmp_path / "contrib.zip"
    noise_png(tmp_path / "a.png", 1)
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(tmp_path / "a.png", "a.png")
        zf.write(tmp_path / "a.png", "../../escape.png")
        zf.writestr("sheet.csv", "File name,Label,Patient ID,DOI,Captions\na.png,COVID,A,10.5555/z,c\n")
    before = tree_hashes(ds)
    res = run(ds, z)
    assert res.exit_code == 1
    assert "error: contrib.zip: zip.path-traversal: member path climbs out of the archive ('..') ['../../escape.png']" in res.output
    assert tree_hashes(ds) == before
    assert not (tmp_path / "escape.png").exists() and not (tmp_path.parent / "escape.png").exists()


def test_clean_zip_is_applied(ds, tmp_path):
    z = tmp_path / "contrib.zip"
    noise_png(tmp_path / "a.png", 1)
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(tmp_path / "a.png", "images/a.png")
        zf.writestr("sheet.csv", "File name,Label,Patient ID,DOI,Captions\na.png,COVID,A,10.5555/z,c\n")
    res = run(ds, z, "--split", "none")
    assert res.exit_code == 0, res.output
    assert "accepted  images/a.png -> CT_COVID/a.png (Patient 3, no split)" in res.output


def test_usage_errors_exit_2(ds, tmp_path):
    res = CliRunner().invoke(main, ["add-contribution"])
    assert res.exit_code == 2 and "missing argument CONTRIBUTION" in res.output
    res = CliRunner().invoke(main, ["add-contribution", str(tmp_path), "--data", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no Images-processed/ folder there" in res.output
    res = run(ds, tmp_path / "missing")
    assert res.exit_code == 2 and "does not exist" in res.output
    sheet = tmp_path / "sheet.xlsx"
    sheet.write_bytes(b"not a folder or a zip")
    res = run(ds, sheet)
    assert res.exit_code == 2
    assert res.output.strip() == f"error: {sheet}: a contribution is a folder or a .zip file"


def test_a_row_without_a_file_name_is_reported_and_blocks_the_apply(ds, tmp_path):
    contrib = make(tmp_path, {"a.png": 1}, [row("a.png"), row(None, patient="Q")])
    before = tree_hashes(ds)
    res = run(ds, contrib)
    assert res.exit_code == 1
    assert "error: sheet.xlsx, row 3, column 'File name': cell.missing: 'File name' is required" in res.output
    assert res.output.splitlines()[-1] == ("1 accepted, 0 rejected; nothing applied: the contribution has errors "
                                           "(use --partial to apply the accepted ones)")
    assert tree_hashes(ds) == before


def test_pixel_bomb_is_rejected_without_decoding_it(ds, tmp_path):
    from PIL import Image

    contrib = make(tmp_path, {}, [row("bomb.png")])
    Image.new("1", (9000, 9000)).save(contrib / "bomb.png")  # 81 Mpx of zeros: a few KB on disk
    assert (contrib / "bomb.png").stat().st_size < 100_000
    res = run(ds, contrib, "--dry-run")
    assert res.exit_code == 1
    assert "rejected  bomb.png: image.unreadable" in res.output
    assert "exceeds" in res.output


def test_io_error_while_staging_leaves_nothing_behind(ds, tmp_path, monkeypatch):
    import ctcurate.contribution.apply

    contrib = make(tmp_path, {"a.png": 1, "b.png": 2}, [row("a.png"), row("b.png")])
    before = tree_hashes(ds)
    calls = []
    real_copyfile = shutil.copyfile

    def failing_copy(src, dst, **kwargs):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_copyfile(src, dst, **kwargs)

    monkeypatch.setattr(ctcurate.contribution.apply.shutil, "copyfile", failing_copy)
    res = run(ds, contrib)
    assert res.exit_code == 2
    assert res.output.startswith("error: cannot stage the new files: [Errno 28] No space left on device")
    assert tree_hashes(ds) == before
    assert not list((ds / ".ctcurate").glob("staging-*")) and not list((ds / "metadata").glob(".ctcurate-*"))


def test_a_damaged_hash_cache_is_rebuilt_with_one_warning(ds, tmp_path):
    import sqlite3

    cache = tmp_path / "c.sqlite"
    contrib = make(tmp_path, {"a.png": 1}, [row("a.png")])
    assert run(ds, contrib, "--dry-run", "--cache", str(cache)).exit_code == 0
    # a dry run works on a scratch copy: warm the real cache through a real run on a copy of ds
    work = tmp_path / "work"
    shutil.copytree(ds, work)
    assert run(work, contrib, "--cache", str(cache)).exit_code == 0
    with sqlite3.connect(cache) as conn:
        conn.execute("UPDATE leakage_fingerprint SET meta = 'not json {'")
    res = run(ds, contrib, "--cache", str(cache))
    assert res.exit_code == 0, res.output
    warnings = [x for x in res.output.splitlines() if "cache.damaged" in x]
    assert len(warnings) == 1 and "damaged row(s) of leakage_fingerprint dropped; recomputed" in warnings[0]
    cache.write_bytes(b"garbage" * 1000)
    other = make(tmp_path / "second", {"b.png": 7}, [row("b.png", doi="10.5555/other")])
    res = run(ds, other, "--cache", str(cache))
    assert res.exit_code == 0, res.output
    assert "damaged cache file" in res.output and (tmp_path / "c.sqlite.damaged-1").read_bytes() == b"garbage" * 1000
