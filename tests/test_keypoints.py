"""The keypoint stage: rotated, rescaled, re-cropped and mirrored copies of real CT images become
candidates with the right transform, pass `verify_aligned`, and neighbouring slices do not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from leakage_helpers import real_image
from PIL import Image, ImageFilter, ImageOps
from test_verify import LOOKALIKES

from ctcurate.leakage.hashing import describe_image
from ctcurate.leakage.keypoints import KeypointCandidate, Keypoints, keypoint_candidates
from ctcurate.leakage.pipeline import _crop_seed
from ctcurate.leakage.verify import verify_aligned

ORIGINAL = "CT_COVID/2020.01.24.919183-p27-132.png"


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _rerendered(im: Image.Image) -> Image.Image:
    """Cropped to ~60 % of the area, rotated 7 degrees, shrunk to a third, blurred, JPEG 40."""
    w, h = im.size
    out = im.crop((int(0.1 * w), int(0.12 * h), int(0.88 * w), int(0.9 * h))).rotate(7, resample=Image.Resampling.BICUBIC)
    out = out.resize((out.width // 3, out.height // 3), Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(0.8))
    return _jpeg(out, 40)


def _candidate(a: Image.Image, b: Image.Image) -> tuple[KeypointCandidate | None, list[Keypoints]]:
    ka, kb = describe_image(a)[1], describe_image(b)[1]
    cands = keypoint_candidates([ka, kb])
    return (cands[0] if cands else None), [ka, kb]


def _verdict(a: Image.Image, b: Image.Image):
    cand, kps = _candidate(a, b)
    if cand is None:
        return None
    ims, fps = [a, b], [describe_image(a)[0], describe_image(b)[0]]
    return verify_aligned(ims[cand.a], ims[cand.b], fps[cand.a], fps[cand.b], _crop_seed(cand, kps[cand.a], kps[cand.b]), {})


def test_rotated_rescaled_copy_is_a_candidate_with_its_transform(real_data):
    im = real_image(real_data, ORIGINAL)
    cand, _ = _candidate(im, im.rotate(-9, resample=Image.Resampling.BICUBIC, expand=True))
    assert cand is not None and not cand.mirrored
    # the angle is read from a to b: the copy was turned 9 degrees clockwise in the image
    angle = cand.transform.angle if cand.a == 0 else -cand.transform.angle
    assert abs(angle - 9) < 1.0, cand
    assert cand.transform.inliers >= 30


def test_mirrored_copy_is_found_mirrored(real_data):
    im = real_image(real_data, ORIGINAL)
    cand, _ = _candidate(im, ImageOps.mirror(im))
    assert cand is not None and cand.mirrored
    assert abs(cand.transform.angle) < 1.0


@pytest.mark.parametrize("transform", [_rerendered, lambda im: ImageOps.mirror(_rerendered(im))], ids=["rerendered", "rerendered-mirrored"])
def test_rerendered_copy_is_verified(real_data, transform):
    im = real_image(real_data, ORIGINAL)
    verdict = _verdict(im, transform(im))
    assert verdict is not None and verdict.duplicate, verdict


def test_soft_small_rendering_against_sharp_large_one_is_verified(real_data):
    # the sharp, larger original against a blurred, re-windowed half-size copy: blur is not mismatch
    im = real_image(real_data, "CT_NonCOVID/1330.png")
    soft = im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(1.2))
    soft = soft.point(lambda v: int(255 * (v / 255) ** 0.7))
    verdict = _verdict(im, soft)
    assert verdict is not None and verdict.duplicate, verdict
    assert verdict.evidence["blur"] != 0.0


@pytest.mark.parametrize("a,b", LOOKALIKES)
def test_lookalike_scans_are_rejected_after_alignment(real_data, a, b):
    verdict = _verdict(real_image(real_data, a), real_image(real_data, b))
    assert verdict is None or not verdict.duplicate, verdict


def test_unrelated_images_make_no_candidate(real_data):
    cand, _ = _candidate(real_image(real_data, ORIGINAL), real_image(real_data, "CT_NonCOVID/1330.png"))
    assert cand is None


def test_keypoints_are_compact(real_data):
    _, kp = describe_image(real_image(real_data, ORIGINAL))
    n = len(kp.descriptors())
    assert 100 <= n <= 200
    assert len(kp.desc) == 32 * n and len(kp.xy) == 4 * n  # binary descriptors, float16 points
    assert np.isfinite(kp.points()).all()
