"""check-leakage on a Dask cluster against the local process pool, same cores, measured in one run.

A synthetic collection is built from the real images (under ~/.cache/ctcurate-bench-cluster, never
in the repository, and reused by later runs): each image is a 4x4 mosaic of crops of real CT
images (random image, place, scale, turn or mirror), and 1% of them get a transformed copy
(resized to 80%, JPEG quality 60) under a unique name, which the run must find. For each size
(default 10,000 and 50,000 images) and a cold cache:

    local:   `check_leakage(jobs=C)`, the default process pool of C processes;
    cluster: `check_leakage(scheduler=...)` on a `LocalCluster` of C single-thread worker processes
             (the scheduler in this driver process, the client in its own process);
    warm:    the cluster run again over the unchanged collection (it must submit no task).

    reference: with `--reference CHECKOUT` (e.g. /work/main), the local run of that checkout's code
             at the sizes up to `--reference-max`, the named reference for the client's memory.

Each client runs in its own process and reports its wall time, the time at which hashing ended,
its own peak memory (ru_maxrss: the client only, not its workers) and that peak as it stood when
the keypoint candidate search began (everything but that search, whose memory is
keypoints.py's, and the keypoint pairs' verification), and what it held (resident) then: what it keeps per image. Printed: wall,
images/s, client peak memory, the cluster/local and reference/this ratios, a linear fit of the
client's memory and of the hashing rate, and their extrapolation to 1,000,000 images on N machines.
The client's memory at 1,000,000 images is projected as what it holds per image (a line through
the sizes) plus the largest working set above it at the largest size (the keypoint search's,
bounded by its partitions of `keypoints.PART` descriptors, said when reached; a straight line
through the peaks is printed too, an overestimate once the working sets stop growing). Exits 1
when the reports differ (the reference's is compared and said, not required: it is another version
of the code), or the projected client memory at 1,000,000 images is over 4 GB.

Usage: python bench/bench_cluster.py [--sizes 10000,50000] [--cores 2] [--root ~/.cache/ctcurate-bench-cluster]
                                     [--reference /work/main] [--reference-max 10000] [--runs local,cluster,warm]
                                     [--reuse 1000,10000]   (sizes measured by an earlier run, for the curve)
                                     [--local-max 10000] [--warm-max 50000]   (largest sizes the local pool, the warm re-run run at)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# the code a client runs: this checkout, or the reference checkout (`--reference`, e.g. main)
CODE_ENV = "CTCURATE_BENCH_CODE"
sys.path.insert(0, os.environ.get(CODE_ENV, str(REPO)))

DATA = Path(os.environ.get("CTCURATE_DATA", REPO.parent / "shared" / "covid-ct"))
SIDE = 320  # of a synthetic image
GRID = 4  # tiles per side
TILE = SIDE // GRID
SOURCE = 256  # the real images are reduced to this square first
COPY_SHARE = 0.01
MEMORY_TARGET_MIB = 4096
SEARCH_1M_S = 206.0  # pair search over 1,000,000 hashes on one core (bench_leakage.py, (5))


# --- the synthetic collection ---------------------------------------------------------------

_sources: list[object] = []


def _load_sources() -> None:
    from PIL import Image

    from ctcurate.core.layout import list_images

    for files in list_images(DATA).values():
        for p in files:
            with Image.open(p) as im:
                _sources.append(im.convert("L").resize((SOURCE, SOURCE)))


def _mosaic(seed: int) -> object:
    """A 4x4 mosaic of tiles, each a crop of a random real image at a random place and scale,
    randomly turned or mirrored: no two mosaics share a picture (nor enough keypoints on one
    transform to be a keypoint candidate), so only the planted copies are duplicates, and the
    verification work grows with the collection, not with its square."""
    from PIL import Image

    rng = random.Random(seed)
    out = Image.new("L", (SIDE, SIDE))
    for k in range(GRID * GRID):
        src = _sources[rng.randrange(len(_sources))]
        side = rng.randrange(TILE // 2, 2 * TILE)
        x, y = rng.randrange(SOURCE - side), rng.randrange(SOURCE - side)
        tile = src.crop((x, y, x + side, y + side)).resize((TILE, TILE)).transpose(rng.randrange(7))  # type: ignore[attr-defined]
        out.paste(tile, ((k % GRID) * TILE, (k // GRID) * TILE))
    return out


def _write(args: tuple[Path, int, bool]) -> None:
    folder, index, with_copy = args
    if (folder / f"m{index:07d}.png").is_file() and (not with_copy or (folder / f"m{index:07d}-copy.jpg").is_file()):
        return  # an interrupted build goes on where it stopped
    im = _mosaic(index)
    im.save(folder / f"m{index:07d}.png", compress_level=1)  # type: ignore[attr-defined]  # fast: the build was the bottleneck
    if with_copy:
        side = int(SIDE * 0.8)
        im.resize((side, side)).save(folder / f"m{index:07d}-copy.jpg", quality=60)  # type: ignore[attr-defined]


def build_collection(root: Path, n: int, cores: int) -> Path:
    """`root/<n>/Images-processed/{CT_COVID,CT_NonCOVID}` with n images (copies included); reused."""
    from multiprocessing import get_context

    base = root / f"v2-{n}"  # v2: 4x4 mosaics of crops (v1, 2x2 mosaics of whole images, shared tiles)
    done = base / "complete"
    if done.is_file():
        return base
    rng = random.Random(n)
    n_copies = int(n * COPY_SHARE)
    copied = set(rng.sample(range(n - n_copies), n_copies))
    jobs = []
    for index in range(n - n_copies):
        folder = base / "Images-processed" / ("CT_COVID" if index % 2 else "CT_NonCOVID")
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder, index, index in copied))
    with get_context("fork").Pool(cores, initializer=_load_sources) as pool:
        for _ in pool.imap_unordered(_write, jobs, chunksize=64):
            pass
    done.write_text(json.dumps({"images": n, "copies": n_copies}))
    return base


# --- one client run, in its own process -----------------------------------------------------


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    """The client's resident memory now (what it still holds, against its peak so far)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def client_main(data: Path, cache: Path, jobs: int, scheduler: str | None, report: Path) -> None:
    from ctcurate.leakage import keypoints, pipeline
    from ctcurate.leakage.pipeline import check_leakage
    from ctcurate.leakage.report import to_json

    before_keypoints = [0.0]
    held_at_keypoints = [0.0]  # resident when the keypoint search begins: what the run holds per image
    descriptors = [0]
    keypoint_search = pipeline._searched
    tables_for = keypoints.tables_for

    def counted_tables_for(total: int) -> int:
        descriptors[0] = max(descriptors[0], total)
        return tables_for(total)

    def measured_keypoint_search(search: object) -> object:
        before_keypoints[0] = max(before_keypoints[0], _peak_mib())
        held_at_keypoints[0] = max(held_at_keypoints[0], _rss_mib())
        # said at once: a client that then runs out of its memory limit still reports it
        print(f"before the keypoint stage: {before_keypoints[0]:.0f} MiB", file=sys.stderr, flush=True)
        return keypoint_search(search)  # type: ignore[arg-type]

    # the machine is shared: a client past this much address space fails alone (MemoryError)
    limit = int(float(os.environ.get("CTCURATE_BENCH_CLIENT_GIB", "12")) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    pipeline._searched = measured_keypoint_search  # type: ignore[assignment]
    keypoints.tables_for = counted_tables_for  # type: ignore[assignment]
    start = time.perf_counter()
    hashed_at = [0.0]

    def progress(step: str, done: int, total: int) -> None:
        if step == "hashing" and done == total:
            hashed_at[0] = time.perf_counter() - start

    result = check_leakage(data, cache_path=cache, jobs=jobs, scheduler=scheduler, progress=progress)
    wall = time.perf_counter() - start
    report.write_text(to_json(result))
    print(json.dumps({"wall": wall, "hashed_at": hashed_at[0], "peak_mib": _peak_mib(), "before_keypoints_mib": before_keypoints[0],
                      "held_at_keypoints_mib": held_at_keypoints[0], "descriptors": descriptors[0], "part": keypoints.PART,
                      "pairs": len(result.pairs)}))


def run_client(data: Path, cache: Path, jobs: int, scheduler: str | None, report: Path, code: Path | None = None) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--client", str(data), str(cache), str(jobs), scheduler or "", str(report)]
    env = {**os.environ, CODE_ENV: str(code)} if code else None
    out = subprocess.run(cmd, cwd=code or REPO, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:  # reported, not raised: at 50,000 images the keypoint search can pass the memory cap
        said = re.findall(r"before the keypoint stage: (\d+) MiB", out.stderr)
        reason = out.stderr.strip().splitlines()[-1][:200] if out.stderr.strip() else f"exit {out.returncode}"
        return {"failed": reason, "before_keypoints_mib": float(said[-1]) if said else float("nan")}
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --- the comparison -------------------------------------------------------------------------


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line y = a + b x (two points: through both)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def measure_size(
    root: Path, n: int, cores: int, cluster_address: str, reference: Path | None, runs_wanted: set[str], local_max: int, warm_max: int
) -> dict[str, object]:
    t = time.perf_counter()
    data = build_collection(root, n, cores)
    built = time.perf_counter() - t
    work = root / f"run-{n}"
    work.mkdir(parents=True, exist_ok=True)
    for f in work.glob("*"):
        f.unlink()
    runs = {}
    if reference is not None:
        runs["reference"] = run_client(data, work / "reference.sqlite", cores, None, work / "reference.json", reference)
    if "local" in runs_wanted and n <= local_max:
        runs["local"] = run_client(data, work / "local.sqlite", cores, None, work / "local.json")
    runs["cluster"] = run_client(data, work / "cluster.sqlite", cores, cluster_address, work / "cluster.json")
    if "warm" in runs_wanted and n <= warm_max and "failed" not in runs["cluster"]:
        runs["warm"] = run_client(data, work / "cluster.sqlite", cores, cluster_address, work / "warm.json")
    if any("failed" in m for m in runs.values()):
        return {"n": n, "built_s": built, **runs, "same_report": False, "same_as_reference": None}
    same = len({(work / f"{name}.json").read_text() for name in runs if name != "reference"}) == 1
    # the reference is another version of the code: its report is compared, not required equal
    same_as_reference = (work / "reference.json").read_text() == (work / "cluster.json").read_text() if reference else None
    result = {"n": n, "built_s": built, **runs, "same_report": same, "same_as_reference": same_as_reference}
    (work / "result.json").write_text(json.dumps(result))  # for `--reuse` by a later run
    return result


def print_size(r: dict) -> None:  # type: ignore[type-arg]
    n = r["n"]
    print(f"\n{n:,} images (collection built or reused in {r['built_s']:.0f} s); reports identical: {r['same_report']}"
          + ("" if r["same_as_reference"] is None else f"; the same as the reference's: {r['same_as_reference']}"))
    print(f"{'':<10} {'wall s':>8} {'img/s':>8} {'hashing s':>10} {'hash img/s':>10} {'client MiB':>11} {'before kp':>10} {'held at kp':>10} "
          f"{'pairs':>6}")
    for name in ("reference", "local", "cluster", "warm"):
        if name not in r:
            continue
        m = r[name]
        if "failed" in m:
            print(f"{name:<10} failed after {m['before_keypoints_mib']:.0f} MiB before the keypoint stage: {m['failed']}")
            continue
        hash_rate = n / m["hashed_at"] if m["hashed_at"] else float("nan")
        print(f"{name:<10} {m['wall']:>8.1f} {n / m['wall']:>8.0f} {m['hashed_at']:>10.1f} {hash_rate:>10.0f} {m['peak_mib']:>11.0f} "
              f"{m.get('before_keypoints_mib', 0):>10.0f} {m.get('held_at_keypoints_mib', 0):>10.0f} {m['pairs']:>6}")
    if "local" not in r or any("failed" in r[name] for name in ("local", "cluster")):
        return
    lo, cl = r["local"], r["cluster"]
    print(f"cluster/local: wall {cl['wall'] / lo['wall']:.2f}x, hashing {cl['hashed_at'] / lo['hashed_at']:.2f}x, "
          f"client memory {cl['peak_mib'] / lo['peak_mib']:.2f}x" + (f"; warm re-run on the cluster {r['warm']['wall']:.1f} s" if "warm" in r else ""))
    if "reference" in r:
        ref = r["reference"]
        print(f"reference/this (local pool): client memory {ref['peak_mib'] / lo['peak_mib']:.2f}x "
              f"({ref['peak_mib']:.0f} / {lo['peak_mib']:.0f} MiB), wall {ref['wall'] / lo['wall']:.2f}x")


def project(results: list[dict], cores: int) -> bool:  # type: ignore[type-arg]
    ns = [float(r["n"]) for r in results]
    a0, b0 = fit(ns, [r["cluster"]["before_keypoints_mib"] for r in results])
    print(f"\nclient peak before the keypoint stage (hashing, hash candidates, their verification), linear fit: "
          f"{a0:.0f} MiB + {b0 * 1024:.2f} KiB per image -> {a0 + b0 * 1e6:,.0f} MiB at 1,000,000 images")
    a, b = fit(ns, [r["cluster"]["peak_mib"] for r in results])
    mem_1m = bounded_projection(results)
    with_ref = [r for r in results if "reference" in r]
    if len(with_ref) >= 2:
        ra, rb = fit([float(r["n"]) for r in with_ref], [r["reference"]["peak_mib"] for r in with_ref])
        la, lb = fit([float(r["n"]) for r in with_ref], [r["local"]["peak_mib"] for r in with_ref])
        print(f"client peak per image, local pool, reference / this: {rb * 1024:.2f} / {lb * 1024:.2f} KiB "
              f"({rb / lb if lb > 0 else float('inf'):.1f}x); at 1,000,000 images {ra + rb * 1e6:,.0f} / {la + lb * 1e6:,.0f} MiB")
    rate = sum(r["n"] / r["cluster"]["hashed_at"] for r in results) / len(results) / cores  # images/s per core
    tail = [(r["cluster"]["wall"] - r["cluster"]["hashed_at"]) / r["n"] for r in results]  # search + verify, s per image
    print(f"client peak memory (all stages), linear fit: {a:.0f} MiB + {b * 1024:.2f} KiB per image -> {a + b * 1e6:,.0f} MiB at 1,000,000 "
          "images (a line through working sets that stop growing: an overestimate once they have)")
    print(f"client peak memory at 1,000,000 images, held + working set: {mem_1m:,.0f} MiB "
          f"(target < {MEMORY_TARGET_MIB} MiB: {'PASS' if mem_1m < MEMORY_TARGET_MIB else 'MISS'})")
    print(f"hashing on the cluster: {rate:.0f} images/s per core (this machine, loaded); "
          f"search + verification after hashing: {1000 * max(tail):.1f} ms per image on {cores} cores")
    print("projected 1,000,000-image cold run, machines of 16 cores at this per-core rate (hashing scales with cores; "
          f"the client's pair search, {SEARCH_1M_S:.0f} s at 1M in bench_leakage, does not):")
    for machines in (1, 4, 16, 64):
        c = 16 * machines
        hashing = 1e6 / (rate * c)
        verify = max(tail) * 1e6 * cores / c
        print(f"    {machines:>3} machine(s), {c:>5} cores: hashing {hashing / 60:6.1f} min + verification {verify / 60:6.1f} min "
              f"+ search {SEARCH_1M_S / 60:.1f} min = {(hashing + verify + SEARCH_1M_S) / 60:6.1f} min")
    return mem_1m < MEMORY_TARGET_MIB


def bounded_projection(results: list[dict]) -> float:  # type: ignore[type-arg]
    """The client's peak at 1,000,000 images as what it holds per image (resident at the start of the
    keypoint stage, a line through the sizes) plus the largest working set above that at the largest
    size: the keypoint search's (its partitions stop at `keypoints.PART` descriptors, said below if
    reached) or an earlier stage's (chunks of pairs). A working set still growing at the largest size
    is underestimated: said."""
    rs = [r for r in results if r["cluster"].get("held_at_keypoints_mib")]
    if len(rs) < 2:
        return float("inf")
    ha, hb = fit([float(r["n"]) for r in rs], [r["cluster"]["held_at_keypoints_mib"] for r in rs])
    top = max(rs, key=lambda r: r["n"])["cluster"]
    search_set = top["peak_mib"] - top["held_at_keypoints_mib"]
    earlier_set = top["before_keypoints_mib"] - top["held_at_keypoints_mib"]
    n_top, part = max(r["n"] for r in rs), top["part"]

    def per_partition(total: float) -> float:
        return total / max(1, math.ceil(total / part))

    at_top, at_1m = per_partition(top["descriptors"]), per_partition(top["descriptors"] / n_top * 1e6)
    print(f"held at the keypoint stage, linear fit: {ha:.0f} MiB + {hb * 1024:.2f} KiB per image -> {ha + hb * 1e6:,.0f} MiB at 1,000,000; "
          f"working set above it at {n_top:,} images: keypoint search {search_set:,.0f} MiB, earlier stages {earlier_set:,.0f} MiB; "
          f"descriptors per sort partition {at_top / 1e6:.1f} M there, {at_1m / 1e6:.1f} M at 1,000,000 (PART {part / 1e6:.1f} M: "
          f"{'the search is at its bound' if at_top >= 0.9 * at_1m else 'the search is NOT at its bound yet: underestimated'})")
    return ha + hb * 1e6 + max(search_set, earlier_set)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--root", type=Path, default=Path.home() / ".cache" / "ctcurate-bench-cluster")
    ap.add_argument("--reference", type=Path, help="checkout whose code is the reference (its local run), e.g. /work/main")
    ap.add_argument("--reference-max", type=int, default=10000, help="largest size the reference runs at")
    ap.add_argument("--runs", default="local,cluster,warm", help="which of local, cluster (always), warm to run")
    ap.add_argument("--local-max", type=int, default=0, help="largest size the local pool runs at (0: every size)")
    ap.add_argument("--warm-max", type=int, default=0, help="largest size the warm re-run runs at (0: every size)")
    ap.add_argument("--reuse", default="", help="sizes whose results a previous run stored, for the curve (e.g. 1000,10000)")
    args = ap.parse_args()
    if not (DATA / "Images-processed").is_dir():
        print(f"no real data at {DATA} (set CTCURATE_DATA)")
        return 1
    from distributed import LocalCluster

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (shared machines make timings noisy); "
          f"local pool of {args.cores} processes vs LocalCluster of {args.cores} single-thread workers")
    results = [json.loads((args.root / f"run-{n}" / "result.json").read_text()) for n in args.reuse.split(",") if n]
    for r in results:
        print_size(r)
    ok, fits = True, False
    os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")  # its workers as docs/cluster.md starts them, like the local pool's
    with LocalCluster(n_workers=args.cores, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR) as cluster:
        for n in (int(s) for s in args.sizes.split(",")):
            r = measure_size(args.root, n, args.cores, cluster.scheduler_address, args.reference if n <= args.reference_max else None,
                             set(args.runs.split(",")), args.local_max or n, args.warm_max or n)
            print_size(r)
            ok &= bool(r["same_report"])
            if "failed" in r["cluster"]:
                continue
            results.append(r)
            if len(results) >= 2:  # the curve so far: a later, larger size may not fit the time
                fits = project(results, args.cores)
    return 0 if ok and len(results) >= 2 and fits else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        d, c, j, s, rep = sys.argv[2:7]
        client_main(Path(d), Path(c), int(j), s or None, Path(rep))
    else:
        sys.exit(main())
