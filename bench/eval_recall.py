"""Recall and precision of `check_leakage` on transformed copies of real images, tuning set beside held-out.

Builds two datasets with tests/transformed_copies.py (seed 1 = the tuning set, seed 2 = held-out;
the two share no patient and no source figure), runs the library's `check_leakage` on each (cold
cache) and prints recall per transform and per combination size, and precision, side by side.
Details (which pairs were missed, which reported pairs are wrong) are printed for the tuning set
only: looking at the held-out set's misses would make it a second tuning set.
Then the real images: `check_leakage` on the 746 real images against tests/data/real_true_pairs.json
(the eye-checked true duplicates), naming the true pairs it misses and the pairs it reports wrongly.
Exits 1 when held-out recall < --min-recall (0.95) or held-out precision < --min-precision (0.99),
or when a real true pair is missed or a real pair outside the list is reported.

To measure another checkout's pipeline: PYTHONPATH=/path/to/checkout python bench/eval_recall.py
Usage: python bench/eval_recall.py [--size bench|medium|small] [--seeds 1 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the generator; ctcurate itself comes from the environment

import transformed_copies as tc

DATA = Path(os.environ.get("CTCURATE_DATA", REPO.parent / "shared" / "covid-ct"))
SINGLE = "single"


def measure(seed: int, size: str, work: Path) -> tuple[tc.Truth, tc.Score, float]:
    """Build the seed's set, run check_leakage on it with a cold cache; truth, score, seconds."""
    from ctcurate.leakage.pipeline import check_leakage

    root = work / f"seed{seed}-{size}"
    truth = tc.build(root, DATA, seed, size)
    start = time.perf_counter()
    report = check_leakage(root, cache_path=work / f"cache-seed{seed}.sqlite")
    seconds = time.perf_counter() - start
    return truth, tc.score(truth, [(p.a, p.b) for p in report.pairs]), seconds


def _rows(score: tc.Score) -> dict[str, tuple[int, int]]:
    """found/total per category, plus all single transforms together and everything."""
    rows = {c: (score.found.get(c, 0), score.total.get(c, 0)) for c in tc.CATEGORIES}
    singles = [rows[k] for k in tc.KINDS]
    rows[SINGLE] = (sum(f for f, _ in singles), sum(t for _, t in singles))
    rows["all"] = (sum(score.found.values()), sum(score.total.values()))
    return rows


def _cell(found: int, total: int) -> str:
    return f"{found / total:6.3f} ({found:>3}/{total:<3})" if total else f"{'-':>16}"


def print_table(seeds: list[int], scores: list[tc.Score], seconds: list[float]) -> None:
    names = [f"seed {s} ({'tuning' if s == seeds[0] else 'held-out'})" for s in seeds]
    print(f"{'recall':<12}" + "".join(f" | {n:<18}" for n in names))
    rows = [_rows(s) for s in scores]
    for category in (*tc.KINDS, SINGLE, *tc.COMBOS, "all"):
        print(f"{category:<12}" + "".join(f" | {_cell(*r[category]):<18}" for r in rows))
    print(f"{'precision':<12}" + "".join(f" | {_cell(s.reported - len(s.false_pairs), s.reported):<18}" for s in scores))
    print(f"{'seconds':<12}" + "".join(f" | {t:<18.1f}" for t in seconds))


def print_tuning_details(truth: tc.Truth, score: tc.Score) -> None:
    """The tuning set's missed pairs (with their transforms) and wrong pairs (with the real images)."""
    print(f"\ntuning set (seed {truth.seed}): {len(score.false_pairs)} wrong pairs")
    for a, b in score.false_pairs:
        print(f"  {a} ({truth.images[a]['role']}: {truth.images[a]['real']})  ~  {b} ({truth.images[b]['role']}: {truth.images[b]['real']})")
    print(f"tuning set (seed {truth.seed}): {len(score.missed)} missed pairs")
    steps_of = {frozenset((p["a"], p["b"])): p["steps"] for p in truth.pairs}
    for a, b in score.missed:
        steps = "; ".join(", ".join(f"{k}={v}" for k, v in s.items()) for s in steps_of[frozenset((a, b))])
        print(f"  {a} ~ {b}  [{truth.images[a]['real']}]  {steps}")


def real_data_check(work: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
    """check_leakage on the real images vs the eye-checked list: (missed, extra, number of true pairs)."""
    from ctcurate.leakage.pipeline import check_leakage

    listed = json.loads(tc.REAL_TRUE_PAIRS.read_text(encoding="utf-8"))["pairs"]
    truth = {(min(p["a"], p["b"]), max(p["a"], p["b"])) for p in listed}
    report = check_leakage(DATA, metadata_dir=REPO / "metadata", cache_path=work / "cache-real.sqlite")
    reported = {(min(p.a, p.b), max(p.a, p.b)) for p in report.pairs}
    return sorted(truth - reported), sorted(reported - truth), len(truth)


def print_real(missed: list[tuple[str, str]], extra: list[tuple[str, str]], total: int) -> None:
    print(f"\nreal images: {total - len(missed)}/{total} true pairs reported, {len(extra)} reported pairs outside the list")
    for a, b in missed:
        print(f"  missed: {a} ~ {b}")
    for a, b in extra:
        print(f"  not in the list: {a} ~ {b}")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--size", default="bench", choices=sorted(tc.SIZES))
    ap.add_argument("--seeds", type=int, nargs=2, default=[1, 2], metavar=("TUNING", "HELD_OUT"))
    ap.add_argument("--min-recall", type=float, default=0.95)
    ap.add_argument("--min-precision", type=float, default=0.99)
    ap.add_argument("--keep", type=Path, default=None, help="build the sets here and keep them")
    ap.add_argument("--skip-real", action="store_true", help="leave out the check on the real images")
    args = ap.parse_args()
    if not (DATA / tc.IMAGES_DIR).is_dir():
        print(f"no real data at {DATA} (set CTCURATE_DATA)")
        return 1
    from ctcurate.leakage import pipeline

    print(f"pipeline: {pipeline.__file__}; generator size {args.size!r}; real data {DATA}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = [measure(seed, args.size, work) for seed in args.seeds]
        real = None if args.skip_real else real_data_check(work)
    print_table(args.seeds, [r[1] for r in results], [r[2] for r in results])
    truth, tuning, _ = results[0]
    print_tuning_details(truth, tuning)
    if real is not None:
        print_real(*real)
    held = results[1][1]
    ok = held.recall >= args.min_recall and held.precision >= args.min_precision
    verdict = "PASS" if ok else "MISS"
    print(f"\nheld-out (seed {args.seeds[1]}): recall {held.recall:.3f} (target >= {args.min_recall}), "
          f"precision {held.precision:.3f} (target >= {args.min_precision}): {verdict}")
    real_ok = real is None or not (real[0] or real[1])
    if real is not None:
        print(f"real images: every true pair and nothing else: {'PASS' if real_ok else 'MISS'}")
    return 0 if ok and real_ok else 1


if __name__ == "__main__":
    sys.exit(main())
