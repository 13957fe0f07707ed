"""Apply: sheet fidelity, byte-exact appends, and all-or-nothing under SIGKILL at every step."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import zipfile
import sys
from copy import copy
from pathlib import Path

import openpyxl
import pandas
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# What the CLI imports lazily is imported here once, so that every forked child starts warm.
import ctcurate.contribution.run  # noqa: F401
import ctcurate.leakage.pipeline  # noqa: F401
import ctcurate.validation.schemas  # noqa: F401
import ctcurate.validation.checks  # noqa: F401
from ctcurate.contribution import apply as apply_lib
from ctcurate.contribution.apply import covid_sheet_bytes, noncovid_sheet_bytes, split_list_bytes
from ctcurate.cli import main
from ctcurate.core.lock import locked
from ctcurate.core.store import CACHE_ENV, cache_location

from contribution_helpers import make_synthetic_dataset, noise_png, tree_hashes, write_contribution_sheet

REPO = Path(__file__).resolve().parent.parent


def _cell_signature(cell) -> tuple:
    # Style objects come wrapped in proxies that do not compare by value; their repr lists every field.
    styles = (cell.font, cell.fill, cell.border, cell.alignment, cell.protection)
    return (cell.value, cell.data_type, cell.number_format, *(repr(copy(s)) for s in styles))


def _assert_workbook_kept(before: Path, after: Path, sheet_rows_added: int) -> openpyxl.Workbook:
    old = openpyxl.load_workbook(before)
    new = openpyxl.load_workbook(after)
    assert new.sheetnames == old.sheetnames
    for ws_old in old.worksheets:
        ws_new = new[ws_old.title]
        for row in ws_old.iter_rows():
            for cell in row:
                assert _cell_signature(ws_new[cell.coordinate]) == _cell_signature(cell), cell.coordinate
        assert {k: v.width for k, v in ws_new.column_dimensions.items()} == {
            k: v.width for k, v in ws_old.column_dimensions.items()}
        assert ws_new.merged_cells.ranges == ws_old.merged_cells.ranges
        assert ws_new.freeze_panes == ws_old.freeze_panes
    first_old, first_new = old.worksheets[0], new.worksheets[0]
    assert first_new.max_row == first_old.max_row + sheet_rows_added
    return new


def test_covid_sheet_append_keeps_every_existing_cell(tmp_path):
    make_synthetic_dataset(tmp_path / "ds")
    path = tmp_path / "ds" / "metadata" / "COVID-CT-MetaInfo.xlsx"
    rows = [{"File name": "new.png", "Patient ID": "Patient 3", "Age": "55", "Gender": " F ",
             "DOI": "https://doi.org/10.5555/NEW", "Captions": "c"}]
    out = tmp_path / "out.xlsx"
    out.write_bytes(covid_sheet_bytes(path, rows))
    new = _assert_workbook_kept(path, out, 1)
    ws = new.worksheets[0]
    last = [c.value for c in ws[ws.max_row]]
    assert last == ["new.png", "Patient 3", 55, "F", None, None, None, None, None, "10.5555/new", "c"]
    assert ws.cell(ws.max_row, 3).data_type == "n"
    # New cells borrow the style of the last data row, not of the footnote row below it.
    assert ws.cell(ws.max_row, 11).alignment.wrap_text is True


def test_real_covid_sheet_append_keeps_every_existing_cell_and_part(repo_metadata, tmp_path):
    path = repo_metadata / "COVID-CT-MetaInfo.xlsx"
    out = tmp_path / "out.xlsx"
    out.write_bytes(covid_sheet_bytes(path, [
        {"File name": "x.png", "Patient ID": "Patient 217", "Age": "7", "DOI": "10.5555/x",
         "Captions": "Figure 1. <b> & 'quotes'\n second line "},
        {"File name": "y.png", "Patient ID": "Patient 217", "DOI": "10.5555/x", "Captions": "c\x0bd"},
    ]))
    new = _assert_workbook_kept(path, out, 2)
    ws = new.worksheets[0]
    assert [c.value for c in ws[ws.max_row - 1]] == [
        "x.png", "Patient 217", 7, None, None, None, None, None, None, "10.5555/x", "Figure 1. <b> & 'quotes'\n second line"]
    assert ws.cell(ws.max_row, 11).value == "cd"  # a character XML cannot hold is dropped, not fatal
    # Every part of the package but the edited sheet is byte for byte the same (printer settings,
    # shared strings, styles, workbook properties), with the same compression and time stamps.
    with zipfile.ZipFile(path) as a, zipfile.ZipFile(out) as b:
        assert [i.filename for i in a.infolist()] == [i.filename for i in b.infolist()]
        for ia, ib in zip(a.infolist(), b.infolist()):
            assert (ia.compress_type, ia.date_time) == (ib.compress_type, ib.date_time)
            if ia.filename != "xl/worksheets/sheet1.xml":
                assert a.read(ia.filename) == b.read(ib.filename), ia.filename
    df = pandas.read_excel(out, sheet_name=0)
    assert df["File name"].iloc[-2:].tolist() == ["x.png", "y.png"]


def test_csv_and_split_appends_keep_bytes_and_line_endings():
    data = b",image name,patient id\r\n0,0.jpg,crawled_patient_0\r\n7,1%0.jpg,p\r\n"
    out = noncovid_sheet_bytes(data, [("a.png", "Patient 9"), ("b.png", "Patient 9")])
    assert out == data + b"8,a.png,Patient 9\r\n9,b.png,Patient 9\r\n"
    assert split_list_bytes(b"a.png\nb.png", ["c.png"]) == b"a.png\nb.png\nc.png\n"
    assert split_list_bytes(b"a.png\r\n", ["c.png"]) == b"a.png\r\nc.png\r\n"
    assert split_list_bytes(b"", ["c.png"]) == b"c.png\n"


def _contribution(tmp_path: Path) -> Path:
    contrib = tmp_path / "contrib"
    for i, name in enumerate(["n1%0.png", "n1%1.png", "neg.png"]):
        noise_png(contrib / name, 5000 + i)
    write_contribution_sheet(contrib / "sheet.csv", [
        {"File name": "n1%0.png", "Label": "COVID", "Patient ID": "A", "DOI": "10.5555/kill", "Captions": "x"},
        {"File name": "n1%1.png", "Label": "COVID", "Patient ID": "A", "DOI": "10.5555/kill", "Captions": "x"},
        {"File name": "neg.png", "Label": "NonCOVID", "Patient ID": "B", "DOI": "10.5555/kill", "Captions": "y"},
    ])
    return contrib


def _cli_child(args: list[str], env_extra: dict[str, str]) -> None:
    os.environ.update(env_extra)
    sys.stdout = sys.stderr = open(os.devnull, "w")
    try:
        main(["add-contribution", *args], standalone_mode=True)
    except SystemExit as exc:
        os._exit(exc.code if isinstance(exc.code, int) else 2)
    os._exit(0)


def _run_forked(args: list[str], env_extra: dict[str, str] | None = None) -> int:
    """Run the CLI in a forked child process (modules already imported: fast); its exit code or -signal."""
    child = multiprocessing.get_context("fork").Process(target=_cli_child, args=(args, env_extra or {}))
    child.start()
    child.join(120)
    assert child.exitcode is not None, "the child hung"
    return child.exitcode


def _run_cli(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "ctcurate.cli", "add-contribution", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_sigkill_at_every_step_leaves_before_or_after(tmp_path):
    """Each run is a forked child that SIGKILLs itself right after step k; recovery, then compare trees."""
    pristine = make_synthetic_dataset(tmp_path / "pristine")
    contrib = _contribution(tmp_path)
    before = tree_hashes(pristine)

    # The reference "after": one uninterrupted run.
    done = tmp_path / "done"
    shutil.copytree(pristine, done)
    args = lambda root: [str(contrib), "--data", str(root), "--metadata", str(root / "metadata"), "--contributor", "t"]  # noqa: E731
    cache = tmp_path / "cache.sqlite"  # shared by every run: same pictures, hashed once
    ok = _run_cli(args(done), {CACHE_ENV: str(cache)})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    after = tree_hashes(done)
    assert set(after) - set(before) and after != before

    def normalize(tree: dict[str, str], root: Path) -> dict[str, str]:
        # contributions.jsonl holds each run's time and transaction id: compare everything else.
        tree = dict(tree)
        log = root / "metadata" / "contributions.jsonl"
        if "metadata/contributions.jsonl" in tree:
            records = [json.loads(line) for line in log.read_text().splitlines()]
            tree["metadata/contributions.jsonl"] = json.dumps(
                [{k: v for k, v in r.items() if k not in ("time", "transaction")} for r in records], sort_keys=True)
        return tree

    after_norm = normalize(after, done)
    outcomes = {"before": 0, "after": 0}
    k = 0
    while True:
        k += 1
        work = tmp_path / f"k{k}"
        shutil.copytree(pristine, work)
        code = _run_forked(args(work), {apply_lib.KILL_ENV: str(k), CACHE_ENV: str(cache)})
        if code == 0:
            assert k > 5, "the hook never fired: steps are not counted"
            shutil.rmtree(work)
            break
        assert code == -signal.SIGKILL, (k, code)
        with locked(apply_lib.lock_paths(work, work / "metadata")) as locks:
            assert any(lock.stale for lock in locks), "a killed run leaves a stale lock file to report"
            apply_lib.recover(work, work / "metadata")
        assert not apply_lib.pending(work, work / "metadata")
        state = normalize(tree_hashes(work), work)
        if state == before:
            outcomes["before"] += 1
        else:
            assert state == after_norm, f"killed after step {k}: dataset is neither before nor after"
            outcomes["after"] += 1
        shutil.rmtree(work)
    assert outcomes["before"] >= 3 and outcomes["after"] >= 3, outcomes


def test_recover_completes_a_committed_run_from_the_cli(tmp_path):
    """The next start of add-contribution finishes an interrupted run before judging its own input."""
    ds = make_synthetic_dataset(tmp_path / "ds")
    contrib = _contribution(tmp_path)
    args = [str(contrib), "--data", str(ds), "--metadata", str(ds / "metadata")]
    # Step 1 (staging made) + 3 images + 5 metadata files + journal = 10: kill right after the commit point.
    killed = _run_cli(args, {apply_lib.KILL_ENV: "10"})
    assert killed.returncode == -signal.SIGKILL
    assert apply_lib.journal_path(ds).exists()
    dry = _run_cli([*args, "--dry-run"])
    assert dry.returncode == 2
    assert "an interrupted contribution is pending" in dry.stderr
    again = _run_cli(args)
    assert "an interrupted contribution was completed" in again.stdout
    assert "cleared a stale lock" in again.stdout
    # The same contribution again: the run that was completed made its DOI part of the dataset.
    assert again.returncode == 1
    assert "doi.in-dataset" in again.stdout
    assert (ds / "Images-processed" / "CT_COVID" / "n1%0.png").is_file()


def test_dry_run_writes_nothing(tmp_path):
    ds = make_synthetic_dataset(tmp_path / "ds")
    contrib = _contribution(tmp_path)
    # A warm cache in its default place: the dry run reads it but must not change it either.
    ctcurate.leakage.pipeline.find_duplicates_of([], ds)
    cache = cache_location()
    assert cache.is_file()
    before, cache_before = tree_hashes(ds, ignore=()), tree_hashes(cache.parent, ignore=())
    res = _run_cli([str(contrib), "--data", str(ds), "--metadata", str(ds / "metadata"), "--dry-run"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "dry run: nothing written" in res.stdout
    assert "accepted  n1%0.png -> CT_COVID/n1%0.png (Patient 3," in res.stdout
    assert "would write: COVID-CT-MetaInfo.xlsx (+2), " in res.stdout
    assert "Images-processed/CT_NonCOVID/ (+1), NonCOVID-CT-MetaInfo.csv (+1), contributions.jsonl (+3)" in res.stdout
    assert tree_hashes(ds, ignore=()) == before
    assert tree_hashes(cache.parent, ignore=()) == cache_before
    assert not (ds / ".ctcurate" / "apply.lock").exists()


@pytest.mark.parametrize("holder", ["live", "dead"])
def test_second_run_is_refused_while_the_lock_is_held(tmp_path, holder):
    ds = make_synthetic_dataset(tmp_path / "ds")
    contrib = _contribution(tmp_path)
    args = [str(contrib), "--data", str(ds), "--metadata", str(ds / "metadata")]
    if holder == "live":
        with locked(apply_lib.lock_paths(ds, ds / "metadata")):
            res = _run_cli(args)
        assert res.returncode == 2
        assert "another ctcurate run holds this dataset (pid " in res.stderr
        assert "Traceback" not in res.stderr
        assert not (ds / "Images-processed" / "CT_COVID" / "n1%0.png").exists()
    else:
        lock_file = apply_lib.lock_paths(ds, ds / "metadata")[0]
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        lock_file.write_text('{"pid": 999999999, "host": "x", "started": "earlier"}')
        res = _run_cli(args)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "cleared a stale lock" in res.stdout and "pid 999999999 (no longer running)" in res.stdout


def test_a_killed_recovery_is_recovered_too(tmp_path):
    """Kill the run after its commit point, then kill each recovery attempt at every step of its own."""
    pristine = make_synthetic_dataset(tmp_path / "pristine")
    contrib = _contribution(tmp_path)
    args = lambda root: [str(contrib), "--data", str(root), "--metadata", str(root / "metadata")]  # noqa: E731
    ref = tmp_path / "ref"
    shutil.copytree(pristine, ref)
    cache = {CACHE_ENV: str(tmp_path / "cache.sqlite")}
    assert _run_cli(args(ref), cache).returncode == 0
    expected = tree_hashes(ref)
    expected.pop("metadata/contributions.jsonl")
    j = 0
    while True:
        j += 1
        work = tmp_path / f"j{j}"
        shutil.copytree(pristine, work)
        assert _run_forked(args(work), {apply_lib.KILL_ENV: "11", **cache}) == -signal.SIGKILL  # after 1 rename
        assert apply_lib.journal_path(work).exists()
        again = _run_forked(args(work), {apply_lib.KILL_ENV: str(j), **cache})  # dies inside recovery, at its step j
        with locked(apply_lib.lock_paths(work, work / "metadata")):
            apply_lib.recover(work, work / "metadata")
        got = tree_hashes(work)
        assert len((work / "metadata" / "contributions.jsonl").read_text().splitlines()) == 3
        got.pop("metadata/contributions.jsonl")
        assert got == expected, f"recovery killed at its step {j}"
        shutil.rmtree(work)
        if again != -signal.SIGKILL:
            assert j > 3
            break


_names = st.lists(st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\r\n"),
                          min_size=1, max_size=12).filter(lambda n: n.strip() == n and n), max_size=6)


@settings(max_examples=80, deadline=None)
@given(old=_names, new=_names, crlf=st.booleans(), final_newline=st.booleans())
def test_split_list_append_keeps_old_bytes_and_reads_back(old, new, crlf, final_newline):
    nl = "\r\n" if crlf else "\n"
    text = nl.join(old) + (nl if final_newline and old else "")
    data = text.encode()
    out = split_list_bytes(data, new)
    assert out.startswith(data)
    assert out.decode().splitlines() == old + new
    if b"\r\n" in data:  # the file's own line-ending style is kept for the new lines
        assert b"\n" not in out.replace(b"\r\n", b"")


@settings(max_examples=60, deadline=None)
@given(new=st.lists(st.tuples(st.text(min_size=1, max_size=10), st.text(min_size=1, max_size=10)), max_size=5))
def test_noncovid_append_reads_back(new):
    data = b",image name,patient id\r\n0,0.jpg,crawled_patient_0\r\n"
    out = noncovid_sheet_bytes(data, new)
    assert out.startswith(data)
    import csv
    import io

    records = list(csv.reader(io.StringIO(out.decode(), newline="")))
    assert records[2:] == [[str(i + 1), a, b] for i, (a, b) in enumerate(new)]


def test_journal_survives_moving_the_dataset(tmp_path):
    """The journal holds paths relative to the data root and metadata folder, not absolute ones."""
    ds = make_synthetic_dataset(tmp_path / "ds")
    contrib = _contribution(tmp_path)
    cache = {CACHE_ENV: str(tmp_path / "cache.sqlite")}
    args = [str(contrib), "--data", str(ds), "--metadata", str(ds / "metadata")]
    assert _run_forked(args, {apply_lib.KILL_ENV: "12", **cache}) == -signal.SIGKILL  # 2 renames done
    moved = tmp_path / "moved"
    ds.rename(moved)
    with locked(apply_lib.lock_paths(moved, moved / "metadata")):
        recovery = apply_lib.recover(moved, moved / "metadata")
    assert recovery.action == "completed"
    assert not apply_lib.pending(moved, moved / "metadata")
    assert (moved / "Images-processed" / "CT_NonCOVID" / "neg.png").is_file()
    assert len((moved / "metadata" / "contributions.jsonl").read_text().splitlines()) == 3


def test_recovery_refuses_a_journal_it_cannot_complete(tmp_path):
    ds = make_synthetic_dataset(tmp_path / "ds")
    contrib = _contribution(tmp_path)
    args = [str(contrib), "--data", str(ds), "--metadata", str(ds / "metadata")]
    assert _run_forked(args, {apply_lib.KILL_ENV: "10", CACHE_ENV: str(tmp_path / "c.sqlite")}) == -signal.SIGKILL
    staged = next((ds / ".ctcurate").glob("staging-*/CT_COVID/n1%0.png"))
    staged.unlink()  # someone "cleaned up" the staging folder
    with pytest.raises(apply_lib.ApplyError, match="cannot complete the interrupted contribution"):
        apply_lib.recover(ds, ds / "metadata")
    assert apply_lib.journal_path(ds).exists()  # kept for a person to look at
    res = _run_cli(args)
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and "cannot complete the interrupted contribution" in res.stderr


def _hostile_journal(tmp_path: Path, edit) -> tuple[Path, Path, dict]:
    """A dataset killed right after its commit point, then its journal edited by `edit(body)`."""
    ds = make_synthetic_dataset(tmp_path / "ds")
    contrib = _contribution(tmp_path)
    args = [str(contrib), "--data", str(ds), "--metadata", str(ds / "metadata")]
    assert _run_forked(args, {apply_lib.KILL_ENV: "10", CACHE_ENV: str(tmp_path / "c.sqlite")}) == -signal.SIGKILL
    jpath = apply_lib.journal_path(ds)
    body = json.loads(jpath.read_text())
    jpath.write_text(json.dumps(edit(body)))
    return ds, contrib, body


@pytest.mark.parametrize("edit", [
    pytest.param(lambda b: {**b, "staging": [{"root": "data", "path": "../../victim"}]}, id="staging-outside"),
    pytest.param(lambda b: {**b, "staging": [{"root": "metadata", "path": "."}]}, id="staging-is-the-root"),
    pytest.param(lambda b: {**b, "staging": [{"root": "data", "path": "Images-processed"}]}, id="staging-not-staging"),
    pytest.param(lambda b: {**b, "ops": [{"staged": b["ops"][0]["staged"],
                                           "target": {"root": "data", "path": "../victim/file.txt"}}]},
                 id="target-outside"),
    pytest.param(lambda b: {**b, "ops": [{"staged": {"root": "data", "path": "../victim/file.txt"},
                                           "target": b["ops"][0]["target"]}]}, id="staged-outside"),
    pytest.param(lambda b: {**b, "ops": [{"staged": b["ops"][0]["staged"],
                                           "target": {"root": "data", "path": "/tmp/x"}}]}, id="absolute"),
    pytest.param(lambda b: {**b, "ops": {"not": "a list"}}, id="ops-not-a-list"),
    pytest.param(lambda b: {**b, "ops": [["a", "b"]]}, id="op-not-a-dict"),
    pytest.param(lambda b: {**b, "ops": [{"staged": "x"}]}, id="entry-wrong-shape"),
    pytest.param(lambda b: [b], id="not-an-object"),
])
def test_recovery_refuses_a_hostile_journal_and_touches_nothing(tmp_path, edit):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file.txt").write_text("keep me")
    ds, contrib, _ = _hostile_journal(tmp_path, edit)
    before = tree_hashes(tmp_path, ignore=())
    res = _run_cli([str(contrib), "--data", str(ds), "--metadata", str(ds / "metadata")],
                   {CACHE_ENV: str(tmp_path / "c.sqlite")})
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"error: {apply_lib.journal_path(ds)}: ")
    assert "nothing was changed" in res.stderr and "Traceback" not in res.stderr
    after = tree_hashes(tmp_path, ignore=())
    assert {k: v for k, v in after.items() if "apply.lock" not in k and "c.sqlite" not in k} == {
        k: v for k, v in before.items() if "apply.lock" not in k and "c.sqlite" not in k}
    assert (victim / "file.txt").read_text() == "keep me"
