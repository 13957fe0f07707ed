"""Batches from cached uint8 tensors: the reference's augmentation, done on tensors (CPU or GPU).

Owns the train transform (RandomResizedCrop(scale 0.5-1) of the shorter-side-resized image, then a
horizontal flip with probability 1/2), the eval batches (already resized and centre-cropped in the
cache) and ImageNet normalization. Random draws come from one seeded CPU generator, so a run is
reproducible whatever the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def crop_params(height: int, width: int, gen: torch.Generator, scale: tuple[float, float] = CROP_SCALE, ratio: tuple[float, float] = CROP_RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop, as torchvision's RandomResizedCrop.get_params draws it."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=gen))
        aspect = float(torch.exp(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=gen)))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return top, left, h, w
    # Fallback: the central crop at the nearest allowed aspect ratio.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0-255 float) NxCxHxW -> float, ImageNet mean/std."""
    x = batch.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def resized_crop(img: torch.Tensor, top: int, left: int, height: int, width: int, size: int) -> torch.Tensor:
    """Crop a uint8 CxHxW image and resize it to size x size (bilinear, antialiased): 1xCxSxS.

    On the CPU the uint8 channels-last kernel (vectorised, like Pillow's) is used and the result
    stays uint8; on a GPU the float kernel is used and the result is float in 0-255.
    """
    crop = img[:, top : top + height, left : left + width].unsqueeze(0)
    if img.device.type == "cpu":
        crop = crop.contiguous(memory_format=torch.channels_last)
        return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    out = F.interpolate(crop.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 255.0)


def train_batch(images: Sequence[torch.Tensor], size: int, gen: torch.Generator) -> torch.Tensor:
    """Random-resized-crop and flip each image, resize to `size`, normalize: a float NxCxSxS batch."""
    out = []
    for img in images:
        _, h, w = img.shape
        crop = resized_crop(img, *crop_params(h, w, gen), size)
        if float(torch.rand(1, generator=gen)) < 0.5:
            crop = crop.flip(-1)
        out.append(crop)
    return normalize(torch.cat(out).contiguous())


def eval_batch(images: torch.Tensor) -> torch.Tensor:
    return normalize(images)
