"""`make bench`: run every bench/bench_*.py in turn, then eval_recall.py (recall and precision of
check-leakage on transformed copies, tuning set beside held-out); each prints its figures beside its
reference or target."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    only = sys.argv[1:]
    failed = []
    for script in [*sorted(HERE.glob("bench_*.py")), HERE / "eval_recall.py"]:
        if only and not any(name in script.name for name in only):
            continue
        print(f"\n=== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False, cwd=HERE.parent).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nbenchmarks that missed their target or failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
