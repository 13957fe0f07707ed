"""`ctcurate benchmark` end to end on the real images: smoke run, determinism, contribution, scoring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from ctcurate.benchmark.data import official_samples, smoke_subset
from ctcurate.benchmark.run import SMOKE_SUBSET
from ctcurate.cli import main
from ctcurate.core.layout import IMAGES_DIR

# pytest -n 2 already runs two workers on a 2-core machine: more torch threads per worker only
# oversubscribe the cores (OpenMP spin-waits made runs 20x slower under load).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
SPLITS = REPO / "metadata" / "Data-split"
METRICS = {"accuracy", "precision", "recall", "specificity", "f1", "f1_reference", "auc"}


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, ["benchmark", "--quiet", *args], catch_exceptions=False)


def _smoke_names(real_data: Path) -> tuple[list[str], list[str]]:
    samples, _ = official_samples(real_data, SPLITS)
    sub = smoke_subset(samples, SMOKE_SUBSET, seed=0)
    return [s.name for s in sub if s.split == "test"], [s.name for s in sub if s.split == "train"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tensor-cache")


@pytest.fixture(scope="module")
def smoke(real_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path, list[str]]:
    """One smoke run (cold tensor cache) with --dedupe-test fed by a check-leakage style report."""
    out = tmp_path_factory.mktemp("smoke")
    test_names, train_names = _smoke_names(real_data)
    dupes = [(test_names[0], train_names[0]), (train_names[1], test_names[-1])]  # both orders occur
    report = out / "leaks.json"
    report.write_text(json.dumps({"pairs": [{"a": a, "b": b, "kind": ["cross-split"]} for a, b in dupes]}))
    result = _invoke(
        ["--smoke", "--data", str(real_data), "--output", str(out / "res"), "--cache-dir", str(cache_dir), "--dedupe-test", "--leakage-report", str(report)]
    )
    return result, out / "res", [test_names[0], test_names[-1]]


def test_smoke_run_writes_results(smoke: tuple[Result, Path, list[str]]) -> None:
    result, out, _ = smoke
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert data["protocol"]["model"] == "tiny" and data["protocol"]["smoke"] is True
    assert data["protocol"]["weights"] == "none (trained from scratch)" and data["protocol"]["pretrained"] is False
    assert data["data"]["counts"] == {s: {"COVID": n, "NonCOVID": n} for s, n in SMOKE_SUBSET.items()}
    assert data["data"]["cache"]["hit"] is False and data["data"]["cache"]["decoded"] == 2 * sum(SMOKE_SUBSET.values())
    assert data["training"]["device"] == "cpu" and data["training"]["mixed_precision"] is None
    assert len(data["training"]["history"]) == data["protocol"]["epochs"] == 8
    assert 1 <= data["training"]["best_epoch"] <= 8
    assert 0 < data["training"]["data_wait_share"] < 1
    test = data["test"]
    assert test["n"] == 2 * SMOKE_SUBSET["test"]
    assert set(test["metrics"]) == METRICS
    for name, est in test["metrics"].items():
        assert est["ci_low"] <= est["value"] <= est["ci_high"], name
    c = test["confusion"]
    assert c["tp"] + c["fn"] == c["tn"] + c["fp"] == SMOKE_SUBSET["test"]
    assert test["metrics"]["accuracy"]["value"] == pytest.approx((c["tp"] + c["tn"]) / test["n"], abs=1e-6)
    # The smoke model learns something: better than chance on the held-out test images.
    assert test["metrics"]["auc"]["value"] > 0.55
    for png in ("roc.png", "confusion.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.width >= 300 and im.height >= 300
    # The table on stdout carries the same figures.
    auc = test["metrics"]["auc"]
    assert f"ROC AUC                               {auc['value']:.3f}   [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]" in result.stdout
    assert "F1 (reference: NonCOVID positive)" in result.stdout
    assert f"results: {out / 'results.json'}, {out / 'roc.png'}, {out / 'confusion.png'}" in result.stderr


def test_dedupe_test_removes_the_reported_test_images(smoke: tuple[Result, Path, list[str]]) -> None:
    _, out, removed = smoke
    data = json.loads((out / "results.json").read_text())
    dd = data["dedupe_test"]
    assert dd["removed"] == sorted(removed)
    assert dd["n"] == data["test"]["n"] - 2
    assert set(dd["metrics"]) == METRICS


def test_two_runs_give_identical_numbers(smoke: tuple[Result, Path, list[str]], real_data: Path, cache_dir: Path, tmp_path: Path) -> None:
    first = json.loads((smoke[1] / "results.json").read_text())
    result = _invoke(["--smoke", "--data", str(real_data), "--output", str(tmp_path), "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    second = json.loads((tmp_path / "results.json").read_text())
    assert second["data"]["cache"]["hit"] is True and second["data"]["cache"]["decoded"] == 0
    assert second["test"] == first["test"]
    strip = lambda h: [{k: v for k, v in e.items() if "seconds" not in k} for e in h]  # noqa: E731
    assert strip(second["training"]["history"]) == strip(first["training"]["history"])


def _contribution(real_data: Path, root: Path) -> Path:
    """Six real train images, with one COVID image filed as NonCOVID (a label error to find)."""
    samples, _ = official_samples(real_data, SPLITS)
    train = sorted((s for s in samples if s.split == "train"), key=lambda s: s.name)
    covid = [s for s in train if s.label == 1][:4]
    non = [s for s in train if s.label == 0][:2]
    folder = root / "contribution"
    for s, cls in [(s, "CT_COVID") for s in covid[:3]] + [(s, "CT_NonCOVID") for s in non + covid[3:]]:
        (folder / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(s.path, folder / cls / s.path.name)
    return folder


def test_with_contribution_and_score(real_data: Path, cache_dir: Path, tmp_path: Path) -> None:
    folder = _contribution(real_data, tmp_path)
    out = tmp_path / "res"
    result = _invoke(
        ["--smoke", "--epochs", "4", "--data", str(real_data), "--output", str(out), "--cache-dir", str(cache_dir),
         "--with-contribution", str(folder), "--score", str(folder), "--score-threshold", "0.5"]
    )
    assert result.exit_code in (0, 1), result.output
    data = json.loads((out / "results.json").read_text())
    c = data["contribution"]
    assert c["images"] == 6 and c["counts"] == {"contribution": {"COVID": 3, "NonCOVID": 3}}
    assert set(c["difference"]) == METRICS
    for k, d in c["difference"].items():
        with_value = c["test"]["metrics"][k]["value"]
        assert d["value"] == pytest.approx(with_value - data["test"]["metrics"][k]["value"], abs=2e-6), k
        assert d["ci_low"] <= d["value"] <= d["ci_high"], k
        assert d["significant"] is None and d["seed_sd"] is None  # one seed: no verdict
    # The second model saw more images, so its training history is its own.
    assert c["training"]["history"] != data["training"]["history"]
    s = data["score"]
    assert len(s["all"]) == 6
    expected = sorted(
        a["image"] for a in s["all"] if (1 - a["p_covid"] if a["declared"] == "COVID" else a["p_covid"]) >= 0.5
    )
    assert sorted(f["image"] for f in s["flagged"]) == expected
    assert result.exit_code == (1 if expected or "benchmark.contribution-hurts" in result.stderr else 0)
    for f in s["flagged"]:
        assert f"{f['image']}: declared {f['declared']}, predicted {f['predicted']} (p = {f['probability']:.3f})" in result.stdout
    assert "with the contribution (6 images added to train), same test split, 1 seed(s) per arm (0):" in result.stdout
    assert "one seed cannot tell a change from training noise: rerun with --seeds 3 (or more) for a verdict" in result.stdout
    assert "benchmark.contribution-hurts" not in result.stderr


def test_missing_image_is_a_one_line_error(real_data: Path, tmp_path: Path) -> None:
    splits = tmp_path / "Data-split"
    shutil.copytree(SPLITS, splits)
    lst = splits / "COVID" / "valCT_COVID.txt"
    lst.write_text(lst.read_text() + "no-such-image.png\n")
    result = _invoke(["--smoke", "--data", str(real_data), "--splits", str(splits), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"error: {lst}, row 61: benchmark.image-missing: listed image not found: " in result.stderr
    assert not (tmp_path / "o").exists()


def test_unreadable_image_is_reported(real_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    for cls in ("CT_COVID", "CT_NonCOVID"):
        (root / IMAGES_DIR / cls).mkdir(parents=True)
    samples, _ = official_samples(real_data, SPLITS)
    for s in smoke_subset(samples, SMOKE_SUBSET, seed=0):
        (root / IMAGES_DIR / s.name).symlink_to(s.path)
    victim = smoke_subset(samples, SMOKE_SUBSET, seed=0)[0]
    (root / IMAGES_DIR / victim.name).unlink()
    (root / IMAGES_DIR / victim.name).write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    splits = tmp_path / "splits"
    for s in ("COVID", "NonCOVID"):
        (splits / s).mkdir(parents=True)
    for f in SPLITS.rglob("*.txt"):
        cls = f.stem.removeprefix("train").removeprefix("val").removeprefix("test")
        keep = [line for line in f.read_text().splitlines() if (root / IMAGES_DIR / cls / line.strip()).exists()]
        (splits / f.parent.name / f.name).write_text("\n".join(keep) + "\n")
    result = _invoke(["--smoke", "--data", str(root), "--splits", str(splits), "--output", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 2
    assert f"error: {root / IMAGES_DIR / victim.name}: benchmark.image-unreadable: cannot decode" in result.stderr


def test_weights_file_round_trip_and_errors(real_data: Path, cache_dir: Path, tmp_path: Path) -> None:
    from ctcurate.benchmark.model import build_model

    model, _ = build_model("tiny")
    state = {k: torch.full_like(v, 0.01) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = tmp_path / "start.pt"
    torch.save(state, path)
    loaded, described = build_model("tiny", str(path))
    assert described == str(path)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k
    result = _invoke(["--smoke", "--epochs", "1", "--weights", str(path), "--data", str(real_data), "--output", str(tmp_path / "o"), "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "results.json").read_text())["training"]["weights"] == str(path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    result = _invoke(["--smoke", "--weights", str(junk), "--data", str(real_data), "--output", str(tmp_path / "o2"), "--cache-dir", str(cache_dir)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {junk}: not a PyTorch state dict")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nope"], "'nope' is not one of 'densenet169', 'densenet121', 'resnet18', 'resnet50', 'tiny'."),
        (["--device", "tpu"], "'tpu' is not one of 'auto', 'cpu', 'cuda', 'cuda:0',"),
    ],
)
def test_model_and_device_are_choices(real_data: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = _invoke(["--smoke", "--data", str(real_data), "--output", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_options_are_checked_before_torch_is_imported(real_data: Path, tmp_path: Path) -> None:
    """A wrong folder or combination fails in a fraction of a second, without loading torch."""
    import subprocess
    import sys

    code = (
        "import sys; from click.testing import CliRunner; from ctcurate.cli import main; "
        f"r = CliRunner().invoke(main, ['benchmark', '--data', {str(real_data)!r}, '--with-contribution', {str(tmp_path / 'nope')!r}]); "
        "print(r.exit_code, r.stderr.strip(), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"2 error: --with-contribution {tmp_path / 'nope'}: no such folder or .zip False"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "/no/such.pt"], "error: /no/such.pt: weights file not found (--weights takes imagenet, none or a file path)\n"),
    ],
)
def test_bad_options_fail_fast_with_one_line(real_data: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = _invoke(["--smoke", "--data", str(real_data), "--output", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert result.stderr == message


def test_missing_data_root_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTCURATE_DATA", raising=False)
    result = _invoke(["--smoke", "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: no image root given: pass --images/--data ROOT or set CTCURATE_DATA to the folder that holds Images-processed/\n"
    )


def test_score_alone_with_a_sheet_declaring_labels(real_data: Path, cache_dir: Path, tmp_path: Path) -> None:
    samples, _ = official_samples(real_data, SPLITS)
    chosen = sorted((s for s in samples if s.split == "train"), key=lambda s: s.name)[:3]
    folder = tmp_path / "contribution"
    folder.mkdir()
    rows = ["File name,Label,Patient ID"]
    for s in chosen:
        shutil.copy(s.path, folder / s.path.name)
        rows.append(f"{s.path.name},{'COVID' if s.label == 1 else 'NonCOVID'},p1")
    (folder / "contribution.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "res"
    result = _invoke(["--smoke", "--epochs", "2", "--data", str(real_data), "--output", str(out), "--cache-dir", str(cache_dir),
                      "--score", str(folder), "--score-threshold", "0.99"])
    data = json.loads((out / "results.json").read_text())
    assert "contribution" not in data
    s = data["score"]
    assert [a["image"] for a in s["all"]] == [c.path.name for c in chosen]
    assert [a["declared"] for a in s["all"]] == ["COVID" if c.label == 1 else "NonCOVID" for c in chosen]
    assert all(0 <= a["p_covid"] <= 1 for a in s["all"])
    assert result.exit_code == (1 if s["flagged"] else 0)
    assert f"scored 3 contributed images: {len(s['flagged'])} likely label error(s) (p >= 0.99)" in result.stdout


def _copies(real_data: Path, root: Path, per_class: int, flip: bool, copies: int = 1) -> Path:
    """Copies of smoke-subset train images as a contribution, with their labels or the opposite ones."""
    samples, _ = official_samples(real_data, SPLITS)
    train = [s for s in smoke_subset(samples, SMOKE_SUBSET, seed=0) if s.split == "train"]
    chosen = [s for s in train if s.label == 1][:per_class] + [s for s in train if s.label == 0][:per_class]
    for s in chosen:
        cls = "CT_COVID" if (s.label == 1) != flip else "CT_NonCOVID"
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            shutil.copy(s.path, root / cls / f"copy{k}-{s.path.name}")
    return root


@pytest.mark.parametrize("kind", ["duplicates", "flipped"])
def test_multi_seed_verdict_on_the_smoke_model(kind: str, real_data: Path, cache_dir: Path, tmp_path: Path) -> None:
    """Duplicated training images change nothing that beats the noise; images with flipped labels hurt."""
    if kind == "duplicates":
        folder = _copies(real_data, tmp_path / "c", per_class=16, flip=False)
    else:  # every train image twice more, under the other label: the model learns the labels backwards
        folder = _copies(real_data, tmp_path / "c", per_class=SMOKE_SUBSET["train"], flip=True, copies=2)
    out = tmp_path / "res"
    result = _invoke(["--smoke", "--epochs", "5", "--data", str(real_data), "--output", str(out), "--cache-dir", str(cache_dir),
                      "--with-contribution", str(folder), "--seeds", "3", "--bootstrap", "300"])
    data = json.loads((out / "results.json").read_text())
    c = data["contribution"]
    assert c["seeds"] == [0, 1, 2]
    for arm in c["arms"].values():
        assert len(arm["auc"]["values"]) == 3 and arm["auc"]["sd"] is not None
    auc = c["difference"]["auc"]
    assert len(auc["per_seed"]) == 3 and auc["value"] == pytest.approx(sum(auc["per_seed"]) / 3, abs=1e-5)
    assert auc["seed_ci_low"] <= auc["value"] <= auc["seed_ci_high"]
    if kind == "duplicates":
        assert c["verdict"] == {"metrics": ["auc", "accuracy"], "better": [], "worse": [], "summary": "no significant change"}, c["difference"]
        assert not c["difference"]["auc"]["significant"] and not c["difference"]["accuracy"]["significant"]
        assert result.exit_code == 0, result.output
        assert "verdict on ROC AUC, accuracy: no significant change" in result.stdout
    else:
        assert auc["significant"] is True and auc["value"] < -0.1, auc
        assert c["verdict"]["summary"] == "worse" and "auc" in c["verdict"]["worse"]
        assert result.exit_code == 1
        assert "benchmark.contribution-hurts: adding the contribution lowers test auc by" in result.stderr
        assert "over 3 seeds" in result.stderr


def test_full_run_on_the_cpu_starts_with_a_warning(real_data: Path, tmp_path: Path) -> None:
    """Even with --quiet; here the run then stops at once on a missing image, before any training."""
    splits = tmp_path / "Data-split"
    shutil.copytree(SPLITS, splits)
    lst = splits / "COVID" / "valCT_COVID.txt"
    lst.write_text(lst.read_text() + "no-such-image.png\n")
    result = _invoke(["--device", "cpu", "--model", "resnet18", "--data", str(real_data), "--splits", str(splits), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        "warning: training 1 model(s) of 30 epochs on the CPU takes hours; --smoke checks the set-up in a minute, "
        "a GPU does the full run in minutes"
    )
