"""The `ctcurate` command line: the only module that imports click.

Each command parses its options, makes one library call, prints the result and picks the exit
code (0 clean, 1 problems found, 2 usage or I/O error). Library code never prints or exits.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from . import __version__
from .benchmark import DEVICE_NAMES, MODEL_NAMES

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
@click.option(
    "--metadata", "metadata", type=click.Path(path_type=Path), default=None,
    help="Metadata folder (COVID-CT-MetaInfo.xlsx, NonCOVID-CT-MetaInfo.csv, Data-split/) or one sheet. "
    "Default: the repository's metadata/.",
)
@click.option(
    "--images", "images", type=click.Path(path_type=Path), default=None,
    help="Folder holding Images-processed/ (default: $CTCURATE_DATA; without either, images are not checked).",
)
@click.option(
    "--splits", type=click.Path(path_type=Path), default=None,
    help="Split-list folder (default: Data-split/ beside the sheets)",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text", show_default=True)
@click.option(
    "--output", type=click.Path(path_type=Path), default=None, help="Write the report to this file instead of stdout."
)
@click.option(
    "--fix", "fix_out", type=click.Path(path_type=Path), default=None,
    help="Write a normalized copy of the metadata here (a folder for a folder, a file for a file); "
    "the input is never changed.",
)
@click.option(
    "--online", is_flag=True,
    help="Also ask doi.org, Crossref and bioRxiv/medRxiv about every DOI (cached; see `ctcurate doi resolve`).",
)
@click.option("--offline", is_flag=True, help="With --online: answer only from the DOI cache.")
@click.option("--mailto", metavar="ADDR", help="With --online: contact address for the registries (or $CTCURATE_MAILTO).")
@click.option("--quiet", "-q", is_flag=True, help="Text format: print the summary only, not every finding.")
def validate(
    metadata: Path | None,
    images: Path | None,
    splits: Path | None,
    fmt: str,
    output: Path | None,
    fix_out: Path | None,
    online: bool = False,
    offline: bool = False,
    mailto: str | None = None,
    quiet: bool = False,
) -> None:
    """Check the metadata sheet, split lists and images; report every problem at once.

    Exit status: 0 no errors (warnings allowed), 1 errors found, 2 usage or unreadable input.
    """
    import json

    from ctcurate.core import findings as findings_lib
    from ctcurate.core.atomic import atomic_write
    import shutil

    from ctcurate.validation import render
    from ctcurate.validation.fix import FixError, validate_copy, write_fixed
    from ctcurate.validation.render import fixable
    from ctcurate.core.htmlpage import findings_page
    from ctcurate.validation.checks import FINDING_CODES, InputError
    from ctcurate.validation.checks import validate as run_validate

    if (offline or mailto) and not online:
        raise click.UsageError("--offline and --mailto go with --online")
    try:
        if online:
            result = _validate_online(metadata, images, splits, True, offline, mailto)
        else:
            result = run_validate(metadata, images, splits, plan_fixes=True)
    except InputError as exc:
        _exit_with_error(str(exc))
    not_checked = None if result.images_checked else (
        "images not checked: pass --images ROOT or set CTCURATE_DATA to the folder holding Images-processed/"
    )
    if fmt == "json":
        extra = {k: v for k, v in result.summary.items() if k not in ("errors", "warnings", "by_code")}
        report = findings_lib.to_json(result.findings, **extra) + "\n"
    elif fmt == "html":
        title = "ctcurate validate" + (f": {metadata}" if metadata else "")
        report = findings_page(result.findings, title, result.summary, FINDING_CODES, fixable(result.findings, result.fixes))
    else:
        colour = output is None and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        width = shutil.get_terminal_size((100, 24)).columns if output is None and sys.stdout.isatty() else 100
        report = render.to_text(result.findings, result.fixes, FINDING_CODES, quiet, width, colour)
        report += f"{not_checked}\n" if not_checked else ""
        if online:
            papers = {r.doi: r for r in result.dois.values()}.values()
            report += "\nDOIs:\n" + "".join(f"  {r.describe()}\n" for r in papers)
    if online and fmt == "json":
        body = json.loads(report)
        # The document keeps exactly its two keys: the answers go with the online summary.
        papers = {r.doi: r for r in result.dois.values()}.values()
        body["summary"]["dois_online"]["papers"] = [r.model_dump(mode="json") for r in papers]
        report = json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    if output is not None:
        try:
            with atomic_write(output) as fh:
                fh.write(report)
        except OSError as exc:
            _exit_with_error(f"{output}: cannot write ({exc.strerror})")
        s = result.summary
        click.echo(f"wrote {output}: {s['errors']} error(s), {s['warnings']} warning(s)", err=True)
    else:
        click.echo(report, nl=False)
    if not_checked and fmt != "text":
        click.echo(not_checked, err=True)
    if fix_out is not None:
        try:
            fixed = write_fixed(result, fix_out)
        except (FixError, OSError) as exc:
            _exit_with_error(str(exc) if isinstance(exc, FixError) else f"{fix_out}: cannot write ({exc})")
        for path, count in fixed.written.items():
            click.echo(f"fixed copy: {path} ({count} change(s))", err=True)
        left = validate_copy(result, fixed, fix_out).findings
        click.echo(f"the fixed copy still has {len(left)} of the {len(result.findings)} finding(s): "
                   f"{render.headline(left)} (see them: ctcurate validate --metadata {fix_out})", err=True)
    sys.exit(EXIT_FOUND if findings_lib.has_errors(result.findings) else EXIT_OK)


if TYPE_CHECKING:
    from ctcurate.validation.checks import ValidationResult


def _validate_online(
    metadata: Path | None, images: Path | None, splits: Path | None, plan_fixes: bool, offline: bool, mailto: str | None
) -> ValidationResult:
    """`validate --online`: the same run, with a DOI resolver over the user's DOI cache."""
    import sqlite3

    from ctcurate.doi.resolve import cache_error_message, open_resolver
    from ctcurate.core.store import default_cache_path
    from ctcurate.validation.checks import validate as run_validate

    path = default_cache_path(None)
    try:
        with open_resolver(path, offline=offline, mailto=mailto) as resolver:
            return run_validate(metadata, images, splits, plan_fixes=plan_fixes, resolver=resolver)
    except (sqlite3.Error, OSError) as exc:
        _exit_with_error(cache_error_message(path, exc))


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


# --- schema ---------------------------------------------------------------------------------


@main.command()
@click.option(
    "--output", type=click.Path(path_type=Path), default=Path("schemas"), show_default=True,
    help="Folder for the *.schema.json files.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when a file in the folder is missing or stale, 2 when there is no such folder.")
def schema(output: Path, check: bool) -> None:
    """Write the JSON Schema of every metadata model (sheet rows, split entries, findings)."""
    from ctcurate.core.atomic import atomic_write
    from ctcurate.validation.schemas import json_schemas

    if check and not output.is_dir():
        _exit_with_error(
            f"{output}: no such folder; run this in the repository's root (it holds schemas/) or pass --output DIR"
        )
    changed = []
    for name, text in json_schemas().items():
        target = output / name
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current == text:
            continue
        changed.append((target, "missing" if current is None else "stale"))
        if not check:
            try:
                with atomic_write(target) as fh:
                    fh.write(text)
            except OSError as exc:
                _exit_with_error(f"{target}: cannot write ({exc.strerror})")
    for target, state in changed:
        if not check:
            click.echo(f"wrote {target}")
        elif state == "missing":
            click.echo(f"missing {target} (run `ctcurate schema --output {output}` to write it)")
        else:
            click.echo(f"stale {target}: differs from the models (run `ctcurate schema --output {output}`)")
    sys.exit(EXIT_FOUND if check and changed else EXIT_OK)


# --- add-contribution -----------------------------------------------------------------------


def _cache_override() -> Path | None:
    """$CTCURATE_CACHE, when set, names the hash cache instead of `<data root>/.ctcurate/`."""
    from ctcurate.core.store import CACHE_ENV

    raw = os.environ.get(CACHE_ENV)
    return Path(raw).expanduser() if raw else None


@main.command("add-contribution")
@click.argument("contribution", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--data", "data", type=click.Path(path_type=Path), default=None,
              help="Folder holding Images-processed/ (default: $CTCURATE_DATA).")
@click.option("--metadata", "metadata", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding the MetaInfo sheets and Data-split/ (default: the repository's metadata/).")
@click.option("--dry-run", is_flag=True, help="Check and print the full plan; write nothing.")
@click.option("--split", "split_mode", type=click.Choice(["auto", "none", "train", "val", "test"]), default="auto",
              show_default=True, help="Where new patients go: auto keeps class ratios, patients and figures whole.")
@click.option("--contributor", default="", help="Who sent the contribution (recorded in contributions.jsonl).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--partial", is_flag=True, help="Apply the accepted files even when others are rejected.")
@click.option("--template", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write an empty contribution sheet (.xlsx or .csv) to this file and stop.")
@click.option("--cache", "cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Hash cache shared with check-leakage (default $CTCURATE_CACHE, else <data>/.ctcurate/cache.sqlite).")
@click.option("--online", is_flag=True,
              help="Also check each DOI with the registries (it exists; it is not another DOI of a paper in the dataset).")
@click.option("--mailto", metavar="ADDR", help="With --online: contact address for the registries (or $CTCURATE_MAILTO).")
def add_contribution(contribution: Path | None, data: Path | None, metadata: Path | None, dry_run: bool,
                     split_mode: str, contributor: str, fmt: str, partial: bool, template: Path | None,
                     cache: Path | None, online: bool, mailto: str | None) -> None:
    """Check a contributed folder or zip against the dataset and apply it all-or-nothing.

    Exit 0: everything accepted (and applied unless --dry-run); 1: something rejected (nothing
    applied unless --partial); 2: usage or I/O error, or another run holds the dataset.
    """
    from ctcurate.contribution import run as contribute
    from ctcurate.contribution.source import write_template
    from ctcurate.core.layout import default_metadata_dir
    from ctcurate.core.lock import LockHeld
    from ctcurate.core.store import default_cache_path

    if template is not None:
        if template.suffix.lower() not in (".xlsx", ".csv"):
            raise click.UsageError(f"{template}: the template must end in .xlsx or .csv")
        try:
            write_template(template)
        except OSError as exc:
            _exit_with_error(f"{template}: {exc.strerror or exc}")
        click.echo(f"wrote the contribution template {template}")
        sys.exit(EXIT_OK)
    if contribution is None:
        raise click.UsageError("missing argument CONTRIBUTION (a folder or .zip), or give --template FILE")
    if not contribution.is_dir() and contribution.suffix.lower() != ".zip":
        _exit_with_error(f"{contribution}: a contribution is a folder or a .zip file")
    data_root = _data_root_or_exit(data)
    meta = metadata if metadata is not None else default_metadata_dir()
    if not meta.is_dir():
        _exit_with_error(f"{meta}: no such metadata folder")
    cache_path = cache or _cache_override() or default_cache_path(data_root)
    try:
        # A dry run works on a scratch copy of the hash cache: it writes nothing anywhere.
        with (
            contribute.scratch_cache(cache_path) if dry_run else nullcontext(cache_path) as use_cache,
            _doi_resolver(mailto) if online else nullcontext() as resolver,
        ):
            check_rows = contribute.default_row_checker()
            if resolver is not None:
                from ctcurate.contribution.dataset_state import read_state
                from ctcurate.doi.resolve import online_row_checker
                from ctcurate.contribution.intake import combine_checkers

                check_rows = combine_checkers(check_rows, online_row_checker(resolver, read_state(data_root, meta).dois))
            outcome = contribute.add_contribution(
                contribution, data_root, meta,
                check_rows=check_rows,
                find_duplicates=contribute.default_duplicate_finder(use_cache),
                split_mode=split_mode, contributor=contributor, dry_run=dry_run, partial=partial,
            )
    except LockHeld as exc:
        _exit_with_error(f"{exc}")
    except contribute.ContributionIOError as exc:
        _exit_with_error(f"{exc}")
    click.echo(contribute.render_json(outcome) if fmt == "json" else contribute.render_text(outcome))
    sys.exit(outcome.exit_code)


def _doi_resolver(mailto: str | None):  # type: ignore[no-untyped-def]
    """The DOI resolver over the user's DOI cache (the one `ctcurate doi resolve` uses)."""
    from ctcurate.doi.resolve import open_resolver

    return open_resolver(mailto=mailto)


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
    """Find duplicate images and leaks across splits, labels, patients and source figures.

    \b
    Exit status:
      0  no duplicates, leaks or unreadable images
      1  problems found (reported; with --fix-splits, corrected lists written)
      2  usage error, unreadable input or unusable cache file
    """
    import sqlite3
    from pathlib import Path

    from ctcurate.leakage import report as report_lib
    from ctcurate.core.atomic import atomic_write
    from ctcurate.core.progress import StepBars
    from ctcurate.core.layout import IMAGES_DIR, default_metadata_dir
    from ctcurate.leakage.pipeline import check_leakage as run_check

    root = _data_root_or_exit(data)
    meta_dir = Path(metadata) if metadata else default_metadata_dir()
    for name, value in (("--metadata", metadata), ("--splits", splits), ("--against", against)):
        if value and not Path(value).is_dir():
            _exit_with_error(f"{name} {value}: no such folder")
    bars = StepBars()
    try:
        result = run_check(
            root,
            splits_dir=Path(splits) if splits else None,
            metadata_dir=meta_dir if meta_dir.is_dir() else None,
            against=Path(against) if against else None,
            cache_path=Path(cache) if cache else None,
            jobs=jobs,
            threshold=threshold,
            progress=bars,
        )
    except OSError as exc:
        _exit_with_error(f"{getattr(exc, 'filename', None) or root}: {exc.strerror or exc}")
    except sqlite3.Error as exc:
        _exit_with_error(f"{cache or 'cache'}: cannot use the cache file: {exc}")
    finally:
        bars.close()

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
            click.echo(f"wrote {output}: {report_lib.summary_line(result)}")  # stdout is free: the report is in the file
        else:
            click.echo(text)
        if fix_splits:
            from ctcurate.leakage.fixsplits import fix_splits as run_fix

            fixed = run_fix(result, Path(splits) if splits else meta_dir / "Data-split", Path(fix_splits))
            click.echo(fixed.describe(), err=True)
    except OSError as exc:
        _exit_with_error(f"{getattr(exc, 'filename', None) or output}: {exc.strerror or exc}")
    sys.exit(EXIT_FOUND if result.has_problems else EXIT_OK)


# --- benchmark ------------------------------------------------------------------------------


def _progress_printer(quiet: bool):  # type: ignore[no-untyped-def]
    """A callback drawing a one-line bar per epoch on stderr, then the epoch's figures."""

    live = sys.stderr.isatty()  # redraw per batch on a terminal; one line per epoch in a log

    def show(p) -> None:  # type: ignore[no-untyped-def]
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
@click.option("--data", "data_root", type=click.Path(file_okay=False), help="Folder holding Images-processed/ (default: $CTCURATE_DATA).")
@click.option("--splits", type=click.Path(file_okay=False), help="Data-split folder (default: the repository's metadata/Data-split).")
@click.option("--model", type=click.Choice(MODEL_NAMES), default=None, show_default="densenet169; tiny with --smoke", help="Network to train.")
@click.option("--weights", default="none", show_default=True, help="imagenet (torchvision's, needs network once), none, or a state-dict file.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs (default 30; smoke 8).")
@click.option("--image-size", type=click.IntRange(min=16), default=None, help="Crop size in pixels (default 224; smoke 96).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Batch size (default 16).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Adam learning rate (default 1e-4; smoke 1e-3).")
@click.option("--device", type=click.Choice(DEVICE_NAMES), metavar="[auto|cpu|cuda|cuda:N]", default="auto", show_default=True, help="auto: CUDA when present, else CPU.")
@click.option("--seeds", type=click.IntRange(1, 20), default=1, show_default=True, help="With --with-contribution: train each arm with this many seeds (seed, seed+1, ...); a change is called significant only when it stands out from both test-image resampling and seed-to-seed noise (needs 2 or more).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw; same seed, same device, same numbers.")
@click.option("--with-contribution", "with_contribution", type=click.Path(file_okay=False), help="Also train with this contribution's images added to train and compare.")
@click.option("--score", "score_dir", type=click.Path(file_okay=False), help="Flag contributed images whose prediction confidently contradicts their label.")
@click.option("--score-threshold", type=click.FloatRange(0.5, 1.0), default=0.9, show_default=True, help="Probability of the other class that flags an image.")
@click.option("--dedupe-test", is_flag=True, help="Also report test metrics without the test images duplicated in train.")
@click.option("--leakage-report", type=click.Path(dir_okay=False), help="A `check-leakage --format json` file giving the duplicates for --dedupe-test.")
@click.option("--smoke", is_flag=True, help="Tiny CNN, 96 px, 8 epochs, on a subset: a check that everything runs (seconds on a CPU).")
@click.option("--output", type=click.Path(file_okay=False), default="benchmark-results", show_default=True, help="Folder for results.json, roc.png, confusion.png.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Where the decoded-image tensor cache lives (default: <data>/.ctcurate/benchmark).")
@click.option("--bootstrap", type=click.IntRange(min=100), default=1000, show_default=True, help="Bootstrap resamples for the 95% intervals.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def benchmark(
    data_root: str | None,
    splits: str | None,
    model: str | None,
    weights: str,
    epochs: int | None,
    image_size: int | None,
    batch_size: int | None,
    lr: float | None,
    device: str,
    seed: int,
    with_contribution: str | None,
    score_dir: str | None,
    score_threshold: float,
    dedupe_test: bool,
    leakage_report: str | None,
    smoke: bool,
    output: str,
    cache_dir: str | None,
    bootstrap: int,
    quiet: bool,
    seeds: int = 1,
) -> None:
    """Train and evaluate the DenseNet-169 baseline (GPU when present) to verify contributions.

    A full run trains for hours on a CPU and minutes on a GPU; --smoke checks the set-up in a minute.

    \b
    Exit status:
      0  done
      1  the contribution significantly hurts, or contributed labels look wrong
      2  usage error or unreadable input
    """
    from .benchmark import MissingExtra, require_extra
    from ctcurate.core.findings import Severity
    from ctcurate.core.findings import to_text as findings_text
    from ctcurate.core.layout import SPLITS_DIR, default_metadata_dir

    # Everything that needs no torch is checked first: a wrong option costs no 10 s torch import.
    root = _data_root_or_exit(data_root)
    splits_dir = Path(splits) if splits else default_metadata_dir() / SPLITS_DIR
    if not splits_dir.is_dir():
        _exit_with_error(f"{splits_dir}: no such split folder")
    if leakage_report and not dedupe_test:
        _exit_with_error("--leakage-report only makes sense with --dedupe-test")
    if seeds > 1 and not with_contribution:
        _exit_with_error("--seeds only makes sense with --with-contribution")
    for name, folder in (("--with-contribution", with_contribution), ("--score", score_dir)):
        if folder and not Path(folder).is_dir():
            _exit_with_error(f"{name} {folder}: no such folder")
    try:
        require_extra()
    except MissingExtra as exc:
        _exit_with_error(f"{exc}")
    from .benchmark.model import WeightsError
    from .benchmark.report import text_table, write_outputs
    from .benchmark.run import BenchmarkOptions, run_benchmark, with_smoke_defaults
    from .benchmark.train import DeviceError, TrainConfig
    explicit = {k: v for k, v in (("model", model), ("epochs", epochs), ("image_size", image_size), ("batch_size", batch_size), ("lr", lr)) if v is not None}
    cfg = TrainConfig(weights=weights, device=device, seed=seed, **explicit)  # type: ignore[arg-type]
    if smoke:
        cfg = with_smoke_defaults(cfg, explicit)
    opts = BenchmarkOptions(
        data_root=root,
        splits_dir=splits_dir,
        config=cfg,
        smoke=smoke,
        with_contribution=Path(with_contribution) if with_contribution else None,
        score=Path(score_dir) if score_dir else None,
        score_threshold=score_threshold,
        dedupe_test=dedupe_test,
        leakage_report=Path(leakage_report) if leakage_report else None,
        cache_dir=Path(cache_dir) if cache_dir else None,
        bootstrap=bootstrap,
        seeds=seeds,
    )
    def stage(msg: str) -> None:  # --quiet keeps the warnings
        if not quiet or msg.startswith("warning:"):
            click.echo(msg, err=True)

    try:
        result = run_benchmark(opts, on_progress=_progress_printer(quiet), on_stage=stage)
    except (WeightsError, DeviceError) as exc:
        _exit_with_error(f"{exc}")
    if result.fatal:
        click.echo(findings_text(result.findings), err=True)
        sys.exit(EXIT_USAGE)
    try:
        paths = write_outputs(result, Path(output))
    except OSError as exc:
        _exit_with_error(f"cannot write results to {output}: {exc}")
    click.echo(text_table(result))
    problems = [f for f in result.findings if f.code in ("benchmark.label-suspect", "benchmark.contribution-hurts")]
    others = [f for f in result.findings if f.code != "benchmark.label-suspect"]  # those are in the table
    if others:
        click.echo(findings_text(others), err=True)
    click.echo(f"results: {', '.join(str(p) for p in paths)}", err=True)
    sys.exit(EXIT_FOUND if problems or any(f.severity is Severity.ERROR for f in result.findings) else EXIT_OK)


# --- doi ------------------------------------------------------------------------------------


@main.group()
def doi() -> None:
    """Normalize DOIs and resolve them against the registries."""


@doi.command("normalize")
@click.argument("dois", nargs=-1, required=True)
def doi_normalize(dois: tuple[str, ...]) -> None:
    """Print one canonical DOI per argument (lower case, no prefix, no whitespace).

    An argument that is not a DOI prints `error: <reason>` in its place; the exit code is then 1.
    """
    from ctcurate.doi import normalize as doi_lib

    failed = False
    for raw in dois:
        parsed = doi_lib.parse(raw)
        if parsed.valid:
            click.echo(parsed.doi)
        else:
            failed = True
            shown = raw.strip()
            reason = "empty" if not parsed.doi else f"{shown!r} is not a DOI (expected 10.NNNN/suffix)"
            click.echo(f"error: {reason}")
    sys.exit(EXIT_FOUND if failed else EXIT_OK)


if TYPE_CHECKING:
    from ctcurate.doi.resolve import Resolution

_CSV_FIELDS = (
    "doi", "exists", "title", "container", "issued", "type", "preprint_server", "versions",
    "published_doi", "published_container", "preprint_dois", "source", "checked_at", "findings",
)


def _resolution_row(res: Resolution) -> dict[str, object]:
    row = res.model_dump(mode="json")
    row["exists"] = {True: "yes", False: "no", None: "unknown"}[res.exists]
    row["preprint_dois"] = " ".join(res.preprint_dois)
    row["findings"] = " ".join(sorted({f.code for f in res.findings}))
    return {k: ("" if row[k] is None else row[k]) for k in _CSV_FIELDS}


@doi.command("resolve")
@click.argument("dois", nargs=-1)
@click.option("--metadata", "metadata_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Resolve every DOI of DIR/COVID-CT-MetaInfo.xlsx (empty cells: from the file name).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True)
@click.option("--offline", is_flag=True, help="Answer only from the cache; say which DOIs could not be checked.")
@click.option("--refresh", is_flag=True, help="Ask the registries again even where the cache has an answer.")
@click.option("--mailto", metavar="ADDR", help="Contact address for the User-Agent (default: $CTCURATE_MAILTO).")
@click.option("--cache", "cache_file", type=click.Path(dir_okay=False),
              help="SQLite cache file (default: $CTCURATE_CACHE, else ~/.cache/ctcurate/cache.sqlite).")
def doi_resolve(
    dois: tuple[str, ...],
    metadata_dir: str | None,
    fmt: str,
    offline: bool,
    refresh: bool,
    mailto: str | None,
    cache_file: str | None,
) -> None:
    """Check that DOIs exist (doi.org) and show their paper (Crossref, bioRxiv/medRxiv).

    Exit 0 when every DOI exists; 1 when one does not, is malformed or could not be checked.
    """
    import csv
    import io
    import json
    import sqlite3
    from pathlib import Path

    from ctcurate.doi import resolve as dr
    from ctcurate.core.findings import Finding, has_errors, to_json, to_text
    from ctcurate.core.store import default_cache_path

    if offline and refresh:
        raise click.UsageError("--offline and --refresh contradict each other")
    if bool(dois) == bool(metadata_dir):
        raise click.UsageError("give DOIs or --metadata DIR (one of the two)")
    findings: list[Finding] = []
    if metadata_dir is not None:
        try:
            refs, findings = dr.read_sheet_dois(Path(metadata_dir))
        except dr.SheetError as exc:
            _exit_with_error(f"{exc}")
    else:
        refs = [dr.DoiRef(doi=d) for d in dois]
    path = Path(cache_file) if cache_file else default_cache_path(None)
    try:
        cache = dr.DoiCache(path)
        settings = dr.ResolverSettings.from_env(mailto=mailto)
        with dr.Resolver(settings, cache=cache, offline=offline, refresh=refresh) as resolver:
            resolved = resolver.resolve_many(r.norm for r in refs)
            if metadata_dir is not None:
                findings += dr.online_doi_findings(refs, resolver)
            else:
                findings += [f for res in {r.doi: r for r in resolved.values()}.values() for f in res.findings]
    except (sqlite3.Error, OSError) as exc:
        _exit_with_error(f"{dr.cache_error_message(path, exc)}")
    results = list({r.doi: r for r in resolved.values()}.values())  # `v2` forms share one answer
    counts = {
        "dois": len(results),
        "exist": sum(r.exists is True for r in results),
        "not_found": sum(r.exists is False for r in results),
        "unknown": sum(r.exists is None for r in results),
    }
    if fmt == "json":
        body = json.loads(to_json(findings, **counts))
        resolutions = [r.model_dump(mode="json") for r in results]
        click.echo(json.dumps({"resolutions": resolutions, **body}, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_resolution_row(r) for r in results)
        click.echo(buffer.getvalue(), nl=False)
    else:
        for res in results:
            click.echo(res.describe())
        if findings:
            click.echo("")
            click.echo(to_text(findings))
        click.echo(
            f"{counts['dois']} DOI(s): {counts['exist']} exist, {counts['not_found']} not found, "
            f"{counts['unknown']} unknown"
        )
    failed = counts["not_found"] or counts["unknown"] or has_errors(findings)
    sys.exit(EXIT_FOUND if failed else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
