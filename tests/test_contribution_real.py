"""Acceptance on the real COVID-CT images: held-out real images are contributed back to a copy."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from ctcurate.cli import main
from ctcurate.leakage.pipeline import check_leakage
from ctcurate.core.store import CACHE_ENV
from ctcurate.validation.checks import validate

from contribution_helpers import hold_out, tree_hashes, write_contribution_sheet

HELD_COVID = [f"2020.03.16.20035105-p6-64-{i}.png" for i in range(1, 5)]  # one paper, one patient
HELD_NONCOVID = ["848.png", "849.png"]  # medpix_patient_5
FRESH_DOI = "10.5555/ctcurate.heldout.noncovid"


@pytest.fixture(scope="session")
def hash_cache(tmp_path_factory) -> Path:
    """One hash cache for every real-data test: fingerprints are keyed by content, so copies share it."""
    return tmp_path_factory.mktemp("hashcache") / "cache.sqlite"


@pytest.fixture()
def heldout(dataset_copy: Path, tmp_path: Path, monkeypatch, hash_cache: Path) -> tuple[Path, Path]:
    monkeypatch.setenv(CACHE_ENV, str(hash_cache))
    contrib = tmp_path / "contribution"
    hold_out(dataset_copy, HELD_COVID, HELD_NONCOVID, contrib, lambda name, doi: doi or FRESH_DOI)
    return dataset_copy, contrib


def run(ds: Path, contrib: Path, *extra: str):
    return CliRunner().invoke(main, ["add-contribution", str(contrib), "--data", str(ds),
                                     "--metadata", str(ds / "metadata"), *extra])


def _validate_keys(ds: Path) -> set[tuple]:
    result = validate(metadata=ds / "metadata", images=ds, splits=ds / "metadata" / "Data-split")
    return {(f.code, f.file, f.row, f.column, f.value) for f in result.findings}


def _leak_keys(ds: Path, cache: Path) -> set[tuple]:
    report = check_leakage(ds, splits_dir=ds / "metadata" / "Data-split", metadata_dir=ds / "metadata", cache_path=cache)
    pairs = {("pair", *sorted((p.a, p.b)), tuple(p.kind)) for p in report.pairs}
    clusters = {("cluster", c.type, c.key, tuple(c.kind)) for c in report.clusters if c.type != "duplicate"}
    return pairs | clusters | {("finding", f.code, f.file) for f in report.findings}


def test_clean_heldout_contribution_is_applied_and_the_dataset_stays_clean(heldout, hash_cache):
    ds, contrib = heldout
    validate_before, leaks_before = _validate_keys(ds), _leak_keys(ds, hash_cache)
    res = run(ds, contrib, "--contributor", "acceptance test")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1].startswith("6 accepted, 0 rejected; applied 6 image(s)")
    for name in HELD_COVID:
        # These upstream .png files hold JPEG data: they come back under the extension they deserve.
        stored = name.replace(".png", ".jpg")
        assert f"accepted  {name} -> CT_COVID/{stored} (Patient 217, " in res.output
        assert (ds / "Images-processed" / "CT_COVID" / stored).read_bytes() == (contrib / name).read_bytes()
    # One contributed patient, one dataset patient, continuing the sheet's numbering (max is 216).
    assert "patients: 'their Patient 140' -> Patient 217, 'their medpix_patient_5' -> Patient 218" in res.output
    new_findings = _validate_keys(ds) - validate_before
    assert not new_findings, new_findings
    new_leaks = _leak_keys(ds, hash_cache) - leaks_before
    assert not new_leaks, new_leaks


def test_doi_already_in_the_sheet_is_rejected(heldout):
    ds, contrib = heldout
    before = tree_hashes(ds)
    # Patient 216's paper, written with another case, prefix and spacing than the sheet's.
    res = run(ds, _with_doi(contrib, " https://doi.org/10.1016/J.IJID.2020.02.037 "))
    assert res.exit_code == 1
    for name in HELD_NONCOVID:
        assert f"rejected  {name}: doi.in-dataset collides with 10.1016/j.ijid.2020.02.037" in res.output
    assert res.output.splitlines()[-1] == ("4 accepted, 2 rejected; nothing applied: some files were rejected "
                                           "(use --partial to apply the accepted ones)")
    assert tree_hashes(ds) == before


def _with_doi(contrib: Path, doi: str) -> Path:
    import openpyxl

    wb = openpyxl.load_workbook(contrib / "contribution.xlsx")
    ws = wb.worksheets[0]
    header = [c.value for c in ws[1]]
    for r in range(2, ws.max_row + 1):
        if ws.cell(r, header.index("Label") + 1).value == "NonCOVID":
            ws.cell(r, header.index("DOI") + 1).value = doi
    wb.save(contrib / "contribution.xlsx")
    return contrib


def test_resized_recompressed_copy_of_an_existing_image_is_rejected(heldout, tmp_path):
    ds, _ = heldout
    existing = "2020.03.13.20035212-p23-152.png"
    im = Image.open(ds / "Images-processed" / "CT_COVID" / existing).convert("RGB")
    contrib = tmp_path / "copycat"
    contrib.mkdir()
    im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.Resampling.BICUBIC).save(contrib / "scan.jpg", quality=70)
    write_contribution_sheet(contrib / "sheet.csv", [{"File name": "scan.jpg", "Label": "COVID", "Patient ID": "X",
                                                       "DOI": "10.5555/ctcurate.copycat", "Captions": "Figure 2."}])
    before = tree_hashes(ds)
    res = run(ds, contrib)
    assert res.exit_code == 1
    assert f"rejected  scan.jpg: image.duplicate collides with Images-processed/CT_COVID/{existing}" in res.output
    assert tree_hashes(ds) == before


def test_zip_with_parent_paths_is_refused(heldout, tmp_path):
    ds, contrib = heldout
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(contrib / "contribution.xlsx", "contribution.xlsx")
        zf.write(contrib / "848.png", "848.png")
        zf.write(contrib / "849.png", "../849.png")
    before = tree_hashes(ds)
    res = run(ds, z)
    assert res.exit_code == 1
    assert "zip.path-traversal" in res.output
    assert tree_hashes(ds) == before
    assert not (tmp_path.parent / "849.png").exists()
