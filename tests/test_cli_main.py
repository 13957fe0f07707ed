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
