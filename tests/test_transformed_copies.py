"""The recall instrument itself: deterministic, consistent ground truth, honest distractors."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import transformed_copies as tc
from PIL import Image


@pytest.fixture(scope="module")
def built(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, tc.Truth]]:
    out = {}
    for seed in (1, 2):
        root = tmp_path_factory.mktemp(f"seed{seed}")
        out[seed] = (root, tc.build(root, real_data, seed, "small"))
    return out


def _digests(root: Path) -> dict[str, str]:
    images = root / tc.IMAGES_DIR
    return {str(p.relative_to(images)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(images.rglob("*")) if p.is_file()}


def test_same_seed_gives_the_same_files_and_truth(built: dict[int, tuple[Path, tc.Truth]], real_data: Path, tmp_path: Path) -> None:
    root, truth = built[1]
    again = tc.build(tmp_path / "again", real_data, 1, "small")
    assert again == truth
    assert _digests(tmp_path / "again") == _digests(root)
    assert (tmp_path / "again" / tc.TRUTH_FILE).read_bytes() == (root / tc.TRUTH_FILE).read_bytes()


def test_seeds_share_no_real_image_patient_or_figure(built: dict[int, tuple[Path, tc.Truth]], real_data: Path) -> None:
    patient_of = tc.patients(real_data)
    used = [{facts["real"] for facts in built[seed][1].images.values()} for seed in (1, 2)]
    assert not used[0] & used[1]
    figures = [{(n.split("/")[0], tc.figure_stem(n)) for n in u} for u in used]
    assert not figures[0] & figures[1]
    patients = [{patient_of[n] for n in u if n in patient_of} for u in used]
    assert not patients[0] & patients[1]


def test_ground_truth_matches_the_files_and_split_lists(built: dict[int, tuple[Path, tc.Truth]]) -> None:
    for root, truth in built.values():
        assert set(_digests(root)) == set(truth.images)
        listed = {}
        for class_dir, label in tc.CLASS_LABELS.items():
            for split in ("train", "val", "test"):
                for name in (root / tc.SPLITS_DIR / label / f"{split}{class_dir}.txt").read_text().split():
                    listed[f"{class_dir}/{name}"] = split
        assert listed == {name: facts["split"] for name, facts in truth.images.items()}
        assert sorted(p["category"] for p in truth.pairs) == sorted(tc.CATEGORIES)
        for p in truth.pairs:
            a, b = truth.images[p["a"]], truth.images[p["b"]]
            assert (a["role"], b["role"], a["real"]) == ("original", "copy", b["real"])
            assert a["split"] != b["split"]
        for d in truth.distractors:
            assert truth.images[d["b"]]["role"] == "distractor"
            assert truth.images[d["a"]]["split"] != truth.images[d["b"]]["split"]


def test_copies_carry_the_transforms_of_their_category(built: dict[int, tuple[Path, tc.Truth]]) -> None:
    root, truth = built[2]
    for p in truth.pairs:
        kinds = [s["kind"] for s in p["steps"] if s["kind"] != "min-size"]
        if p["category"] in tc.KINDS:
            assert kinds == [p["category"]]
        else:
            assert len(set(kinds)) == len(kinds) == int(p["category"][-1])
        assert p["b"].endswith(".jpg") == ("jpeg" in kinds)
        with Image.open(root / tc.IMAGES_DIR / p["b"]) as im:
            assert min(im.size) >= tc.MIN_SIDE


def test_distractors_are_neighbours_not_duplicates(built: dict[int, tuple[Path, tc.Truth]], real_data: Path) -> None:
    true_pairs = tc.load_true_pairs()
    patient_of = tc.patients(real_data)
    for _, truth in built.values():
        assert truth.distractors
        real = [facts["real"] for facts in truth.images.values() if facts["role"] != "copy"]
        assert len(real) == len(set(real))
        assert not any(frozenset((a, b)) in true_pairs for a in real for b in real if a < b)
        for d in truth.distractors:
            a, b = truth.images[d["a"]]["real"], truth.images[d["b"]]["real"]
            assert tc.figure_stem(a) == tc.figure_stem(b) or patient_of.get(a) == patient_of.get(b) is not None
            assert _pixels(real_data, a) != _pixels(real_data, b)


def _pixels(root: Path, rel: str) -> bytes:
    with Image.open(root / tc.IMAGES_DIR / rel) as im:
        return im.convert("L").tobytes()


@pytest.mark.parametrize("kind", tc.KINDS)
def test_each_transform_stays_in_its_range(kind: str) -> None:
    im = Image.new("RGB", (300, 200), (40, 40, 40))
    for seed in range(20):
        out, params = tc.TRANSFORMS[kind](im, random.Random(seed))
        if kind == "rotate":
            assert 1 <= abs(params["angle"]) <= 15
        elif kind == "crop":
            assert 0.49 <= params["area"] <= 0.96
            assert out.width * out.height == pytest.approx(params["area"] * 300 * 200, rel=0.01)
        elif kind == "scale":
            assert 0.3 <= params["factor"] <= 2.0
        elif kind == "jpeg":
            assert 20 <= params["quality"] <= 90


def test_score_counts_either_order_and_names_wrong_pairs() -> None:
    truth = tc.Truth(
        seed=1,
        images={},
        pairs=[{"a": "x", "b": "y", "category": "rotate", "steps": []}, {"a": "u", "b": "v", "category": "combo2", "steps": []}],
        distractors=[],
    )
    s = tc.score(truth, [("y", "x"), ("x", "u")])
    assert (s.found, s.total) == ({"rotate": 1, "combo2": 0}, {"rotate": 1, "combo2": 1})
    assert (s.recall, s.precision, s.false_pairs, s.missed) == (0.5, 0.5, [("u", "x")], [("u", "v")])
