"""`ctcurate check-leakage` end to end: exit codes, formats, messages, --fix-splits."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctcurate.cli import main
from ctcurate.core.layout import IMAGES_DIR

from leakage_dataset import EXPECTED_PAIRS, build


@pytest.fixture(scope="module")
def small(tmp_path_factory, real_data) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli_small")
    return root, build(root, real_data)


def run(*args: str):
    return CliRunner().invoke(main, ["check-leakage", *args])


def _args(root: Path, meta: Path, *extra: str) -> list[str]:
    return ["--data", str(root), "--metadata", str(meta), "--cache", str(root / "cache.sqlite"), "--jobs", "1", *extra]


def test_json_output_and_exit_code_1(small):
    root, meta = small
    result = run(*_args(root, meta, "--format", "json"))
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"pairs", "clusters", "summary"}
    assert {(p["a"], p["b"]): p["kind"] for p in data["pairs"]} == EXPECTED_PAIRS
    for p in data["pairs"]:
        assert set(p) == {"a", "b", "kind", "score", "evidence", "stage"}
    assert data["summary"]["by_kind"]["patient-leak"] == 1
    assert data["summary"]["unreadable"] == 1


def test_text_output(small):
    root, meta = small
    result = run(*_args(root, meta))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert "leak-train-test, label-conflict: CT_COVID/c.png <-> CT_NonCOVID/c_copy.png" in result.stdout
    assert "patient-leak: patient 'COVID:P9' spans splits (test: 1; train: 1)" in lines
    assert any(line.startswith("error: CT_NonCOVID/broken.png: image.unreadable: cannot hash image") for line in lines)
    assert lines[-1].startswith("15 images, 4 duplicate pair(s) in 4 cluster(s), 1 unreadable; by kind: ")


def test_csv_output_to_file(small, tmp_path):
    root, meta = small
    out = tmp_path / "r.csv"
    result = run(*_args(root, meta, "--format", "csv", "--output", str(out)))
    assert result.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["a"], r["b"], r["kind"]) for r in rows] == [(a, b, ";".join(k)) for (a, b), k in sorted(EXPECTED_PAIRS.items())]
    # the report is in the file; stdout counts the groups per kind, worst first
    assert result.stdout == (
        f"wrote {out}: 1 label conflicts, 2 other cross-split leaks, 2 patient/source-figure leaks, "
        "1 in-split duplicates; 1 unreadable of 15 images\n"
    )


def test_help_lists_the_exit_codes():
    text = run("--help").output
    assert "0  no duplicates, leaks or unreadable images" in text and "2  usage error" in text


def test_clean_dataset_exits_0(tmp_path, real_data):
    root = tmp_path / "clean"
    for rel in ("CT_COVID/kjr-21-e24-p5-29.png", "CT_NonCOVID/25.png", "CT_NonCOVID/1099.png"):
        (root / IMAGES_DIR / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real_data / IMAGES_DIR / rel, root / IMAGES_DIR / rel)
    empty_meta = tmp_path / "meta"
    empty_meta.mkdir()
    result = run("--data", str(root), "--metadata", str(empty_meta), "--cache", str(tmp_path / "c.sqlite"))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "3 images, 0 duplicate pair(s) in 0 cluster(s), 0 unreadable; by kind: none"


def test_a_missing_default_metadata_folder_is_said_not_silent(tmp_path, real_data, monkeypatch):
    """Without --metadata and without a metadata/ to default to (an installed package, run from
    another folder), the run goes on, but says that the sheets' checks are left out."""
    from ctcurate.core import layout

    root = tmp_path / "data"
    rel = "CT_NonCOVID/25.png"
    (root / IMAGES_DIR / rel).parent.mkdir(parents=True)
    shutil.copy(real_data / IMAGES_DIR / rel, root / IMAGES_DIR / rel)
    monkeypatch.setattr(layout, "EMBEDDED_METADATA", tmp_path / "no-such-repo" / "metadata")
    monkeypatch.chdir(tmp_path)
    result = run("--data", str(root), "--cache", str(tmp_path / "c.sqlite"), "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert f"note: {tmp_path / 'metadata'}: no metadata folder; the sheets' patient and source-figure checks are skipped" in result.stderr


def test_usage_errors_exit_2(tmp_path, monkeypatch):
    monkeypatch.delenv("CTCURATE_DATA", raising=False)
    result = run()
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: no image root given: pass --images/--data ROOT or set CTCURATE_DATA to the folder that holds Images-processed/"
    result = run("--data", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path}: no Images-processed/ folder there"
    (tmp_path / IMAGES_DIR).mkdir()
    result = run("--data", str(tmp_path), "--against", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --against {tmp_path / 'nope'}: no such folder"
    assert run("--data", str(tmp_path), "--format", "xml").exit_code == 2
    assert run("--data", str(tmp_path), "--threshold", "99").exit_code == 2


def test_unwritable_output_exits_2(small, tmp_path):
    root, meta = small
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run(*_args(root, meta, "--output", str(blocker / "sub" / "r.txt")))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {blocker / 'sub' / 'r.txt'}: cannot write (Not a directory)"
    assert "Traceback" not in result.output
    result = run("--data", str(root), "--cache", str(blocker / "cache.sqlite"))
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"error: {blocker}")


def test_fix_splits_writes_new_lists_and_keeps_originals(small, tmp_path):
    root, meta = small
    before = {p: p.read_bytes() for p in (meta / "Data-split").rglob("*.txt")}
    out = tmp_path / "fixed"
    result = run(*_args(root, meta, "--fix-splits", str(out)))
    assert result.exit_code == 1
    assert {p: p.read_bytes() for p in (meta / "Data-split").rglob("*.txt")} == before
    assign = {}
    for path in out.rglob("*.txt"):
        class_dir = path.stem[len(next(s for s in ("train", "val", "test") if path.stem.startswith(s))):]
        split = path.stem[: len(path.stem) - len(class_dir)]
        for name in path.read_text().split():
            assign[f"{class_dir}/{name}"] = split
    # every listed image is still listed exactly once, and each group now sits in one split
    assert len(assign) == sum(len(b.split()) for b in before.values())
    for a, b in EXPECTED_PAIRS:
        assert assign[a] == assign[b]
    assert assign["CT_COVID/e.png"] == assign["CT_COVID/f.png"]
    assert assign["CT_COVID/2020.02.25.20021568-p23-108%0.png"] == assign["CT_COVID/2020.02.25.20021568-p23-108%1.png"]
    assert "fix-splits: moved" in result.stderr
    # what moving images cannot fix is said, on the terminal and in the README beside the lists
    assert "fix-splits cannot fix 1 label conflicts: a person must pick the right label" in result.stderr
    assert "fix-splits cannot fix 1 in-split duplicates" in result.stderr
    readme = (out / "README.md").read_text()
    moved = [line for line in readme.splitlines() if " -> " in line]
    assert moved and all(line.startswith("  CT_") for line in moved)
    assert "Not fixed: 1 label conflicts" in readme and "  CT_COVID/c.png = CT_NonCOVID/c_copy.png\n" in readme


def test_against_reports_contribution_duplicates(small, real_data, tmp_path):
    root, meta = small
    from leakage_helpers import TRANSFORMS, real_image

    contrib = tmp_path / "contrib" / "CT_COVID"
    contrib.mkdir(parents=True)
    TRANSFORMS["jpeg-q35"](real_image(real_data, "CT_NonCOVID/25.png")).save(contrib / "new.jpg")
    real_image(real_data, "CT_NonCOVID/63%0.jpg").save(contrib / "fresh.png")
    result = run(*_args(root, meta, "--against", str(tmp_path / "contrib"), "--format", "json"))
    assert result.exit_code == 1
    pairs = {(p["a"], p["b"]): p["kind"] for p in json.loads(result.stdout)["pairs"]}
    assert pairs == {
        ("CT_COVID/d.png", "new:CT_COVID/new.jpg"): ["contribution-duplicate"],
        ("CT_COVID/d_copy.png", "new:CT_COVID/new.jpg"): ["contribution-duplicate"],
    }
    html = run(*_args(root, meta, "--against", str(tmp_path / "contrib"), "--format", "html", "--output", str(tmp_path / "r.html")))
    assert html.exit_code == 1
    page = (tmp_path / "r.html").read_text()
    # one group (the picture, its dataset copy and the contributed copy), each member with a preview
    assert page.count('<div class="group"') == 1 and 'data-level="cross-split"' in page
    assert page.count("data:image/jpeg;base64,") == 3


def test_against_accepts_a_zip_and_reads_labels_from_its_sheet(small, real_data, tmp_path):
    """--against reads a contribution as add-contribution does: a .zip, labels from its sheet's Label column."""
    import zipfile

    from leakage_helpers import TRANSFORMS, real_image

    root, meta = small
    TRANSFORMS["jpeg-q35"](real_image(real_data, "CT_NonCOVID/25.png")).save(tmp_path / "new.jpg")
    (tmp_path / "sheet.csv").write_text("File name,Label\nnew.jpg,NonCOVID\n")
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as zf:
        zf.write(tmp_path / "new.jpg", "new.jpg")
        zf.write(tmp_path / "sheet.csv", "sheet.csv")
    result = run(*_args(root, meta, "--against", str(tmp_path / "c.zip"), "--format", "json"))
    assert result.exit_code == 1, result.output
    pairs = {(p["a"], p["b"]): p["kind"] for p in json.loads(result.stdout)["pairs"]}
    assert pairs == {
        ("CT_COVID/d.png", "new:new.jpg"): ["contribution-duplicate", "label-conflict"],
        ("CT_COVID/d_copy.png", "new:new.jpg"): ["contribution-duplicate", "label-conflict"],
    }


def test_fix_splits_refuses_its_own_input_and_a_non_empty_folder(small, tmp_path):
    root, meta = small
    splits = meta / "Data-split"
    before = {p: p.read_bytes() for p in splits.rglob("*.txt")}
    own = run(*_args(root, meta, "--fix-splits", str(splits), "--force"))
    assert own.exit_code == 2
    assert own.stderr.strip().splitlines()[-1].endswith("would overwrite the input; choose another --fix-splits target")
    assert {p: p.read_bytes() for p in splits.rglob("*.txt")} == before
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    refused = run(*_args(root, meta, "--fix-splits", str(busy)))
    assert refused.exit_code == 2
    assert refused.stderr == f"error: {busy}: the folder exists and is not empty; pass --force to write over it\n"
    assert refused.stdout == ""  # refused before the run, not after printing a report
    assert run(*_args(root, meta, "--fix-splits", str(busy), "--force")).exit_code == 1
    assert (busy / "keep.txt").read_text() == "mine"


def test_a_damaged_cache_row_is_a_warning_not_a_traceback(small, tmp_path):
    import sqlite3

    root, meta = small
    cache = tmp_path / "c.sqlite"
    args = ["--data", str(root), "--metadata", str(meta), "--cache", str(cache), "--jobs", "1", "--format", "json"]
    first = run(*args)
    with sqlite3.connect(cache) as conn:
        conn.execute("UPDATE leakage_fingerprint SET meta = 'not json {' WHERE rowid = (SELECT min(rowid) FROM leakage_fingerprint)")
        conn.execute("UPDATE leakage_verdict SET verdict = 'not json {' WHERE rowid = (SELECT min(rowid) FROM leakage_verdict)")
        # the pairs the search found: a warm run reads them instead of searching, so damaged, the search runs again
        conn.execute("UPDATE leakage_verdict SET verdict = 'not json {' WHERE pair LIKE 'pairs-found:%'")
    again = run(*args)
    assert again.exit_code == first.exit_code == 1, again.output
    body, body_first = json.loads(again.stdout), json.loads(first.stdout)
    assert body["pairs"] == body_first["pairs"]
    damaged = [f for f in body["summary"]["findings"] if f["code"] == "cache.damaged"]
    assert [f["severity"] for f in damaged] == ["warning", "warning", "warning"]  # fingerprint, found pairs, a pair's verdict
    assert {f["message"].split(" of ")[1] for f in damaged} == {"leakage_fingerprint dropped; recomputed",
                                                                 "leakage_verdict dropped; recomputed"}


def test_pending_contribution_empty_folder_and_fifo_are_findings(tmp_path, real_data):
    import os

    root = tmp_path / "ds"
    meta = build(root, real_data, broken=False)
    os.mkfifo(root / IMAGES_DIR / "CT_COVID" / "pipe.png")
    (root / ".ctcurate").mkdir(exist_ok=True)
    (root / ".ctcurate" / "apply-journal.json").write_text("{}")
    result = run(*_args(root, meta, "--format", "json"))
    assert result.exit_code == 1
    codes = [f["code"] for f in json.loads(result.stdout)["summary"]["findings"]]
    assert codes[:2] == ["dataset.pending-contribution", "file.special"]
    empty = tmp_path / "empty"
    (empty / IMAGES_DIR / "CT_COVID").mkdir(parents=True)
    result = run("--data", str(empty), "--cache", str(tmp_path / "c.sqlite"), "--format", "json")
    assert result.exit_code == 1
    assert [f["code"] for f in json.loads(result.stdout)["summary"]["findings"]] == ["image.none"]


def test_names_with_newlines_and_bidi_marks_stay_on_one_line(tmp_path, real_data):
    root = tmp_path / "ds"
    meta = build(root, real_data, broken=False)
    folder = root / IMAGES_DIR / "CT_COVID"
    shutil.copy(folder / "c.png", folder / "odd\nname\u202e.png")
    result = run(*_args(root, meta))
    assert "\u202e" not in result.stdout
    line = next(x for x in result.stdout.splitlines() if "odd" in x)
    assert "odd\\nname\\u202e.png" in line and " <-> " in line
