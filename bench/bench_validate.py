"""Validation benchmark: a generated 100,000-row COVID metadata sheet, ctcurate vs pandera.

Targets (issue 2): `ctcurate validate` of the sheet in under 20 s with peak memory under 1 GB
(100,000 rows; other sizes, e.g. `--rows 1000000`, report the same figures and ratios, no target).
Reference, measured in the same run on the same file: pandas `read_excel` + pandera's lazy
validation (`lazy=True`) of the same columns. Each side runs in its own child process so that
its peak RSS (`ru_maxrss`) is its own. Exit status 1 when a target is missed.

    python bench/bench_validate.py [--rows N] [--keep PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 20.0
TARGET_MB = 1024.0

HEADER = [
    "File name",
    "Patient ID",
    "Age",
    "Gender",
    "Location",
    "Medical history",
    "Time",
    "Severity",
    "Other diseases",
    "DOI",
    "Captions",
]
LOCATIONS = [
    "Wuhan, China",
    "Wuhan, China ",
    "Beijing, China",
    "Shanghai, China",
    "Hubei, China",
    "China",
    "a cruise ship \u201cDiamond Princess\u201d in Japan. ",
]
TIMES = ["day 6 after the onset of illness", "day 7 ", "10 days", 7, " On the day of admission", None]
SEVERITIES = ["severe", "severe ", "mild", "asymptomatic ", "critical", "same as above", None]
DOIS = [
    "10.1016/ S0140-6736(20)30154-9 ",
    "10.1136/bmj.m606",
    "10.1016/j.ijid.2020.02.050 ",
    "10.3348/kjr.2020.0112",
    "doi:10.1007/s11684-020-0757-x",
    None,
    None,
]


def generate(path: Path, rows: int, seed: int = 2020) -> None:
    """A sheet shaped like COVID-CT-MetaInfo.xlsx, with its real kinds of defects mixed in."""
    from openpyxl import Workbook

    rng = random.Random(seed)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("positive_captions")
    ws.append(HEADER)
    patient = 0
    for i in range(rows):
        if i % 4 == 0:
            patient += 1
            age: object = rng.choice([rng.randint(1, 90)] * 18 + ["40+", "Young Child"])
            gender = rng.choice(["M", "F", "M ", "F ", None])
        preprint = i % 3 != 2
        stem = (
            f"2020.0{1 + i % 3}.{10 + i % 18}.{20000000 + i}-p{i % 30}-{i % 200}"
            if preprint
            else f"paper{i}-p{i % 9}-{i}"
        )
        name = stem + (".png" if i % 50 else "")
        doi = None if preprint and i % 5 else rng.choice(DOIS)
        caption = f"['Figure {i % 7}. Chest CT of patient {patient}: ground-glass opacity in both lungs. ']"
        if i % 997 == 0:
            caption = f"['Figure {i % 7}. The patient's CT on admission']"
        if i % 10007 == 0:  # a caption pasted many times over (cell.too-long)
            caption = "['" + "Ground-glass opacity. " * 500 + "']"
        if i % 1013 == 0:  # a Cyrillic letter in a DOI (doi.lookalike, from Unicode's confusables)
            doi = "10.1016/\u0458.ijid.2020.02.050"
        patient_id = f"Patient {patient}" + (" " if i % 211 == 0 else "")
        if i % 401 == 0:  # the patient ID spelled another way (patient.id-form)
            patient_id = rng.choice([f"P-{patient}", f"patient {patient}", f"Patient 0{patient}"])
        ws.append(
            [
                name,
                patient_id,
                age,
                gender,
                rng.choice(LOCATIONS),
                "no history of hepatitis, tuberculosis or diabetes." if i % 2 else None,
                rng.choice(TIMES),
                rng.choice(SEVERITIES) if i % 4 else "severe",
                None if i % 13 else "pregnancy",
                doi,
                caption,
            ]
        )
    wb.save(path)


CTCURATE_CHILD = """
import json, resource, sys, time
t = time.perf_counter()
from ctcurate.validation.checks import validate
result = validate(metadata=sys.argv[1], images=None, splits=None)
elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": elapsed, "peak_mb": peak, "findings": len(result.findings),
                  "rows": sum(result.summary["rows"].values())}))
"""

PANDERA_CHILD = """
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
t = time.perf_counter()
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
df = pd.read_excel(sys.argv[1], engine="openpyxl", dtype=object)
text = lambda **kw: pa.Column(object, nullable=True, **kw)
schema = pa.DataFrameSchema({
    "File name": pa.Column(object, [pa.Check.str_matches(r"^\\S.*\\.(png|jpg)$")], nullable=False),
    "Patient ID": pa.Column(object, [pa.Check.str_matches(r"^\\S(.*\\S)?$")], nullable=False),
    "Age": pa.Column(object, [pa.Check(lambda s: s.map(lambda v: isinstance(v, int) and 0 <= v <= 120),
                                         element_wise=False)], nullable=True),
    "Gender": pa.Column(object, [pa.Check.isin(["M", "F"])], nullable=True),
    "Location": text(checks=[pa.Check.str_matches(r"^\\S(.*\\S)?$")]),
    "Medical history": text(),
    "Time": text(),
    "Severity": text(checks=[pa.Check(lambda s: s.astype(str).str.strip().str.lower() != "same as above")]),
    "Other diseases": text(),
    "DOI": text(checks=[pa.Check.str_matches(r"^10\\.\\d{4,9}/\\S+$")]),
    "Captions": text(checks=[pa.Check.str_startswith("[")]),
}, strict=True)
try:
    schema.validate(df, lazy=True)
    failures = 0
except SchemaErrors as exc:
    failures = len(exc.failure_cases)
elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": elapsed, "peak_mb": peak, "findings": failures, "rows": len(df)}))
"""


def measure(code: str, sheet: Path) -> dict[str, float]:
    # Sheet only: `make bench` exports CTCURATE_DATA, which would pull the real images in.
    env = {k: v for k, v in os.environ.items() if k != "CTCURATE_DATA"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(sheet)], capture_output=True, text=True, cwd=ROOT, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "child failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, default=None, help="keep the generated sheet here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sheet = args.keep or Path(tmp) / "COVID-CT-MetaInfo.xlsx"
        t = time.perf_counter()
        generate(sheet, args.rows)
        print(f"generated {args.rows} rows ({sheet.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s")
        ours = measure(CTCURATE_CHILD, sheet)
        try:
            ref: dict[str, float] | None = measure(PANDERA_CHILD, sheet)
        except (RuntimeError, json.JSONDecodeError) as exc:
            ref = None
            print(f"pandera reference could not run ({exc}); install it with: pip install -r requirements/test.txt")
    print(
        f"ctcurate validate: {ours['seconds']:6.2f} s  peak {ours['peak_mb']:7.1f} MB  "
        f"{int(ours['findings'])} findings on {int(ours['rows'])} rows  "
        f"(target < {TARGET_SECONDS:.0f} s, < {TARGET_MB:.0f} MB)"
    )
    if ref is not None:
        print(
            f"pandera lazy     : {ref['seconds']:6.2f} s  peak {ref['peak_mb']:7.1f} MB  "
            f"{int(ref['findings'])} failure cases on {int(ref['rows'])} rows (read_excel + validate)"
        )
        print(
            f"ratio ctcurate/pandera: time {ours['seconds'] / ref['seconds']:.2f}x, "
            f"memory {ours['peak_mb'] / ref['peak_mb']:.2f}x"
        )
    if args.rows != 100_000:
        print("(the targets are for 100,000 rows)")
        return 0
    missed = []
    if ours["seconds"] >= TARGET_SECONDS:
        missed.append(f"time {ours['seconds']:.1f} s >= {TARGET_SECONDS:.0f} s")
    if ours["peak_mb"] >= TARGET_MB:
        missed.append(f"memory {ours['peak_mb']:.0f} MB >= {TARGET_MB:.0f} MB")
    if missed:
        print("TARGET MISSED: " + "; ".join(missed))
        return 1
    print("targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
