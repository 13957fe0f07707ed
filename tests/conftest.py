"""Shared fixtures. The real COVID-CT data is found through $CTCURATE_DATA (set by `make test`/CI)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ctcurate.core.layout import DATA_ENV, IMAGES_DIR

REPO = Path(__file__).resolve().parent.parent


def _real_data_root() -> Path | None:
    raw = os.environ.get(DATA_ENV)
    if raw and (Path(raw) / IMAGES_DIR).is_dir():
        return Path(raw)
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The read-only real dataset. In CI a missing dataset fails the test; elsewhere it skips."""
    root = _real_data_root()
    if root is None:
        msg = f"real COVID-CT data not found: set {DATA_ENV} to the folder holding {IMAGES_DIR}/"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def repo_metadata() -> Path:
    """The checked-in metadata/ folder (read-only: copy before modifying)."""
    return REPO / "metadata"


@pytest.fixture()
def dataset_copy(real_data: Path, repo_metadata: Path, tmp_path: Path) -> Path:
    """A writable copy of the real dataset (images + metadata) in a temporary folder."""
    root = tmp_path / "dataset"
    shutil.copytree(real_data / IMAGES_DIR, root / IMAGES_DIR)
    shutil.copytree(repo_metadata, root / "metadata")
    return root


# No test may reach the real registries: unless a test points them at its own local server, the
# DOI services are a closed local port (connection refused at once).
_OFFLINE_URL = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def _no_internet_for_doi_services(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in ("CTCURATE_DOI_URL", "CTCURATE_CROSSREF_URL", "CTCURATE_BIORXIV_URL"):
        monkeypatch.setenv(name, _OFFLINE_URL)
    monkeypatch.setenv("CTCURATE_CACHE", str(tmp_path_factory.mktemp("doi-cache") / "cache.sqlite"))
    monkeypatch.delenv("CTCURATE_MAILTO", raising=False)
