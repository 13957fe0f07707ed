"""Hostile probe of every command (issue 12): damaged caches, zips, journals, sheets, images,
network answers from a loopback server, overwrites, and SIGKILLs of add-contribution at random times.

Each case runs the real CLI in a child process with a time limit and records: the exit code (and
whether it is one the case allows), a Python traceback on stderr, a hang (killed at the limit),
and files changed that must not change (byte-exact hashes of the protected folders before and
after; cache and lock files left out). Kills compare the dataset byte for byte with its state
before and after an uninterrupted run. Loopback only; a few minutes on two cores.

    python bench/probe_edges.py [--kills N] [--seed S] [--only GROUP] [--limit SECONDS]

Exit status 1 when any case has a traceback, a hang or a changed file.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from contribution_helpers import (
    make_synthetic_dataset,
    noise_png,
    write_contribution_sheet,
)

IGNORED = ("cache.sqlite", "apply.lock", ".ctcurate-apply.lock", "cache.sqlite-wal", "cache.sqlite-shm")


@dataclass
class Case:
    group: str
    name: str
    argv: list[str]
    allowed: tuple[int, ...]
    protect: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    limit: float = 60.0
    owner: str = "edges"  # the helper whose item the case belongs to


@dataclass
class Outcome:
    case: Case
    rc: int | None
    traceback: bool
    hang: bool
    changed: list[str]
    first_line: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.traceback or self.hang or self.changed) and self.rc in self.case.allowed


def tree(root: Path) -> dict[str, str]:
    out = {}
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or not p.is_file() or p.name.startswith(IGNORED) or ".damaged-" in p.name:
            continue
        out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_case(case: Case, env_base: dict[str, str]) -> Outcome:
    before = {str(p): tree(p) for p in case.protect}
    env = {**env_base, **case.env}
    proc = subprocess.Popen([sys.executable, "-m", "ctcurate.cli", *case.argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    hang = False
    started = time.monotonic()
    try:
        out, err = proc.communicate(timeout=case.limit)
    except subprocess.TimeoutExpired:
        hang = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    text = err.decode("utf-8", "replace")
    changed = [f"{p}:{k}" for p in case.protect for k in sorted(set(before[str(p)]) | set(tree(p)))
               if before[str(p)].get(k) != tree(p).get(k)]
    lines = [x for x in (text + out.decode("utf-8", "replace")).splitlines() if x.strip()]
    first = next((x for x in lines if x.startswith("error")), lines[-1] if lines else "")
    return Outcome(case, None if hang else proc.returncode, "Traceback (most recent call last)" in text, hang,
                   changed, first[:150], time.monotonic() - started)


# --- workspaces -----------------------------------------------------------------------------


def dataset(base: Path, name: str) -> Path:
    return make_synthetic_dataset(base / name)


def contribution(base: Path, name: str, seed: int = 9000, doi: str = "10.5555/probe") -> Path:
    folder = base / name
    for i, img in enumerate(["p%0.png", "p%1.png", "q.png"]):
        noise_png(folder / img, seed + i)
    write_contribution_sheet(folder / "sheet.csv", [
        {"File name": "p%0.png", "Label": "COVID", "Patient ID": "A", "DOI": doi, "Captions": "x"},
        {"File name": "p%1.png", "Label": "COVID", "Patient ID": "A", "DOI": doi, "Captions": "x"},
        {"File name": "q.png", "Label": "NonCOVID", "Patient ID": "B", "DOI": doi, "Captions": "y"},
    ])
    return folder


def zipped(folder: Path, target: Path, edit: Callable[[bytearray], None] | None = None,
           extra: list[tuple[zipfile.ZipInfo | str, bytes]] = ()) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
        for info, data in extra:
            zf.writestr(info, data)
    if edit is not None:
        data = bytearray(target.read_bytes())
        edit(data)
        target.write_bytes(bytes(data))
    return target


def add_args(contrib: Path, ds: Path, *more: str) -> list[str]:
    return ["add-contribution", str(contrib), "--data", str(ds), "--metadata", str(ds / "metadata"), *more]


def leak_args(ds: Path, *more: str) -> list[str]:
    return ["check-leakage", "--data", str(ds), "--metadata", str(ds / "metadata"), "--jobs", "1", *more]


def val_args(ds: Path, *more: str) -> list[str]:
    return ["validate", "--metadata", str(ds / "metadata"), "--images", str(ds), *more]


# --- case groups ----------------------------------------------------------------------------


def cache_cases(base: Path) -> list[Case]:
    cases = []
    warm = dataset(base, "cache-ds")
    cache = base / "warm.sqlite"
    subprocess.run([sys.executable, "-m", "ctcurate.cli", *leak_args(warm, "--cache", str(cache))], cwd=ROOT, check=False,
                   capture_output=True, timeout=300)
    damages: dict[str, Callable[[Path], None]] = {
        "fingerprint-meta-not-json": lambda p: _sql(p, "UPDATE leakage_fingerprint SET meta = 'not json {'"),
        "fingerprint-thumb-short": lambda p: _sql(p, "UPDATE leakage_fingerprint SET thumb = x'00'"),
        "fingerprint-meta-wrong-types": lambda p: _sql(p, "UPDATE leakage_fingerprint SET meta = '{\"width\": \"x\"}'"),
        "stat-sha-garbage": lambda p: _sql(p, "UPDATE leakage_stat SET sha256 = 'zz', size = 'big'"),
        "verdict-not-json": lambda p: _sql(p, "INSERT OR REPLACE INTO leakage_verdict VALUES ('a:b:1:4', 'not json {')"),
        "table-other-columns": lambda p: _sql(p, "DROP TABLE leakage_fingerprint; CREATE TABLE leakage_fingerprint (x)"),
        "file-garbage": lambda p: p.write_bytes(b"garbage" * 500),
        "file-truncated": lambda p: p.write_bytes(p.read_bytes()[:3000]),
        "file-zero-bytes": lambda p: p.write_bytes(b""),
        "file-header-then-noise": lambda p: p.write_bytes(p.read_bytes()[:100] + os.urandom(8000)),
    }
    for name, damage in damages.items():
        for command in ("check-leakage", "add-contribution"):
            c = base / f"{name}-{command}.sqlite"
            shutil.copyfile(cache, c)
            for suffix in ("-wal",):
                if cache.with_name(cache.name + suffix).exists():
                    shutil.copyfile(cache.with_name(cache.name + suffix), c.with_name(c.name + suffix))
            damage(c)
            ds = dataset(base, f"ds-{name}-{command}")
            if command == "check-leakage":
                cases.append(Case("cache", f"{name} / check-leakage", leak_args(ds, "--cache", str(c)), (0, 1), [ds]))
            else:
                contrib = contribution(base, f"c-{name}")
                cases.append(Case("cache", f"{name} / add-contribution --dry-run",
                                  add_args(contrib, ds, "--dry-run", "--cache", str(c)), (0, 1), [ds, contrib]))
    doi_cache = base / "doi.sqlite"
    for name, sql in {
        "doi-checked-at-not-iso": "UPDATE doi_answers SET checked_at = 'yesterday'",
        "doi-body-not-json": "UPDATE doi_answers SET body = 'not json {'",
        "doi-found-text": "UPDATE doi_answers SET found = 'maybe'",
    }.items():
        c = base / f"{name}.sqlite"
        con = sqlite3.connect(c)
        con.execute("CREATE TABLE doi_answers (doi TEXT NOT NULL, key TEXT NOT NULL, found INTEGER NOT NULL, "
                    "body TEXT NOT NULL, checked_at TEXT NOT NULL, PRIMARY KEY (doi, key))")
        con.execute("INSERT INTO doi_answers VALUES ('10.1136/bmj.m606', 'handle', 1, "
                    "'{\"responseCode\": 1}', '2026-11-30T10:00:00+00:00')")
        con.commit()
        con.execute(sql)
        con.commit()
        con.close()
        cases.append(Case("cache", f"{name} / doi resolve --offline",
                          ["doi", "resolve", "--offline", "--cache", str(c), "10.1136/bmj.m606"], (0, 1), [],
                          owner="metadoi"))
    doi_cache.write_bytes(b"garbage" * 100)
    cases.append(Case("cache", "doi-file-garbage / doi resolve --offline",
                      ["doi", "resolve", "--offline", "--cache", str(doi_cache), "10.1136/bmj.m606"], (0, 1), [],
                      owner="metadoi"))
    return cases


def _sql(path: Path, script: str) -> None:
    con = sqlite3.connect(path)
    con.executescript(script)
    con.commit()
    con.close()


def zip_cases(base: Path) -> list[Case]:
    cases = []
    src = contribution(base, "zip-src", seed=9100, doi="10.5555/zip")

    def flip_deflate(data: bytearray) -> None:
        start = data.find(b"PK\x03\x04")
        name_len = int.from_bytes(data[start + 26:start + 28], "little")
        body = start + 30 + name_len + int.from_bytes(data[start + 28:start + 30], "little")
        for k in range(body + 2, body + 30):
            data[k] ^= 0x5A

    link = zipfile.ZipInfo("evil-link.png")
    link.external_attr = (0o120777 << 16)
    fifo = zipfile.ZipInfo("fifo.png")
    fifo.external_attr = (0o010644 << 16)
    variants: dict[str, tuple[Callable[[bytearray], None] | None, list]] = {
        "corrupted-deflate": (flip_deflate, []),
        "truncated": (lambda d: d.__delitem__(slice(len(d) // 2, None)), []),
        "not-a-zip": (lambda d: d.__setitem__(slice(0, len(d)), b"hello"), []),
        "traversal": (None, [("../../escape.png", b"x")]),
        "absolute": (None, [("/tmp/escape.png", b"x")]),
        "symlink-member": (None, [(link, b"/etc/passwd")]),
        "fifo-member": (None, [(fifo, b"")]),
        "bomb-ratio": (None, [("bomb.png", b"\0" * (64 << 20))]),
        "encrypted-flag": (lambda d: _set_flag(d), []),
        "duplicate-names": (None, [("P%0.PNG", b"x")]),
    }
    for name, (edit, extra) in variants.items():
        ds = dataset(base, f"zip-ds-{name}")
        z = zipped(src, base / f"{name}.zip", edit, extra)
        cases.append(Case("zip", name, add_args(z, ds), (1, 2), [ds, base / "zip-src"]))
    return cases


def _set_flag(data: bytearray) -> None:
    start = data.find(b"PK\x03\x04")
    data[start + 6] |= 1
    cd = data.find(b"PK\x01\x02")
    data[cd + 8] |= 1


def journal_cases(base: Path) -> list[Case]:
    from ctcurate.contribution import apply as apply_lib

    cases = []
    edits: dict[str, Callable[[dict], object]] = {
        "staging-outside": lambda b: {**b, "staging": [{"root": "data", "path": "../../victim"}]},
        "staging-is-metadata-root": lambda b: {**b, "staging": [{"root": "metadata", "path": "."}]},
        "staging-is-images": lambda b: {**b, "staging": [{"root": "data", "path": "Images-processed"}]},
        "target-outside": lambda b: {**b, "ops": [{**b["ops"][0], "target": {"root": "data", "path": "../victim/f.txt"}}]},
        "staged-outside": lambda b: {**b, "ops": [{**b["ops"][0], "staged": {"root": "data", "path": "../victim/f.txt"}}]},
        "absolute-path": lambda b: {**b, "ops": [{**b["ops"][0], "target": {"root": "data", "path": "/tmp/x"}}]},
        "ops-not-list": lambda b: {**b, "ops": {"a": 1}},
        "op-not-dict": lambda b: {**b, "ops": [[1, 2]]},
        "entry-string": lambda b: {**b, "ops": [{"staged": "x", "target": "y"}]},
        "root-unknown": lambda b: {**b, "ops": [{**b["ops"][0], "target": {"root": "home", "path": "x"}}]},
        "version-3": lambda b: {**b, "version": 3},
        "top-level-list": lambda b: [b],
        "not-json": lambda b: "<<not json>>",
        "missing-keys": lambda b: {"version": 2},
    }
    for name, edit in edits.items():
        work = base / f"j-{name}"
        ds = dataset(work, "ds")
        victim = work / "victim"
        victim.mkdir()
        (victim / "f.txt").write_text("keep me")
        staging = ds / ".ctcurate" / "staging-x"
        (staging / "CT_COVID").mkdir(parents=True)
        (staging / "CT_COVID" / "new.png").write_bytes(b"staged")
        body = {"transaction": "x", "version": 2,
                "ops": [{"staged": {"root": "data", "path": ".ctcurate/staging-x/CT_COVID/new.png"},
                         "target": {"root": "data", "path": "Images-processed/CT_COVID/new.png"}}],
                "staging": [{"root": "data", "path": ".ctcurate/staging-x"}]}
        edited = edit(body)
        apply_lib.journal_path(ds).write_text(edited if isinstance(edited, str) else json.dumps(edited))
        contrib = contribution(work, "c", seed=9200)
        cases.append(Case("journal", name, add_args(contrib, ds), (2,), [work]))
    return cases


def sheet_cases(base: Path) -> list[Case]:
    cases = []
    password = ROOT / "tests" / "data" / "password-protected.xlsx"
    variants: dict[str, Callable[[Path], None]] = {
        "utf16-bom-csv": lambda m: _recode(m / "NonCOVID-CT-MetaInfo.csv", "utf-16"),
        "latin1-csv": lambda m: _recode(m / "NonCOVID-CT-MetaInfo.csv", "latin-1", "crawled_patient_0", "cr\u00e4wled"),
        "binary-csv": lambda m: (m / "NonCOVID-CT-MetaInfo.csv").write_bytes(os.urandom(2000)),
        "title-row-xlsx": lambda m: _title_row(m / "COVID-CT-MetaInfo.xlsx"),
        "password-xlsx": lambda m: shutil.copyfile(password, m / "COVID-CT-MetaInfo.xlsx"),
        "truncated-xlsx": lambda m: _truncate(m / "COVID-CT-MetaInfo.xlsx"),
        "zero-byte-xlsx": lambda m: (m / "COVID-CT-MetaInfo.xlsx").write_bytes(b""),
        "xlsx-is-a-folder": lambda m: _replace_by_folder(m / "COVID-CT-MetaInfo.xlsx"),
        "split-list-missing": lambda m: (m / "Data-split" / "COVID" / "valCT_COVID.txt").unlink(),
        "split-list-is-folder": lambda m: _replace_by_folder(m / "Data-split" / "COVID" / "trainCT_COVID.txt"),
        "split-list-latin1": lambda m: (m / "Data-split" / "NonCOVID" / "trainCT_NonCOVID.txt").write_bytes(b"0.jpg\nS\xe3o.png\n"),
        "split-entry-traversal": lambda m: (m / "Data-split" / "COVID" / "testCT_COVID.txt").write_text("../../../../etc/passwd\n"),
        "names-newline-rtl": lambda m: (m / "Data-split" / "COVID" / "testCT_COVID.txt").write_text("a\u202eb.png\n"),
    }
    for name, damage in variants.items():
        for command in ("validate", "check-leakage", "add-contribution"):
            ds = dataset(base, f"s-{name}-{command}")
            damage(ds / "metadata")
            if command == "validate":
                argv = val_args(ds)
            elif command == "check-leakage":
                argv = leak_args(ds, "--cache", str(base / f"s-{name}.sqlite"))
            else:
                argv = add_args(contribution(base, f"s-c-{name}", seed=9300), ds, "--dry-run")
            cases.append(Case("sheet", f"{name} / {command}", argv, (0, 1, 2), [ds]))
    # The contribution's own sheet, damaged.
    for name, damage in {
        "contrib-utf16": lambda c: _recode(c / "sheet.csv", "utf-16"),
        "contrib-binary": lambda c: (c / "sheet.csv").write_bytes(os.urandom(500)),
        "contrib-password": lambda c: (c / "sheet.csv").unlink() or shutil.copyfile(password, c / "sheet.xlsx"),
        "contrib-title-row": lambda c: (c / "sheet.csv").write_text("my contribution\n" + (c / "sheet.csv").read_text()),
    }.items():
        ds = dataset(base, f"cs-{name}")
        contrib = contribution(base, f"cs-c-{name}", seed=9400)
        damage(contrib)
        cases.append(Case("sheet", f"{name} / add-contribution", add_args(contrib, ds), (1, 2), [ds, contrib]))
    return cases


def _recode(path: Path, encoding: str, old: str = "", new: str = "") -> None:
    text = path.read_text(encoding="utf-8")
    path.write_bytes((text.replace(old, new) if old else text).encode(encoding))


def _title_row(path: Path) -> None:
    import openpyxl

    wb = openpyxl.load_workbook(path)
    wb.worksheets[0].insert_rows(1, 2)
    wb.worksheets[0]["A1"] = "COVID-CT metadata (exported)"
    wb.save(path)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _replace_by_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_text("x")


def image_cases(base: Path) -> list[Case]:
    cases = []
    variants: dict[str, Callable[[Path], None]] = {
        "truncated-png": lambda f: _truncate(next(f.glob("*.png"))),
        "zero-byte-png": lambda f: next(f.glob("*.png")).write_bytes(b""),
        "text-as-png": lambda f: next(f.glob("*.png")).write_text("hello"),
        "fifo": lambda f: os.mkfifo(f / "pipe.png"),
        "symlink-loop": lambda f: (f / "loop.png").symlink_to(f / "loop.png"),
        "dangling-link": lambda f: (f / "gone.png").symlink_to(f / "nothing.png"),
        "link-to-dev-zero": lambda f: (f / "zero.png").symlink_to("/dev/zero"),
        "link-to-etc-passwd": lambda f: (f / "passwd.png").symlink_to("/etc/passwd"),
        "empty-images-processed": lambda f: [p.unlink() for p in f.parent.rglob("*.*")],
        "newline-rtl-name": lambda f: shutil.copyfile(next(f.glob("*.png")), f / "odd\nname\u202e.png"),
        "pixel-bomb": lambda f: _bomb(f / "bomb.png"),
    }
    for name, damage in variants.items():
        for command in ("validate", "check-leakage"):
            ds = dataset(base, f"i-{name}-{command}")
            damage(ds / "Images-processed" / "CT_COVID")
            argv = val_args(ds) if command == "validate" else leak_args(ds, "--cache", str(base / f"i-{name}.sqlite"))
            cases.append(Case("image", f"{name} / {command}", argv, (1,), [ds]))
    ds = dataset(base, "i-contrib")
    contrib = contribution(base, "i-c", seed=9500)
    os.mkfifo(contrib / "pipe.png")
    (contrib / "loop.png").symlink_to(contrib / "loop.png")
    cases.append(Case("image", "fifo+loop in contribution / add-contribution", add_args(contrib, ds), (1, 2), [ds]))
    return cases


def _bomb(path: Path) -> None:
    from PIL import Image

    Image.new("1", (20000, 20000)).save(path)


def overwrite_cases(base: Path) -> list[Case]:
    cases = []
    filled = base / "filled.csv"
    filled.write_text("File name,Label\nmine.png,COVID\n")
    cases.append(Case("overwrite", "template over a filled sheet", ["add-contribution", "--template", str(filled)], (2,), [filled]))
    ds = dataset(base, "o-ds")
    other = base / "other-out"
    other.mkdir()
    (other / "COVID-CT-MetaInfo.xlsx").write_bytes(b"another dataset")
    cases.append(Case("overwrite", "validate --fix onto another dataset", val_args(ds, "--fix", str(other)), (2,), [other, ds]))
    cases.append(Case("overwrite", "validate --fix onto its input --force",
                      val_args(ds, "--fix", str(ds / "metadata"), "--force"), (2,), [ds]))
    cases.append(Case("overwrite", "check-leakage --fix-splits onto its input lists --force",
                      leak_args(ds, "--fix-splits", str(ds / "metadata" / "Data-split"), "--force",
                                "--cache", str(base / "o.sqlite")), (2,), [ds]))
    busy = base / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    cases.append(Case("overwrite", "check-leakage --fix-splits onto a non-empty folder",
                      leak_args(ds, "--fix-splits", str(busy), "--cache", str(base / "o.sqlite")), (2,), [busy, ds]))
    return cases


def benchmark_cases(base: Path) -> list[Case]:
    ds = dataset(base, "b-ds")
    splits = ds / "metadata" / "Data-split"
    (splits / "COVID" / "testCT_COVID.txt").write_text("../../../../../../etc/passwd\n")
    out = base / "b-out"
    return [Case("benchmark", "split entry ../../etc/passwd (--smoke)",
                 ["benchmark", "--data", str(ds), "--splits", str(splits), "--smoke", "--quiet", "--epochs", "1",
                  "--output", str(out), "--cache-dir", str(base / "b-cache")], (0, 1, 2), [ds], limit=300)]


# --- network: a loopback server ---------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "garbage"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        mode = type(self).mode
        if mode == "drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(5)
            except OSError:
                return
            return
        if mode == "rate-limit-day":
            self.send_response(200)
            self.send_header("X-Rate-Limit-Limit", "1")
            self.send_header("X-Rate-Limit-Interval", "86400s")
            self.send_header("Content-Type", "application/json")
            body = json.dumps({"responseCode": 1, "handle": "10.1136/bmj.m606", "message": {"title": ["t"]}}).encode()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        status, body = {
            "garbage": (200, b"\x00\xffnot json"),
            "html": (200, b"<html>maintenance</html>"),
            "500": (500, b"oops"),
            "json-wrong-shape": (200, b"[1, 2, 3]"),
            "huge-number": (200, b'{"responseCode": 1e999999}'),
            "redirect-loop": (302, b""),
        }[mode]
        self.send_response(status)
        if mode == "redirect-loop":
            self.send_header("Location", self.path)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def network_cases(base: Path) -> tuple[list[Case], list[http.server.ThreadingHTTPServer]]:
    cases, servers = [], []
    for mode in ("garbage", "html", "500", "json-wrong-shape", "huge-number", "redirect-loop", "drip", "rate-limit-day"):
        handler = type(f"H_{mode}", (_Handler,), {"mode": mode})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        env = {"CTCURATE_DOI_URL": url, "CTCURATE_CROSSREF_URL": url, "CTCURATE_BIORXIV_URL": url}
        cases.append(Case("network", f"{mode} / doi resolve",
                          ["doi", "resolve", "--cache", str(base / f"n-{mode}.sqlite"), "10.1136/bmj.m606",
                           "10.1101/2020.02.10.20021580"], (0, 1), [], env=env, limit=60, owner="metadoi"))
        if mode == "drip":  # the run's own budget, shorter than the default
            cases.append(Case("network", "drip / doi resolve --timeout 20",
                              ["doi", "resolve", "--timeout", "20", "--cache", str(base / "n-drip-t.sqlite"),
                               "10.1136/bmj.m606", "10.1101/2020.02.10.20021580"], (1,), [], env=env, limit=35,
                              owner="edges"))
        if mode in ("garbage", "500", "json-wrong-shape"):
            ds = dataset(base, f"n-ds-{mode}")
            cases.append(Case("network", f"{mode} / validate --online", val_args(ds, "--online"), (0, 1), [ds],
                              env={**env, "CTCURATE_CACHE": str(base / f"n-v-{mode}.sqlite")}, owner="metadoi"))
            contrib = contribution(base, f"n-c-{mode}", seed=9700)
            cases.append(Case("network", f"{mode} / add-contribution --online --dry-run",
                              add_args(contrib, ds, "--online", "--dry-run"), (0, 1), [ds, contrib],
                              env={**env, "CTCURATE_CACHE": str(base / f"n-a-{mode}.sqlite")}, owner="metadoi"))
    return cases, servers


# --- kills ----------------------------------------------------------------------------------


def kill_trials(base: Path, n: int, rng: random.Random, env_base: dict[str, str]) -> tuple[int, int, int, list[str]]:
    """(runs killed, ended before, ended after, problems): kill add-contribution at random times."""
    from ctcurate.contribution import apply as apply_lib
    from ctcurate.core.lock import locked

    pristine = dataset(base, "k-pristine")
    contrib = contribution(base, "k-c", seed=9600, doi="10.5555/kill")
    cache = base / "k-cache.sqlite"
    env = {**env_base, "CTCURATE_CACHE": str(cache)}
    done = base / "k-done"
    shutil.copytree(pristine, done)
    t = time.perf_counter()
    reference = subprocess.run([sys.executable, "-m", "ctcurate.cli", *add_args(contrib, done)], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300, check=False)
    full = time.perf_counter() - t
    if reference.returncode != 0:
        last = (reference.stderr.strip().splitlines() or reference.stdout.strip().splitlines() or [""])[-1]
        return 0, 0, 0, [f"the uninterrupted reference run failed (exit {reference.returncode}): {last[:200]}"]

    def norm(root: Path) -> dict[str, str]:
        state = tree(root)
        log = root / "metadata" / "contributions.jsonl"
        if log.exists():
            records = [json.loads(x) for x in log.read_text().splitlines()]
            state["metadata/contributions.jsonl"] = json.dumps(
                [{k: v for k, v in r.items() if k not in ("time", "transaction")} for r in records], sort_keys=True)
        return {k: v for k, v in state.items() if not k.startswith(".ctcurate")}

    before, after = norm(pristine), norm(done)
    counts = [0, 0, 0]
    problems = []
    for k in range(n):
        work = base / f"k{k}"
        shutil.copytree(pristine, work)
        proc = subprocess.Popen([sys.executable, "-m", "ctcurate.cli", *add_args(contrib, work)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.05, full * 1.1))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            counts[0] += 1
        proc.wait()
        with locked(apply_lib.lock_paths(work, work / "metadata")):
            apply_lib.recover(work, work / "metadata")
        state = norm(work)
        if state == before:
            counts[1] += 1
        elif state == after:
            counts[2] += 1
        else:
            problems.append(f"kill {k}: dataset is neither before nor after")
        shutil.rmtree(work)
    return counts[0], counts[1], counts[2], problems


# --- main -----------------------------------------------------------------------------------


def _use_checkout(root: Path) -> None:
    """Run (child processes) and import (journal paths, recovery) the ctcurate of `root`."""
    global ROOT
    ROOT = root
    sys.path.insert(0, str(root))


GROUPS: dict[str, Callable[[Path], list[Case]]] = {
    "cache": cache_cases, "zip": zip_cases, "journal": journal_cases, "sheet": sheet_cases,
    "image": image_cases, "overwrite": overwrite_cases, "benchmark": benchmark_cases,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--only", default=None, help="one group: " + ", ".join([*GROUPS, "network", "kill"]))
    parser.add_argument("--verbose", action="store_true", help="print every case, not only the failing ones")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose ctcurate is probed (default: this one)")
    args = parser.parse_args()
    _use_checkout(args.root.resolve())
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="ctcurate-probe-") as tmp:
        base = Path(tmp)
        env_base = {k: v for k, v in os.environ.items() if k not in ("CTCURATE_DATA", "CTCURATE_CACHE")}
        env_base.update({"CTCURATE_CACHE": str(base / "user-cache.sqlite"), "CTCURATE_DOI_URL": "http://127.0.0.1:9",
                         "CTCURATE_CROSSREF_URL": "http://127.0.0.1:9", "CTCURATE_BIORXIV_URL": "http://127.0.0.1:9"})
        outcomes: list[Outcome] = []
        servers: list[http.server.ThreadingHTTPServer] = []
        for group, build in GROUPS.items():
            if args.only in (None, group):
                (base / group).mkdir(parents=True)
                for case in build(base / group):
                    outcomes.append(run_case(case, env_base))
        if args.only in (None, "network"):
            (base / "network").mkdir()
            cases, servers = network_cases(base / "network")
            outcomes += [run_case(c, env_base) for c in cases]
        for server in servers:
            server.shutdown()
        kills = None
        if args.only in (None, "kill") and args.kills:
            (base / "kill").mkdir()
            kills = kill_trials(base / "kill", args.kills, rng, env_base)
    return report(outcomes, kills, args.verbose)


def report(outcomes: list[Outcome], kills: tuple[int, int, int, list[str]] | None, verbose: bool) -> int:
    print(f"{'group':10} {'cases':>5} {'tracebacks':>10} {'hangs':>5} {'files changed':>13} {'unexpected exit':>15}")
    bad = 0
    for group in dict.fromkeys(o.case.group for o in outcomes):
        mine = [o for o in outcomes if o.case.group == group]
        row = (len(mine), sum(o.traceback for o in mine), sum(o.hang for o in mine), sum(bool(o.changed) for o in mine),
               sum(o.rc not in o.case.allowed and not o.hang for o in mine))
        print(f"{group:10} {row[0]:>5} {row[1]:>10} {row[2]:>5} {row[3]:>13} {row[4]:>15}")
    if kills is not None:
        killed, before, after, problems = kills
        print(f"{'kill':10} {before + after + len(problems):>5} {'-':>10} {'-':>5} {len(problems):>13} "
              f"{'-':>15}   ({killed} killed mid-run; ended byte-exact before {before}, after {after})")
    total = outcomes
    print(f"{'all':10} {len(total):>5} {sum(o.traceback for o in total):>10} {sum(o.hang for o in total):>5} "
          f"{sum(bool(o.changed) for o in total):>13} {sum(o.rc not in o.case.allowed and not o.hang for o in total):>15}")
    for o in outcomes:
        if verbose or not o.ok:
            flags = ",".join(f for f, on in (("TRACEBACK", o.traceback), ("HANG", o.hang), ("CHANGED", bool(o.changed)),
                                             ("EXIT", o.rc not in o.case.allowed)) if on) or "ok"
            print(f"  [{flags}] ({o.case.owner}) {o.case.group}: {o.case.name}: rc={o.rc} {o.seconds:.1f} s {o.first_line!r}"
                  + (f" changed={o.changed[:3]}" if o.changed else ""))
            bad += (o.traceback or o.hang or bool(o.changed)) and o.case.owner == "edges"
    if kills is not None:
        for p in kills[3]:
            print(f"  [CHANGED] kill: {p}")
        bad += len(kills[3])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
