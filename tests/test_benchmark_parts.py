"""The benchmark's building blocks: augmentation fidelity, weight loading, contributions, the tensor cache."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from ctcurate.benchmark import augment
from ctcurate.contribution.source import open_contribution
from ctcurate.benchmark.data import COVID, NONCOVID, Sample, cache_key, contribution_samples, decode, load_images
from ctcurate.benchmark.model import WeightsError, build_model
from ctcurate.benchmark.run import dedupe_test_metrics, score_contribution, pairs_from_leakage_report


# pytest -n 2 already runs two workers on a 2-core machine: more torch threads per worker only
# oversubscribe the cores (OpenMP spin-waits made runs 20x slower under load).
torch.set_num_threads(1)

@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("shape", [(256, 256), (256, 341), (400, 256)])
def test_crop_params_draw_as_torchvision(seed: int, shape: tuple[int, int]) -> None:
    torch.manual_seed(seed)
    expected = RandomResizedCrop.get_params(torch.zeros(1, *shape), scale=[0.5, 1.0], ratio=[3 / 4, 4 / 3])
    assert augment.crop_params(*shape, torch.Generator().manual_seed(seed)) == tuple(expected)


def test_tensor_crop_resize_matches_torchvision() -> None:
    img = torch.randint(0, 256, (3, 256, 300), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    top, left, h, w = augment.crop_params(256, 300, gen)
    flip = float(torch.rand(1, generator=gen)) < 0.5
    gen.set_state(state)
    got = augment.train_batch([img], 224, gen)
    ref = TF.resized_crop(img, top, left, h, w, [224, 224], antialias=True)
    if flip:
        ref = ref.flip(-1)
    # uint8 kernels may round differently by one grey level.
    one_level = 1.0 / 255.0 / min(augment.IMAGENET_STD) + 1e-6
    torch.testing.assert_close(got[0], augment.normalize(ref.unsqueeze(0))[0], atol=one_level, rtol=0)
    assert got.shape == (1, 3, 224, 224) and got.dtype == torch.float32


def test_decode_follows_the_reference_resizes(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "wide.png"
    Image.new("L", (400, 200), 128).save(path)
    train, ev = decode(path, 224)
    assert train.shape == (3, 256, 512) and ev.shape == (3, 224, 224)
    assert train.dtype == ev.dtype == torch.uint8


def test_resnet_imagenet_checkpoint_loads_all_but_the_head(tmp_path: Path) -> None:
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(ref.state_dict(), path)
    model, _ = build_model("resnet18", str(path))
    got = model.state_dict()
    assert torch.equal(got["net.conv1.weight"], ref.state_dict()["conv1.weight"])
    assert got["net.fc.weight"].shape == (2, 512)


def test_old_style_densenet_checkpoint_keys_are_renamed(tmp_path: Path) -> None:
    ref = torchvision.models.densenet121(weights=None).state_dict()
    # As torchvision's published file: `norm.1`-style names and no BatchNorm batch counters.
    old = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in ref.items() if not k.endswith("num_batches_tracked")}
    assert old.keys() != ref.keys()
    path = tmp_path / "densenet121-old.pth"
    torch.save(old, path)
    model, _ = build_model("densenet121", str(path))
    got = model.state_dict()
    key = "features.denseblock1.denselayer1.norm1.weight"
    assert torch.equal(got[f"net.{key}"], ref[key])


def test_mismatched_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match=r"does not fit this model: \d+ missing, \d+ unexpected tensors"):
        build_model("densenet121", str(path))
    wide = torchvision.models.resnet50(weights=None).state_dict()
    torch.save({"layer1.0.conv1.weight": wide["layer1.0.conv1.weight"]}, path)
    with pytest.raises(WeightsError, match=r"1 tensors of another shape \(first: layer1.0.conv1.weight \(64, 64, 1, 1\) vs \(64, 64, 3, 3\)\)"):
        build_model("resnet18", str(path))


def test_imagenet_offline_says_how_to_pass_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def offline(url: str, *_a: object, **_k: object) -> None:
        print(f'Downloading: "{url}" to /root/.cache/torch/hub/checkpoints/x.pth')  # as torch.hub does
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as info:
        build_model("densenet169", "imagenet")
    url = torchvision.models.DenseNet169_Weights.IMAGENET1K_V1.url
    assert str(info.value) == (
        f"cannot fetch the ImageNet weights of densenet169 from {url} ([Errno -3] Temporary failure in name resolution); "
        "download that file where there is network and pass it with --weights PATH"
    )
    with pytest.raises(WeightsError, match="no ImageNet weights exist for model 'tiny'"):
        build_model("tiny", "imagenet")
    # Through the CLI: one line on stderr, nothing on stdout, exit 2, before any image is read.
    from click.testing import CliRunner

    from ctcurate.cli import main

    (tmp_path / "Images-processed").mkdir()
    result = CliRunner().invoke(main, ["benchmark", "--weights", "imagenet", "--data", str(tmp_path), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {info.value}\n"


def test_contribution_labels_from_a_sheet(real_data: Path, tmp_path: Path) -> None:
    covid = sorted((real_data / "Images-processed" / "CT_COVID").iterdir())[:2]
    for p in covid:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "sheet.csv").write_text(
        f"File name,Label,DOI\n{covid[0].name},COVID,x\n{covid[1].name},Non-COVID,x\nmissing.png,COVID,x\nother.png,maybe,x\n"
    )
    with open_contribution(tmp_path) as contribution:
        samples, findings = contribution_samples(contribution)
    assert [(s.name, s.label) for s in samples] == [(covid[0].name, COVID), (covid[1].name, NONCOVID)]
    assert [(f.code, f.row, f.value) for f in findings] == [
        ("benchmark.image-missing", 4, "missing.png"),
        ("benchmark.label-invalid", 5, "maybe"),
    ]


def test_contribution_without_labels_is_an_error(tmp_path: Path) -> None:
    with open_contribution(tmp_path) as contribution:
        samples, findings = contribution_samples(contribution)
    assert samples == [] and [f.code for f in findings] == ["benchmark.contribution-empty"]


def test_contribution_samples_from_a_zip_with_class_folders(real_data: Path, tmp_path: Path) -> None:
    """The one definition of a contribution (`contribution.source`): a .zip works like a folder."""
    import zipfile

    covid = sorted((real_data / "Images-processed" / "CT_COVID").iterdir())[0]
    noncovid = sorted((real_data / "Images-processed" / "CT_NonCOVID").iterdir())[0]
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as zf:
        zf.write(covid, f"Images-processed/CT_COVID/{covid.name}")
        zf.write(noncovid, f"CT_NonCOVID/{noncovid.name}")
    with open_contribution(tmp_path / "c.zip") as contribution:
        samples, findings = contribution_samples(contribution)
        assert all(s.path.is_file() for s in samples)
    assert sorted((s.name, s.label) for s in samples) == [(f"CT_COVID/{covid.name}", COVID), (f"CT_NonCOVID/{noncovid.name}", NONCOVID)]
    assert findings == []


def test_cache_key_follows_content_and_size(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "a.png"
    Image.new("L", (40, 30), 10).save(path)
    s = [Sample(path, "CT_COVID/a.png", COVID, "train")]
    k1 = cache_key(s, 64)
    assert cache_key(s, 64) == k1 and cache_key(s, 96) != k1
    Image.new("L", (40, 30), 11).save(path)
    assert cache_key(s, 64) != k1
    images, info = load_images(s, 64, tmp_path / "cache")
    assert images is not None and not info.hit
    again, info2 = load_images(s, 64, tmp_path / "cache")
    assert info2.hit and again is not None and torch.equal(again.eval, images.eval)
    assert [torch.equal(a, b) for a, b in zip(again.train, images.train)] == [True]


def test_score_and_dedupe_helpers(tmp_path: Path) -> None:
    import json

    import numpy as np

    flagged = score_contribution(["a", "b", "c"], np.array([1, 0, 1]), np.array([0.05, 0.95, 0.5]), 0.9)
    assert flagged == [
        {"image": "a", "declared": "COVID", "predicted": "NonCOVID", "probability": 0.95},
        {"image": "b", "declared": "NonCOVID", "predicted": "COVID", "probability": 0.95},
    ]
    report = tmp_path / "leaks.json"
    report.write_text(json.dumps({"pairs": [{"a": "t1", "b": "r1"}, {"a": "r2", "b": "t2"}, {"a": "t1", "b": "t2"}, {"a": "v", "b": "r1"}]}))
    pairs = pairs_from_leakage_report(report, {"t1", "t2", "t3"}, {"r1", "r2"})
    assert pairs == [("t1", "r1"), ("t2", "r2")]
    y, p = np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.6, 0.4])
    dd = dedupe_test_metrics(["t1", "t2", "t3", "t4"], y, p, pairs, resamples=100, seed=0)
    assert dd["removed"] == ["t1", "t2"] and dd["n"] == 2


@pytest.mark.parametrize("name, head", [("densenet121", "classifier"), ("resnet18", "fc")])
def test_mean_pooled_forward_equals_torchvision(name: str, head: str) -> None:
    model, _ = build_model(name)
    ref = getattr(torchvision.models, name)(weights=None)
    setattr(ref, head, torch.nn.Linear(getattr(ref, head).in_features, 2))
    ref.load_state_dict({k.removeprefix("net."): v for k, v in model.state_dict().items()})
    model.eval()
    ref.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)


def test_dedupe_pairs_from_check_leakage_on_real_data(real_data: Path, tmp_path: Path) -> None:
    """The library path of --dedupe-test: check-leakage's real test/train leak comes back as (test, train)."""
    from ctcurate.benchmark.run import find_test_train_duplicates
    from ctcurate.core.layout import default_metadata_dir, split_files

    names: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for sf in split_files(default_metadata_dir() / "Data-split"):
        names[sf.split] |= {f"{sf.class_dir}/{line.strip()}" for line in sf.path.read_text().splitlines() if line.strip()}
    pairs = find_test_train_duplicates(
        real_data, default_metadata_dir() / "Data-split", names["test"], names["train"], tmp_path / "cache.sqlite"
    )
    assert ("CT_COVID/kjr-21-e24-p5-29.png", "CT_NonCOVID/71%0.jpg") in pairs
    assert ("CT_COVID/kjr-21-e24-p5-31.png", "CT_NonCOVID/71%1.jpg") in pairs
    assert all(t in names["test"] and r in names["train"] for t, r in pairs)


def test_split_entries_that_are_paths_are_not_followed(tmp_path: Path) -> None:
    from ctcurate.benchmark.data import official_samples

    root = tmp_path / "data"
    folder = root / "Images-processed" / "CT_COVID"
    folder.mkdir(parents=True)
    (folder / "ok.png").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("not an image")
    splits = tmp_path / "splits"
    (splits / "COVID").mkdir(parents=True)
    (splits / "COVID" / "trainCT_COVID.txt").write_text(
        "ok.png\n../../../secret.txt\n/etc/passwd\n..\\..\\secret.txt\n")
    samples, findings = official_samples(root, splits)
    assert [s.name for s in samples] == ["CT_COVID/ok.png"]
    outside = [(f.row, f.value) for f in findings if f.code == "benchmark.entry-outside"]
    assert outside == [(2, "../../../secret.txt"), (3, "/etc/passwd"), (4, "..\\..\\secret.txt")]
