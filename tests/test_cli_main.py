from click.testing import CliRunner

from ctcurate import __version__
from ctcurate.cli import main


def test_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in ("validate", "add-contribution", "check-leakage", "benchmark", "doi"):
        assert name in result.output


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_every_command_has_help_text():
    for name, command in main.commands.items():
        assert command.help, f"{name} has no help text"


def test_the_default_metadata_is_the_checkouts_from_any_folder(tmp_path, monkeypatch):
    """`--metadata` defaults to the repository's metadata/, wherever the command is run from (it
    once resolved to ctcurate/metadata, which does not exist, and fell back to ./metadata)."""
    from pathlib import Path

    from ctcurate.core.layout import default_metadata_dir

    monkeypatch.chdir(tmp_path)
    repo = Path(__file__).resolve().parent.parent
    assert default_metadata_dir() == repo / "metadata"
    assert (default_metadata_dir() / "COVID-CT-MetaInfo.xlsx").is_file()
