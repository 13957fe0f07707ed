"""check-leakage on the real COVID-CT images: hashed once per test session (cache in tmp)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import chromium_dom

from ctcurate.leakage import hashcache
from ctcurate.leakage.fixsplits import MAX_RATIO_DRIFT, _ratios, group_violations, plan
from ctcurate.core.layout import IMAGES_DIR
from ctcurate.core.dataset import split_of
from ctcurate.leakage.pipeline import LeakageReport, check_leakage
from ctcurate.leakage.report import summary_line, to_html

# Every pair reported on the real data, each looked at side by side (and aligned, zoomed) by eye:
# all are one picture (re-exported, re-windowed, blurred, or with arrows added). The last seven are
# found by the keypoint stage: one paper's two renderings of the same figures (rescaled, re-cropped,
# re-windowed), and one picture saved twice at a sub-pixel shift (p18-67-2 / -3). The sheet gives
# each of the paper's two renderings its own patient IDs (154-160 and 162-167): `patient-conflict`.
EYE_CHECKED = {
    ("CT_COVID/kjr-21-e24-p5-29.png", "CT_NonCOVID/71%0.jpg"): ["leak-train-test", "label-conflict"],
    ("CT_COVID/kjr-21-e24-p5-31.png", "CT_NonCOVID/71%1.jpg"): ["leak-train-test", "label-conflict"],
    ("CT_NonCOVID/114.png", "CT_NonCOVID/116.png"): ["duplicate"],
    ("CT_NonCOVID/114.png", "CT_NonCOVID/118.png"): ["duplicate"],
    ("CT_NonCOVID/115.png", "CT_NonCOVID/117.png"): ["duplicate"],
    ("CT_NonCOVID/116.png", "CT_NonCOVID/118.png"): ["duplicate"],
    ("CT_NonCOVID/1330.png", "CT_NonCOVID/1331.png"): ["duplicate"],
    ("CT_NonCOVID/1330.png", "CT_NonCOVID/1332.png"): ["duplicate"],
    ("CT_NonCOVID/1331.png", "CT_NonCOVID/1332.png"): ["duplicate"],
    ("CT_NonCOVID/1497.png", "CT_NonCOVID/1498.png"): ["duplicate"],
    ("CT_NonCOVID/661.png", "CT_NonCOVID/662.png"): ["duplicate"],
    ("CT_COVID/2020.03.21.20040691-p18-67-2.png", "CT_COVID/2020.03.21.20040691-p18-67-3.png"): ["duplicate"],
    ("CT_COVID/2020.03.22.20040782-p24-1533-1.png", "CT_COVID/2020.03.22.20040782-p25-1542.png"): ["leak-val-test", "patient-conflict"],
    ("CT_COVID/2020.03.22.20040782-p24-1533-2.png", "CT_COVID/2020.03.22.20040782-p25-1541.png"): ["duplicate", "patient-conflict"],
    ("CT_COVID/2020.03.22.20040782-p24-1533-4.png", "CT_COVID/2020.03.22.20040782-p25-1545.png"): ["leak-val-test", "patient-conflict"],
    ("CT_COVID/2020.03.22.20040782-p24-1533-5.png", "CT_COVID/2020.03.22.20040782-p25-1544.png"): ["leak-val-test", "patient-conflict"],
    ("CT_COVID/2020.03.22.20040782-p24-1533-6.png", "CT_COVID/2020.03.22.20040782-p25-1543.png"): ["leak-val-test", "patient-conflict"],
    ("CT_COVID/2020.03.22.20040782-p24-1533-7.png", "CT_COVID/2020.03.22.20040782-p25-1546.png"): ["leak-val-test", "patient-conflict"],
}


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real_cache") / "cache.sqlite"


@pytest.fixture(scope="session")
def real_report(real_data, repo_metadata, real_cache):
    return check_leakage(real_data, metadata_dir=repo_metadata, cache_path=real_cache, jobs=2)


def test_known_leak_is_reported(real_report):
    pair = next(p for p in real_report.pairs if p.a == "CT_COVID/kjr-21-e24-p5-29.png")
    assert pair.b == "CT_NonCOVID/71%0.jpg"
    assert pair.kind == ["leak-train-test", "label-conflict"]
    assert real_report.images["CT_COVID/kjr-21-e24-p5-29.png"].split == "test"
    assert real_report.images["CT_NonCOVID/71%0.jpg"].split == "train"


def test_reported_pairs_are_the_eye_checked_ones(real_report):
    assert {(p.a, p.b): p.kind for p in real_report.pairs} == EYE_CHECKED
    conflicts = [c.members for c in real_report.clusters if "patient-conflict" in c.kind]
    assert len(conflicts) == 6 and all("20040782" in m for ms in conflicts for m in ms)
    assert summary_line(real_report) == (
        "2 label conflicts, 5 other cross-split leaks, 0 patient/source-figure leaks, 7 in-split duplicates; "
        "6 picture(s) under two patient IDs (patient-conflict); 0 unreadable of 746 images"
    )
    assert real_report.findings == []
    assert real_report.stats["images"] == 746


def test_warm_run_hashes_nothing(real_report, real_data, repo_metadata, real_cache, monkeypatch):
    monkeypatch.setattr(hashcache, "_hash_one", lambda p: pytest.fail(f"{p} hashed again"))
    again = check_leakage(real_data, metadata_dir=repo_metadata, cache_path=real_cache, jobs=1)
    assert again.pairs == real_report.pairs


def test_fix_splits_on_real_data(real_report, real_data, repo_metadata):
    current = split_of(repo_metadata / "Data-split")
    assign = plan(real_report, current)
    assert group_violations(real_report, current)  # the original split has leaks
    assert group_violations(real_report, assign) == []
    before, after = _ratios(current, "CT_COVID"), _ratios(assign, "CT_COVID")
    assert all(abs(after[s] - before[s]) <= MAX_RATIO_DRIFT for s in before)
    assert plan(real_report, current) == assign  # deterministic


def _groups(dom: str) -> list[tuple[str, str, str]]:
    """(level, key, inner HTML) of every group box, in page order."""
    chunks = dom.split('<div class="group"')[1:]
    return [(re.search(r'data-level="([^"]+)"', c).group(1), re.search(r'data-key="([^"]+)"', c).group(1), c) for c in chunks]


def test_html_report_renders_in_chromium(real_report, real_data, tmp_path, chromium):
    page = tmp_path / "report.html"
    page.write_text(to_html(real_report, lambda rel: real_data / IMAGES_DIR / rel), encoding="utf-8")
    dom = chromium_dom(chromium, page, tmp_path)
    groups = _groups(dom)
    by_key = {key: (level, body) for level, key, body in groups}
    # 114, 116 and 118 are one picture: one group, not three pairs
    level, body = by_key["CT_NonCOVID/114.png"]
    assert level == "duplicate" and "3 copies of one picture" in body
    assert all(f"CT_NonCOVID/{n}.png" in body for n in (114, 116, 118))
    # severity order: both label conflicts come first, in-split duplicates last
    levels = [level for level, _, _ in groups]
    assert levels[:2] == ["label-conflict", "label-conflict"] and levels[-1] == "duplicate"
    assert levels == sorted(levels, key=["label-conflict", "cross-split", "group-leak", "duplicate"].index)
    known = by_key["CT_COVID/kjr-21-e24-p5-29.png"][1]
    assert "71%0.jpg" in known and "label <b>COVID</b>" in known and "label <b>NonCOVID</b>" in known
    assert 'class="split test"' in known and 'class="split train"' in known
    # the five val-test leaks of one paper's reused panels (found by keypoints) make the cross-split section
    assert levels.count("cross-split") == 5
    leak = by_key["CT_COVID/2020.03.22.20040782-p24-1533-1.png"][1]
    assert "p25-1542.png" in leak and 'class="split val"' in leak and 'class="split test"' in leak
    assert "No unreadable images." in dom
    # every embedded thumbnail decoded in the browser (one per member)
    members = sum(len(c.members) for c in real_report.clusters)
    assert re.search(r'data-images-shown="(\d+)"', dom).group(1) == str(members)
    # 2 label conflicts, 5 cross-split leaks, 7 in-split duplicates; no patient or source-figure
    # group: the three the report once showed were number clashes between NonCOVID's two sources
    assert levels.count("group-leak") == 0
    assert 'data-shown="14"' in dom and "14 of 14 groups shown" in dom


def test_html_filter_keeps_the_matching_group(real_report, real_data, tmp_path, chromium):
    page = tmp_path / "report.html"
    page.write_text(to_html(real_report, lambda rel: real_data / IMAGES_DIR / rel), encoding="utf-8")
    dom = chromium_dom(chromium, page, tmp_path, "#filter=116.png")
    assert 'data-shown="1"' in dom and "1 of 14 groups shown" in dom
    visible = re.findall(r'<div class="group"(?![^>]*hidden)[^>]*data-key="([^"]+)"', dom)
    assert visible == ["CT_NonCOVID/114.png"]
    # the sections left with nothing visible say so (label conflicts, cross-split; the group-leak
    # section is empty anyway and says that instead)
    assert dom.count('<p class="nomatch">Nothing here matches the filter.</p>') == 2
    assert "No patient and source-figure leaks found." in dom


def test_html_empty_report_says_each_section_is_clean(tmp_path, chromium):
    empty = LeakageReport(pairs=[], clusters=[], images={}, findings=[], stats={"images": 3})
    page = tmp_path / "report.html"
    page.write_text(to_html(empty, lambda rel: None), encoding="utf-8")
    dom = chromium_dom(chromium, page, tmp_path)
    for text in ("No label conflicts found.", "No leaks across splits found.",
                 "No patient and source-figure leaks found.", "No duplicates within a split found.", "No unreadable images."):
        assert text in dom
    assert "0 of 0 groups shown" in dom
