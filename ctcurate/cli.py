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
@click.option("--data", "data", type=click.Path(file_okay=False), help="Folder holding Images-processed/ (default $CTCURATE_DATA).")
@click.option("--splits", type=click.Path(file_okay=False), help="Data-split folder (default <metadata>/Data-split).")
@click.option("--metadata", type=click.Path(file_okay=False), help="Folder with the metadata sheets (default: the repository's metadata/).")
@click.option("--against", type=click.Path(file_okay=False), help="Compare this second image set (a contribution) with the dataset.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv", "html"]), default="text", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), help="Write the report here (atomically) instead of stdout.")
@click.option("--fix-splits", "fix_splits", type=click.Path(file_okay=False), help="Write corrected split lists into this folder.")
@click.option("--jobs", type=click.IntRange(min=1), help="Hashing processes (default: CPU count).")
@click.option("--threshold", type=click.IntRange(0, 32), default=10, show_default=True, help="Candidate pHash distance (direct or mirrored) before pixel verification.")
@click.option("--cache", "cache", type=click.Path(dir_okay=False), help="SQLite cache file (default <data>/.ctcurate/cache.sqlite).")
def check_leakage(
    data: str | None, splits: str | None, metadata: str | None, against: str | None, fmt: str,
    output: str | None, fix_splits: str | None, jobs: int | None, threshold: int, cache: str | None,
) -> None:
    """Find duplicate images and leaks across splits, labels, patients and source figures."""
    import sqlite3
    from pathlib import Path

    from . import report as report_lib
    from .atomic import atomic_write
    from .layout import IMAGES_DIR, DataRootNotFound, default_metadata_dir, resolve_data_root
    from .leakage import check_leakage as run_check

    try:
        root = resolve_data_root(data)
    except DataRootNotFound as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    meta_dir = Path(metadata) if metadata else default_metadata_dir()
    for name, value in (("--metadata", metadata), ("--splits", splits), ("--against", against)):
        if value and not Path(value).is_dir():
            click.echo(f"error: {name} {value}: no such folder", err=True)
            sys.exit(EXIT_USAGE)
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="hashing", unit="img", file=sys.stderr, leave=False, disable=None)
        bar.n = done
        bar.refresh()

    try:
        result = run_check(
            root,
            splits_dir=Path(splits) if splits else None,
            metadata_dir=meta_dir if meta_dir.is_dir() else None,
            against=Path(against) if against else None,
            cache_path=Path(cache) if cache else None,
            jobs=jobs,
            threshold=threshold,
            progress=progress,
        )
    except OSError as exc:
        click.echo(f"error: {getattr(exc, 'filename', None) or root}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_USAGE)
    except sqlite3.Error as exc:
        click.echo(f"error: {cache or 'cache'}: cannot use the cache file: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        if bar is not None:
            bar.close()

    def resolve(rel: str) -> Path | None:
        if rel.startswith("new:") and against:
            base = Path(against)
            cand = base / IMAGES_DIR / rel[4:]
            return cand if cand.is_file() else base / rel[4:]
        return root / IMAGES_DIR / rel

    renderers = {
        "text": lambda r: report_lib.to_text(r),
        "json": lambda r: report_lib.to_json(r),
        "csv": lambda r: report_lib.to_csv(r),
        "html": lambda r: report_lib.to_html(r, resolve),
    }
    text = renderers[fmt](result)
    try:
        if output:
            with atomic_write(output) as fh:
                fh.write(text if text.endswith("\n") else text + "\n")
        else:
            click.echo(text)
        if fix_splits:
            from .fixsplits import fix_splits as run_fix

            fixed = run_fix(result, Path(splits) if splits else meta_dir / "Data-split", Path(fix_splits))
            click.echo(fixed.describe(), err=True)
    except OSError as exc:
        click.echo(f"error: {getattr(exc, 'filename', None) or output}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_FOUND if result.has_problems else EXIT_OK)


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
