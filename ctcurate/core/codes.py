"""The registry of every finding code: its severity, the commands that report it, what it means.

Owns the stable codes users filter on and tests assert (like pandera's `SchemaErrorReason`); the
docs' code tables and the `code` enum of `schemas/finding.schema.json` are generated from it, and
`tests/test_codes.py` fails when any module of the package uses a code that is not here.
To add a code: append one `Code(...)` line to `CODES` below (keep it beside its namespace), then run
`ctcurate schema` to regenerate the schema and the docs tables. Imports nothing else from ctcurate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ERROR, WARNING, EITHER = "error", "warning", "warning / error"  # EITHER: the severity depends on the case

VALIDATE, CONTRIBUTE, LEAKAGE, DOI, BENCHMARK = "validate", "add-contribution", "check-leakage", "doi", "benchmark"
COMMANDS = (VALIDATE, CONTRIBUTE, LEAKAGE, DOI, BENCHMARK)
_ROWS = (VALIDATE, CONTRIBUTE)  # row checks shared by validate and a contribution's sheet
_ONLINE = (VALIDATE, CONTRIBUTE, DOI)


@dataclass(frozen=True)
class Code:
    """One finding code: `namespace.what`, how severe, where it is reported, one line on its meaning."""

    code: str
    severity: str
    commands: tuple[str, ...]
    meaning: str


CODES: tuple[Code, ...] = (
    # the metadata sheets as files (core.sheets)
    Code("sheet.extra-sheet", WARNING, (VALIDATE,), "the workbook has more sheets than the data sheet; they are not read"),
    Code("sheet.header", WARNING, (VALIDATE,), "a column header is spelled differently (case, spaces) from the expected one"),
    Code("sheet.header-row", WARNING, (VALIDATE,), "the header is not on row 1"),
    Code("sheet.hidden-row", WARNING, (VALIDATE,), "a row is hidden in Excel (it is still validated)"),
    Code("sheet.hidden-column", WARNING, (VALIDATE,), "a column is hidden in Excel (it is still validated)"),
    Code("sheet.merged-cells", WARNING, (VALIDATE,), "merged cells; each covered cell is read as the merged value (--fix fills a one-column range down)"),
    Code("sheet.unnamed-column", WARNING, (VALIDATE,), "a column has values but no header; it is ignored"),
    Code("sheet.encoding", WARNING, (VALIDATE,), "a CSV is not UTF-8 and was read as Latin-1"),
    Code("sheet.missing", ERROR, (CONTRIBUTE,), "no metadata sheet (.xlsx or .csv) in the contribution"),
    Code("sheet.ambiguous", ERROR, (CONTRIBUTE,), "more than one sheet in the contribution"),
    Code("sheet.unreadable", ERROR, (CONTRIBUTE,), "the contribution's sheet cannot be read"),
    Code("sheet.empty", ERROR, (CONTRIBUTE,), "the contribution's sheet has no rows"),
    # cells and rows (validation.schemas)
    Code("cell.formula", WARNING, _ROWS, "a cell holds a formula; its last computed value is used"),
    Code("cell.error", ERROR, _ROWS, "a cell holds an Excel error such as #VALUE! or #REF!"),
    Code("cell.date", WARNING, _ROWS, "Excel stored the cell as a date/time (often a value it mistook for a date)"),
    Code("cell.whitespace", WARNING, _ROWS, "leading/trailing spaces, non-breaking or invisible characters around a value"),
    Code("cell.too-long", WARNING, (VALIDATE,), "a cell longer than its column sensibly holds (4,000 characters; 255 for names, IDs, DOIs)"),
    Code("cell.same-as-above", EITHER, _ROWS, "'same as above' in a cell, resolved from the row above (error if nothing is above)"),
    Code("cell.missing", ERROR, (CONTRIBUTE,), "a required cell of the contribution's row is empty"),
    Code("cell.invalid", ERROR, (CONTRIBUTE,), "a cell of the contribution's row cannot be read as its column's type"),
    Code("row.empty", WARNING, _ROWS, "an empty row between data rows"),
    Code("row.stray", WARNING, (VALIDATE,), "a row with values but no file name and no patient ID (a note or leftover)"),
    Code("row.duplicate", ERROR, (VALIDATE,), "a row that repeats an earlier row exactly (located at its file-name cell)"),
    Code("findings.unlisted", EITHER, (VALIDATE,), "more than 1,000 findings of one code in one file: the rest are counted here, not listed (error if any of them is)"),
    Code("row.duplicate-file", ERROR, (CONTRIBUTE,), "two rows of the contribution name one image"),
    Code("column.missing", ERROR, (CONTRIBUTE,), "a required column of the contribution format is missing"),
    Code("column.duplicate", ERROR, (CONTRIBUTE,), "a column appears twice in the contribution's sheet"),
    Code("column.unknown", WARNING, (CONTRIBUTE,), "a column outside the contribution format; it is ignored"),
    Code("column.spelling", WARNING, (CONTRIBUTE,), "a header written in another case or spacing; it is read"),
    Code("field.required", ERROR, (VALIDATE,), "the file name or patient ID is empty"),
    Code("field.invalid", ERROR, (VALIDATE,), "a cell cannot be read as its column's type"),
    Code("age.not-numeric", WARNING, _ROWS, "an age that is not a whole number of years (e.g. '40+', 'Young Child'), kept as text"),
    Code("age.out-of-range", ERROR, _ROWS, "an age outside 0-120"),
    Code("gender.invalid", ERROR, _ROWS, "a gender other than M or F"),
    Code("gender.nonstandard", WARNING, _ROWS, "a gender in lower case or written out ('f', 'male'), read as M/F"),
    Code("captions.malformed", WARNING, _ROWS, "a captions cell that looks like a Python list but does not parse"),
    Code("label.invalid", ERROR, (CONTRIBUTE,), "a contribution row's Label is not COVID or NonCOVID"),
    # DOIs (doi.normalize offline, doi.resolve online)
    Code("doi.whitespace", WARNING, _ROWS, "a DOI with leading or trailing whitespace"),
    Code("doi.inner-whitespace", WARNING, _ROWS, "a DOI with whitespace inside it (e.g. '10.1016/ S0140-...')"),
    Code("doi.prefix", WARNING, _ROWS, "a DOI written with a doi: or https://doi.org/ prefix"),
    Code("doi.url-encoded", WARNING, _ROWS, "a DOI with URL-encoded characters (%2F)"),
    Code("doi.zero-width", WARNING, _ROWS, "a DOI with invisible zero-width characters"),
    Code("doi.lookalike", WARNING, _ROWS, "a DOI with look-alike Unicode characters (a Cyrillic letter, a dash or slash that is not ASCII)"),
    Code("doi.punctuation", WARNING, _ROWS, "a DOI followed by punctuation from the prose around it ('.', ',', ';', an unmatched ')')"),
    Code("doi.derivable", WARNING, (VALIDATE,), "the DOI is empty but the file name is a bioRxiv/medRxiv preprint ID that gives it"),
    Code("doi.mismatch", ERROR, _ROWS, "the DOI disagrees with the preprint ID in the file name"),
    Code("doi.malformed", ERROR, _ONLINE, "not a DOI (expected 10.NNNN/suffix)"),
    Code("doi.not-found", ERROR, _ONLINE, "--online: doi.org says the DOI is not registered"),
    Code("doi.same-paper", WARNING, _ONLINE, "--online: two DOIs of the sheet name one paper (a preprint and its journal version)"),
    Code("doi.unreachable", WARNING, _ONLINE, "--online: a registry could not be reached; the DOI was not checked (nothing is claimed)"),
    Code("doi.bad-answer", WARNING, _ONLINE, "--online: a registry answered something unreadable; the DOI was not checked"),
    Code("doi.not-cached", WARNING, _ONLINE, "--online offline: no cached answer for the DOI, so it was not checked"),
    Code("doi.cache-damaged", WARNING, _ONLINE, "--online: a damaged cached answer was dropped and asked again (or, offline, not checked)"),
    Code("doi.in-dataset", ERROR, (CONTRIBUTE,), "the contributed paper is already in the dataset (DOIs compared normalized, preprint IDs in file names count)"),
    # patients
    Code("patient.conflict", ERROR, _ROWS, "one patient ID with conflicting ages or genders across its rows"),
    Code("patient.id-form", WARNING, (VALIDATE,), "a patient ID spelled another way than the dataset's form ('P-109' for 'Patient 109'); --fix rewrites the unambiguous ones"),
    Code("patient.label-conflict", ERROR, (CONTRIBUTE,), "one contributed patient has both COVID and NonCOVID rows"),
    # files on disk
    Code("file.duplicate", ERROR, (VALIDATE,), "two rows describe the same image (the same name, or a name that completes to another row's file)"),
    Code("file.missing", ERROR, _ROWS, "a row names a file that is not on disk (the hint names the near match)"),
    Code("file.no-row", ERROR, _ROWS, "an image on disk that no row describes"),
    Code("file.not-image", WARNING, (VALIDATE,), "a file in an image folder whose extension is not an image's (it is neither checked nor used)"),
    Code("file.ambiguous", ERROR, (CONTRIBUTE,), "two images in sub-folders of the contribution share the row's name"),
    Code("file.bad-name", ERROR, (CONTRIBUTE,), "a contributed file name holds control characters or slashes"),
    Code("file.name-without-extension", WARNING, (CONTRIBUTE,), "the row's name matched an image once its extension was added"),
    # split lists
    Code("split.whitespace", WARNING, (VALIDATE,), "a split-list line with whitespace around the file name"),
    Code("split.duplicate", WARNING, (VALIDATE,), "a split list names the same file twice"),
    Code("split.missing-file", ERROR, (VALIDATE,), "a split list names a file that is not on disk"),
    Code("split.unassigned", ERROR, (VALIDATE,), "an image that is in no split list"),
    Code("split.list-missing", WARNING, (VALIDATE,), "a split list (e.g. `Data-split/COVID/valCT_COVID.txt`) does not exist: that split has no images of the class"),
    Code("split.list-not-a-file", ERROR, (VALIDATE,), "a folder or other non-file stands where a split list should be; it is not read"),
    Code("split.multiple", ERROR, (VALIDATE,), "an image that is in more than one split"),
    Code("split.patient-leak", ERROR, (VALIDATE,), "one patient's images are in more than one split"),
    # image content
    Code("image.unreadable", ERROR, (VALIDATE, CONTRIBUTE, LEAKAGE), "an image that does not decode completely"),
    Code("image.none", ERROR, (VALIDATE, LEAKAGE), "`Images-processed/` holds no image at all (nothing was checked)"),
    Code("file.special", ERROR, (VALIDATE, LEAKAGE), "an entry of an image folder that is not a file: a FIFO, device, socket, or a link that loops or leads nowhere (never opened)"),
    Code("dataset.pending-contribution", ERROR, (VALIDATE, LEAKAGE), "an interrupted `add-contribution` left the dataset half-applied; add-contribution completes or rolls it back"),
    Code("cache.damaged", WARNING, (CONTRIBUTE, LEAKAGE), "a damaged row or file of the hash cache was dropped or moved aside and rebuilt (it is only a cache)"),
    Code("image.format-mismatch", WARNING, _ROWS, "an image whose content type disagrees with its extension (a .png holding JPEG)"),
    Code("image.duplicate", ERROR, (CONTRIBUTE,), "the same picture as a dataset image (resized or re-compressed copies included)"),
    Code("image.duplicate-in-contribution", ERROR, (CONTRIBUTE,), "the same picture twice in the contribution: the first is kept"),
    # a contribution as a whole (contribution.source, contribution.zipsafe)
    Code("contribution.format", ERROR, (CONTRIBUTE,), "the contribution is neither a folder nor a .zip file"),
    Code("contribution.link", ERROR, (CONTRIBUTE,), "a symbolic link inside the contribution"),
    Code("contribution.extra-file", WARNING, (CONTRIBUTE,), "a file that is neither an image nor the sheet; it is skipped"),
    Code("contribution.refused", ERROR, (CONTRIBUTE,), "the contribution as a whole was refused, so every file is rejected"),
    Code("zip.bad-name", ERROR, (CONTRIBUTE,), "an archive member's name holds a NUL byte"),
    Code("zip.absolute-path", ERROR, (CONTRIBUTE,), "an archive member has an absolute path"),
    Code("zip.path-traversal", ERROR, (CONTRIBUTE,), "an archive member's path climbs out of the archive ('..')"),
    Code("zip.link", ERROR, (CONTRIBUTE,), "an archive member is a symbolic link"),
    Code("zip.special-file", ERROR, (CONTRIBUTE,), "an archive member is not a regular file (device, fifo or socket)"),
    Code("zip.encrypted", ERROR, (CONTRIBUTE,), "an archive member is encrypted"),
    Code("zip.corrupt", ERROR, (CONTRIBUTE,), "not a readable zip archive"),
    Code("zip.too-many-files", ERROR, (CONTRIBUTE,), "more than 20 000 archive members"),
    Code("zip.too-large", ERROR, (CONTRIBUTE,), "the archive unpacks to more than 4 GiB, or a member to more than 256 MiB"),
    Code("zip.ratio", ERROR, (CONTRIBUTE,), "a member expands more than 200x (a zip bomb)"),
    Code("zip.duplicate-name", ERROR, (CONTRIBUTE,), "two archive members unpack to the same file"),
    Code("zip.skipped", WARNING, (CONTRIBUTE,), "archive litter (__MACOSX/, .DS_Store) is skipped"),
    # the benchmark
    Code("benchmark.split-missing", ERROR, (BENCHMARK,), "a {train,val,test}CT_*.txt list is absent"),
    Code("benchmark.split-unreadable", ERROR, (BENCHMARK,), "a split list cannot be read as text"),
    Code("benchmark.image-missing", ERROR, (BENCHMARK,), "a split list or contribution sheet names a file that is not there (file, row)"),
    Code("benchmark.entry-outside", ERROR, (BENCHMARK,), "a split-list entry is a path (`../../etc/passwd`, `a/b.png`), not a file name of its class folder; it is not followed"),
    Code("benchmark.image-unreadable", ERROR, (BENCHMARK,), "an image does not decode completely"),
    Code("benchmark.contribution-missing", ERROR, (BENCHMARK,), "the contribution folder is absent"),
    Code("benchmark.contribution-empty", ERROR, (BENCHMARK,), "the contribution declares no labelled image"),
    Code("benchmark.sheet-unreadable", ERROR, (BENCHMARK,), "the contribution sheet cannot be read"),
    Code("benchmark.sheet-columns", ERROR, (BENCHMARK,), "the contribution sheet lacks a File name or a Label column"),
    Code("benchmark.label-invalid", ERROR, (BENCHMARK,), "a contributed label is not COVID/NonCOVID"),
    Code("benchmark.leakage-report", ERROR, (BENCHMARK,), "the --leakage-report file is not check-leakage JSON"),
    Code("benchmark.cache-unwritable", WARNING, (BENCHMARK,), "the tensor cache could not be saved (the run goes on)"),
    Code("benchmark.label-suspect", WARNING, (BENCHMARK,), "a contributed image the baseline confidently assigns to the other class (exit 1)"),
    Code("benchmark.contribution-hurts", WARNING, (BENCHMARK,), "adding the contribution significantly lowers test AUC, accuracy or F1 (exit 1)"),
)

REGISTRY: dict[str, Code] = {c.code: c for c in CODES}


def descriptions(command: str | None = None) -> dict[str, str]:
    """Code -> meaning, for every code (or those `command` reports), in registry order."""
    return {c.code: c.meaning for c in CODES if command is None or command in c.commands}


def markdown_table(command: str) -> str:
    """The docs table of the codes `command` reports (generated into docs/<command>.md)."""
    lines = ["| code | severity | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{c.code}` | {c.severity} | {c.meaning} |" for c in CODES if command in c.commands]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- codes:{command} (generated from ctcurate/core/codes.py by `ctcurate schema`) -->", "<!-- /codes -->"


def with_table(doc: str, command: str) -> str:
    """`doc` with the generated table of `command` between its markers; unchanged where it has none."""
    begin = BEGIN.format(command=command)
    if begin not in doc:
        return doc
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{begin}\n{markdown_table(command)}{END}{tail}"


def doc_tables(docs: Path) -> dict[Path, str]:
    """`docs/<command>.md` -> its text with every generated code table current (pages that exist)."""
    out = {}
    for command in COMMANDS:
        page = docs / f"{command}.md"
        if page.is_file():
            out[page] = with_table(page.read_text(encoding="utf-8"), command)
    return out
