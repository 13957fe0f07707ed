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


CHROMIUM_HINT = (
    "chromium is not installed, so the browser tests are skipped. Install it with "
    "`sudo apt-get install chromium` (Debian/Ubuntu; `make test` does this itself when run as root). "
    "In CI (CI=true) a missing chromium fails these tests instead."
)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium for the HTML reports: skipped with the install line outside CI, failed in CI."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(CHROMIUM_HINT)
        pytest.skip(CHROMIUM_HINT)
    return exe


def chromium_dom(exe: str, page: Path, tmp_path: Path, fragment: str = "") -> str:
    """The page's DOM after its scripts ran (headless, no network, throw-away profile)."""
    import subprocess

    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000", "--dump-dom", page.as_uri() + fragment,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
