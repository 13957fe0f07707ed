"""The bundled PyTorch baseline (`ctcurate benchmark`): the only package that imports torch.

This file imports nothing heavy, so the CLI can check for the `benchmark` extra and give the
install line before anything imports torch; the modules beside it import torch freely.
"""

from __future__ import annotations

import importlib

INSTALL_LINE = "pip install 'ctcurate[benchmark]'"
# The models `model.MODELS` builds, named here so the CLI can offer them without importing torch.
MODEL_NAMES = ("densenet169", "densenet121", "resnet18", "resnet50", "tiny")
DEVICE_NAMES = ("auto", "cpu", "cuda", *(f"cuda:{n}" for n in range(8)))
REQUIRED = ("torch", "torchvision", "matplotlib")


class MissingExtra(Exception):
    """A package of the `benchmark` extra is not importable."""

    def __init__(self, package: str) -> None:
        super().__init__(
            f"ctcurate benchmark needs {package}, part of the 'benchmark' extra (torch, torchvision, matplotlib); "
            f"install it with: {INSTALL_LINE}"
        )
        self.package = package


def require_extra() -> None:
    """Import the extra's packages, or raise MissingExtra naming the first that is missing."""
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingExtra(name) from exc
