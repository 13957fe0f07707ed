"""torch stays out of every command but `benchmark`, and a missing extra ends with the install line."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from ctcurate.cli import main

PROBE = textwrap.dedent(
    """
    import sys
    from click.testing import CliRunner
    from ctcurate.cli import main
    result = CliRunner().invoke(main, {args!r})
    heavy = sorted(m for m in ("torch", "torchvision", "matplotlib") if m in sys.modules)
    print("exit", result.exit_code, "heavy", heavy)
    """
)


@pytest.mark.parametrize("args", [["--help"], ["validate"], ["validate", "--help"], ["benchmark", "--help"]])
def test_other_commands_do_not_import_torch(args: list[str]) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "heavy []" in out.stdout, out.stdout


@pytest.mark.parametrize("missing", ["torch", "torchvision", "matplotlib"])
def test_missing_extra_gives_the_install_command(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # `import <missing>` now raises ImportError
    result = CliRunner().invoke(main, ["benchmark", "--smoke"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: ctcurate benchmark needs {missing}, part of the 'benchmark' extra (torch, torchvision, matplotlib); "
        "install it with: pip install 'ctcurate[benchmark]'\n"
    )
    assert result.stdout == ""
