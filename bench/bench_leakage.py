"""check-leakage speed and memory, each figure beside its reference measured in the same run.

(1) whole-process `ctcurate check-leakage` on the real images, cold cache: wall time against
    cleanvision's exact + near duplicate check (the fastest peer; `pip install cleanvision`),
    target <= 1x; peak memory (summed over the process tree, sampled from /proc) against imagededup
    0.3.3 `PHash().find_duplicates(image_dir=...)`, target < 1x;
(2) the same with a warm cache: target < 1 s;
(3) fingerprint + keypoints (one process) in images/s against just decoding the same images with
    Pillow, reported;
(4) pair search over 200,000 synthetic hashes at the default threshold: < 30 s and < 2 GB;
(5) the same at 1,000,000 hashes, reported;
(6) keypoint candidate search + RANSAC over 50k / 100k / 200k images of synthetic descriptors
    (bench/synthetic_descriptors.py, 1 % planted copies): < 60 s, < 4 GB and the planted copies'
    recall >= 0.95 at 200k; at 50k beside the search before partitioning (MAIN_SEARCH_REF) over
    the same descriptors held as `Keypoints`;
(7) the same at 1,000,000 images: measured with --keypoints-1m (the descriptors are computed as
    they are read, never held), else projected from 50k-200k.

imagededup (it pulls torch) goes into a throwaway venv under ~/.cache/ctcurate-bench; it loads a
CNN checkpoint at import, so an offline machine gets a stand-in checkpoint with random weights
(PHash does not use it; the import cost stays). Exits 1 when a target is missed.
Usage: python bench/bench_leakage.py [--skip-imagededup] [--skip-1m] [--keypoints-1m] [--only-keypoint-search]
(--only-keypoint-search: sections 6-7 alone)
"""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATA = Path(os.environ.get("CTCURATE_DATA", REPO.parent / "shared" / "covid-ct"))
BENCH_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ctcurate-bench"
IDD_VENV = BENCH_HOME / "imagededup-venv"


def _tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants (KiB), read from /proc."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, str]:
    """Wall seconds, peak tree memory in MiB, exit code and stderr tail of one whole process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kib(proc.pid))
        time.sleep(0.01)
    wall = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr else ""
    return wall, peak / 1024, proc.returncode, err[-400:]


def ensure_imagededup() -> Path | None:
    py = IDD_VENV / "bin" / "python"
    if not py.exists():
        print(f"installing imagededup==0.3.3 into {IDD_VENV} (pulls torch; once) ...", flush=True)
        IDD_VENV.parent.mkdir(parents=True, exist_ok=True)
        if subprocess.run([sys.executable, "-m", "venv", str(IDD_VENV)]).returncode != 0:
            return None
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "imagededup==0.3.3"])
        if r.returncode != 0:
            return None
    torch_home = BENCH_HOME / "torch"
    ckpt = torch_home / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    env = dict(os.environ, TORCH_HOME=str(torch_home))
    probe = subprocess.run([str(py), "-c", "from imagededup.methods import PHash"], env=env, capture_output=True)
    if probe.returncode != 0 and not ckpt.exists():
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [str(py), "-c", "import torch, torchvision, sys; torch.save(torchvision.models.mobilenet_v3_small().state_dict(), sys.argv[1])", str(ckpt)],
            env=env,
            check=True,
        )
    return py


def row(name: str, value: float, unit: str, ref_name: str, ref: float | None, target: str, ok: bool | None) -> bool:
    ratio = f"{value / ref:.3f}x" if ref else "-"
    ref_txt = f"{ref:.2f} {unit}" if ref is not None else "n/a"
    verdict = "" if ok is None else ("PASS" if ok else "MISS")
    print(f"{name:<44} {value:>9.2f} {unit:<5} | {ref_name:<34} {ref_txt:>12} | ratio {ratio:>8} | target {target:<14} {verdict}")
    return ok is not False


def search_run(n: int) -> tuple[float, float, int]:
    """Time and peak memory (MiB) of the default pair search over n synthetic hashes, in its own process."""
    code = f"""
import numpy as np, resource, time, json
from ctcurate.leakage.search import pairs_within_any
from ctcurate.leakage.pipeline import DEFAULT_THRESHOLD
rng = np.random.default_rng(0)
n = {n}
h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) ^ (rng.integers(0, 2, n).astype(np.uint64) << np.uint64(63))
m = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
# 1% planted near copies (distance 0..12), some of them mirrored
k = n // 100
src = rng.choice(n, k, replace=False)
flips = np.zeros(k, dtype=np.uint64)
for b in range(13):
    flips ^= (rng.random(k) < 0.07).astype(np.uint64) << np.uint64(rng.integers(0, 64))
h[rng.choice(n, k, replace=False)] = h[src] ^ flips
t = time.perf_counter()
i, j, d = pairs_within_any(h, m, DEFAULT_THRESHOLD)
wall = time.perf_counter() - t
print(json.dumps({{"wall": wall, "pairs": int(len(i)), "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["wall"], r["peak_mib"], r["pairs"]


MAIN_SEARCH_REF = "218bc68"  # the keypoint search before it was partitioned (sort orders over every descriptor at once)


def keypoint_search_run(n: int, impl: str) -> dict[str, float]:
    """Wall, peak memory (MiB) and planted copies found by the keypoint candidate stage
    (correspondences, votes, RANSAC) over n images of synthetic ORB descriptors
    (bench/synthetic_descriptors.py: 160 per view, direct and mirrored, 1 % planted copies), in its
    own process. impl `new`: the search reading the descriptors as it goes (never held);
    `new-list` / `main-list`: this search / the one of MAIN_SEARCH_REF over the same descriptors
    held as a list of `Keypoints` (as the pipeline holds them), the list's memory in both."""
    code = f"""
import sys, numpy as np, resource, time, json, importlib.util
sys.path.insert(0, "bench")
from synthetic_descriptors import SyntheticDescriptors
from ctcurate.leakage import keypoints as K
n, impl = {n}, {impl!r}
src = SyntheticDescriptors(n)
if impl.endswith("-list"):
    pts = lambda v: src.points(v).astype(np.float16).tobytes()
    data = [K.Keypoints(320, 320, 1.0, pts(2 * i), src.descriptors(2 * i).tobytes(), pts(2 * i + 1), src.descriptors(2 * i + 1).tobytes()) for i in range(n)]
    mod = K
    if impl == "main-list":
        spec = importlib.util.spec_from_file_location("main_keypoints", sys.argv[1])
        mod = sys.modules["main_keypoints"] = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    run = lambda: mod.keypoint_candidates(data)
else:
    run = lambda: K.search(src, False)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
cands = run()
wall = time.perf_counter() - t
found = {{(min(c.a, c.b), max(c.a, c.b)) for c in cands}}
planted = src.planted()
print(json.dumps({{"wall": wall, "found": len(found & planted), "planted": len(planted), "extra": len(found - planted),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "base_mib": base,
                  "tables": K.tables_for(n * 320)}}))
"""
    with tempfile.TemporaryDirectory() as tmp:
        main_src = Path(tmp) / "main_keypoints.py"
        main_src.write_bytes(subprocess.run(["git", "show", f"{MAIN_SEARCH_REF}:ctcurate/leakage/keypoints.py"], cwd=REPO, capture_output=True, check=True).stdout)
        out = subprocess.run([sys.executable, "-c", code, str(main_src)], cwd=REPO, capture_output=True, text=True, check=True).stdout
    r: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    print(f"    {impl:<9} {n:>9,} images: {r['wall']:7.1f} s, peak {r['peak_mib']:6.0f} MiB, {r['found']}/{r['planted']} planted copies found "
          f"(recall {r['found'] / max(r['planted'], 1):.3f}), {r['extra']} other candidates" + (f", {r['tables']} sort orders" if impl != "main-list" else ""), flush=True)
    return r


def keypoint_searching(measure_1m: bool) -> bool:
    """(6) keypoint search + RANSAC, 50k / 100k / 200k synthetic images (beside the previous search
    at 50k, over the same descriptors), (7) 1,000,000 images: measured with --keypoints-1m, else projected."""
    ok = True
    new_list, main_list = keypoint_search_run(50_000, "new-list"), keypoint_search_run(50_000, "main-list")
    row("(6) keypoint search 50k (Keypoints list), wall", new_list["wall"], "s", f"search of {MAIN_SEARCH_REF}, same list", main_list["wall"], "reported", None)
    row("(6) keypoint search 50k (Keypoints list), mem", new_list["peak_mib"], "MiB", f"search of {MAIN_SEARCH_REF}, same list", main_list["peak_mib"], "reported", None)
    row("(6) keypoint search 50k, planted recall", new_list["found"] / new_list["planted"], "", f"search of {MAIN_SEARCH_REF}", main_list["found"] / main_list["planted"], "held", None)
    curve = [(n, keypoint_search_run(n, "new")) for n in (50_000, 100_000, 200_000)]
    last = curve[-1][1]
    ok &= row("(6) keypoint search+RANSAC 200k images", last["wall"], "s", "target", 60.0, "< 60 s", last["wall"] < 60)
    ok &= row("(6) keypoint search+RANSAC 200k, peak mem", last["peak_mib"], "MiB", "target", 4096.0, "< 4 GB", last["peak_mib"] < 4096)
    recalls = [r["found"] / r["planted"] for _, r in curve]
    ok &= row("(6) planted recall at 200k (vs at 50k)", recalls[-1], "", "recall at 50k", recalls[0], ">= 0.95", recalls[-1] >= 0.95)
    if measure_1m:
        r = keypoint_search_run(1_000_000, "new")
        row("(7) keypoint search 1M images, wall", r["wall"], "s", "(measured)", None, "-", None)
        row("(7) keypoint search 1M images, peak mem", r["peak_mib"], "MiB", "(measured)", None, "-", None)
        return ok
    # wall ~ descriptors x sort orders (partitions of PART are read in turn); memory is bounded by PART
    from ctcurate.leakage.keypoints import tables_for

    per = (last["wall"] - curve[0][1]["wall"]) / (200_000 * last["tables"] - 50_000 * curve[0][1]["tables"])
    work_1m = 1_000_000 * tables_for(1_000_000 * 160 * 2)
    row("(7) keypoint search 1M images, PROJECTED wall", last["wall"] + per * (work_1m - 200_000 * last["tables"]), "s", "(from 50k-200k)", None, "-", None)
    row("(7) keypoint search 1M images, PROJECTED mem", last["peak_mib"], "MiB", "(bounded by PART)", None, "-", None)
    return ok


def cleanvision_cmd(flat: Path) -> list[str] | None:
    """cleanvision's exact + near duplicate check as a whole process, if it is installed here."""
    probe = subprocess.run([sys.executable, "-c", "import cleanvision"], capture_output=True)
    if probe.returncode != 0:
        return None
    code = "import sys; from cleanvision import Imagelab; Imagelab(data_path=sys.argv[1]).find_issues({'exact_duplicates': {}, 'near_duplicates': {}})"
    return [sys.executable, "-c", code, str(flat)]


def flat_copy(images_dir: Path, tmp: Path) -> Path:
    """One folder of links to every image (what imagededup and cleanvision take)."""
    flat = tmp / "flat"
    flat.mkdir()
    for p in sorted(images_dir.rglob("*")):
        if p.is_file():
            (flat / f"{p.parent.name}__{p.name}").symlink_to(p)
    return flat


def imagededup_run(flat: Path) -> tuple[float | None, float | None]:
    py = ensure_imagededup()
    if py is None:
        print("imagededup 0.3.3 could not be installed here: no memory reference")
        return None, None
    env = dict(os.environ, TORCH_HOME=str(BENCH_HOME / "torch"))
    cmd = [str(py), "-c", "import sys; from imagededup.methods import PHash; PHash().find_duplicates(image_dir=sys.argv[1])", str(flat)]
    wall, mem, rc, err = measure(cmd, env)
    if rc != 0:
        print(f"imagededup failed (exit {rc}): {err}")
        return None, None
    return wall, mem


def whole_process(images_dir: Path, skip_idd: bool) -> bool:
    """(1) cold and (2) warm whole-process runs beside cleanvision's and imagededup's."""
    ok = True
    ctcurate = str(Path(sys.executable).parent / "ctcurate")
    # the references come from wheels, whose bytecode pip compiled at install; an editable checkout
    # has none until it runs (never, under PYTHONDONTWRITEBYTECODE): compile it, as a wheel would be
    compileall.compile_dir(str(REPO / "ctcurate"), quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        flat = flat_copy(images_dir, Path(tmp))
        cache = Path(tmp) / "cache.sqlite"
        cmd = [ctcurate, "check-leakage", "--data", str(DATA), "--cache", str(cache), "--format", "json", "--output", str(Path(tmp) / "r.json")]
        # the references first, so that the OS file cache is warm for all
        idd_wall, idd_mem = (None, None) if skip_idd else imagededup_run(flat)
        cv_cmd = cleanvision_cmd(flat)
        cv_wall, cv_mem = (measure(cv_cmd)[:2] if cv_cmd else (None, None))
        if cv_cmd is None:
            print("cleanvision is not installed (pip install cleanvision): no wall-time reference")
        wall, mem, rc, err = measure(cmd)
        if rc not in (0, 1):
            print(f"check-leakage failed (exit {rc}): {err}")
            return False
        n_pairs = len(json.loads((Path(tmp) / "r.json").read_text())["pairs"])
        print(f"(check-leakage reported {n_pairs} verified pairs; imagededup {idd_wall or 0:.2f} s, cleanvision {cv_mem or 0:.0f} MiB)")
        ok &= row("(1) check-leakage cold, wall", wall, "s", "cleanvision exact+near dups, whole", cv_wall, "<= 1x", None if cv_wall is None else wall <= cv_wall)
        ok &= row("(1) check-leakage cold, peak memory", mem, "MiB", "imagededup PHash whole process", idd_mem, "< 1x", None if idd_mem is None else mem < idd_mem)
        wall2, mem2, rc, _ = measure(cmd)
        ok &= row("(2) check-leakage warm cache, wall", wall2, "s", "cold run of (1)", wall, "< 1 s", wall2 < 1.0)
        print(f"    warm peak memory {mem2:.0f} MiB")
    return ok


def describing(images_dir: Path) -> bool:
    """(3) fingerprint + keypoints of every image (one process) against a Pillow decode of the same files."""
    from ctcurate.core.images import open_image
    from ctcurate.leakage.hashcache import hash_files

    paths = sorted(p for p in images_dir.rglob("*") if p.is_file())
    for p in paths:  # warm the OS file cache
        p.read_bytes()
    hash_files(paths[:1], None, jobs=1)  # both sides start with their imports done (throughput, not start-up)
    t = time.perf_counter()
    for p in paths:
        open_image(p)
    decode = time.perf_counter() - t
    t = time.perf_counter()
    hash_files(paths, None, jobs=1)
    hashing = time.perf_counter() - t
    ok = row("(3) fingerprint+keypoints, images/s (1 proc)", len(paths) / hashing, "img/s", "Pillow full decode, images/s", len(paths) / decode, "reported", None)
    print(f"    time ratio (fingerprint + keypoints) / decode = {hashing / decode:.2f}x")
    return ok


def searching(skip_1m: bool) -> bool:
    """(4)-(5) pHash pair search, synthetic hashes."""
    ok = True
    w, m, n = search_run(200_000)
    ok &= row("(4) pair search 200k hashes, wall", w, "s", "target", 30.0, "< 30 s", w < 30)
    ok &= row("(4) pair search 200k hashes, peak memory", m, "MiB", "target", 2048.0, "< 2 GB", m < 2048)
    print(f"    {n} pairs found")
    if not skip_1m:
        w, m, n = search_run(1_000_000)
        row("(5) pair search 1M hashes, wall", w, "s", "(reported)", None, "-", None)
        row("(5) pair search 1M hashes, peak memory", m, "MiB", "(reported)", None, "-", None)
        print(f"    {n} pairs found")
    return ok


def main() -> int:
    if "--only-keypoint-search" in sys.argv:
        return 0 if keypoint_searching("--keypoints-1m" in sys.argv) else 1
    images_dir = DATA / "Images-processed"
    if not images_dir.is_dir():
        print(f"no real data at {DATA} (set CTCURATE_DATA)")
        return 1
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (shared machines make timings noisy)")
    ok = whole_process(images_dir, "--skip-imagededup" in sys.argv)
    ok &= describing(images_dir)
    ok &= searching("--skip-1m" in sys.argv)
    ok &= keypoint_searching("--keypoints-1m" in sys.argv)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
