"""One self-contained HTML page of findings that a curator can open offline.

Owns the page layout only: no scripts or files from elsewhere, every value escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

from ctcurate.core.findings import Finding, Severity, summarize

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} table{border-collapse:collapse;width:100%;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f3f3f3} tr.error td.sev{color:#b00020;font-weight:bold} tr.warning td.sev{color:#8a6d00}
table.findings{table-layout:fixed}
table.findings col.sev{width:5.5em} table.findings col.code{width:12em} table.findings col.file{width:16em}
table.findings col.row{width:3.5em} table.findings col.column{width:8em} table.findings col.val{width:24%}
td.val{font-family:ui-monospace,monospace;white-space:pre-wrap}
.hint{color:#555;margin-top:.2em} .meta{color:#555}
"""


def findings_page(
    findings: list[Finding],
    title: str,
    summary: Mapping[str, object] | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> str:
    """The whole page as text: a summary by code, then one table row per finding, errors first.

    Values are shown quoted (Python repr) so that stray and non-breaking spaces are visible.
    """
    e = html.escape
    summary = dict(summary or summarize(findings))
    by_code = summary.get("by_code") or {}
    descriptions = descriptions or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{e(str(summary.get("errors", 0)))} error(s), '
        f"{e(str(summary.get('warnings', 0)))} warning(s)</p>",
    ]
    extra = {k: v for k, v in summary.items() if k not in ("errors", "warnings", "by_code")}
    if extra:
        parts.append('<p class="meta">' + "; ".join(f"{e(str(k))}: {e(_plain(v))}" for k, v in extra.items()) + "</p>")
    if isinstance(by_code, Mapping) and by_code:
        parts.append("<table><tr><th>code</th><th>count</th><th>meaning</th></tr>")
        for code, count in by_code.items():
            parts.append(
                f'<tr><td><a href="#{e(str(code))}">{e(str(code))}</a></td><td>{e(str(count))}</td>'
                f"<td>{e(descriptions.get(str(code), ''))}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        '<table class="findings"><colgroup><col class="sev"><col class="code"><col class="file">'
        '<col class="row"><col class="column"><col class="val"><col></colgroup>'
        "<tr><th>severity</th><th>code</th><th>file</th><th>row</th><th>column</th>"
        "<th>value</th><th>message</th></tr>"
    )
    anchored: set[str] = set()
    # Errors first: they decide the exit status and need a curator before the warnings do.
    for f in sorted(findings, key=lambda f: f.severity is not Severity.ERROR):
        anchor = ""
        if f.code not in anchored:
            anchored.add(f.code)
            anchor = f' id="{e(f.code)}"'
        hint = f'<div class="hint">hint: {e(f.hint)}</div>' if f.hint else ""
        parts.append(
            f'<tr class="{e(f.severity.value)}"{anchor}><td class="sev">{e(f.severity.value)}</td>'
            f"<td>{e(f.code)}</td><td>{e(f.file or '')}</td><td>{'' if f.row is None else f.row}</td>"
            f'<td>{e(f.column or "")}</td><td class="val">{e("" if f.value is None else repr(f.value))}</td>'
            f"<td>{e(f.message)}{hint}</td></tr>"
        )
    parts.append("</table>")
    if not findings:
        parts.append("<p>No problems found.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _plain(value: object) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
