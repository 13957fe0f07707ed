"""Pydantic models of the metadata rows and split entries, and the row-level checks built on them.

Owns what a row of `COVID-CT-MetaInfo.xlsx` / `NonCOVID-CT-MetaInfo.csv` and a split-list line may
hold, how raw cells are normalized (the raw value is always kept beside the clean one), and the
checks that need nothing but the rows themselves (`check_covid_rows`, `check_noncovid_rows`; for a
sheet of any size `covid_row_keys` / `noncovid_row_keys`, which keep only each row's keys).
Files on disk and split lists are `validate`'s concern. Imports `findings` and `doi` only.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ctcurate.contribution.source import ContributionRow
from ctcurate.core.codes import REGISTRY
from ctcurate.core.findings import Finding, Severity, error, warning
from ctcurate.doi import normalize as doi_lib

CellValue = str | int | float | bool | None

# Canonical field -> the header cell the upstream sheet uses.
COVID_COLUMNS: dict[str, str] = {
    "file_name": "File name",
    "patient_id": "Patient ID",
    "age": "Age",
    "gender": "Gender",
    "location": "Location",
    "medical_history": "Medical history",
    "time": "Time",
    "severity": "Severity",
    "other_diseases": "Other diseases",
    "doi": "DOI",
    "captions": "Captions",
}
NONCOVID_COLUMNS: dict[str, str] = {"image_name": "image name", "patient_id": "patient id"}

SAME_AS_ABOVE = ("same as above", "same as above.", "ditto")
# Longest sensible cell: the real sheet's longest is 2,023 characters (a Severity cell); a file
# name or an identifier longer than a file system allows is never right.
MAX_TEXT = 4000
MAX_IDENTIFIER = 255
IDENTIFIER_COLUMNS = frozenset({"file_name", "image_name", "patient_id", "age", "gender", "doi"})
MAX_AGE = 120
GENDER_WORDS = {"MALE": "M", "FEMALE": "F", "MAN": "M", "WOMAN": "F"}
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), None)
_SPACES = str.maketrans({c: " " for c in "\u00a0\u2007\u202f\u3000"})


@dataclass(frozen=True)
class Note:
    """A normalization a validator made on one cell, turned into a `Finding` by the caller."""

    code: str
    severity: Severity
    column: str
    value: str | None
    message: str
    hint: str | None = None


def clean_text(value: CellValue) -> str | None:
    """Cell text without surrounding whitespace (non-breaking spaces included); empty -> None."""
    if value is None:
        return None
    text = str(value)
    if not text.isascii():
        text = text.translate(_INVISIBLE).translate(_SPACES)
    return text.strip() or None


def whitespace_message(value: str) -> str:
    """What exactly is wrong with a cell's whitespace, in words."""
    kinds = []
    if value[:1].isspace():
        kinds.append("leading space")
    if value[-1:].isspace():
        kinds.append("trailing space")
    if any(c in value for c in "\u00a0\u2007\u202f\u3000"):
        kinds.append("non-breaking space")
    if any(ord(c) in _INVISIBLE for c in value):
        kinds.append("invisible character")
    return " and ".join(kinds or ["stray whitespace"]) + " in the cell"


def _note(info: ValidationInfo, note: Note) -> None:
    if info.context is not None:
        info.context.setdefault("notes", []).append(note)


def _column(model: type[BaseModel], field_name: str | None) -> str:
    info = model.model_fields.get(field_name or "")
    return (info.alias if info and info.alias else field_name) or "?"


def _text(cls: type[BaseModel], value: Any, info: ValidationInfo) -> str | None:
    """Shared text normalizer: strips, and notes `cell.whitespace` when that changed the cell."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    clean = clean_text(value)
    if isinstance(value, str) and clean != value and (clean or value.strip()):
        _note(
            info,
            Note(
                "cell.whitespace",
                Severity.WARNING,
                _column(cls, info.field_name),
                value,
                whitespace_message(value),
                f"write it as {clean!r}" if clean and len(clean) <= 60 else "remove the whitespace around the text",
            ),
        )
    return clean


def _required(value: str | None, what: str) -> str:
    if value is None:
        raise PydanticCustomError("field.required", f"{what} is empty", {})
    return value


def parse_captions(value: CellValue) -> tuple[list[str], bool]:
    """Captions cell -> list of captions, and whether a list-looking cell failed to parse.

    The sheet stores a Python list literal (`['Figure 1. ...']`); it is read with
    `ast.literal_eval`, never `eval`. Plain text is taken as one caption.
    """
    text = clean_text(value)
    if text is None:
        return [], False
    if text.startswith("["):
        simple = _SIMPLE_LIST.match(text)
        if simple:  # the common case, without the cost of compiling the literal
            return [c.strip() for c in _SIMPLE_ITEM.findall(text) if c.strip()], False
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return [_unbracket(text)], True
        if isinstance(parsed, list) and all(isinstance(c, str) for c in parsed):
            return [c.strip() for c in parsed if c.strip()], False
        return [text], True
    return [text], False


# A list of single-quoted strings with no quote or backslash inside: what ast.literal_eval
# would return for it is exactly the text between the quotes.
_SIMPLE_LIST = re.compile(r"^\[\s*'[^'\\]*'(?:\s*,\s*'[^'\\]*')*\s*,?\s*\]$")
_SIMPLE_ITEM = re.compile(r"'([^'\\]*)'")
_ONE_ITEM = re.compile(r"^\[\s*(['\"])(?P<inner>.*)\1\s*\]$", re.DOTALL)


def _unbracket(text: str) -> str:
    """`['it's one caption']` (a quote inside ends the literal early) -> the one caption inside."""
    m = _ONE_ITEM.match(text)
    return m["inner"].strip() if m else text


_FREE_TEXT = (
    "Free text, may be empty. Surrounding whitespace (non-breaking spaces too) is removed with a "
    "`cell.whitespace` warning; `same as above` takes the value of the row above with a warning."
)


class CovidRow(BaseModel):
    """One row of COVID-CT-MetaInfo.xlsx: one COVID image and what its paper says about the patient."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, title="COVID-CT metadata row")

    row: int = Field(description="Row number as Excel shows it (the header is row 1).", ge=2)
    file_name: str = Field(
        alias="File name",
        description="Image file name in Images-processed/CT_COVID/, extension included "
        "(e.g. `2020.01.24.919183-p27-132.png`). Required. Surrounding whitespace is removed.",
    )
    patient_id: str = Field(
        alias="Patient ID",
        description="Patient identifier shared by all images of one patient (e.g. `Patient 1`). "
        "Required. Numbers are read as text; surrounding whitespace is removed.",
    )
    age: int | None = Field(
        None,
        alias="Age",
        ge=0,
        le=MAX_AGE,
        description=f"Age in whole years, 0-{MAX_AGE}, or empty when unknown. A non-numeric value such "
        "as `40+` or `Young Child` is accepted with an `age.not-numeric` warning and kept in `age_text`.",
    )
    age_text: str | None = Field(
        None, description="The age as recorded when it is not a whole number (e.g. `40+`, `Young Child`)."
    )
    gender: Literal["M", "F"] | None = Field(
        None,
        alias="Gender",
        description="`M` or `F`, or empty when unknown. Case and surrounding whitespace are normalized "
        "(`F ` -> `F`, a `cell.whitespace` warning); `f`, `male`, `female` -> `M`/`F` with a "
        "`gender.nonstandard` warning; "
        "anything else is a `gender.invalid` error.",
    )
    location: str | None = Field(
        None, alias="Location", description="Where the patient was treated (e.g. `Wuhan, China`). " + _FREE_TEXT
    )
    medical_history: str | None = Field(
        None,
        alias="Medical history",
        description="The patient's history or findings as the paper gives them. " + _FREE_TEXT,
    )
    time: str | None = Field(
        None,
        alias="Time",
        description="When the scan was taken (e.g. `day 6 after the onset of illness`); numbers are read as text. "
        + _FREE_TEXT,
    )
    severity: str | None = Field(
        None, alias="Severity", description="Clinical course or severity (e.g. `severe`). " + _FREE_TEXT
    )
    other_diseases: str | None = Field(
        None, alias="Other diseases", description="Other conditions of the patient (e.g. `pregnancy`). " + _FREE_TEXT
    )
    doi: str | None = Field(
        None,
        alias="DOI",
        description="DOI of the source paper, normalized by `ctcurate.doi.normalize.normalize` (no `doi:`/URL "
        "prefix, no whitespace, ASCII lower case). Empty is allowed; for a bioRxiv/medRxiv file name the "
        "DOI it implies is reported (`doi.derivable`).",
    )
    captions: list[str] = Field(
        default_factory=list,
        alias="Captions",
        description="Figure captions: a Python list literal of strings (`['Figure 1. ...']`), read "
        "with ast.literal_eval (never eval); plain text is taken as one caption.",
    )
    raw: dict[str, CellValue] = Field(
        default_factory=dict, description="The cells exactly as read from the sheet, by column header."
    )

    @model_validator(mode="before")
    @classmethod
    def _split_age(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        data.setdefault("raw", {k: data.get(k) for k in COVID_COLUMNS.values()})
        raw_age = data.get("Age", data.get("age"))
        age, text = _parse_age(raw_age)
        key = "Age" if "Age" in data or "age" not in data else "age"
        data[key] = age
        if text is not None:
            data["age_text"] = text
            _note(
                info,
                Note(
                    "age.not-numeric",
                    Severity.WARNING,
                    "Age",
                    str(raw_age),
                    f"age {text!r} is not a whole number of years; it is kept as text",
                    "write the age in years, or leave the cell empty when the paper does not give it",
                ),
            )
        elif isinstance(raw_age, str) and raw_age != raw_age.strip():
            _note(
                info,
                Note(
                    "cell.whitespace",
                    Severity.WARNING,
                    "Age",
                    raw_age,
                    whitespace_message(raw_age),
                    f"write it as {str(age)!r}",
                ),
            )
        return data

    @field_validator("file_name", "patient_id", mode="before", json_schema_input_type=str | int)
    @classmethod
    def _required_text(cls, value: Any, info: ValidationInfo) -> str:
        return _required(_text(cls, value, info), _column(cls, info.field_name))

    @field_validator(
        "location",
        "medical_history",
        "time",
        "severity",
        "other_diseases",
        mode="before",
        json_schema_input_type=str | int | float | None,
    )
    @classmethod
    def _free_text(cls, value: Any, info: ValidationInfo) -> str | None:
        return _text(cls, value, info)

    @field_validator("gender", mode="before", json_schema_input_type=str | None)
    @classmethod
    def _gender(cls, value: Any, info: ValidationInfo) -> str | None:
        text = _text(cls, value, info)
        if text is None:
            return None
        upper = text.upper()
        canonical = upper if upper in ("M", "F") else GENDER_WORDS.get(upper)
        if canonical is None:
            raise PydanticCustomError("gender.invalid", f"gender {text!r} is not M or F")
        if text != canonical:
            how = "is lower case" if upper == canonical else "is written out"
            _note(info, Note("gender.nonstandard", Severity.WARNING, "Gender", str(value), f"gender {text!r} {how}",
                             f"write it as {canonical!r}"))
        return canonical

    @field_validator("doi", mode="before", json_schema_input_type=str | None)
    @classmethod
    def _doi(cls, value: Any) -> str | None:
        # Whitespace and malformed DOIs are reported by ctcurate.doi.normalize.check_doi, not here.
        if value is None or not str(value).strip():
            return None
        return doi_lib.normalize(value)

    @field_validator("age", mode="before", json_schema_input_type=int | str | None)
    @classmethod
    def _age(cls, value: Any) -> Any:
        return value  # split into age/age_text by _split_age; declared here for the JSON Schema

    @field_validator("captions", mode="before", json_schema_input_type=str | list[str] | None)
    @classmethod
    def _captions(cls, value: Any, info: ValidationInfo) -> list[str]:
        if isinstance(value, list):
            return value
        captions, malformed = parse_captions(value)
        if malformed:
            one = _ONE_ITEM.match(clean_text(value) or "")
            why = (
                f"the {one[1]} inside the caption ends its quoted string early"
                if one and one[1] in one["inner"]
                else "it does not parse"
            )
            _note(
                info,
                Note(
                    "captions.malformed",
                    Severity.WARNING,
                    "Captions",
                    _short(value),
                    f"captions look like a Python list but {why}; read as one caption",
                    f"write them as a valid list (ctcurate validate --fix does): {_short(repr(captions), 80)}",
                ),
            )
        return captions


def _parse_age(value: CellValue) -> tuple[int | None, str | None]:
    """Raw age -> (years, None) or (None, recorded text) for a value that is not a whole number."""
    if value is None or isinstance(value, bool):
        return None, None if value is None else str(value)
    if isinstance(value, int):
        return value, None
    if isinstance(value, float):
        return (int(value), None) if value.is_integer() else (None, repr(value))
    text = clean_text(value)
    if text is None:
        return None, None
    if text.isascii() and text.isdigit():
        return int(text), None
    try:
        num = float(text)
    except ValueError:
        return None, text
    return (int(num), None) if num.is_integer() else (None, text)


class NonCovidRow(BaseModel):
    """One row of NonCOVID-CT-MetaInfo.csv: which patient a non-COVID image comes from."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, title="NonCOVID-CT metadata row")

    row: int = Field(description="Row number as a spreadsheet shows it (the header is row 1).", ge=2)
    image_name: str = Field(
        alias="image name",
        description="Image file name in Images-processed/CT_NonCOVID/, extension included (e.g. `1%0.jpg`). Required.",
    )
    patient_id: str = Field(alias="patient id", description="Patient identifier (e.g. `crawled_patient_1`). Required.")
    raw: dict[str, CellValue] = Field(
        default_factory=dict, description="The cells exactly as read from the sheet, by column header."
    )

    @model_validator(mode="before")
    @classmethod
    def _keep_raw(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = dict(data)
            data.setdefault("raw", {k: data.get(k) for k in NONCOVID_COLUMNS.values()})
        return data

    @field_validator("image_name", "patient_id", mode="before", json_schema_input_type=str | int)
    @classmethod
    def _required_text(cls, value: Any, info: ValidationInfo) -> str:
        return _required(_text(cls, value, info), _column(cls, info.field_name))


class SplitEntry(BaseModel):
    """One line of a split list (`Data-split/<label>/<split><class>.txt`): an image in that split."""

    model_config = ConfigDict(frozen=True, title="Split list entry")

    file_name: str = Field(description="Image file name in Images-processed/<class_dir>/, stripped of whitespace.")
    split: Literal["train", "val", "test"] = Field(description="The split the list file names.")
    class_dir: str = Field(description="Class folder under Images-processed/ (e.g. `CT_COVID`).")
    list_file: str = Field(description="The split list the entry comes from, relative to the splits folder.")
    line: int = Field(ge=1, description="Line number in the list file (first line = 1).")


# Every model whose JSON Schema `ctcurate schema` writes: file stem -> model. Other commands add theirs.
SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "contribution-row": ContributionRow,  # the add-contribution sheet (owned by `contribution`)
    "covid-row": CovidRow,
    "noncovid-row": NonCovidRow,
    "split-entry": SplitEntry,
    "finding": Finding,
}


def json_schemas() -> dict[str, str]:
    """`{file name: JSON text}` for every model in `SCHEMA_MODELS`: sorted keys, stable bytes."""
    out = {}
    for stem, model in sorted(SCHEMA_MODELS.items()):
        schema = model.model_json_schema(by_alias=True, mode="validation")
        if model is Finding:  # the codes a finding may carry: the registry's
            schema["properties"]["code"]["enum"] = sorted(REGISTRY)
        out[f"{stem}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


# --- row checks -----------------------------------------------------------------------------

Record = tuple[int, Mapping[str, CellValue]]


class FindingSink(Protocol):
    """Where the row loop puts findings: a list, or `core.findings.CappedFindings`."""

    def append(self, finding: Finding, /) -> None: ...

    def extend(self, findings: Iterable[Finding], /) -> None: ...


class CovidKey(NamedTuple):
    """What the checks across rows need of a valid COVID row: a `CovidRow` costs ~2 KB, this a
    tenth of it, so a million-row sheet is validated without holding its models."""

    row: int
    file_name: str
    patient_id: str
    age: int | None
    age_text: str | None
    gender: str | None
    doi: str | None
    raw_name: CellValue  # the file-name cell as written (usually the very object `file_name` is)

    @classmethod
    def of(cls, row: CovidRow) -> CovidKey:
        raw = row.raw.get(COVID_COLUMNS["file_name"])
        return cls(row.row, row.file_name, row.patient_id, row.age, row.age_text, row.gender, row.doi,
                   row.file_name if raw == row.file_name else raw)


class NonCovidKey(NamedTuple):
    """What the checks across rows need of a valid NonCOVID row."""

    row: int
    image_name: str
    patient_id: str
    raw_name: CellValue  # the image-name cell as written

    @classmethod
    def of(cls, row: NonCovidRow) -> NonCovidKey:
        raw = row.raw.get(NONCOVID_COLUMNS["image_name"])
        return cls(row.row, row.image_name, row.patient_id, row.image_name if raw == row.image_name else raw)


PatientRow = CovidRow | NonCovidRow | CovidKey | NonCovidKey  # what the patient checks read


def _short(value: object, limit: int = 120) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _is_blank(value: CellValue) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip() if value.isascii() else clean_text(value) is None
    return False


def _signature(cells: Mapping[str, CellValue]) -> tuple[CellValue, ...]:
    return tuple(v.strip() if isinstance(v, str) else v for v in cells.values())


def _row_findings(
    model: type[BaseModel], number: int, notes: list[Note], exc: ValidationError | None, file: str | None
) -> list[Finding]:
    out = [
        Finding(
            code=n.code,
            severity=n.severity,
            file=file,
            row=number,
            column=n.column,
            value=_short(n.value),
            message=n.message,
            hint=n.hint,
        )
        for n in notes
    ]
    for err in exc.errors() if exc else ():
        loc = err.get("loc") or ()
        column = str(loc[0]) if loc else None
        if column and column in model.model_fields:
            column = _column(model, column)
        code = err["type"] if "." in err["type"] else "field.invalid"
        value = err.get("input")
        hint = {
            "field.required": f"fill in the {column}",
            "gender.invalid": "write M or F, or leave it empty when unknown",
        }.get(code)
        if column == "Age" and err["type"] in ("less_than_equal", "greater_than_equal"):
            code, hint = "age.out-of-range", f"ages run from 0 to {MAX_AGE}; check the paper"
        out.append(
            error(
                code,
                err["msg"],
                file=file,
                row=number,
                column=column,
                value=_short(value) if not isinstance(value, Mapping) else None,
                hint=hint,
            )
        )
    return out


def _resolve_same_as_above(
    records: Iterable[Record], columns: Mapping[str, str], file: str | None, findings: FindingSink
) -> Iterator[tuple[int, Mapping[str, CellValue], Mapping[str, CellValue]]]:
    """Replace `same as above` cells by the (resolved) value of the row above, with a warning each.

    Streams: one row at a time, so a 100,000-row sheet is never held twice.
    """
    above: Mapping[str, CellValue] | None = None
    for number, cells in records:
        resolved: Mapping[str, CellValue] = cells
        for key, value in cells.items():
            if isinstance(value, str) and value.strip().casefold() in SAME_AS_ABOVE:
                source = None if above is None else above.get(key)
                if _is_blank(source):
                    findings.append(
                        error(
                            "cell.same-as-above",
                            "'same as above' but the row above has no value here",
                            file=file,
                            row=number,
                            column=columns.get(key, key),
                            value=value,
                            hint="write the value itself",
                        )
                    )
                    resolved = {**resolved, key: None}
                else:
                    findings.append(
                        warning(
                            "cell.same-as-above",
                            f"'same as above' read as {_short(source, 60)!r}",
                            file=file,
                            row=number,
                            column=columns.get(key, key),
                            value=value,
                            hint="write the value itself: sorting or filtering the sheet breaks the reference",
                        )
                    )
                    # Cleaned here so the copied value's whitespace is reported once, on its own row.
                    resolved = {**resolved, key: clean_text(source) if isinstance(source, str) else source}
        yield number, resolved, cells
        if any(not _is_blank(v) for v in resolved.values()):
            above = resolved


def _overlong_cells(
    cells: Mapping[str, CellValue], columns: Mapping[str, str], number: int, file: str | None
) -> list[Finding]:
    """`cell.too-long`: a cell longer than its column can sensibly hold (a paste gone wrong)."""
    out = []
    for key, value in cells.items():
        if not isinstance(value, str):
            continue
        limit = MAX_IDENTIFIER if key in IDENTIFIER_COLUMNS else MAX_TEXT
        if len(value) > limit:
            out.append(
                warning(
                    "cell.too-long",
                    f"cell holds {len(value):,} characters (more than {limit:,} for this column)",
                    file=file,
                    row=number,
                    column=columns.get(key, key),
                    value=_short(value),
                    hint="check for text pasted into the wrong cell or pasted several times",
                )
            )
    return out


def _stray_row(
    cells: Mapping[str, CellValue],
    columns: Mapping[str, str],
    key_fields: tuple[str, str],
    number: int,
    file: str | None,
) -> Finding | None:
    """`row.stray`: a row with values but neither key cell is a note, not an image row."""
    if not all(_is_blank(cells.get(k)) for k in key_fields):
        return None
    content = next((v for v in cells.values() if not _is_blank(v)), None)
    return warning(
        "row.stray",
        f"row has values but no {columns[key_fields[0]]} and no {columns[key_fields[1]]} "
        "(a note or a leftover?); it is not an image row",
        file=file,
        row=number,
        value=_short(content),
        hint="move the note elsewhere or delete the row",
    )


def _validate_row(
    model: type[BaseModel],
    number: int,
    cells: Mapping[str, CellValue],
    original: Mapping[str, CellValue],
    columns: Mapping[str, str],
    file: str | None,
) -> tuple[BaseModel | None, list[Finding]]:
    """One row through the model, keeping the raw cells beside the clean ones; None if it fails."""
    notes: list[Note] = []
    data: dict[str, Any] = {columns[k]: v for k, v in cells.items() if k in columns}
    data["row"] = number
    data["raw"] = {columns[k]: v for k, v in original.items() if k in columns}
    try:
        obj = model.model_validate(data, context={"notes": notes})
    except ValidationError as exc:
        return None, _row_findings(model, number, notes, exc, file)
    return obj, _row_findings(model, number, notes, None, file)


@dataclass
class _DuplicateRows:
    """Rows seen so far, by exact content and by file name, so repeats point at the first row.

    A row's content is remembered as a 16-byte digest of its cells (type and text), not the cells
    themselves, which would keep every string of a million-row sheet alive.
    """

    column: str
    file: str | None
    rows: dict[bytes, int] = field(default_factory=dict)
    names: dict[str, int] = field(default_factory=dict)

    def check(self, cells: tuple[Any, ...], name: str, number: int) -> Finding | None:
        """`row.duplicate` for an exact repeat, else `file.duplicate` for a reused name; then remember."""
        found: Finding | None = None
        signature = hashlib.blake2b(repr(cells).encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if signature in self.rows:
            first = self.rows[signature]
            found = error(
                "row.duplicate",
                f"row repeats row {first} exactly",
                file=self.file,
                row=number,
                column=self.column,
                value=name,
                hint=f"delete one of rows {first} and {number}",
            )
        elif name in self.names:
            found = error(
                "file.duplicate",
                f"file name already used on row {self.names[name]}",
                file=self.file,
                row=number,
                column=self.column,
                value=name,
                hint="each image gets exactly one row: merge the two rows",
            )
        self.rows.setdefault(signature, number)
        self.names.setdefault(name, number)
        return found


def _parse_rows(
    model: type[BaseModel],
    records: Iterable[Record],
    columns: Mapping[str, str],
    key_fields: tuple[str, str],
    file: str | None,
    row_check: Callable[[Any, Mapping[str, CellValue]], list[Finding]] | None = None,
    keep: Callable[[Any], Any] = lambda obj: obj,
    findings: FindingSink | None = None,
) -> tuple[list[Any], FindingSink]:
    """Shared row loop: empty rows, stray rows, `same as above`, model validation, duplicates.

    Streams: each row is validated and dropped; only `keep(model)` of it stays (the model itself
    by default), and the findings go to `findings` (a plain list by default).
    """
    findings = [] if findings is None else findings
    rows = _resolve_same_as_above(records, columns, file, findings)
    parsed: list[Any] = []
    pending_empty: list[int] = []
    name_key, _ = key_fields
    duplicates = _DuplicateRows(columns[name_key], file)
    for number, cells, original in rows:
        if all(_is_blank(v) for v in cells.values()):
            pending_empty.append(number)
            continue
        for empty in pending_empty:
            findings.append(
                warning("row.empty", "empty row inside the data", file=file, row=empty, hint="delete the row")
            )
        pending_empty = []
        stray = _stray_row(cells, columns, key_fields, number, file)
        if stray is not None:
            findings.append(stray)
            continue
        findings.extend(_overlong_cells(original, columns, number, file))
        obj, row_findings = _validate_row(model, number, cells, original, columns, file)
        findings.extend(row_findings)
        if obj is None:
            continue
        duplicate = duplicates.check(_signature(cells), getattr(obj, name_key), number)
        if duplicate is not None:
            findings.append(duplicate)
        if row_check is not None:
            findings.extend(row_check(obj, cells))
        parsed.append(keep(obj))
    return parsed, findings


# --- patient ID forms -----------------------------------------------------------------------

# The dataset's own forms: `Patient 12` (COVID sheet, and contributions in both sheets: add-contribution
# numbers patients dataset-wide), `crawled_patient_12` / `medpix_patient_12` (the original NonCOVID
# images, by where they were collected).
_COVID_ID = re.compile(r"Patient [1-9]\d*|Patient 0")
_NONCOVID_ID = re.compile(r"(?:crawled|medpix)_patient_(?:[1-9]\d*|0)|Patient [1-9]\d*|Patient 0")
_COVID_LOOSE = re.compile(r"(?:patient|pat|pt|p)[\s._#:-]*(\d+)", re.IGNORECASE)
_NONCOVID_LOOSE = re.compile(r"(crawled|medpix)[\s._-]*(?:patient|pt|p)?[\s._#:-]*(\d+)", re.IGNORECASE)


def canonical_patient_id(text: str, noncovid: bool) -> str | None:
    """The dataset's spelling of a patient ID written another way (`P-109` -> `Patient 109`).

    None when `text` is already canonical or no single canonical form follows from it (a
    NonCOVID `patient 5` does not say whether it was crawled, from MedPix or contributed).
    """
    if (_NONCOVID_ID if noncovid else _COVID_ID).fullmatch(text):
        return None
    if noncovid:
        m = _NONCOVID_LOOSE.fullmatch(text)
        return f"{m[1].lower()}_patient_{int(m[2])}" if m else None
    m = _COVID_LOOSE.fullmatch(text)
    return f"Patient {int(m[1])}" if m else None


@dataclass(frozen=True)
class PatientIdRewrite:
    """A patient ID not in the dataset's form, and what `--fix` writes instead (None: left as is)."""

    row: int
    old: str
    new: str | None
    why_not: str | None = None


def patient_id_rewrites(rows: Iterable[PatientRow], noncovid: bool) -> list[PatientIdRewrite]:
    """Every patient ID that spells one of the dataset's forms another way; a rewrite only where
    it is unambiguous. IDs of another scheme altogether (`np0`) are left alone.

    Ambiguous: no single canonical form, or the canonical ID's other rows give another age or
    gender (then the rewrite would merge two people).
    """
    form = _NONCOVID_ID if noncovid else _COVID_ID
    rows = list(rows)
    odd = [r for r in rows if not form.fullmatch(r.patient_id)]
    targets = {canonical_patient_id(r.patient_id, noncovid) for r in odd}
    people: dict[str, list[PatientRow]] = defaultdict(list)
    for r in rows:
        if r.patient_id in targets:  # only the IDs a rewrite could merge into are compared
            people[r.patient_id].append(r)
    out = []
    for r in odd:
        new = canonical_patient_id(r.patient_id, noncovid)
        if new is None:
            if not (_COVID_LOOSE.fullmatch(r.patient_id) or _NONCOVID_LOOSE.fullmatch(r.patient_id)):
                continue  # an ID of another scheme altogether, not a misspelling of the dataset's
            why = "no single ID of the dataset's form follows from it"
            out.append(PatientIdRewrite(r.row, r.patient_id, None, why))
            continue
        clash = _clashing_row(r, people.get(new, []))
        if clash is not None:
            why = f"{new} (row {clash}) has another age or gender: is this the same person?"
            out.append(PatientIdRewrite(r.row, r.patient_id, None, why))
        else:
            out.append(PatientIdRewrite(r.row, r.patient_id, new))
    return out


def _clashing_row(row: PatientRow, others: list[PatientRow]) -> int | None:
    if not isinstance(row, (CovidRow, CovidKey)):
        return None
    for other in others:
        if not isinstance(other, (CovidRow, CovidKey)):
            continue
        age, other_age = row.age if row.age is not None else row.age_text, (
            other.age if other.age is not None else other.age_text
        )
        if (age is not None and other_age is not None and age != other_age) or (
            row.gender and other.gender and row.gender != other.gender
        ):
            return other.row
    return None


def _patient_id_findings(rows: Sequence[PatientRow], noncovid: bool, file: str | None) -> list[Finding]:
    form = "crawled_patient_N, medpix_patient_N or Patient N" if noncovid else "Patient N"
    column = NONCOVID_COLUMNS["patient_id"] if noncovid else COVID_COLUMNS["patient_id"]
    out = []
    for rw in patient_id_rewrites(rows, noncovid):
        hint = (
            f"write it as {rw.new!r} (ctcurate validate --fix does)"
            if rw.new
            else f"write it in the form {form}; not rewritten by --fix: {rw.why_not}"
        )
        out.append(
            warning(
                "patient.id-form",
                f"patient ID {rw.old!r} is not in the dataset's form {form}",
                file=file,
                row=rw.row,
                column=column,
                value=rw.old,
                hint=hint,
            )
        )
    return out


def check_covid_rows(records: Iterable[Record], file: str | None = None) -> tuple[list[CovidRow], list[Finding]]:
    """Validate COVID metadata rows given as `(row number, {canonical column: cell})`.

    Row-level findings only (parse, whitespace, ages, genders, captions, `same as above`, DOIs,
    empty/stray/duplicate rows, one patient with conflicting age or gender). Lazy: every problem.
    """
    findings: list[Finding] = []
    models = _check_covid(records, file, lambda obj: obj, findings)
    return models, findings


def covid_row_keys(records: Iterable[Record], file: str | None, findings: FindingSink) -> list[CovidKey]:
    """`check_covid_rows` for a sheet of any size: the same findings (into `findings`, which may
    cap them), but only each valid row's `CovidKey` is kept, never its model."""
    return _check_covid(records, file, CovidKey.of, findings)


def _check_covid(records: Iterable[Record], file: str | None, keep: Callable[[CovidRow], Any],
                 findings: FindingSink) -> list[Any]:
    def doi_check(row: CovidRow, cells: Mapping[str, CellValue]) -> list[Finding]:
        return doi_lib.check_doi(cells.get("doi"), row.file_name, file=file, row=row.row, column="DOI")

    kept, _ = _parse_rows(CovidRow, records, COVID_COLUMNS, ("file_name", "patient_id"), file, doi_check, keep, findings)
    findings.extend(_patient_id_findings(kept, False, file))
    findings.extend(_patient_conflicts(kept, file))
    return kept


def check_noncovid_rows(records: Iterable[Record], file: str | None = None) -> tuple[list[NonCovidRow], list[Finding]]:
    """Validate NonCOVID metadata rows given as `(row number, {canonical column: cell})`."""
    findings: list[Finding] = []
    models = _check_noncovid(records, file, lambda obj: obj, findings)
    return models, findings


def noncovid_row_keys(records: Iterable[Record], file: str | None, findings: FindingSink) -> list[NonCovidKey]:
    """`check_noncovid_rows` keeping only each valid row's `NonCovidKey` (see `covid_row_keys`)."""
    return _check_noncovid(records, file, NonCovidKey.of, findings)


def _check_noncovid(records: Iterable[Record], file: str | None, keep: Callable[[NonCovidRow], Any],
                    findings: FindingSink) -> list[Any]:
    columns, keys = NONCOVID_COLUMNS, ("image_name", "patient_id")
    kept, _ = _parse_rows(NonCovidRow, records, columns, keys, file, None, keep, findings)
    findings.extend(_patient_id_findings(kept, True, file))
    return kept


def _patient_conflicts(rows: Sequence[CovidRow | CovidKey], file: str | None) -> list[Finding]:
    """One `patient.conflict` per patient and attribute whose rows disagree (empty cells ignored)."""
    attributes: dict[str, Callable[[CovidRow | CovidKey], str | None]] = {
        "Age": lambda r: str(r.age) if r.age is not None else r.age_text,
        "Gender": lambda r: r.gender,
    }
    out = []
    by_patient: dict[str, list[CovidRow | CovidKey]] = defaultdict(list)
    for r in rows:
        by_patient[r.patient_id].append(r)
    for patient, prows in by_patient.items():
        for column, get in attributes.items():
            values: dict[str, list[int]] = defaultdict(list)
            for r in prows:
                v = get(r)
                if v is not None:
                    values[v].append(r.row)
            if len(values) > 1:
                listing = "; ".join(f"{v} (rows {', '.join(map(str, rs))})" for v, rs in values.items())
                first_conflict = min(rs[0] for rs in list(values.values())[1:])
                out.append(
                    error(
                        "patient.conflict",
                        f"{patient} has conflicting {column.lower()} values: {listing}",
                        file=file,
                        row=first_conflict,
                        column=column,
                        value=patient,
                        hint="one patient ID per person: give the other person their own ID, or correct the value",
                    )
                )
    return out
