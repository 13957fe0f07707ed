"""Training and inference: Adam with a cosine schedule, model selection on val, seeded runs.

Owns the device choice (`auto` = CUDA when present, with mixed precision there), determinism
(seeds, deterministic algorithms where PyTorch has them), the epoch loop with its timing (how much
of each epoch was spent waiting for data) and the predictions of a trained model. Reports progress
through a callback; never prints.
"""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import augment
from .data import ImageSet
from .metrics import point_metrics


@dataclass(frozen=True)
class TrainConfig:
    model: str = "densenet169"
    weights: str = "none"
    epochs: int = 30
    image_size: int = 224
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_auc: float
    lr: float
    seconds: float
    data_seconds: float

    @property
    def data_share(self) -> float:
        return self.data_seconds / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Progress:
    """A progress event: a finished batch (`stats` None) or a finished epoch."""

    epoch: int
    epochs: int
    batch: int
    batches: int
    loss: float
    stats: EpochStats | None = None


@dataclass
class Trained:
    model: nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    best_epoch: int
    history: list[EpochStats] = field(default_factory=list)
    weights: str = "none"


class DeviceError(Exception):
    """The requested device is not available (one-line message)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA device is available to PyTorch here (use --device auto or cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise DeviceError(f"--device {name}: expected auto, cpu or cuda[:N]")
    return torch.device(name)


def amp_dtype_for(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA: bfloat16 where supported (no loss scaling needed), else float16."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def seed_everything(seed: int, device: torch.device) -> None:
    """Fix every RNG and ask for deterministic kernels (warn, not fail, where none exists)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    return list(order.split(batch_size))


@torch.no_grad()
def predict(model: nn.Module, images: ImageSet, device: torch.device, amp_dtype: torch.dtype | None, batch_size: int = 64) -> tuple[np.ndarray, float]:
    """Probability of COVID for every image of the set, and the mean cross-entropy."""
    model.eval()
    probs: list[torch.Tensor] = []
    loss_sum = 0.0
    for idx in _batches(len(images), batch_size, None):
        x = augment.eval_batch(images.eval[idx.to(images.eval.device)].to(device, non_blocking=True))
        y = images.labels[idx.to(images.labels.device)].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        probs.append(torch.softmax(logits, dim=1)[:, 1].cpu())
    if not probs:
        return np.zeros(0), float("nan")
    return torch.cat(probs).numpy().astype(np.float64), loss_sum / len(images)


@dataclass
class _Optimizing:
    """What every training step of one run shares: the model, where it runs, its optimizer and RNG."""

    cfg: TrainConfig
    model: nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    gen: torch.Generator


@dataclass(frozen=True)
class _EpochPass:
    """One pass over the training set: summed loss, images seen, seconds spent on data, batches."""

    loss_sum: float
    seen: int
    data_seconds: float
    batches: int


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA kernels, so that wall-clock timings cover the work they time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_epoch(
    run: _Optimizing, train_dev: ImageSet, n: int, epoch: int, on_progress: Callable[[Progress], None] | None
) -> _EpochPass:
    """One shuffled pass of optimizer steps over the `n` training images, reporting each batch."""
    cfg, model, device = run.cfg, run.model, run.device
    data_seconds = 0.0
    loss_sum, seen = 0.0, 0
    batches = _batches(n, cfg.batch_size, run.gen)
    for b, idx in enumerate(batches, start=1):
        t0 = time.perf_counter()
        x = augment.train_batch([train_dev.train[i] for i in idx.tolist()], cfg.image_size, run.gen)
        y = train_dev.labels[idx.to(train_dev.labels.device)]
        # Count the augmentation kernels' GPU time as data time, not as model time.
        _sync(device)
        data_seconds += time.perf_counter() - t0
        run.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        batch_loss = float(loss.detach())
        loss_sum += batch_loss * len(idx)
        seen += len(idx)
        if on_progress:
            on_progress(Progress(epoch, cfg.epochs, b, len(batches), loss_sum / seen))
    return _EpochPass(loss_sum, seen, data_seconds, len(batches))


def train(
    cfg: TrainConfig,
    train_set: ImageSet,
    val_set: ImageSet,
    build: Callable[[], tuple[nn.Module, str]],
    on_progress: Callable[[Progress], None] | None = None,
) -> Trained:
    """Train from `build()`'s model; keep the epoch with the best val AUC (then lowest val loss)."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, device)
    amp_dtype = amp_dtype_for(device)
    model, weights = build()
    model = model.to(device)
    train_dev = train_set.to(device)
    val_dev = val_set.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    run = _Optimizing(cfg, model, device, amp_dtype, optimizer, scaler, torch.Generator().manual_seed(cfg.seed))
    history: list[EpochStats] = []
    best_state = copy.deepcopy(model.state_dict())
    best_key = (float("-inf"), float("-inf"))
    best_epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        _sync(device)
        start = time.perf_counter()
        done = _train_epoch(run, train_dev, len(train_set), epoch, on_progress)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        prob, val_loss = predict(model, val_dev, device, amp_dtype)
        _sync(device)
        seconds = time.perf_counter() - start
        m = point_metrics(val_set.labels.numpy(), prob)
        auc = m["auc"] if not np.isnan(m["auc"]) else 0.0
        stats = EpochStats(epoch, done.loss_sum / max(done.seen, 1), val_loss, m["accuracy"], auc, lr, seconds, done.data_seconds)
        history.append(stats)
        if (auc, -val_loss) > best_key:
            best_key = (auc, -val_loss)
            best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        if on_progress:
            on_progress(Progress(epoch, cfg.epochs, done.batches, done.batches, stats.train_loss, stats))
    model.load_state_dict(best_state)
    return Trained(model, device, amp_dtype, best_epoch, history, weights)
