"""The `ctcurate` command line: the only module that imports click.

Each command parses its options, makes one library call, prints the result and picks the exit
code (0 clean, 1 problems found, 2 usage or I/O error). Library code never prints or exits.
Options that several commands share are declared once below (`data_option`, `cache_option`, ...),
so the same option has the same name, type and help everywhere.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from . import __version__
from .benchmark import DEVICE_NAMES, MODEL_NAMES

if TYPE_CHECKING:
    from ctcurate.benchmark.run import BenchmarkOptions, BenchmarkResult
    from ctcurate.benchmark.train import Progress as EpochProgress
    from ctcurate.doi.resolve import Resolver
    from ctcurate.leakage.pipeline import LeakageReport
    from ctcurate.validation.checks import ValidationResult

EXIT_OK, EXIT_FOUND, EXIT_USAGE = 0, 1, 2
F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

# --- options shared by several commands (declared once) -------------------------------------

_DATA_HELP = "Folder holding Images-processed/ (default: $CTCURATE_DATA)."


def data_option(*aliases: str, help: str = _DATA_HELP) -> Decorator[F]:
    """`--data ROOT`: the folder holding Images-processed/ (`aliases` keep older spellings working)."""
    return click.option("--data", *aliases, "data", type=click.Path(file_okay=False, path_type=Path), default=None, help=help)


def metadata_option(file_okay: bool = False, help: str | None = None) -> Decorator[F]:
    """`--metadata DIR`: the folder of the MetaInfo sheets and Data-split/ (default: the repository's metadata/)."""
    return click.option(
        "--metadata", "metadata", type=click.Path(file_okay=file_okay, path_type=Path), default=None, metavar="PATH" if file_okay else "DIR",
        help=help or "Folder holding the MetaInfo sheets and Data-split/ (default: the repository's metadata/).",
    )


def splits_option(help: str = "Split-list folder (default: Data-split/ beside the sheets).") -> Decorator[F]:
    return click.option("--splits", type=click.Path(file_okay=False, path_type=Path), default=None, help=help)


cache_option: Decorator[Any] = click.option(
    "--cache", "cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The SQLite cache file shared by every command (default: $CTCURATE_CACHE, else the user's cache folder, "
    "e.g. ~/.cache/ctcurate/cache.sqlite).",
)
mailto_option: Decorator[Any] = click.option(
    "--mailto", metavar="ADDR", help="Contact address sent to the DOI registries (default: $CTCURATE_MAILTO).",
)
scheduler_option: Decorator[Any] = click.option(
    "--scheduler", metavar="ADDRESS", envvar="CTCURATE_SCHEDULER", default=None,
    help="Run the per-image and per-pair work on this Dask scheduler, e.g. tcp://10.0.0.5:8786 "
    "(default $CTCURATE_SCHEDULER; without either, local processes). Workers must see the images "
    "at the same paths; needs pip install 'ctcurate[cluster]'.",
)


def format_option(*choices: str) -> Decorator[F]:
    return click.option("--format", "fmt", type=click.Choice(list(choices)), default=choices[0], show_default=True)


def output_option(help: str = "Write the report to this file (atomically) instead of stdout.") -> Decorator[F]:
    return click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help=help)


def force_option(what: str) -> Decorator[F]:
    return click.option("--force", is_flag=True, help=f"With {what}: write into a target that exists and is not empty.")


def _apply(*decorators: Decorator[F]) -> Decorator[F]:
    def wrap(fn: F) -> F:
        for d in reversed(decorators):
            fn = d(fn)
        return fn

    return wrap


# --- shared helpers -------------------------------------------------------------------------


def _exit_with_error(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _data_root_or_exit(raw: str | os.PathLike[str] | None) -> Path:
    """The folder holding Images-processed/ (option, else $CTCURATE_DATA), or a one-line exit 2."""
    from ctcurate.core.layout import DataRootNotFound, resolve_data_root

    try:
        return resolve_data_root(raw)
    except DataRootNotFound as exc:
        _exit_with_error(str(exc))


def _emit(report: str, output: Path | None) -> None:
    """`report` to stdout, or atomically to `output` (a write error is a one-line exit 2)."""
    from ctcurate.core.atomic import atomic_write

    if output is None:
        click.echo(report, nl=False)
        return
    try:
        with atomic_write(output) as fh:
            fh.write(report)
    except OSError as exc:
        _exit_with_error(f"{output}: cannot write ({exc.strerror or exc})")


def _cache_file_or_exit(cache: Path | None) -> Path:
    """The cache file `store.cache_location` names; one it cannot name (`--cache ~nobody/x`) is an exit 2."""
    from ctcurate.core.store import cache_location

    try:
        return cache_location(cache)
    except OSError as exc:
        _exit_with_error(f"{exc.filename}: {exc.strerror}")


@contextmanager
def _resolver(online: bool, cache: Path | None, offline: bool = False, mailto: str | None = None) -> Iterator[Resolver | None]:
    """The DOI resolver over the cache file (None unless `online`); an unusable cache is an exit 2."""
    import sqlite3

    if not online:
        yield None
        return
    from ctcurate.doi.resolve import cache_error_message, open_resolver

    where = _cache_file_or_exit(cache)
    opened = open_resolver(where, offline=offline, mailto=mailto)
    try:
        resolver = opened.__enter__()
    except (sqlite3.Error, OSError) as exc:
        _exit_with_error(cache_error_message(where, exc))
    try:
        yield resolver
    except sqlite3.Error as exc:
        _exit_with_error(cache_error_message(where, exc))
    finally:
        opened.__exit__(None, None, None)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ctcurate")
def main() -> None:
    """Curation toolkit for the COVID-CT dataset: validate, add contributions, find leakage, benchmark."""


# --- validate -------------------------------------------------------------------------------


@main.command()
@_apply(
    metadata_option(file_okay=True, help="Metadata folder (COVID-CT-MetaInfo.xlsx, NonCOVID-CT-MetaInfo.csv, Data-split/) "
                    "or one sheet. Default: the repository's metadata/."),
    data_option("--images", help="Folder holding Images-processed/ (default: $CTCURATE_DATA; without either, images are "
                "not checked). --images is the older name."),
    splits_option(),
    format_option("text", "json", "html"),
    output_option(),
    click.option("--fix", "fix_out", type=click.Path(path_type=Path), default=None,
                 help="Write a normalized copy of the metadata here (a folder for a folder, a file for a file); "
                 "the input is never changed."),
    click.option("--online", is_flag=True,
                 help="Also ask doi.org, Crossref and bioRxiv/medRxiv about every DOI (cached; see `ctcurate doi resolve`)."),
    click.option("--offline", is_flag=True, help="With --online: answer only from the DOI cache."),
    mailto_option,
    cache_option,
    force_option("--fix"),
    click.option("--quiet", "-q", is_flag=True, help="Text format: print the summary only, not every finding."),
)
def validate(metadata: Path | None, data: Path | None, splits: Path | None, fmt: str, output: Path | None,
             fix_out: Path | None, online: bool, offline: bool, mailto: str | None, cache: Path | None,
             force: bool, quiet: bool) -> None:
    """Check the metadata sheet, split lists and images; report every problem at once.

    Exit status: 0 no errors (warnings allowed), 1 errors found, 2 usage or unreadable input.
    """
    from ctcurate.core.findings import has_errors
    from ctcurate.validation import report
    from ctcurate.validation.checks import InputError
    from ctcurate.validation.checks import validate as run_validate

    if (offline or mailto or cache) and not online:
        raise click.UsageError("--offline and --mailto go with --online" if not cache else "--cache goes with --online")
    try:
        with _resolver(online, cache, offline, mailto) as resolver:
            result = run_validate(metadata, data, splits, plan_fixes=True, resolver=resolver)
    except InputError as exc:
        _exit_with_error(str(exc))
    terminal = output is None and sys.stdout.isatty()
    _emit(report.render(result, fmt, "ctcurate validate" + (f": {metadata}" if metadata else ""), quiet=quiet,
                        width=shutil.get_terminal_size((100, 24)).columns if terminal else 100,
                        colour=terminal and not os.environ.get("NO_COLOR")), output)
    if output is not None:
        click.echo(f"wrote {output}: {result.summary['errors']} error(s), {result.summary['warnings']} warning(s)", err=True)
    if not result.images_checked and fmt != "text":
        click.echo(report.NOT_CHECKED, err=True)
    if fix_out is not None:
        _write_fixed(result, fix_out, force)
    sys.exit(EXIT_FOUND if has_errors(result.findings) else EXIT_OK)



def _write_fixed(result: ValidationResult, fix_out: Path, force: bool) -> None:
    """`validate --fix`: the normalized copy, one stderr line per file written."""
    from ctcurate.validation.fix import FixError, write_fixed

    try:
        fixed = write_fixed(result, fix_out, force=force)
    except FixError as exc:
        _exit_with_error(str(exc))
    except OSError as exc:
        _exit_with_error(f"{fix_out}: cannot write ({exc})")
    for path, count in fixed.written.items():
        click.echo(f"fixed copy: {path} ({count} change(s))", err=True)
    from ctcurate.validation.fix import validate_copy
    from ctcurate.validation.render import headline

    left = validate_copy(result, fixed, fix_out).findings
    click.echo(f"the fixed copy still has {len(left)} of the {len(result.findings)} finding(s): "
               f"{headline(left)} (see them: ctcurate validate --metadata {fix_out})", err=True)


# --- schema ---------------------------------------------------------------------------------


@main.command()
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=Path("schemas"), show_default=True,
              help="Folder for the *.schema.json files.")
@click.option("--docs", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True,
              help="Folder of the command pages whose finding-code tables are generated from the code registry.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when a file in the folder is missing or stale, "
              "2 when there is no such folder.")
def schema(output: Path, docs: Path, check: bool) -> None:
    """Write the JSON Schema of every metadata model (sheet rows, split entries, findings) and the docs' code tables."""
    from ctcurate.core.codes import doc_tables
    from ctcurate.validation.schemas import json_schemas

    if check and not output.is_dir():
        _exit_with_error(f"{output}: no such folder; run this in the repository's root (it holds schemas/) or pass --output DIR")
    generated = {output / name: text for name, text in json_schemas().items()} | doc_tables(docs)
    stale = [(target, text) for target, text in generated.items()
             if (target.read_text(encoding="utf-8") if target.is_file() else None) != text]
    for target, text in stale:
        if not check:
            _emit(text, target)
            click.echo(f"wrote {target}")
        elif not target.is_file():
            click.echo(f"missing {target} (run `ctcurate schema --output {output}` to write it)")
        else:
            click.echo(f"stale {target}: differs from the models (run `ctcurate schema --output {output}`)")
    sys.exit(EXIT_FOUND if check and stale else EXIT_OK)


# --- add-contribution -----------------------------------------------------------------------


@main.command("add-contribution")
@click.argument("contribution", required=False, type=click.Path(exists=True, path_type=Path))
@_apply(
    data_option(),
    metadata_option(),
    click.option("--dry-run", is_flag=True, help="Check and print the full plan; write nothing."),
    click.option("--split", "split_mode", type=click.Choice(["auto", "none", "train", "val", "test"]), default="auto",
                 show_default=True, help="Where new patients go: auto keeps class ratios, patients and figures whole."),
    click.option("--contributor", default="", help="Who sent the contribution (recorded in contributions.jsonl)."),
    format_option("text", "json"),
    click.option("--partial", is_flag=True, help="Apply the accepted files even when others are rejected."),
    click.option("--template", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Write an empty contribution sheet (.xlsx or .csv) to this file and stop."),
    cache_option,
    click.option("--online", is_flag=True, help="Also check each DOI with the registries "
                 "(it exists; it is not another DOI of a paper in the dataset)."),
    mailto_option,
    click.option("--force", is_flag=True, help="With --template: replace a file that exists and is not empty."),
    scheduler_option,
)
def add_contribution(contribution: Path | None, data: Path | None, metadata: Path | None, dry_run: bool,
                     split_mode: str, contributor: str, fmt: str, partial: bool, template: Path | None,
                     cache: Path | None, online: bool, mailto: str | None, force: bool, scheduler: str | None) -> None:
    """Check a contributed folder or zip against the dataset and apply it all-or-nothing.

    Exit 0: everything accepted (and applied unless --dry-run); 1: something rejected (nothing
    applied unless --partial); 2: usage or I/O error, or another run holds the dataset.
    """
    from ctcurate.contribution import run as contribute
    from ctcurate.core.lock import LockHeld
    from ctcurate.leakage.execution import ClusterUnavailable

    if template is not None:
        _write_template(template, force)
    source, data_root, meta = _contribution_inputs(contribution, data, metadata)
    try:
        # A dry run works on a scratch copy of the hash cache: it writes nothing anywhere.
        with contribute.hash_cache(_cache_file_or_exit(cache), scratch=dry_run) as use_cache, _resolver(online, cache, mailto=mailto) as resolver:
            outcome = contribute.add_contribution(
                source, data_root, meta, check_rows=contribute.default_row_checker(resolver, data_root, meta),
                find_duplicates=contribute.default_duplicate_finder(use_cache, scheduler),
                split_mode=split_mode, contributor=contributor, dry_run=dry_run, partial=partial)
    except (LockHeld, ClusterUnavailable, contribute.ContributionIOError) as exc:
        _exit_with_error(f"{exc}")
    click.echo(contribute.render_json(outcome) if fmt == "json" else contribute.render_text(outcome))
    sys.exit(outcome.exit_code)


def _contribution_inputs(contribution: Path | None, data: Path | None, metadata: Path | None) -> tuple[Path, Path, Path]:
    """The contribution, data root and metadata folder of `add-contribution`, or a usage error."""
    from ctcurate.core.layout import default_metadata_dir

    if contribution is None:
        raise click.UsageError("missing argument CONTRIBUTION (a folder or .zip), or give --template FILE")
    if not contribution.is_dir() and contribution.suffix.lower() != ".zip":
        _exit_with_error(f"{contribution}: a contribution is a folder or a .zip file")
    data_root, meta = _data_root_or_exit(data), metadata if metadata is not None else default_metadata_dir()
    if not meta.is_dir():
        _exit_with_error(f"{meta}: no such metadata folder")
    return contribution, data_root, meta


def _write_template(template: Path, force: bool) -> NoReturn:
    """`add-contribution --template FILE`: an empty contribution sheet, then exit 0."""
    from ctcurate.contribution.source import write_template
    from ctcurate.core.atomic import WouldOverwrite

    if template.suffix.lower() not in (".xlsx", ".csv"):
        raise click.UsageError(f"{template}: the template must end in .xlsx or .csv")
    try:
        write_template(template, force=force)
    except WouldOverwrite as exc:
        _exit_with_error(str(exc))
    except OSError as exc:
        _exit_with_error(f"{template}: {exc.strerror or exc}")
    click.echo(f"wrote the contribution template {template}")
    sys.exit(EXIT_OK)


# --- check-leakage --------------------------------------------------------------------------


@main.command("check-leakage")
@_apply(
    data_option(),
    splits_option("Data-split folder (default: <metadata>/Data-split)."),
    metadata_option(),
    click.option("--against", type=click.Path(path_type=Path),
                 help="Compare this second image set (a contribution: a folder or .zip) with the dataset."),
    format_option("text", "json", "csv", "html"),
    output_option(),
    click.option("--fix-splits", "fix_splits", type=click.Path(file_okay=False, path_type=Path),
                 help="Write corrected split lists into this folder."),
    click.option("--jobs", type=click.IntRange(min=1), help="Local worker processes (default and most: the CPU count)."),
    click.option("--threshold", type=click.IntRange(0, 32), default=10, show_default=True,
                 help="Candidate pHash distance (direct or mirrored) before pixel verification."),
    cache_option,
    force_option("--fix-splits"),
    scheduler_option,
)
def check_leakage(data: Path | None, splits: Path | None, metadata: Path | None, against: Path | None, fmt: str,
                  output: Path | None, fix_splits: Path | None, jobs: int | None, threshold: int, cache: Path | None,
                  force: bool, scheduler: str | None) -> None:
    """Find duplicate images and leaks across splits, labels, patients and source figures.

    \b
    Exit status:
      0  no duplicates, leaks or unreadable images
      1  problems found (reported; with --fix-splits, corrected lists written)
      2  usage error, unreadable input or unusable cache file
    """
    from ctcurate.leakage.execution import start_fork_server

    cache_file = _cache_file_or_exit(cache)
    if not scheduler and not cache_file.is_file():
        # a first run hashes every image: the workers' start-up overlaps this process's imports.
        # With a cache, most runs need no worker (about 0.1 s saved); one that does starts them then.
        start_fork_server()
    from ctcurate.core.layout import SPLITS_DIR, default_metadata_dir
    from ctcurate.leakage import report

    root, meta_dir = _data_root_or_exit(data), metadata or default_metadata_dir()
    _check_leakage_inputs(metadata, splits, against, jobs, scheduler)
    if fix_splits:  # refused before the long run, not after it
        _refuse_existing(fix_splits, force)
    with _leakage_errors(root, cache), _against_images(against) as new_images:
        result = _run_check_leakage(root, splits, meta_dir, new_images, cache, jobs, threshold, scheduler)
        _emit(report.render(result, fmt, root, {k: v[0] for k, v in (new_images or {}).items()}), output)
    if output is not None:
        click.echo(f"wrote {output}: {report.summary_line(result)}")  # stdout is free: the report is in the file
    if fix_splits:
        _write_fixed_splits(result, splits or meta_dir / SPLITS_DIR, fix_splits, force)
    sys.exit(EXIT_FOUND if result.has_problems else EXIT_OK)


def _check_leakage_inputs(metadata: Path | None, splits: Path | None, against: Path | None, jobs: int | None,
                          scheduler: str | None) -> None:
    """Folders that must exist, and the note when --jobs is above the CPU count."""
    from ctcurate.leakage.execution import capped_jobs

    if jobs and not scheduler and capped_jobs(jobs) < jobs:
        click.echo(f"--jobs {jobs}: using {capped_jobs(jobs)} processes, the number of CPUs", err=True)
    for name, value in (("--metadata", metadata), ("--splits", splits), ("--against", against)):
        if value and not value.is_dir() and not (name == "--against" and value.suffix.lower() == ".zip"):
            _exit_with_error(f"{name} {value}: no such folder")


@contextmanager
def _leakage_errors(root: Path, cache: Path | None) -> Iterator[None]:
    """check-leakage's expected failures as one-line errors (exit 2)."""
    import sqlite3

    from ctcurate.core.sheets import SheetError
    from ctcurate.leakage.execution import ClusterUnavailable

    try:
        yield
    except ClusterUnavailable as exc:
        _exit_with_error(f"--scheduler: {exc}")
    except SheetError as exc:
        _exit_with_error(str(exc))
    except OSError as exc:
        _exit_with_error(f"{getattr(exc, 'filename', None) or root}: {exc.strerror or exc}")
    except sqlite3.Error as exc:
        _exit_with_error(f"{cache or 'cache'}: cannot use the cache file: {exc}")


def _run_check_leakage(root: Path, splits: Path | None, meta_dir: Path, new_images: dict[str, tuple[Path, str | None]] | None,
                       cache: Path | None, jobs: int | None, threshold: int, scheduler: str | None) -> LeakageReport:
    """The pipeline with one progress bar per step on a terminal."""
    from ctcurate.core.progress import StepBars
    from ctcurate.leakage.pipeline import check_leakage as run_check

    metadata_dir = meta_dir if meta_dir.is_dir() else None
    if metadata_dir is None:  # the default folder (an explicit --metadata must exist): say what is left out
        click.echo(f"note: {meta_dir}: no metadata folder; the sheets' patient and source-figure checks are skipped "
                   "(pass --metadata DIR)", err=True)
    bars = StepBars()
    try:
        return run_check(root, splits_dir=splits, metadata_dir=metadata_dir, against=new_images,
                         cache_path=cache, jobs=jobs, threshold=threshold, progress=bars, scheduler=scheduler)
    finally:
        bars.close()


@contextmanager
def _against_images(against: Path | None) -> Iterator[dict[str, tuple[Path, str | None]] | None]:
    """`check-leakage --against`: the contribution's images (folder or .zip, open for the block) and declared classes."""
    if against is None:
        yield None
        return
    from ctcurate.contribution.source import labelled_images, open_contribution

    with open_contribution(against) as contribution:
        if contribution.root is None:
            _exit_with_error(f"--against {against}: " + "; ".join(f"{f.code}: {f.message}" for f in contribution.findings))
        yield {rel: (img.path, img.class_dir) for rel, img in labelled_images(contribution).items()}



def _refuse_existing(target: Path, force: bool) -> None:
    from ctcurate.core.atomic import WouldOverwrite, refuse_existing

    try:
        refuse_existing(target, force)
    except WouldOverwrite as exc:
        _exit_with_error(str(exc))


def _write_fixed_splits(result: LeakageReport, splits: Path, out: Path, force: bool) -> None:
    from ctcurate.core.atomic import WouldOverwrite
    from ctcurate.core.sheets import SheetError
    from ctcurate.leakage.fixsplits import fix_splits as run_fix

    try:
        click.echo(run_fix(result, splits, out, force=force).describe(), err=True)
    except (WouldOverwrite, SheetError) as exc:
        _exit_with_error(str(exc))
    except OSError as exc:
        _exit_with_error(f"{getattr(exc, 'filename', None) or out}: {exc.strerror or exc}")


# --- benchmark ------------------------------------------------------------------------------


def _progress_printer(quiet: bool) -> Callable[[EpochProgress], None]:
    """A callback drawing a one-line bar per epoch on stderr, then the epoch's figures."""
    live = sys.stderr.isatty()  # redraw per batch on a terminal; one line per epoch in a log

    def show(p: EpochProgress) -> None:
        if quiet or (p.stats is None and not live):
            return
        width = 24
        filled = int(width * p.batch / max(p.batches, 1))
        bar = "#" * filled + "." * (width - filled)
        if p.stats is None:
            click.echo(f"\repoch {p.epoch}/{p.epochs} [{bar}] {p.batch}/{p.batches} loss {p.loss:.4f}", err=True, nl=False)
            return
        s = p.stats
        click.echo(
            ("\r" if live else "") + f"epoch {p.epoch}/{p.epochs} [{bar}] loss {s.train_loss:.4f}  val loss {s.val_loss:.4f}  "
            f"val acc {s.val_accuracy:.3f}  val AUC {s.val_auc:.3f}  {s.seconds:.1f} s, data wait {100 * s.data_share:.0f}%",
            err=True,
        )

    return show


@main.command()
@_apply(
    data_option(),
    splits_option("Data-split folder (default: the repository's metadata/Data-split)."),
    click.option("--model", type=click.Choice(MODEL_NAMES), default=None, show_default="densenet169; tiny with --smoke",
                 help="Network to train."),
    click.option("--weights", default="none", show_default=True, help="imagenet (torchvision's, needs network once), none, or a state-dict file."),
    click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs (default 30; smoke 8)."),
    click.option("--image-size", type=click.IntRange(min=16), default=None, help="Crop size in pixels (default 224; smoke 96)."),
    click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Batch size (default 16)."),
    click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Adam learning rate (default 1e-4; smoke 1e-3)."),
    click.option("--device", type=click.Choice(DEVICE_NAMES), metavar="[auto|cpu|cuda|cuda:N]", default="auto",
                 show_default=True, help="auto: CUDA when present, else CPU."),
    click.option("--seeds", type=click.IntRange(1, 20), default=1, show_default=True,
                 help="With --with-contribution: train each arm with this many seeds (seed, seed+1, ...); a change is "
                 "called significant only when it stands out from both test-image resampling and seed-to-seed noise."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw; same seed, same device, same numbers."),
    click.option("--with-contribution", "with_contribution", type=click.Path(path_type=Path), help="Also train with this contribution's images (a folder or .zip) added to train and compare."),
    click.option("--score", "score_dir", type=click.Path(path_type=Path), help="Flag contributed images (a folder or .zip) whose prediction confidently contradicts their label."),
    click.option("--score-threshold", type=click.FloatRange(0.5, 1.0), default=0.9, show_default=True, help="Probability of the other class that flags an image."),
    click.option("--dedupe-test", is_flag=True, help="Also report test metrics without the test images duplicated in train."),
    click.option("--leakage-report", type=click.Path(dir_okay=False, path_type=Path), help="A `check-leakage --format json` file giving the duplicates for --dedupe-test."),
    click.option("--smoke", is_flag=True, help="Tiny CNN, 96 px, 8 epochs, on a subset: a check that everything runs (seconds on a CPU)."),
    click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmark-results"), show_default=True, help="Folder for results.json, roc.png, confusion.png."),
    cache_option,
    click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the decoded-image tensor cache lives (default: benchmark/ beside the cache file)."),
    click.option("--bootstrap", type=click.IntRange(min=100), default=1000, show_default=True, help="Bootstrap resamples for the 95% intervals."),
    click.option("--quiet", is_flag=True, help="No progress bar."),
)
def benchmark(quiet: bool, output: Path, **options: Any) -> None:
    """Train and evaluate the DenseNet-169 baseline (GPU when present) to verify contributions.

    A full run trains for hours on a CPU and minutes on a GPU; --smoke checks the set-up in a minute.

    \b
    Exit status:
      0  done
      1  the contribution significantly hurts, or contributed labels look wrong
      2  usage error or unreadable input
    """
    from .benchmark import MissingExtra, require_extra

    _check_benchmark_arguments(**options)  # before the torch import: a wrong option costs no 10 s
    try:
        require_extra()
    except MissingExtra as exc:
        _exit_with_error(f"{exc}")
    from .benchmark.model import WeightsError
    from .benchmark.run import run_benchmark
    from .benchmark.train import DeviceError

    try:
        result = run_benchmark(_benchmark_options(**options), on_progress=_progress_printer(quiet),
                               on_stage=lambda msg: _say_stage(msg, quiet))
    except (WeightsError, DeviceError) as exc:
        _exit_with_error(f"{exc}")
    _finish_benchmark(result, output)


def _say_stage(msg: str, quiet: bool) -> None:
    """A benchmark step on stderr; --quiet keeps the warnings."""
    if not quiet or msg.startswith("warning:"):
        click.echo(msg, err=True)


def _finish_benchmark(result: BenchmarkResult, output: Path) -> NoReturn:
    """The files, the table on stdout, the findings on stderr, and the exit code."""
    from .benchmark.report import text_table, write_outputs

    if result.fatal:
        _report_findings(result.findings)
        sys.exit(EXIT_USAGE)
    try:
        paths = write_outputs(result, output)
    except OSError as exc:
        _exit_with_error(f"cannot write results to {output}: {exc}")
    click.echo(text_table(result))
    _report_findings([f for f in result.findings if f.code != "benchmark.label-suspect"])  # those are in the table
    click.echo(f"results: {', '.join(str(p) for p in paths)}", err=True)
    sys.exit(EXIT_FOUND if result.has_problems else EXIT_OK)


def _report_findings(findings: list[Any]) -> None:
    from ctcurate.core.findings import to_text

    if findings:
        click.echo(to_text(findings), err=True)



def _check_benchmark_arguments(data: Path | None, splits: Path | None, dedupe_test: bool, leakage_report: Path | None,
                               seeds: int, with_contribution: Path | None, score_dir: Path | None, cache: Path | None,
                               **_: Any) -> None:
    """Every check that needs no torch; exit 2 on the first that fails."""
    from ctcurate.core.layout import SPLITS_DIR, default_metadata_dir

    _data_root_or_exit(data)
    _cache_file_or_exit(cache)
    if not (splits or default_metadata_dir() / SPLITS_DIR).is_dir():
        _exit_with_error(f"{splits or default_metadata_dir() / SPLITS_DIR}: no such split folder")
    if leakage_report and not dedupe_test:
        _exit_with_error("--leakage-report only makes sense with --dedupe-test")
    if seeds > 1 and not with_contribution:
        _exit_with_error("--seeds only makes sense with --with-contribution")
    for name, source in (("--with-contribution", with_contribution), ("--score", score_dir)):
        if source and not (source.is_dir() or source.suffix.lower() == ".zip" and source.is_file()):
            _exit_with_error(f"{name} {source}: no such folder or .zip")


def _benchmark_options(data: Path | None, splits: Path | None, model: str | None, weights: str, epochs: int | None,
                       image_size: int | None, batch_size: int | None, lr: float | None, device: str, seed: int,
                       smoke: bool, dedupe_test: bool, leakage_report: Path | None, **rest: Any) -> BenchmarkOptions:
    """The benchmark's options from the command line (smoke defaults for what was not given), once
    `_check_benchmark_arguments` has accepted them."""
    from ctcurate.core.layout import SPLITS_DIR, default_metadata_dir

    from .benchmark.run import BenchmarkOptions, with_smoke_defaults
    from .benchmark.train import TrainConfig

    root, splits_dir = _data_root_or_exit(data), splits or default_metadata_dir() / SPLITS_DIR
    explicit: dict[str, Any] = {k: v for k, v in (("model", model), ("epochs", epochs), ("image_size", image_size),
                                  ("batch_size", batch_size), ("lr", lr)) if v is not None}
    cfg = TrainConfig(weights=weights, device=device, seed=seed, **explicit)
    return BenchmarkOptions(
        data_root=root, splits_dir=splits_dir, config=with_smoke_defaults(cfg, explicit) if smoke else cfg, smoke=smoke,
        with_contribution=rest["with_contribution"], score=rest["score_dir"], score_threshold=rest["score_threshold"],
        dedupe_test=dedupe_test, leakage_report=leakage_report, cache=rest["cache"], cache_dir=rest["cache_dir"],
        bootstrap=rest["bootstrap"], seeds=rest["seeds"],
    )


# --- doi ------------------------------------------------------------------------------------


@main.group()
def doi() -> None:
    """Normalize DOIs and resolve them against the registries."""


@doi.command("normalize")
@click.argument("dois", nargs=-1, required=True)
def doi_normalize(dois: tuple[str, ...]) -> None:
    """Print one canonical DOI per argument (lower case, no prefix, no whitespace).

    `-` reads DOIs from standard input, one per line. An argument that is not a DOI prints
    `error: <reason>` in its place; the exit code is then 1.
    """
    from ctcurate.doi import normalize as doi_lib

    failed = False
    for raw in _doi_arguments(dois):
        parsed = doi_lib.parse(raw)
        if parsed.valid:
            click.echo(parsed.doi)
        else:
            failed = True
            click.echo(f"error: {doi_lib.failure_reason(parsed)}")
    sys.exit(EXIT_FOUND if failed else EXIT_OK)


def _doi_arguments(dois: tuple[str, ...]) -> list[str]:
    """The arguments, with `-` replaced by standard input's lines (bytes that are not UTF-8 kept
    as surrogates, so that they are refused by name rather than crashing the decoder)."""
    out: list[str] = []
    for raw in dois:
        if raw == "-":
            data = sys.stdin.buffer.read()
            out += [line for line in data.decode("utf-8", "surrogateescape").splitlines() if line.strip()]
        else:
            out.append(raw)
    return out


@doi.command("resolve")
@click.argument("dois", nargs=-1)
@_apply(
    metadata_option(help="Resolve every DOI of DIR/COVID-CT-MetaInfo.xlsx (empty cells: from the file name)."),
    format_option("text", "json", "csv"),
    click.option("--offline", is_flag=True, help="Answer only from the cache; say which DOIs could not be checked."),
    click.option("--refresh", is_flag=True, help="Ask the registries again even where the cache has an answer."),
    click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
                 help="The most time the run spends asking the registries, from its first request (default "
                      "300); DOIs not checked by then are doi.unreachable (run again to go on)."),
    mailto_option,
    cache_option,
)
def doi_resolve(dois: tuple[str, ...], metadata: Path | None, fmt: str, offline: bool, refresh: bool,
                timeout: float | None, mailto: str | None, cache: Path | None) -> None:
    """Check that DOIs exist (doi.org) and show their paper (Crossref, bioRxiv/medRxiv).

    Exit 0 when every DOI exists; 1 when one does not, is malformed or could not be checked.
    """
    import sqlite3

    from ctcurate.core.sheets import SheetError
    from ctcurate.doi import report
    from ctcurate.doi import resolve as dr

    if offline and refresh:
        raise click.UsageError("--offline and --refresh contradict each other")
    if bool(dois) == bool(metadata):
        raise click.UsageError("give DOIs or --metadata DIR (one of the two)")
    cache = _cache_file_or_exit(cache)
    try:
        refs, findings = dr.read_sheet_dois(metadata) if metadata else ([dr.DoiRef(doi=d) for d in dois], [])
        settings = dr.ResolverSettings.from_env(mailto=mailto, run_budget=timeout)
        with dr.open_resolver(cache, offline=offline, refresh=refresh, settings=settings) as resolver:
            results, online = dr.resolve_refs(refs, resolver, from_sheet=metadata is not None)
    except SheetError as exc:
        _exit_with_error(f"{exc}")
    except (sqlite3.Error, OSError) as exc:
        _exit_with_error(dr.cache_error_message(cache, exc))
    _emit(report.render(results, findings + online, fmt), None)
    sys.exit(EXIT_FOUND if report.failed(results, findings + online) else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
