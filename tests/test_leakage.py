"""Classification of every leakage kind, on a small dataset made from real CT images."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctcurate.leakage.pipeline import ImageInfo, check_leakage, classify, find_duplicates_of, source_figure

from leakage_dataset import EXPECTED_PAIRS, build


@pytest.fixture(scope="module")
def small(tmp_path_factory, real_data) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("small")
    meta = build(root, real_data)
    return root, meta


@pytest.fixture(scope="module")
def small_report(small):
    root, meta = small
    return check_leakage(root, metadata_dir=meta, cache_path=root / "cache.sqlite", jobs=1)


def test_every_pair_kind_is_classified(small_report):
    got = {(p.a, p.b): p.kind for p in small_report.pairs}
    assert got == EXPECTED_PAIRS
    for p in small_report.pairs:
        assert p.evidence["match"] == "verified"
        assert p.score >= 0.93


def test_patient_and_source_leaks(small_report):
    groups = {(c.type, c.key): c for c in small_report.clusters if c.type != "duplicate"}
    patient = groups[("patient", "COVID:P9")]
    assert patient.kind == ["patient-leak"]
    assert patient.splits == {"train": ["CT_COVID/e.png"], "test": ["CT_COVID/f.png"]}
    source = groups[("source", "10.1101/2020.02.25.20021568|2020.02.25.20021568-p23-108%")]
    assert source.kind == ["source-leak"]
    assert set(groups) == {("patient", "COVID:P9"), ("source", "10.1101/2020.02.25.20021568|2020.02.25.20021568-p23-108%")}


def test_duplicate_clusters_carry_the_pair_kinds(small_report):
    clusters = {c.key: c for c in small_report.clusters if c.type == "duplicate"}
    assert clusters["CT_COVID/c.png"].kind == ["duplicate", "label-conflict", "leak-train-test"]
    assert clusters["CT_COVID/a.png"].kind == ["duplicate"]
    assert len(clusters) == 4


def test_broken_image_is_a_finding(small_report):
    assert [(f.code, f.file) for f in small_report.findings] == [("image.unreadable", "CT_NonCOVID/broken.png")]
    assert small_report.summary()["unreadable"] == 1


def test_classify_unit():
    a = ImageInfo(path="x", label="COVID", split="train")
    assert classify(a, a.model_copy(update={"split": "val"})) == ["leak-train-val"]
    assert classify(a.model_copy(update={"split": "test"}), a.model_copy(update={"split": "val"})) == ["leak-val-test"]
    assert classify(a, a.model_copy(update={"label": "NonCOVID"}), "exact-bytes") == ["exact-bytes", "duplicate", "label-conflict"]
    assert classify(a, a.model_copy(update={"split": None})) == ["unsplit"]
    # one picture, one class, two patient IDs: the sheet is wrong for one copy
    p1, p2 = a.model_copy(update={"patient": "COVID:P1"}), a.model_copy(update={"patient": "COVID:P2"})
    assert classify(p1, p2) == ["duplicate", "patient-conflict"]
    assert classify(p1, p1) == ["duplicate"]
    assert classify(p1, a) == ["duplicate"]  # an unknown patient conflicts with nothing
    assert classify(p1, p2.model_copy(update={"label": "NonCOVID"})) == ["duplicate", "label-conflict"]
    unlabelled = ImageInfo(path="loose.png", label="")  # a loose contribution image has no class
    assert classify(a, unlabelled) == ["unsplit"]


def _against(folder: Path) -> dict[str, tuple[Path, str | None]]:
    """A contribution folder as check-leakage --against reads it (`contribution.source`)."""
    from ctcurate.contribution.source import labelled_images, open_contribution

    with open_contribution(folder) as contribution:
        return {rel: (img.path, img.class_dir) for rel, img in labelled_images(contribution).items()}


def test_against_a_loose_folder_claims_no_label_conflict(small, real_data, tmp_path):
    root, meta = small
    from leakage_helpers import TRANSFORMS, real_image

    contrib = tmp_path / "loose"
    contrib.mkdir()
    TRANSFORMS["pad-white"](real_image(real_data, "CT_COVID/2020.01.24.919183-p27-132.png")).save(contrib / "z.png")
    report = check_leakage(root, metadata_dir=meta, against=_against(contrib), cache_path=tmp_path / "c.sqlite", jobs=1)
    assert {(p.a, p.b): p.kind for p in report.pairs} == {
        ("CT_COVID/a.png", "new:z.png"): ["contribution-duplicate"],
        ("CT_COVID/a_copy.png", "new:z.png"): ["contribution-duplicate"],
    }


def test_source_figure_names():
    assert source_figure("2020.02.25.20021568-p23-108%3.png") == "2020.02.25.20021568-p23-108%"
    assert source_figure("2020.02.25.20021568-p23-108%0.png") == source_figure("2020.02.25.20021568-p23-108%3.png")
    assert source_figure("76%0.jpg") == "76%"
    assert source_figure("kjr-21-e24-p5-29.png") == "kjr-21-e24-p5-29"


def test_a_panel_family_and_a_whole_picture_with_the_same_number_are_different_figures():
    # COVID-CT NonCOVID: `14%0.jpg` is crawled patient 14's, `14.png` a MedPix case's
    assert source_figure("14%0.jpg") != source_figure("14.png")


def test_exact_copies_are_reported_as_such(small, tmp_path):
    root, meta = small
    new = tmp_path / "new"
    new.mkdir()
    (new / "same_bytes.png").write_bytes((root / "Images-processed/CT_COVID/a.png").read_bytes())
    from PIL import Image

    with Image.open(root / "Images-processed/CT_COVID/b.png") as im:
        im.save(new / "same_pixels.png", optimize=True, compress_level=1)
    result = find_duplicates_of(sorted(new.iterdir()), root, cache_path=tmp_path / "c.sqlite", jobs=1)
    matches = {p.name: [(m.dataset_path, m.evidence["match"]) for m in ms] for p, ms in result.matches.items()}
    assert ("CT_COVID/a.png", "exact-bytes") in matches["same_bytes.png"]
    assert ("CT_COVID/b.png", "exact-pixels") in matches["same_pixels.png"]


def test_find_duplicates_of_for_contributions(small, real_data, tmp_path):
    root, _ = small
    from leakage_helpers import TRANSFORMS, real_image

    new = tmp_path / "contrib"
    new.mkdir()
    TRANSFORMS["crop"](real_image(real_data, "CT_NonCOVID/1330.png")).save(new / "x1.png")
    TRANSFORMS["brighter"](real_image(real_data, "CT_NonCOVID/1330.png")).save(new / "x2.png")
    real_image(real_data, "CT_NonCOVID/63%0.jpg").save(new / "fresh.png")
    (new / "bad.png").write_bytes(b"nope")
    paths = sorted(new.iterdir())
    result = find_duplicates_of(paths, root, cache_path=tmp_path / "c.sqlite", jobs=1)
    found = {p.name: sorted(m.dataset_path for m in ms) for p, ms in result.matches.items()}
    assert found == {
        "bad.png": [],
        "fresh.png": [],
        "x1.png": ["CT_COVID/c.png", "CT_NonCOVID/c_copy.png"],
        "x2.png": ["CT_COVID/c.png", "CT_NonCOVID/c_copy.png"],
    }
    assert [(Path(p.a).name, Path(p.b).name) for p in result.within] == [("x1.png", "x2.png")]
    assert {(f.code, Path(f.file).name) for f in result.findings} == {("image.unreadable", "bad.png"), ("image.unreadable", "broken.png")}


def test_against_compares_a_contribution(small, real_data, tmp_path):
    root, meta = small
    from leakage_helpers import TRANSFORMS, real_image

    contrib = tmp_path / "contrib"
    (contrib / "Images-processed" / "CT_NonCOVID").mkdir(parents=True)
    TRANSFORMS["pad-white"](real_image(real_data, "CT_COVID/2020.01.24.919183-p27-132.png")).save(contrib / "Images-processed/CT_NonCOVID/z.png")
    report = check_leakage(root, metadata_dir=meta, against=_against(contrib), cache_path=tmp_path / "c.sqlite", jobs=1)
    got = {(p.a, p.b): p.kind for p in report.pairs}
    assert got == {
        ("CT_COVID/a.png", "new:CT_NonCOVID/z.png"): ["contribution-duplicate", "label-conflict"],
        ("CT_COVID/a_copy.png", "new:CT_NonCOVID/z.png"): ["contribution-duplicate", "label-conflict"],
    }


def test_find_duplicates_of_finds_deep_crops(small, real_data, tmp_path):
    """Copies cut 15% per side, or by a 15% strip on one side, are found by the keypoint stage,
    and the report says so, with the transform it measured (neither turned nor rescaled)."""
    root, _ = small
    from leakage_helpers import CROPS, real_image

    new = tmp_path / "contrib"
    new.mkdir()
    CROPS["crop15"](real_image(real_data, "CT_NonCOVID/25.png")).save(new / "d15.png")
    CROPS["strip15-bottom"](real_image(real_data, "CT_COVID/kjr-21-e24-p5-29.png")).save(new / "b_strip.png")
    paths = sorted(new.iterdir())
    result = find_duplicates_of(paths, root, cache_path=tmp_path / "c.sqlite", jobs=1)
    found = {p.name: sorted(m.dataset_path for m in ms) for p, ms in result.matches.items()}
    # d_copy is d mirrored: the crop of d is a mirrored crop of it
    assert found == {"b_strip.png": ["CT_COVID/b.png", "CT_COVID/b_copy.jpg"], "d15.png": ["CT_COVID/d.png", "CT_COVID/d_copy.png"]}
    for m in result.matches[new / "d15.png"]:
        assert m.evidence["stage"] == "keypoints", m.evidence
        assert abs(float(m.evidence["angle"])) < 1.0 and abs(float(m.evidence["scale"]) - 1.0) < 0.05, m.evidence  # cut, not resized
    assert result.within == []


def test_a_warm_run_reads_the_pairs_found_and_searches_nothing(small, monkeypatch):
    """Over unchanged contents the pairs a search found come back from the cache: no stage runs,
    and the report is the same; a different threshold is another search."""
    from ctcurate.leakage import pipeline
    from ctcurate.leakage.report import to_json

    root, meta = small
    cache = root / "warm-test.sqlite"
    cold = check_leakage(root, metadata_dir=meta, cache_path=cache, jobs=1)

    def no_stage(search: object) -> None:
        raise AssertionError("a stage ran on a warm cache")

    monkeypatch.setattr(pipeline, "_hash_stage", no_stage)
    warm = check_leakage(root, metadata_dir=meta, cache_path=cache, jobs=1)
    assert to_json(warm) == to_json(cold)
    with pytest.raises(AssertionError, match="a stage ran"):
        check_leakage(root, metadata_dir=meta, cache_path=cache, jobs=1, threshold=8)
