#!/usr/bin/env bash
# One prepared GPU check of `ctcurate benchmark` (run by the lead on the remote H100/H200, no internet):
#   1. the real protocol (DenseNet-169, 224 px, Adam 1e-4 cosine, bf16/fp16 autocast) from scratch
#      (--weights none: no ImageNet download there) over SEEDS, with per-epoch time and data-wait share;
#   2. determinism: two short runs with the same seed must give identical numbers;
#   3. a summary (mean and spread over seeds) in $OUT/summary.json and on stdout.
# Expects the repo root as cwd, wheels for pydantic/openpyxl/imagehash (+deps) in .whl/, and the images
# in .data/covid-ct/Images-processed/. Local dry run on a CPU:
#   OUT=/tmp/gc DEVICE=cpu MODEL=tiny IMAGE_SIZE=64 EPOCHS=2 DET_EPOCHS=1 SEEDS="0 1" bash bench/gpu_check.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
[ -n "${PYTHONPATH:-}" ] || echo "warning: wheel install from .whl/ failed; relying on installed packages" >&2

OUT="${OUT:?set OUT to the folder that receives the results}"
DEVICE="${DEVICE:-cuda}"
MODEL="${MODEL:-densenet169}"
IMAGE_SIZE="${IMAGE_SIZE:-224}"
EPOCHS="${EPOCHS:-20}"
DET_EPOCHS="${DET_EPOCHS:-2}"
SEEDS="${SEEDS:-0 1 2}"
BATCH="${BATCH:-16}"
RUN_LIMIT_S="${RUN_LIMIT_S:-150}"
export CTCURATE_DATA="${CTCURATE_DATA:-$PWD/.data/covid-ct}"
CACHE="${CACHE:-/tmp/ctcurate-tensor-cache}"
mkdir -p "$OUT"
die() { echo "GPU CHECK FAILED: $*" >&2; exit 1; }

[ -d "$CTCURATE_DATA/Images-processed/CT_COVID" ] || die "no images under $CTCURATE_DATA/Images-processed"
python3 - "$DEVICE" <<'PY' 2>&1 | tee "$OUT/env.txt"
import sys, platform, torch, torchvision
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__)
if sys.argv[1].startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("GPU CHECK FAILED: torch sees no CUDA device")
    print("gpu", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
import ctcurate.benchmark.run  # noqa: F401  (fails here, not mid-run, if a wheel is missing)
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || die "environment check (see $OUT/env.txt)"

bench() {  # bench NAME EPOCHS SEED
  local name="$1" epochs="$2" seed="$3" t0 rc=0
  t0=$(date +%s.%N)
  timeout "$RUN_LIMIT_S" python3 -m ctcurate.cli benchmark --model "$MODEL" --weights none --device "$DEVICE" \
      --image-size "$IMAGE_SIZE" --batch-size "$BATCH" --epochs "$epochs" --seed "$seed" --cache-dir "$CACHE" \
      --output "$OUT/$name" > "$OUT/$name.txt" 2> "$OUT/$name.log" || rc=$?
  tr '\r' '\n' < "$OUT/$name.log" | grep -E '^epoch .* val AUC' || true
  cat "$OUT/$name.txt"
  echo "== $name: exit $rc, $(python3 -c "import time; print(round(time.time() - $t0, 1))") s wall"
  [ "$rc" -eq 0 ] || die "$name exited $rc (timeout is 124; see $OUT/$name.log)"
  [ -s "$OUT/$name/results.json" ] && [ -s "$OUT/$name/roc.png" ] && [ -s "$OUT/$name/confusion.png" ] || die "$name wrote no results"
}

for seed in $SEEDS; do
  echo "=== protocol run, seed $seed: $MODEL, $EPOCHS epochs, $IMAGE_SIZE px, on $DEVICE"
  bench "seed$seed" "$EPOCHS" "$seed"
done
echo "=== determinism: two runs of $DET_EPOCHS epochs, seed 7"
bench det-a "$DET_EPOCHS" 7
bench det-b "$DET_EPOCHS" 7

python3 - "$OUT" "$DEVICE" $SEEDS <<'PY'
import json, statistics, sys
from pathlib import Path
out, device, seeds = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
load = lambda name: json.loads((out / name / "results.json").read_text())
runs = {s: load(f"seed{s}") for s in seeds}
fail = []
for s, r in runs.items():
    t = r["training"]
    if device.startswith("cuda") and (not t["device"].startswith("cuda") or not t["mixed_precision"]):
        fail.append(f"seed {s} ran on {t['device']} with mixed precision {t['mixed_precision']}")
summary = {"device": device, "model": runs[seeds[0]]["protocol"]["model"], "weights": "none (from scratch)",
           "epochs": runs[seeds[0]]["protocol"]["epochs"], "per_seed": {}, "mean": {}, "stdev": {}}
for s, r in runs.items():
    m = r["test"]["metrics"]
    summary["per_seed"][s] = {k: m[k] for k in ("accuracy", "f1", "f1_reference", "auc")} | {
        "best_epoch": r["training"]["best_epoch"], "epoch_seconds": r["training"]["epoch_seconds_mean"],
        "data_wait_share": r["training"]["data_wait_share"], "mixed_precision": r["training"]["mixed_precision"],
        "cache": r["data"]["cache"]}
for k in ("accuracy", "f1", "f1_reference", "auc", "epoch_seconds", "data_wait_share"):
    vals = [v[k]["value"] if isinstance(v[k], dict) else v[k] for v in summary["per_seed"].values()]
    summary["mean"][k] = round(statistics.mean(vals), 4)
    summary["stdev"][k] = round(statistics.stdev(vals), 4) if len(vals) > 1 else None
a, b = load("det-a"), load("det-b")
strip = lambda h: [{k: v for k, v in e.items() if "seconds" not in k} for e in h]
same = a["test"] == b["test"] and strip(a["training"]["history"]) == strip(b["training"]["history"])
summary["deterministic"] = same
if not same:
    fail.append("two runs with seed 7 differ: " + json.dumps({"a": a["test"]["metrics"]["auc"], "b": b["test"]["metrics"]["auc"],
                "a_hist": strip(a["training"]["history"]), "b_hist": strip(b["training"]["history"])}))
summary["failures"] = fail
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps({k: summary[k] for k in ("device", "model", "epochs", "mean", "stdev", "deterministic")}, indent=2))
if fail:
    sys.exit("GPU CHECK FAILED: " + "; ".join(fail))
print("GPU CHECK PASSED")
PY
