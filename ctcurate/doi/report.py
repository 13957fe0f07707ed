"""Renderings of `ctcurate doi resolve`: text, JSON and CSV of the answers and their findings.

Owns presentation only: takes resolutions and findings, returns one string. Never prints.
"""

from __future__ import annotations

import csv
import io

from ctcurate.core.findings import Finding, document, dump_json, to_text
from ctcurate.doi.resolve import Resolution

CSV_FIELDS = (
    "doi", "exists", "title", "container", "issued", "type", "preprint_server", "versions",
    "published_doi", "published_container", "preprint_dois", "source", "checked_at", "findings",
)


def counts(results: list[Resolution]) -> dict[str, int]:
    """How many DOIs exist, are not found, or could not be checked."""
    return {
        "dois": len(results),
        "exist": sum(r.exists is True for r in results),
        "not_found": sum(r.exists is False for r in results),
        "unknown": sum(r.exists is None for r in results),
    }


def failed(results: list[Resolution], findings: list[Finding]) -> bool:
    """Exit 1: a DOI does not exist, could not be checked, or an error was found."""
    c = counts(results)
    return bool(c["not_found"] or c["unknown"] or any(f.severity.value == "error" for f in findings))


def render(results: list[Resolution], findings: list[Finding], fmt: str) -> str:
    """The answers in `fmt`, ending with a newline."""
    c = counts(results)
    if fmt == "json":
        doc = {"resolutions": [r.model_dump(mode="json") for r in results], **document(findings, **c)}
        return dump_json(doc) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_csv_row(r) for r in results)
        return buffer.getvalue()
    lines = [res.describe() for res in results]
    if findings:
        lines += ["", to_text(findings)]
    lines.append(f"{c['dois']} DOI(s): {c['exist']} exist, {c['not_found']} not found, {c['unknown']} unknown")
    return "\n".join(lines) + "\n"


def _csv_row(res: Resolution) -> dict[str, object]:
    row = res.model_dump(mode="json")
    row["exists"] = {True: "yes", False: "no", None: "unknown"}[res.exists]
    row["preprint_dois"] = " ".join(res.preprint_dois)
    row["findings"] = " ".join(sorted({f.code for f in res.findings}))
    return {k: ("" if row[k] is None else row[k]) for k in CSV_FIELDS}
