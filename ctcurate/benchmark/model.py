"""The classifiers a benchmark trains, and how their starting weights are loaded.

Owns the model registry (torchvision DenseNet/ResNet with a 2-class head, and a tiny CNN for
smoke runs), the ImageNet / local-file weight loading with its one-line errors, and a forward pass
that pools with a plain mean (same numbers as torchvision's adaptive pooling, but with a
deterministic backward on CUDA).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import MODEL_NAMES

NUM_CLASSES = 2


class WeightsError(Exception):
    """Starting weights could not be obtained or do not fit the model (one-line message)."""


class TinyCNN(nn.Module):
    """Three strided conv blocks: enough to learn something on 64 px images in seconds on a CPU."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [3, width, width * 2, width * 4]
        for cin, cout in zip(channels, channels[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels[-1], NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class _MeanPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class DenseNetClassifier(nn.Module):
    """torchvision's DenseNet forward (features, ReLU, global mean, classifier) with a plain mean."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = cast(nn.Module, self.net.features)
        classifier = cast(nn.Module, self.net.classifier)
        return classifier(F.relu(features(x), inplace=True).mean(dim=(2, 3)))


class Wrapped(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _torchvision(name: str) -> Callable[[], tuple[nn.Module, str]]:
    def build() -> tuple[nn.Module, str]:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        return net, "classifier" if name.startswith("densenet") else "fc"

    return build


def _tiny() -> tuple[nn.Module, str]:
    return TinyCNN(), "fc"


# name -> builder of (torchvision-style network with its 1000- or 2-class head, head attribute)
MODELS: dict[str, Callable[[], tuple[nn.Module, str]]] = {
    "densenet169": _torchvision("densenet169"),
    "densenet121": _torchvision("densenet121"),
    "resnet18": _torchvision("resnet18"),
    "resnet50": _torchvision("resnet50"),
    "tiny": _tiny,
}
assert tuple(MODELS) == MODEL_NAMES  # the CLI's choices

IMAGENET_WEIGHTS = {
    "densenet169": "DenseNet169_Weights",
    "densenet121": "DenseNet121_Weights",
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
}

# torchvision's DenseNet checkpoints name layers `norm.1`; current modules call them `norm1`.
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    import torchvision

    if name not in IMAGENET_WEIGHTS:
        raise WeightsError(f"no ImageNet weights exist for model {name!r}: use --weights none or --weights PATH")
    weights = getattr(torchvision.models, IMAGENET_WEIGHTS[name]).IMAGENET1K_V1
    try:
        # torch.hub writes "Downloading: ..." to stdout itself; the library must stay quiet.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # urllib/http/ssl errors differ by platform; all mean "not fetched"
        reason = str(getattr(exc, "reason", exc)).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(
            f"cannot fetch the ImageNet weights of {name} from {weights.url} ({reason}); "
            f"download that file where there is network and pass it with --weights PATH"
        ) from exc


def _file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found (--weights takes imagenet, none or a file path)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors: the file is not a torch state dict
        raise WeightsError(f"{path}: not a PyTorch state dict ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        blob = blob["state_dict"]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise WeightsError(f"{path}: not a PyTorch state dict (expected a mapping of names to tensors)")
    return blob


def _fit_state_dict(net: nn.Module, head: str, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `net`, leaving a head of another class count freshly initialised."""
    clean: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ("module.", "net."):
            key = key.removeprefix(prefix)
        m = _DENSENET_OLD_KEY.match(key)
        clean[m.group(1) + m.group(2) if m else key] = value
    own = net.state_dict()
    for key in [k for k in clean if k.startswith(head + ".") and k in own and clean[k].shape != own[k].shape]:
        del clean[key]  # e.g. the 1000-class ImageNet head: the 2-class head stays random
    wrong_shape = [k for k in clean if k in own and clean[k].shape != own[k].shape]
    if wrong_shape:
        k = wrong_shape[0]
        raise WeightsError(
            f"{source} does not fit this model: {len(wrong_shape)} tensors of another shape "
            f"(first: {k} {tuple(clean[k].shape)} vs {tuple(own[k].shape)})"
        )
    missing, unexpected = net.load_state_dict(clean, strict=False)
    # Old checkpoints predate BatchNorm's `num_batches_tracked` counter; it only matters with momentum=None.
    bad_missing = [k for k in missing if not k.startswith(head + ".") and not k.endswith("num_batches_tracked")]
    if unexpected or bad_missing:
        raise WeightsError(
            f"{source} does not fit this model: {len(bad_missing)} missing, {len(unexpected)} unexpected tensors"
            + f" (first: {(bad_missing + list(unexpected))[0]})"
        )


def build_model(name: str, weights: str = "none") -> tuple[nn.Module, str]:
    """The model with a 2-class head and its starting weights; returns (model, weights description).

    `weights`: `none` (random init), `imagenet` (torchvision's, fetched and cached by torchvision)
    or a path to a state dict (an ImageNet checkpoint or a saved 2-class model).
    """
    if name not in MODELS:
        raise WeightsError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    net, head = MODELS[name]()
    described = "none (trained from scratch)"
    if weights == "imagenet":
        _fit_state_dict(net, head, _imagenet_state_dict(name), f"ImageNet weights of {name}")
        described = "imagenet"
    elif weights != "none":
        path = Path(weights).expanduser()
        _fit_state_dict_with_head(net, head, _file_state_dict(path), str(path))
        described = str(path)
    old = getattr(net, head)
    if old.out_features != NUM_CLASSES:
        setattr(net, head, nn.Linear(old.in_features, NUM_CLASSES))
    if name.startswith("densenet"):
        return DenseNetClassifier(net), described
    if hasattr(net, "avgpool"):
        net.avgpool = _MeanPool()
    return Wrapped(net), described


def _fit_state_dict_with_head(net: nn.Module, head: str, state: dict[str, torch.Tensor], source: str) -> None:
    """A file may hold a 2-class model saved by ctcurate: give the net a 2-class head first."""
    head_weight = next((v for k, v in state.items() if k.removeprefix("net.").removeprefix("module.") == f"{head}.weight"), None)
    old = getattr(net, head)
    if head_weight is not None and head_weight.shape[0] == NUM_CLASSES and old.out_features != NUM_CLASSES:
        setattr(net, head, nn.Linear(old.in_features, NUM_CLASSES))
    _fit_state_dict(net, head, state, source)
