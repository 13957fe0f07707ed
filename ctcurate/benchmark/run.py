"""One benchmark run from options to results: the orchestration the `benchmark` command calls.

Owns the order of the steps (samples, cached pixels, training, test metrics, contribution
comparison over `--seeds` seeds per arm and its verdict, contribution scoring, test
de-duplication) and the findings that decide the exit code.
Writes nothing itself: `report` renders and saves the result.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torchvision

from .. import __version__
from ctcurate.contribution.source import Contribution, open_contribution
from ctcurate.core.findings import Finding, Severity, error, has_errors, warning
from . import metrics
from .data import COVID, CacheInfo, ImageSet, Sample, contribution_samples, load_images, official_samples, smoke_subset, tensor_cache_dir
from .model import build_model
from .train import Progress, TrainConfig, Trained, predict, resolve_device, train

# --smoke: images per class and split, and the settings the CLI defaults to.
SMOKE_SUBSET = {"train": 96, "val": 24, "test": 48}
SMOKE_DEFAULTS: dict[str, Any] = {"model": "tiny", "image_size": 96, "epochs": 8, "batch_size": 16, "lr": 1e-3}
DEFAULT_SCORE_THRESHOLD = 0.9


@dataclass(frozen=True)
class BenchmarkOptions:
    data_root: Path
    splits_dir: Path
    config: TrainConfig
    smoke: bool = False
    with_contribution: Path | None = None
    score: Path | None = None
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    dedupe_test: bool = False
    leakage_report: Path | None = None
    cache: Path | None = None  # the hash cache file (`store.cache_location`'s rule)
    cache_dir: Path | None = None  # the decoded-tensor folder (default: `benchmark/` beside the cache file)
    bootstrap: int = metrics.DEFAULT_RESAMPLES
    seeds: int = 1  # with_contribution: each arm is trained with seeds seed, seed+1, ...


@dataclass
class BenchmarkResult:
    """What a run found: the JSON-ready results, the test scores for the figures, and findings.

    `fatal` means the input was unusable and nothing was trained (exit code 2).
    """

    results: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]] = field(default_factory=dict)
    confusion: dict[str, int] = field(default_factory=dict)
    bands: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)  # ROC 95% bands
    fatal: bool = False

    PROBLEM_CODES: ClassVar[tuple[str, ...]] = ("benchmark.label-suspect", "benchmark.contribution-hurts")

    @property
    def has_problems(self) -> bool:
        """A flagged image, a contribution that hurts, or an error: exit 1."""
        return any(f.code in self.PROBLEM_CODES or f.severity is Severity.ERROR for f in self.findings)


Stage = Callable[[str], None]


def _estimates(est: dict[str, metrics.Estimate]) -> dict[str, dict[str, float | None]]:
    return {k: v.as_dict() for k, v in est.items()}


def _counts(samples: Sequence[Sample]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for s in samples:
        d = out.setdefault(s.split, {"COVID": 0, "NonCOVID": 0})
        d["COVID" if s.label == COVID else "NonCOVID"] += 1
    return out


def _cache_json(info: CacheInfo) -> dict[str, object]:
    return {"path": str(info.path), "hit": info.hit, "seconds": round(info.seconds, 3), "decoded": info.decoded}


def _training_json(t: Trained) -> dict[str, object]:
    # Epoch 1 carries one-off start-up costs (allocator, kernel selection); later epochs are steady.
    steady = t.history[1:] or t.history
    secs = sum(e.seconds for e in steady)
    return {
        "device": str(t.device),
        "mixed_precision": str(t.amp_dtype).removeprefix("torch.") if t.amp_dtype else None,
        "weights": t.weights,
        "best_epoch": t.best_epoch,
        "selected_by": "val AUC, then val loss",
        "epoch_seconds_mean": round(secs / len(steady), 4) if steady else None,
        "data_wait_share": round(sum(e.data_seconds for e in steady) / secs, 4) if secs else None,
        "history": [
            {
                "epoch": e.epoch,
                "train_loss": round(e.train_loss, 6),
                "val_loss": round(e.val_loss, 6),
                "val_accuracy": round(e.val_accuracy, 6),
                "val_auc": round(e.val_auc, 6),
                "lr": e.lr,
                "seconds": round(e.seconds, 4),
                "data_seconds": round(e.data_seconds, 4),
            }
            for e in t.history
        ],
    }


def _split(images: ImageSet, samples: Sequence[Sample], split: str) -> ImageSet:
    return images.subset([i for i, s in enumerate(samples) if s.split == split])


def _test_train(pairs: Iterable[tuple[str, str]], test_names: set[str], train_names: set[str]) -> list[tuple[str, str]]:
    """Keep the pairs with one image in test and the other in train, as (test, train)."""
    out: list[tuple[str, str]] = []
    for a, b in pairs:
        if a in test_names and b in train_names:
            out.append((a, b))
        elif b in test_names and a in train_names:
            out.append((b, a))
    return out


def pairs_from_leakage_report(report: Path, test_names: set[str], train_names: set[str]) -> list[tuple[str, str]]:
    """(test image, train image) pairs from a `check-leakage --format json` file.

    Reads its documented `pairs` list (`a`, `b` relative to `Images-processed/`); any reported pair
    with one image in test and the other in train counts, whatever its kind.
    """
    data = json.loads(report.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        raise ValueError("no 'pairs' list (expected the output of check-leakage --format json)")
    return _test_train(((str(p.get("a", "")), str(p.get("b", ""))) for p in data["pairs"]), test_names, train_names)


def find_test_train_duplicates(
    data_root: Path, splits_dir: Path, test_names: set[str], train_names: set[str], cache_path: Path | None
) -> list[tuple[str, str]]:
    """(test, train) duplicate pairs found by check-leakage (its hash cache makes a second call cheap)."""
    from ctcurate.leakage.pipeline import check_leakage

    report = check_leakage(data_root, splits_dir=splits_dir, cache_path=cache_path)
    return _test_train(((p.a, p.b) for p in report.pairs), test_names, train_names)


def dedupe_test_metrics(
    names: Sequence[str], y: np.ndarray, prob: np.ndarray, pairs: Sequence[tuple[str, str]], resamples: int, seed: int
) -> dict[str, object]:
    """Test metrics with the test images that duplicate a train image removed (the seam for check-leakage)."""
    removed = sorted({t for t, _ in pairs} & set(names))
    keep = np.array([n not in set(removed) for n in names], dtype=bool)
    est = metrics.bootstrap_metrics(y[keep], prob[keep], resamples=resamples, seed=seed)
    return {"removed": removed, "n": int(keep.sum()), "metrics": _estimates(est), "pairs": [list(p) for p in pairs]}


def score_contribution(names: Sequence[str], labels: np.ndarray, prob: np.ndarray, threshold: float) -> list[dict[str, object]]:
    """Images whose prediction disagrees with their declared label with probability >= threshold."""
    flagged = []
    for name, label, p in zip(names, labels.tolist(), prob.tolist()):
        p_other = 1.0 - p if label == COVID else p
        if p_other >= threshold:
            flagged.append(
                {
                    "image": name,
                    "declared": "COVID" if label == COVID else "NonCOVID",
                    "predicted": "NonCOVID" if label == COVID else "COVID",
                    "probability": round(p_other, 4),
                }
            )
    return flagged


def run_benchmark(opts: BenchmarkOptions, on_progress: Callable[[Progress], None] | None = None, on_stage: Stage | None = None) -> BenchmarkResult:
    """Train, evaluate and (as asked) compare, score and de-duplicate; input problems end it early.

    Each contribution (a folder or .zip: `contribution.source`) stays open for the whole run.
    """
    with ExitStack() as stack:
        opened = {p: stack.enter_context(open_contribution(p)) for p in (opts.with_contribution, opts.score) if p is not None}
        return _run(opts, opened, on_progress, on_stage)


@dataclass(frozen=True)
class _Baseline:
    """The official-train model and what the later steps reuse: the sets, test scores and estimates."""

    cfg: TrainConfig
    cache_dir: Path
    info: CacheInfo
    train_set: ImageSet
    val_set: ImageSet
    test_set: ImageSet
    build: Callable[[], tuple[Any, str]]
    trained: Trained
    y_test: np.ndarray
    prob: np.ndarray
    test_loss: float
    est: dict[str, metrics.Estimate]


def _run(opts: BenchmarkOptions, opened: Mapping[Path, Contribution], on_progress: Callable[[Progress], None] | None,
         on_stage: Stage | None) -> BenchmarkResult:
    """The steps in order; a step that finds the input unusable marks the result fatal and ends the run."""
    stage = on_stage or (lambda _msg: None)
    out = BenchmarkResult()
    started = time.perf_counter()
    _check_setup(opts, stage)
    samples = _official(opts, out)
    if samples is None:
        return out
    cache_dir = opts.cache_dir or tensor_cache_dir(opts.cache)
    listed = _contributed(opts, opened, out)
    if listed is None:
        return out
    b = _train_baseline(opts, samples, cache_dir, out, on_progress, stage)
    if b is None:
        return out
    results = _baseline_json(opts, samples, b, out.confusion)
    if opts.with_contribution is not None:
        compared = _compare_contribution(opts, b, listed[opts.with_contribution], out, on_progress, stage)
        if compared is None:
            return out
        results["contribution"] = compared
    if opts.score is not None:
        scored = _score(opts, b, listed[opts.score], out, stage)
        if scored is None:
            return out
        results["score"] = scored
    if opts.dedupe_test:
        deduped = _dedupe(opts, b, out)
        if deduped is None:
            return out
        results["dedupe_test"] = deduped
    results["seconds"] = round(time.perf_counter() - started, 2)
    results["findings"] = [f.model_dump(mode="json") for f in out.findings]
    out.results = results
    return out


def _check_setup(opts: BenchmarkOptions, stage: Stage) -> None:
    """Model, weights and device fail here, in a second, not after minutes of decoding."""
    cfg = opts.config
    device = resolve_device(cfg.device)
    build_model(cfg.model, cfg.weights)
    if device.type == "cpu" and not opts.smoke:
        runs = 2 * opts.seeds if opts.with_contribution else 1
        stage(f"warning: training {runs} model(s) of {cfg.epochs} epochs on the CPU takes hours; "
              "--smoke checks the set-up in a minute, a GPU does the full run in minutes")


def _official(opts: BenchmarkOptions, out: BenchmarkResult) -> list[Sample] | None:
    """The official split's samples (the smoke subset with --smoke); None, and fatal, on an input error."""
    samples, findings = official_samples(opts.data_root, opts.splits_dir)
    out.findings += findings
    if has_errors(findings):
        out.fatal = True
        return None
    if opts.smoke:
        samples = smoke_subset(samples, SMOKE_SUBSET, opts.config.seed)
    return samples


def _contributed(opts: BenchmarkOptions, opened: Mapping[Path, Contribution], out: BenchmarkResult) -> dict[Path, list[Sample]] | None:
    """Contributed images listed (and their labels checked) before any slow step; None, and fatal, on an error."""
    listed: dict[Path, list[Sample]] = {}
    for folder in dict.fromkeys(p for p in (opts.with_contribution, opts.score) if p is not None):
        listed[folder], cfind = contribution_samples(opened[folder])
        out.findings += cfind
    if has_errors(out.findings):
        out.fatal = True
        return None
    return listed


def _train_baseline(opts: BenchmarkOptions, samples: list[Sample], cache_dir: Path, out: BenchmarkResult,
                    on_progress: Callable[[Progress], None] | None, stage: Stage) -> _Baseline | None:
    """Pixels loaded, the model trained on official train and scored on test (its ROC and confusion into `out`)."""
    cfg = opts.config
    stage(f"loading {len(samples)} images ({cfg.image_size} px) through the tensor cache in {cache_dir}")
    images, info = load_images(samples, cfg.image_size, cache_dir)
    out.findings += info.findings
    if images is None:
        out.fatal = True
        return None
    train_set, val_set, test_set = (_split(images, samples, s) for s in ("train", "val", "test"))
    build = lambda: build_model(cfg.model, cfg.weights)  # noqa: E731

    stage(f"training {cfg.model} on {len(train_set)} images, selecting on {len(val_set)} val images")
    base = train(cfg, train_set, val_set, build, on_progress)
    y_test = test_set.labels.numpy()
    prob, test_loss = predict(base.model, test_set, base.device, base.amp_dtype)
    est = metrics.bootstrap_metrics(y_test, prob, resamples=opts.bootstrap, seed=cfg.seed)
    fpr, tpr, _ = metrics.roc_curve(y_test, prob)
    out.curves[_curve_name("official train", opts)] = (fpr, tpr, est["auc"].value)
    out.bands[_curve_name("official train", opts)] = metrics.roc_band(y_test, prob, resamples=opts.bootstrap, seed=cfg.seed)
    out.confusion = metrics.confusion(y_test, prob)
    return _Baseline(cfg, cache_dir, info, train_set, val_set, test_set, build, base, y_test, prob, test_loss, est)


def _baseline_json(opts: BenchmarkOptions, samples: list[Sample], b: _Baseline, confusion: dict[str, int]) -> dict[str, Any]:
    """The results every run has: the protocol, the data, the baseline's training and test metrics."""
    cfg = b.cfg
    return {
        "ctcurate_version": __version__,
        "protocol": {
            "model": cfg.model,
            "weights": b.trained.weights,
            "pretrained": cfg.weights != "none",
            "epochs": cfg.epochs,
            "image_size": cfg.image_size,
            "batch_size": cfg.batch_size,
            "optimizer": f"Adam lr {cfg.lr:g}, cosine schedule over {cfg.epochs} epochs",
            "seed": cfg.seed,
            "smoke": opts.smoke,
            "positive_class": "COVID (f1_reference: NonCOVID positive, as the reference script labels COVID 0)",
            "threshold": metrics.DEFAULT_THRESHOLD,
            "bootstrap_resamples": opts.bootstrap,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
        "data": {
            "root": str(opts.data_root),
            "splits": str(opts.splits_dir),
            "counts": _counts(samples),
            "cache": _cache_json(b.info),
        },
        "training": _training_json(b.trained),
        "test": {
            "n": len(b.test_set),
            "loss": round(b.test_loss, 6),
            "metrics": _estimates(b.est),
            "confusion": confusion,
        },
    }


def _compare_contribution(opts: BenchmarkOptions, b: _Baseline, contrib: list[Sample], out: BenchmarkResult,
                          on_progress: Callable[[Progress], None] | None, stage: Stage) -> dict[str, Any] | None:
    """Both arms trained over the seeds and compared on test; None, and fatal, when a contributed image is unreadable."""
    cfg, y_test = b.cfg, b.y_test
    stage(f"loading {len(contrib)} contributed images")
    cimages, cinfo = load_images(contrib, cfg.image_size, b.cache_dir)
    out.findings += cinfo.findings
    if cimages is None:
        out.fatal = True
        return None
    arms = _train_arms(opts, b.train_set, ImageSet.concat(b.train_set, cimages), b.val_set, b.test_set, b.build, (b.trained, b.prob),
                       on_progress, stage)
    plus, prob_plus = arms.plus_first
    est_plus = metrics.bootstrap_metrics(y_test, prob_plus, resamples=opts.bootstrap, seed=cfg.seed)
    verdicts = metrics.seed_comparison(y_test, arms.base_probs, arms.plus_probs, resamples=opts.bootstrap, seed=cfg.seed)
    fpr2, tpr2, _ = metrics.roc_curve(y_test, prob_plus)
    out.curves[_curve_name("official train + contribution", opts)] = (fpr2, tpr2, est_plus["auc"].value)
    out.bands[_curve_name("official train + contribution", opts)] = metrics.roc_band(y_test, prob_plus, resamples=opts.bootstrap, seed=cfg.seed)
    compared = {
        "folder": str(opts.with_contribution),
        "images": len(cimages),
        "counts": _counts(contrib),
        "cache": _cache_json(cinfo),
        "training": _training_json(plus),
        "test": {"metrics": _estimates(est_plus), "confusion": metrics.confusion(y_test, prob_plus)},
        "seeds": arms.seeds,
        "arms": {
            "official train": metrics.arm_summary(y_test, arms.base_probs),
            "official train + contribution": metrics.arm_summary(y_test, arms.plus_probs),
        },
        "decided_by": SIGNIFICANCE_RULE,
        "difference": _differences(b.est, est_plus, verdicts),
        "verdict": _verdict(verdicts),
    }
    out.findings += _hurts(opts, verdicts, len(arms.seeds))
    return compared


def _differences(est: Mapping[str, metrics.Estimate], est_plus: Mapping[str, metrics.Estimate],
                 verdicts: Mapping[str, metrics.SeedComparison]) -> dict[str, Any]:
    """Each metric's change over seeds, and whether the new point estimate leaves the baseline's interval."""
    comparison = {}
    for k in metrics.METRIC_NAMES:
        base_est = est[k]
        comparison[k] = verdicts[k].as_dict() | {
            # The new point estimate falls outside the baseline's own interval.
            "outside_baseline_ci": bool(not np.isnan(base_est.low) and not (base_est.low <= est_plus[k].value <= base_est.high)),
        }
    return comparison


def _hurts(opts: BenchmarkOptions, verdicts: Mapping[str, metrics.SeedComparison], n_seeds: int) -> list[Finding]:
    """`benchmark.contribution-hurts` for each verdict metric the contribution significantly lowers."""
    found = []
    for k in VERDICT_METRICS:
        v = verdicts[k]
        if v.significant and v.change.value < 0:
            found.append(
                warning(
                    "benchmark.contribution-hurts",
                    f"adding the contribution lowers test {k} by {-v.change.value:.3f} over {n_seeds} seeds "
                    f"(95% CI over test images {v.change.low:+.3f} to {v.change.high:+.3f}, over seeds "
                    f"{v.seed_low:+.3f} to {v.seed_high:+.3f})",
                    file=str(opts.with_contribution),
                    column=k,
                )
            )
    return found


def _score(opts: BenchmarkOptions, b: _Baseline, scored: list[Sample], out: BenchmarkResult, stage: Stage) -> dict[str, Any] | None:
    """The baseline's opinion of each contributed label; None, and fatal, when a contributed image is unreadable."""
    stage(f"scoring {len(scored)} contributed images with the baseline")
    simages, sinfo = load_images(scored, b.cfg.image_size, b.cache_dir)
    out.findings += sinfo.findings
    if simages is None:
        out.fatal = True
        return None
    sprob, _ = predict(b.trained.model, simages, b.trained.device, b.trained.amp_dtype)
    flagged = score_contribution(simages.names, simages.labels.numpy(), sprob, opts.score_threshold)
    out.findings += [_label_suspect(f) for f in flagged]
    return {
        "folder": str(opts.score),
        "threshold": opts.score_threshold,
        "images": len(simages),
        "flagged": flagged,
        "all": [
            {"image": n, "declared": "COVID" if lab == COVID else "NonCOVID", "p_covid": round(float(p), 4)}
            for n, lab, p in zip(simages.names, simages.labels.tolist(), sprob.tolist())
        ],
    }


def _label_suspect(f: Mapping[str, object]) -> Finding:
    """`benchmark.label-suspect` for one image `score_contribution` flagged."""
    return warning(
        "benchmark.label-suspect",
        f"declared {f['declared']} but the baseline says {f['predicted']} with probability {f['probability']:.3f}",
        file=str(f["image"]),
        column="Label",
        value=str(f["declared"]),
        hint="check the label; the baseline is not a radiologist, so look before relabelling",
    )


def _dedupe(opts: BenchmarkOptions, b: _Baseline, out: BenchmarkResult) -> dict[str, object] | None:
    """Test metrics without the test images that duplicate a train image; None, and fatal, on an unreadable report."""
    test_names = set(b.test_set.names)
    train_names = set(b.train_set.names)
    if opts.leakage_report is not None:
        try:
            pairs = pairs_from_leakage_report(opts.leakage_report, test_names, train_names)
        except (OSError, ValueError) as exc:
            out.findings.append(error("benchmark.leakage-report", f"cannot read the check-leakage report: {exc}", file=str(opts.leakage_report)))
            out.fatal = True
            return None
    else:
        pairs = find_test_train_duplicates(opts.data_root, opts.splits_dir, test_names, train_names, opts.cache)
    return dedupe_test_metrics(b.test_set.names, b.y_test, b.prob, pairs, opts.bootstrap, b.cfg.seed)


# The metrics a contribution is judged on. Precision, recall, specificity and the F1 scores all
# move with the operating point (threshold 0.5 on a model's probability): a contribution that only
# shifts it trades one for another (measured, smoke model, 3 seeds: 32 duplicated train images
# raised recall by +0.26 and COVID F1 by +0.10, both significant, at accuracy -0.003 and AUC -0.03).
VERDICT_METRICS = ("auc", "accuracy")


def _verdict(verdicts: Mapping[str, metrics.SeedComparison]) -> dict[str, object]:
    """Which verdict metrics changed significantly, and in which direction (None: one seed, no verdict)."""
    judged = {k: verdicts[k] for k in VERDICT_METRICS}
    if any(v.significant is None for v in judged.values()):
        return {"metrics": list(VERDICT_METRICS), "better": None, "worse": None, "summary": "no verdict with one seed"}
    better = [k for k, v in judged.items() if v.significant and v.change.value > 0]
    worse = [k for k, v in judged.items() if v.significant and v.change.value < 0]
    summary = "worse" if worse and not better else "better" if better and not worse else "mixed" if better else "no significant change"
    return {"metrics": list(VERDICT_METRICS), "better": better, "worse": worse, "summary": summary}


def _curve_name(arm: str, opts: BenchmarkOptions) -> str:
    """The ROC legend: which seed's model is drawn when each arm has several."""
    return f"{arm}, seed {opts.config.seed}" if opts.seeds > 1 and opts.with_contribution else arm


SIGNIFICANCE_RULE = (
    "each arm is trained once per seed; the change is the mean over seeds of (with - without) on the same "
    "test images; significant when both its 95% paired bootstrap interval over test images and its 95% "
    "Student-t interval over the per-seed changes exclude 0 (needs 2 or more seeds)"
)


@dataclass(frozen=True)
class Arms:
    """Test probabilities of both arms, one array per seed (same order); the first seed's contribution model."""

    seeds: list[int]
    base_probs: list[np.ndarray]
    plus_probs: list[np.ndarray]
    plus_first: tuple[Trained, np.ndarray]


def _train_arms(
    opts: BenchmarkOptions,
    train_set: ImageSet,
    plus_set: ImageSet,
    val_set: ImageSet,
    test_set: ImageSet,
    build: Callable[[], tuple[Any, str]],
    first_base: tuple[Trained, np.ndarray],
    on_progress: Callable[[Progress], None] | None,
    stage: Stage,
) -> Arms:
    """Train without (beyond the first seed, already done) and with the contribution, seed by seed."""
    seeds = [opts.config.seed + k for k in range(opts.seeds)]
    base_probs, plus_probs = [first_base[1]], []
    plus_first: tuple[Trained, np.ndarray] | None = None
    for n, s in enumerate(seeds, 1):
        cfg = replace(opts.config, seed=s)
        if n > 1:
            stage(f"seed {s} ({n}/{len(seeds)}): training without the contribution on {len(train_set)} images")
            t = train(cfg, train_set, val_set, build, on_progress)
            base_probs.append(predict(t.model, test_set, t.device, t.amp_dtype)[0])
        stage(f"seed {s} ({n}/{len(seeds)}): training with the contribution on {len(plus_set)} images")
        t = train(cfg, plus_set, val_set, build, on_progress)
        p = predict(t.model, test_set, t.device, t.amp_dtype)[0]
        plus_probs.append(p)
        plus_first = plus_first or (t, p)
    assert plus_first is not None
    return Arms(seeds, base_probs, plus_probs, plus_first)


def with_smoke_defaults(cfg: TrainConfig, explicit: Mapping[str, object]) -> TrainConfig:
    """The smoke settings for every option the user did not set."""
    unset: dict[str, Any] = {k: v for k, v in SMOKE_DEFAULTS.items() if k not in explicit}
    return replace(cfg, **unset)
