"""The `ctcurate` command line: the only module that imports click.

Each command parses its options, makes one library call, prints the result and picks the exit
code (0 clean, 1 problems found, 2 usage or I/O error). Library code never prints or exits.
"""

from __future__ import annotations

import sys

import click

from . import __version__

EXIT_OK, EXIT_FOUND, EXIT_USAGE = 0, 1, 2


def _not_yet(name: str) -> None:
    click.echo(f"ctcurate {name}: not yet implemented", err=True)
    sys.exit(EXIT_USAGE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ctcurate")
def main() -> None:
    """Curation toolkit for the COVID-CT dataset: validate, add contributions, find leakage, benchmark."""


# --- validate -------------------------------------------------------------------------------


@main.command()
def validate() -> None:
    """Check the metadata sheet, split lists and images; report every problem at once."""
    _not_yet("validate")


# --- add-contribution -----------------------------------------------------------------------


@main.command("add-contribution")
def add_contribution() -> None:
    """Check a contributed folder or zip against the dataset and apply it all-or-nothing."""
    _not_yet("add-contribution")


# --- check-leakage --------------------------------------------------------------------------


@main.command("check-leakage")
def check_leakage() -> None:
    """Find duplicate images and leaks across splits, labels, patients and source figures."""
    _not_yet("check-leakage")


# --- benchmark ------------------------------------------------------------------------------


@main.command()
def benchmark() -> None:
    """Train and evaluate the DenseNet-169 baseline (GPU when present) to verify contributions."""
    _not_yet("benchmark")


# --- doi ------------------------------------------------------------------------------------


@main.group()
def doi() -> None:
    """Normalize DOIs and resolve them against the registries."""


@doi.command("normalize")
@click.argument("dois", nargs=-1, required=True)
def doi_normalize(dois: tuple[str, ...]) -> None:
    """Print one canonical DOI per argument (lower case, no prefix, no whitespace)."""
    from . import doi as doi_lib

    failed = False
    for raw in dois:
        parsed = doi_lib.parse(raw)
        if parsed.valid:
            click.echo(parsed.doi)
        else:
            failed = True
            click.echo(f"error: {raw!r} is not a DOI (expected 10.NNNN/suffix)")
    sys.exit(EXIT_FOUND if failed else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
