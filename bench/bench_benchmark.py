"""`make bench`: the benchmark's data path, cached uint8 tensors against decoding PNG/JPEG each epoch.

Measures, on this machine's CPU and in one run:
  1. one epoch of train batches (RandomResizedCrop 224 + flip + normalize, batch 16) over the official
     train split from the tensor cache, against the classic per-epoch pipeline (PIL open + decode,
     Resize(256), RandomResizedCrop(224), flip, ToTensor, Normalize), single process: target >= 3x;
  2. the cache itself: cold build (decode + resize once) and warm load;
  3. reported only: one DenseNet-169 training step (batch 16, 224 px) on this CPU, and the projected
     time of one full-protocol epoch and of a 30-epoch run here.
Needs $CTCURATE_DATA; exits non-zero when a target is missed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from ctcurate.benchmark import augment
from ctcurate.benchmark.data import load_images, official_samples
from ctcurate.benchmark.model import build_model
from ctcurate.core.layout import default_metadata_dir, resolve_data_root

TARGET_RATIO = 3.0


def main() -> int:
    root = resolve_data_root(os.environ.get("CTCURATE_DATA"))
    samples, findings = official_samples(root, default_metadata_dir() / "Data-split")
    if findings:
        print(f"split problems: {findings[0].message}")
        return 2
    train = [s for s in samples if s.split == "train"]
    print(f"{len(train)} train images, torch {torch.__version__}, {torch.get_num_threads()} threads")

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        images, info = load_images(train, 224, Path(tmp))
        cold = time.perf_counter() - t
        t = time.perf_counter()
        images, info2 = load_images(train, 224, Path(tmp))
        warm = time.perf_counter() - t
        size_mb = info.path.stat().st_size / 2**20
    assert images is not None and info2.hit
    print(f"cache: cold build {cold:.2f} s ({len(train) / cold:.0f} images/s), warm load {warm:.2f} s, file {size_mb:.0f} MiB")

    from PIL import Image
    from torchvision import transforms as T

    pipeline = T.Compose(
        [T.Resize(256), T.RandomResizedCrop(224, scale=(0.5, 1.0)), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(augment.IMAGENET_MEAN, augment.IMAGENET_STD)]
    )
    gen = torch.Generator().manual_seed(0)

    def cached_epoch() -> float:
        t = time.perf_counter()
        for idx in torch.randperm(len(images), generator=gen).split(16):
            augment.train_batch([images.train[i] for i in idx.tolist()], 224, gen)
        return time.perf_counter() - t

    def decoding_epoch() -> float:
        t = time.perf_counter()
        for idx in torch.randperm(len(train)).split(16):
            batch = []
            for i in idx.tolist():
                with Image.open(train[i].path) as im:
                    batch.append(pipeline(im.convert("RGB")))
            torch.stack(batch)
        return time.perf_counter() - t

    # Interleaved and best of 3: the machine is shared, so the least-disturbed epoch of each counts.
    cached, decoding = float("inf"), float("inf")
    for _ in range(3):
        cached = min(cached, cached_epoch())
        decoding = min(decoding, decoding_epoch())
    ratio = decoding / cached
    print(f"one epoch of train batches (best of 3): cached tensors {cached:.2f} s; decoding each epoch (reference) "
          f"{decoding:.2f} s; speed-up {ratio:.1f}x (target >= {TARGET_RATIO}x)")

    model, _ = build_model("densenet169")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = augment.train_batch(images.train[:16], 224, gen)
    y = images.labels[:16]
    steps = []
    for _ in range(2):
        t = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        steps.append(time.perf_counter() - t)
    per_epoch = steps[-1] * -(-len(train) // 16)
    print(f"reported: DenseNet-169 train step (batch 16, 224 px) on this CPU {steps[-1]:.1f} s; projected epoch "
          f"(train only) {per_epoch / 60:.1f} min, 30-epoch full protocol about {30 * per_epoch * 1.25 / 3600:.1f} h here")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
