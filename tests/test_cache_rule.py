"""One cache rule for every command: `--cache`, else $CTCURATE_CACHE, else the user's cache folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctcurate.cli import main
from ctcurate.core.store import CACHE_ENV, cache_folder, cache_location

from contribution_helpers import make_synthetic_dataset, noise_png, write_contribution_sheet


def test_the_option_wins_then_the_variable_then_the_user_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env" / "c.sqlite"))
    assert cache_location(tmp_path / "opt.sqlite") == tmp_path / "opt.sqlite"
    assert cache_location() == tmp_path / "env" / "c.sqlite"
    assert cache_folder() == tmp_path / "env"
    monkeypatch.delenv(CACHE_ENV)
    assert cache_location() == tmp_path / "xdg" / "ctcurate" / "cache.sqlite"


@pytest.fixture()
def env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "from-env" / "cache.sqlite"
    monkeypatch.setenv(CACHE_ENV, str(path))
    return path


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    return make_synthetic_dataset(tmp_path / "ds")


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_check_leakage_honours_the_variable(env_cache: Path, dataset: Path) -> None:
    code, out = _run("check-leakage", "--data", str(dataset), "--metadata", str(dataset / "metadata"))
    assert code in (0, 1), out
    assert env_cache.is_file()
    assert not (dataset / ".ctcurate").exists()  # the bug: it used to write <data>/.ctcurate/cache.sqlite


def test_add_contribution_honours_the_variable(env_cache: Path, dataset: Path, tmp_path: Path) -> None:
    contrib = tmp_path / "contrib"
    noise_png(contrib / "n1.png", 77)
    write_contribution_sheet(contrib / "sheet.csv", [{"File name": "n1.png", "Label": "COVID", "Patient ID": "p1"}])
    code, out = _run("add-contribution", str(contrib), "--data", str(dataset), "--metadata", str(dataset / "metadata"))
    assert code in (0, 1), out
    assert env_cache.is_file()
    assert not (dataset / ".ctcurate" / "cache.sqlite").exists()


def test_validate_online_honours_the_variable(env_cache: Path, dataset: Path) -> None:
    code, out = _run("validate", "--metadata", str(dataset / "metadata"), "--online", "--offline")
    assert code in (0, 1), out
    assert env_cache.is_file()


def test_doi_resolve_honours_the_variable(env_cache: Path) -> None:
    code, out = _run("doi", "resolve", "--offline", "10.1101/2020.02.10.20021584")
    assert code == 1, out  # offline and nothing cached: not checked
    assert env_cache.is_file()


def test_the_option_beats_the_variable(env_cache: Path, tmp_path: Path) -> None:
    _run("doi", "resolve", "--offline", "--cache", str(tmp_path / "opt.sqlite"), "10.1101/2020.02.10.20021584")
    assert (tmp_path / "opt.sqlite").is_file() and not env_cache.exists()


def test_benchmark_honours_the_variable(env_cache: Path, dataset: Path) -> None:
    pytest.importorskip("torch")
    from ctcurate.benchmark.data import tensor_cache_dir
    from ctcurate.benchmark.run import find_test_train_duplicates

    assert tensor_cache_dir() == env_cache.parent / "benchmark"
    assert tensor_cache_dir(Path("/x/c.sqlite")) == Path("/x/benchmark")
    # --dedupe-test without a report runs check-leakage's search through the same cache file.
    find_test_train_duplicates(dataset, dataset / "metadata" / "Data-split", set(), set(), None)
    assert env_cache.is_file()
    assert not (dataset / ".ctcurate").exists()


def test_a_read_only_dataset_is_never_written(env_cache: Path, dataset: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    shutil.copytree(dataset, ro)
    for p in [ro, *ro.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        code, out = _run("check-leakage", "--data", str(ro), "--metadata", str(ro / "metadata"))
        assert code in (0, 1), out
        assert not (ro / ".ctcurate").exists()
    finally:
        for p in [ro, *ro.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize("command", [
    ["check-leakage", "--data", "{data}", "--metadata", "{data}/metadata"],
    ["validate", "--images", "{data}", "--metadata", "{data}/metadata", "--online", "--offline"],
    ["doi", "resolve", "10.1101/2020.03.21.20040691", "--offline"],
    ["benchmark", "--data", "{data}", "--splits", "{data}/metadata/Data-split"],
])
def test_a_cache_under_a_home_that_does_not_exist_is_a_clear_error(dataset: Path, command: list[str]) -> None:
    code, out = _run(*[c.format(data=dataset) for c in command], "--cache", "~no-such-user-here/c.sqlite")
    assert code == 2, out
    assert "~no-such-user-here/c.sqlite: no home folder for the user the ~ names" in out


@pytest.mark.parametrize("command", [
    ["check-leakage", "--data", "{data}", "--metadata", "{data}/metadata"],
    ["validate", "--images", "{data}", "--metadata", "{data}/metadata", "--online", "--offline"],
    ["doi", "resolve", "10.1101/2020.03.21.20040691", "--offline"],
    ["add-contribution", "{contrib}", "--data", "{data}", "--metadata", "{data}/metadata"],
])
def test_a_cache_under_a_file_is_a_clear_error(dataset: Path, tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    contrib = tmp_path / "contrib"
    noise_png(contrib / "n1.png", 77)
    write_contribution_sheet(contrib / "sheet.csv", [{"File name": "n1.png", "Label": "COVID", "Patient ID": "p1"}])
    code, out = _run(*[c.format(data=dataset, contrib=contrib) for c in command], "--cache", str(tmp_path / "a-file" / "c.sqlite"))
    assert code == 2, out
    assert "a file is where the cache's folder should be" in out and "Traceback" not in out
