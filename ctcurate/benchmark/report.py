"""Rendering a benchmark result: the text table for stdout and the files in --output.

Owns `results.json`, `roc.png` and `confusion.png` (each written atomically) and the table; the
numbers come from `run`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ctcurate.core.atomic import atomic_write

from . import plots
from .run import BenchmarkResult

LABELS = {
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall (sensitivity)",
    "specificity": "specificity",
    "f1": "F1 (COVID positive)",
    "f1_reference": "F1 (reference: NonCOVID positive)",
    "auc": "ROC AUC",
}


def _fmt(v: object) -> str:
    return "n/a" if v is None else f"{float(v):.3f}"  # type: ignore[arg-type]


def _metric_rows(m: dict[str, dict[str, float | None]]) -> list[str]:
    return [f"  {LABELS[k]:<36}{_fmt(v['value']):>7}   [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]" for k, v in m.items()]


def _verdict(v: dict[str, object], judged: bool) -> str:
    if v["significant"] is None:
        return "n/a"
    if not v["significant"]:
        return "no"
    if not judged:
        return "moved (operating point)"
    return "yes, better" if float(v["value"] or 0) > 0 else "yes, worse"  # type: ignore[arg-type]


def _mean_sd(arm: dict[str, object]) -> str:
    sd = arm["sd"]
    return f"{float(arm['mean']):.3f}" + (f" ±{float(sd):.3f}" if sd is not None else "      ")  # type: ignore[arg-type]


def _contribution_rows(c: dict[str, object]) -> list[str]:
    """Both arms (mean ± SD over seeds), the mean change with its two intervals, and the verdict."""
    seeds: list[int] = c["seeds"]  # type: ignore[assignment]
    arms: dict[str, dict[str, dict[str, object]]] = c["arms"]  # type: ignore[assignment]
    without, with_ = arms["official train"], arms["official train + contribution"]
    judged: list[str] = c["verdict"]["metrics"]  # type: ignore[index]
    lines = [
        (f"with the contribution ({c['images']} images added to train), same test split, "
        f"{len(seeds)} seed(s) per arm ({', '.join(map(str, seeds))}):"),
        f"  {'metric':<36}{'without':>14} {'with':>14} {'change':>8}  95% CI: test images   seeds            significant",
    ]
    for k, v in c["difference"].items():  # type: ignore[attr-defined]
        seed_ci = "n/a" if v["seed_ci_low"] is None else f"[{v['seed_ci_low']:+.3f}, {v['seed_ci_high']:+.3f}]"
        lines.append(
            f"  {LABELS[k]:<36}{_mean_sd(without[k]):>14} {_mean_sd(with_[k]):>14} {(v['value'] or 0):+8.3f}  "
            f"[{(v['ci_low'] or 0):+.3f}, {(v['ci_high'] or 0):+.3f}]  {seed_ci:<17}{_verdict(v, k in judged)}"
        )
    if len(seeds) == 1:
        lines.append("  one seed cannot tell a change from training noise: rerun with --seeds 3 (or more) for a verdict")
        return lines
    verdict: dict[str, object] = c["verdict"]  # type: ignore[assignment]
    lines.append("  significant = both 95% intervals (over test images, and over seeds) exclude 0; precision, recall,")
    lines.append("  specificity and F1 move with the operating point, so the verdict rests on AUC and accuracy")
    def named(ks: object) -> str:
        return ", ".join(LABELS[k] for k in ks)  # type: ignore[attr-defined]

    lines.append(
        f"  verdict on {named(verdict['metrics'])}: {verdict['summary']}"
        + (f" (better: {named(verdict['better'])})" if verdict["better"] else "")
        + (f" (worse: {named(verdict['worse'])})" if verdict["worse"] else "")
    )
    return lines


def text_table(result: BenchmarkResult) -> str:
    r = result.results
    p, t, tr, d = r["protocol"], r["test"], r["training"], r["data"]
    counts = d["counts"]
    lines = [
        f"model {p['model']}, weights {tr['weights']}, {p['epochs']} epochs at {p['image_size']} px, "
        f"seed {p['seed']}, on {tr['device']}" + (f" ({tr['mixed_precision']} mixed precision)" if tr["mixed_precision"] else "")
        + (" [smoke run: small model on a subset]" if p["smoke"] else ""),
        "images: " + ", ".join(f"{s} {c['COVID']} COVID + {c['NonCOVID']} NonCOVID" for s, c in counts.items()),
        (f"best epoch {tr['best_epoch']} of {p['epochs']} (by val AUC); epoch time {tr['epoch_seconds_mean']:.2f} s, "
        f"{100 * tr['data_wait_share']:.0f}% of it waiting for data"),
        "",
        f"test ({t['n']} images)                      value   95% CI (bootstrap)",
        *_metric_rows(t["metrics"]),
        f"  confusion: TP {t['confusion']['tp']}  FN {t['confusion']['fn']}  FP {t['confusion']['fp']}  TN {t['confusion']['tn']}  (COVID positive)",
    ]
    if "contribution" in r:
        lines += ["", *_contribution_rows(r["contribution"])]
    if "score" in r:
        s = r["score"]
        lines += ["", f"scored {s['images']} contributed images: {len(s['flagged'])} likely label error(s) (p >= {s['threshold']})"]
        for f in s["flagged"]:
            lines.append(f"  {f['image']}: declared {f['declared']}, predicted {f['predicted']} (p = {f['probability']:.3f})")
    if "dedupe_test" in r:
        dd = r["dedupe_test"]
        if "note" in dd:
            lines += ["", f"--dedupe-test: {dd['note']}"]
        else:
            lines += ["", f"test without its {len(dd['removed'])} image(s) duplicated in train ({dd['n']} images):", *_metric_rows(dd["metrics"])]
    return "\n".join(lines)


def run_title(results: dict[str, object]) -> str:
    """What kind of run the figures show: a smoke check, from scratch, or from given weights."""
    p: dict[str, object] = results["protocol"]  # type: ignore[assignment]
    t: dict[str, object] = results["training"]  # type: ignore[assignment]
    if p["smoke"]:
        kind = "SMOKE run on a subset (not a result)"
    elif not p["pretrained"]:
        kind = "trained from scratch"
    else:
        kind = f"from {t['weights']} weights"
    return f"{p['model']}, {kind}"


def write_outputs(result: BenchmarkResult, output: Path) -> list[Path]:
    """results.json, roc.png and confusion.png in `output`; returns the paths written."""
    output.mkdir(parents=True, exist_ok=True)
    paths = [output / "results.json", output / "roc.png", output / "confusion.png"]
    with atomic_write(paths[0]) as fh:
        json.dump(result.results, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    title = run_title(result.results)
    plots.roc_png(paths[1], result.curves, f"ROC: {title}", result.bands, result.results["test"]["n"])
    plots.confusion_png(paths[2], result.confusion, f"Confusion: {title}")  # the official-train model
    return paths
