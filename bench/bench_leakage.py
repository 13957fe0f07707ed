"""check-leakage speed and memory, each figure beside its reference measured in the same run.

(1) whole-process `ctcurate check-leakage` on the real images, cold cache, against imagededup 0.3.3
    `PHash().find_duplicates(image_dir=...)` as a whole process: target <= 1/4 of its wall time
    and of its peak memory (summed over the process tree, sampled from /proc);
(2) the same with a warm cache: target < 1.5 s;
(3) fingerprinting alone (one process) in images/s against just decoding the same images with
    Pillow: target within 1.5x of decoding;
(4) pair search over 200,000 synthetic hashes at the default threshold: < 30 s and < 2 GB;
(5) the same at 1,000,000 hashes, reported.

imagededup (it pulls torch) goes into a throwaway venv under ~/.cache/ctcurate-bench; it loads a
CNN checkpoint at import, so an offline machine gets a stand-in checkpoint with random weights
(PHash does not use it; the import cost stays). Exits 1 when a target is missed.
Usage: python bench/bench_leakage.py [--skip-imagededup] [--skip-1m]
"""

from __future__ import annotations

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


def main() -> int:
    skip_idd = "--skip-imagededup" in sys.argv
    skip_1m = "--skip-1m" in sys.argv
    images_dir = DATA / "Images-processed"
    if not images_dir.is_dir():
        print(f"no real data at {DATA} (set CTCURATE_DATA)")
        return 1
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (shared machines make timings noisy)")
    ok = True
    ctcurate = str(Path(sys.executable).parent / "ctcurate")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache.sqlite"
        cmd = [ctcurate, "check-leakage", "--data", str(DATA), "--cache", str(cache), "--format", "json", "--output", str(Path(tmp) / "r.json")]
        # imagededup first, so that the OS file cache is warm for both
        idd_wall = idd_mem = None
        if not skip_idd:
            py = ensure_imagededup()
            if py is None:
                print("imagededup 0.3.3 could not be installed here: (1) has no reference")
            else:
                flat = Path(tmp) / "flat"
                flat.mkdir()
                for p in sorted(images_dir.rglob("*")):
                    if p.is_file():
                        (flat / f"{p.parent.name}__{p.name}").symlink_to(p)
                env = dict(os.environ, TORCH_HOME=str(BENCH_HOME / "torch"))
                idd_cmd = [str(py), "-c", "import sys; from imagededup.methods import PHash; PHash().find_duplicates(image_dir=sys.argv[1])", str(flat)]
                idd_wall, idd_mem, rc, err = measure(idd_cmd, env)
                if rc != 0:
                    print(f"imagededup failed (exit {rc}): {err}")
                    idd_wall = idd_mem = None
        wall, mem, rc, err = measure(cmd)
        if rc not in (0, 1):
            print(f"check-leakage failed (exit {rc}): {err}")
            return 1
        n_pairs = len(json.loads((Path(tmp) / "r.json").read_text())["pairs"])
        print(f"(check-leakage reported {n_pairs} verified pairs)")
        ok &= row("(1) check-leakage cold, wall", wall, "s", "imagededup PHash whole process", idd_wall, "<= 0.25x", None if idd_wall is None else wall <= idd_wall / 4)
        ok &= row("(1) check-leakage cold, peak memory", mem, "MiB", "imagededup PHash whole process", idd_mem, "<= 0.25x", None if idd_mem is None else mem <= idd_mem / 4)
        wall2, mem2, rc, _ = measure(cmd)
        ok &= row("(2) check-leakage warm cache, wall", wall2, "s", "cold run of (1)", wall, "< 1.5 s", wall2 < 1.5)
        print(f"    warm peak memory {mem2:.0f} MiB")

    # (3) fingerprinting vs decoding, one process each, same files
    from ctcurate.leakage.hashcache import hash_files
    from ctcurate.core.images import open_image

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
    ok &= row("(3) fingerprinting, images/s (1 process)", len(paths) / hashing, "img/s", "Pillow full decode, images/s", len(paths) / decode, "time <= 1.5x", hashing <= 1.5 * decode)
    print(f"    time ratio fingerprint/decode = {hashing / decode:.2f}x")

    w, m, n = search_run(200_000)
    ok &= row("(4) pair search 200k hashes, wall", w, "s", "target", 30.0, "< 30 s", w < 30)
    ok &= row("(4) pair search 200k hashes, peak memory", m, "MiB", "target", 2048.0, "< 2 GB", m < 2048)
    print(f"    {n} pairs found")
    if not skip_1m:
        w, m, n = search_run(1_000_000)
        row("(5) pair search 1M hashes, wall", w, "s", "(reported)", None, "-", None)
        row("(5) pair search 1M hashes, peak memory", m, "MiB", "(reported)", None, "-", None)
        print(f"    {n} pairs found")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
