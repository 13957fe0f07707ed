"""The keypoint stage: rotated, rescaled, re-cropped and mirrored copies of real CT images become
candidates with the right transform, pass `verify_aligned`, and neighbouring slices do not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from leakage_helpers import CROPS, real_image
from PIL import Image, ImageFilter, ImageOps
from test_verify import LOOKALIKES

from ctcurate.leakage.hashing import describe_image
from ctcurate.leakage import keypoints
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


@pytest.mark.parametrize("name", sorted(CROPS))
@pytest.mark.parametrize("original", ["CT_NonCOVID/1330.png", "CT_COVID/kjr-21-e24-p5-29.png", "CT_NonCOVID/25.png", "CT_COVID/2020.01.24.919183-p27-133.png"])
def test_deeply_cropped_copy_is_verified(real_data, original, name):
    # cut 10-15% per side into the picture: the whole-view hashes are too far apart, the corners are not
    im = real_image(real_data, original)
    verdict = _verdict(im, CROPS[name](im))
    assert verdict is not None and verdict.duplicate, (name, verdict)
    assert verdict.mirrored == name.endswith("mirrored")


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


# --- the candidate search at scale: synthetic descriptors, no images needed ---


def _random_keypoints(rng: np.random.Generator, n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(8, 312, (n, 2)).astype(np.float32), rng.integers(0, 256, (n, 32), dtype=np.uint8)


def _keypoints(xy: np.ndarray, desc: np.ndarray, xy_m: np.ndarray, desc_m: np.ndarray) -> Keypoints:
    return Keypoints(320, 320, 1.0, xy.astype(np.float16).tobytes(), desc.tobytes(), xy_m.astype(np.float16).tobytes(), desc_m.tobytes())


def _copied(rng: np.random.Generator, xy: np.ndarray, desc: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The corners of a copy turned by `degrees` and shrunk to 0.8, each descriptor with ~1 in 9 bits flipped."""
    a = np.radians(degrees)
    rot = 0.8 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    flips = np.packbits(rng.random((len(desc), 256)) < 1 / 9, axis=1)
    return (xy @ rot.T + 30).astype(np.float32), desc ^ flips


def _distractors_and_copy(n: int, original: int, copy: int, seed: int = 0) -> list[Keypoints | None]:
    rng = np.random.default_rng(seed)
    views = [(*_random_keypoints(rng), *_random_keypoints(rng)) for _ in range(n)]
    xy, desc = _copied(rng, views[original][0], views[original][1], 9.0)
    views[copy] = (xy, desc, *views[copy][2:])
    kps: list[Keypoints | None] = [_keypoints(*v) for v in views]
    kps[5] = None  # an unreadable image has no keypoints
    return kps


def test_planted_copy_among_synthetic_distractors_is_the_only_candidate():
    kps = _distractors_and_copy(400, original=123, copy=321)
    cands = keypoint_candidates(kps)
    assert [(c.a, c.b, c.mirrored) for c in cands] == [(123, 321, False)]
    assert abs(cands[0].transform.angle - 9) < 1.0 and abs(cands[0].transform.scale - 0.8) < 0.05


def test_cross_search_reads_a_from_the_left_and_b_from_the_right():
    kps = _distractors_and_copy(60, original=50, copy=7)
    left, right = kps[30:], kps[:30]  # the original is left image 20, its copy right image 7
    assert [(c.a, c.b) for c in keypoint_candidates(left, right)] == [(20, 7)]


def test_search_is_deterministic_and_the_partitioned_search_finds_the_same(monkeypatch):
    kps = _distractors_and_copy(300, original=3, copy=250, seed=1)
    once = keypoint_candidates(kps)
    assert once == keypoint_candidates(kps)
    monkeypatch.setattr(keypoints, "PART", 5_000)  # 96,000 descriptors: 20 partitions per sort order
    monkeypatch.setattr(keypoints, "_CHUNK", 3_000)
    monkeypatch.setattr(keypoints, "_READ", 3_000)
    parted = keypoint_candidates(kps)
    assert [(c.a, c.b, c.mirrored) for c in parted] == [(c.a, c.b, c.mirrored) for c in once] == [(3, 250, False)]
    assert abs(parted[0].transform.inliers - once[0].transform.inliers) <= 2


def test_more_descriptors_get_more_sort_orders():
    assert keypoints.tables_for(746 * 320) == 2  # COVID-CT: the two orders of a small set
    sizes = [keypoints.tables_for(n * 320) for n in (10_000, 50_000, 200_000, 1_000_000)]
    assert sizes == sorted(sizes) and sizes[-1] > 2


def test_correspondences_grouped_in_buckets_give_the_same_candidates(monkeypatch):
    """Look-alike collections have far more correspondences than images: they are spilled to
    buckets of consecutive source views and grouped one bucket at a time, with the same result."""
    kps = _distractors_and_copy(300, original=3, copy=250, seed=2)
    rng = np.random.default_rng(5)
    for original, copy in ((40, 41), (200, 90), (120, 299)):  # more planted copies, either way round
        assert kps[original] is not None and kps[copy] is not None
        xy, desc = _copied(rng, kps[original].points(), kps[original].descriptors(), 4.0)
        kps[copy] = _keypoints(xy, desc, kps[copy].points(True), kps[copy].descriptors(True))
    whole = keypoint_candidates(kps)
    assert [(c.a, c.b) for c in whole] == [(3, 250), (40, 41), (90, 200), (120, 299)]
    monkeypatch.setattr(keypoints, "_BUCKET_KEYS", 20_000)  # 96,000 descriptors x 8 x 2: 77 buckets
    assert keypoints._buckets(keypoints._Views.of(keypoints.KeypointSource(kps, None), False), 2) > 50
    assert keypoint_candidates(kps) == whole
    monkeypatch.setattr(keypoints, "_MAX_BUCKETS", 3)  # fewer, larger buckets: still the same
    assert keypoint_candidates(kps) == whole


def test_partitions_stay_within_part_when_the_leading_words_crowd(monkeypatch):
    """CT corners crowd a few prefixes (on mosaics of CT crops 98% of an order fell in one half of
    its leading word): partitions are cut at quantiles, so none holds more than `PART`, and together
    they are the whole order, each a stretch of it."""
    rng = np.random.default_rng(3)
    kps = []
    for _ in range(200):
        desc = rng.integers(0, 256, (100, 32), dtype=np.uint8)
        desc[rng.random(100) < 0.9, :2] = 0  # nine in ten descriptors start with 16 zero bits
        xy = rng.random((100, 2)) * 320
        kps.append(_keypoints(xy, desc, xy, desc))
    monkeypatch.setattr(keypoints, "PART", 5_000)  # 40,000 descriptors: 8 partitions of 5,000 at most
    monkeypatch.setattr(keypoints, "_READ", 3_000)
    _assert_stretches_within_part(kps, table=0, at_least=8)


def _assert_stretches_within_part(kps: list, table: int, at_least: int) -> None:
    """The sort order's partitions: at least `at_least`, none over `PART`, together the whole order, each a stretch of it."""
    source = keypoints.KeypointSource(kps, None)
    views = keypoints._Views.of(source, False)
    parts = list(keypoints._partitions(source, views, table))
    assert len(parts) >= at_least and max(len(p[0]) for p in parts) <= keypoints.PART
    assert sorted(np.concatenate([p[2] for p in parts]).tolist()) == sorted(views.ids(0, len(views.size)).tolist())
    assert all(parts[k][0].max() <= parts[k + 1][0].min() for k in range(len(parts) - 1))


@pytest.mark.parametrize("room", [None, 2_000])
def test_the_first_partition_is_filled_in_place_or_spilled_when_it_outgrows_its_room(monkeypatch, room):
    """The first partition is not spilled; where the first chunk's quantiles were off and its
    buckets outgrow `PART`, they are spilled like the others: the same stretches, the same pairs."""
    kps = _distractors_and_copy(300, original=3, copy=250, seed=1)
    once = keypoint_candidates(kps)
    monkeypatch.setattr(keypoints, "PART", 5_000)
    monkeypatch.setattr(keypoints, "_READ", 3_000)
    if room is not None:
        filling = keypoints._Filling
        monkeypatch.setattr(keypoints, "_Filling", lambda capacity, dtypes: filling(room, dtypes))
    _assert_stretches_within_part(kps, table=1, at_least=20)
    assert [(c.a, c.b, c.mirrored) for c in keypoint_candidates(kps)] == [(c.a, c.b, c.mirrored) for c in once]
