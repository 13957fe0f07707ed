"""The finding-code registry: every code the package uses is registered, documented and in the schema."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from ctcurate.core import codes
from ctcurate.core.codes import COMMANDS, CODES, REGISTRY, doc_tables

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "ctcurate"
# `namespace.what-it-is`; file and host names look alike, so their suffixes are told apart.
_CODE = re.compile(r"^[a-z][a-z0-9]*\.[a-z][a-z0-9-]*$")
_NOT_CODES = {"sqlite", "lock", "json", "jsonl", "png", "jpg", "org", "csv", "xlsx", "txt", "html", "pt", "md", "py"}


def _code_literals() -> dict[str, set[str]]:
    """Every string constant of the package (the registry itself aside) shaped like a finding code."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == Path(codes.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _CODE.match(node.value):
                if node.value.rsplit(".", 1)[1] not in _NOT_CODES:
                    found.setdefault(node.value, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_code_used_in_the_package_is_registered() -> None:
    used = _code_literals()
    assert len(used) > 70
    missing = {c: sorted(where) for c, where in used.items() if c not in REGISTRY}
    assert not missing, f"add these to ctcurate/core/codes.py (then run `ctcurate schema`): {missing}"


def test_every_registered_code_is_used() -> None:
    assert sorted(set(REGISTRY) - set(_code_literals())) == []


def test_registry_entries_are_well_formed() -> None:
    assert len(REGISTRY) == len(CODES), "a code is registered twice"
    for c in CODES:
        assert _CODE.match(c.code), c.code
        assert c.severity in (codes.ERROR, codes.WARNING, codes.EITHER), c
        assert c.commands and set(c.commands) <= set(COMMANDS), c
        assert c.meaning and "|" not in c.meaning, c


def test_docs_code_tables_are_generated_from_the_registry() -> None:
    tables = doc_tables(REPO / "docs")
    assert set(tables) == {REPO / "docs" / f"{command}.md" for command in COMMANDS}
    for page, text in tables.items():
        command = page.stem
        assert codes.BEGIN.format(command=command) in text, f"{page.name} has no generated code table"
        assert page.read_text(encoding="utf-8") == text, f"{page.name}: code table is stale, run `ctcurate schema`"
        for c in CODES:
            assert (f"| `{c.code}` |" in text) == (command in c.commands), (page.name, c.code)


def test_the_finding_schema_enumerates_the_codes() -> None:
    schema = json.loads((REPO / "schemas" / "finding.schema.json").read_text(encoding="utf-8"))
    assert schema["properties"]["code"]["enum"] == sorted(REGISTRY)


def test_with_table_replaces_only_between_the_markers() -> None:
    begin = codes.BEGIN.format(command="doi")
    doc = f"intro\n{begin}\nold table\n{codes.END}\noutro\n"
    new = codes.with_table(doc, "doi")
    assert new.startswith(f"intro\n{begin}\n| code | severity | meaning |") and new.endswith(f"{codes.END}\noutro\n")
    assert "`doi.not-found`" in new and "old table" not in new
    assert codes.with_table("no markers\n", "doi") == "no markers\n"
