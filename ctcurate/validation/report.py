"""Renderings of a validation run: text, JSON and the HTML findings page.

Owns presentation only: takes a `checks.ValidationResult`, returns one string. Never prints.
"""

from __future__ import annotations

from ctcurate.core.codes import descriptions
from ctcurate.core.findings import document, dump_json
from ctcurate.core.htmlpage import findings_page
from ctcurate.validation.checks import ValidationResult
from ctcurate.validation.render import fixable, to_text

NOT_CHECKED = "images not checked: pass --images ROOT or set CTCURATE_DATA to the folder holding Images-processed/"


def render(result: ValidationResult, fmt: str, title: str, quiet: bool = False, width: int = 100,
           colour: bool = False) -> str:
    """The report in `fmt`, ending with a newline (text: summary first; `quiet`, the summary only)."""
    papers = list({r.doi: r for r in result.dois.values()}.values())  # `v2` forms share one answer
    if fmt == "json":
        extra = {k: v for k, v in result.summary.items() if k not in ("errors", "warnings", "by_code")}
        if "dois_online" in extra:
            online = dict(extra["dois_online"])  # type: ignore[call-overload]
            extra["dois_online"] = online | {"papers": [r.model_dump(mode="json") for r in papers]}
        return dump_json(document(result.findings, **extra)) + "\n"
    if fmt == "html":
        return findings_page(result.findings, title, result.summary, descriptions(), fixable(result.findings, result.fixes))
    text = to_text(result.findings, result.fixes, descriptions(), quiet, width, colour)
    text += "" if result.images_checked else f"{NOT_CHECKED}\n"
    if "dois_online" in result.summary:
        text += "\nDOIs:\n" + "".join(f"  {r.describe()}\n" for r in papers)
    return text
