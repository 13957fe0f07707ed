"""One self-contained HTML page of findings that a curator can open offline.

Owns the page layout only: no scripts or files from elsewhere, every value escaped. Filtering and
folding work without a script: a checkbox per severity and per code (CSS `:has()` hides what is
unticked) and one `<details>` per code, errors open, long warning lists folded.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable, Mapping

from ctcurate.core.findings import Finding, Severity, summarize

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1600px}
h1{font-size:1.4em;margin:.2em 0} table{border-collapse:collapse;width:100%;margin:.6em 0}
th,td{border:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f3f3f3} .sev-error .sev,.codes tr.error td.sev{color:#b00020;font-weight:bold}
.sev-warning .sev,.codes tr.warning td.sev{color:#8a6d00;font-weight:bold}
table.codes{width:auto} table.codes td.n{text-align:right}
table.findings{table-layout:fixed}
table.findings col.file{width:14em} table.findings col.row{width:3.5em} table.findings col.column{width:9em}
table.findings col.val{width:26%} table.findings col.fix{width:4.5em}
td.val{font-family:ui-monospace,monospace;white-space:pre-wrap}
.hint{color:#555;margin-top:.2em} .meta{color:#555}
#controls{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;display:flex;gap:1.4em;flex-wrap:wrap;z-index:2}
details.code{border:1px solid #ddd;border-left:6px solid #8a6d00;border-radius:4px;margin:.6em 0;padding:.3em .7em}
details.code.sev-error{border-left-color:#b00020}
details.code>summary{cursor:pointer;font-weight:600} details.code>summary .meta{font-weight:normal}
td.fix{color:#2e7d32;font-weight:600;text-align:center}
body:has(#show-error:not(:checked)) .sev-error,body:has(#show-warning:not(:checked)) .sev-warning{display:none}
body:has(#hide-fixed:checked) tr.fixed{display:none}
"""


def _slug(code: str) -> str:
    return "c-" + re.sub(r"[^a-z0-9]+", "-", code.lower()).strip("-")


def findings_page(
    findings: list[Finding],
    title: str,
    summary: Mapping[str, object] | None = None,
    descriptions: Mapping[str, str] | None = None,
    fixed: Iterable[Finding] = (),
) -> str:
    """The whole page as text: a summary table by code, then one folded section per code, errors first.

    `fixed` are the findings that `--fix` answers; they are marked and can be hidden.
    Values are shown quoted (Python repr) so that stray and non-breaking spaces are visible.
    """
    e = html.escape
    summary = dict(summary or summarize(findings))
    descriptions = descriptions or {}
    fixed_ids = {id(f) for f in fixed}
    rows = _code_rows(findings, fixed_ids)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_STYLE}{_code_css(rows)}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        (f'<p class="meta" id="summary">{e(str(summary.get("errors", 0)))} error(s), '
        f"{e(str(summary.get('warnings', 0)))} warning(s); <code>--fix OUT</code> fixes {len(fixed_ids)} of them "
        "in a copy (marked ✓ below)</p>"),
    ]
    extra = {k: v for k, v in summary.items() if k not in ("errors", "warnings", "by_code")}
    if extra:
        parts.append('<p class="meta">' + "; ".join(f"{e(str(k))}: {e(_plain(v))}" for k, v in extra.items()) + "</p>")
    if not findings:
        parts.append("<p>No problems found.</p></body></html>\n")
        return "\n".join(parts)
    parts.append(
        '<div id="controls"><b>Show:</b>'
        '<label><input type="checkbox" id="show-error" checked> errors</label>'
        '<label><input type="checkbox" id="show-warning" checked> warnings</label>'
        '<label><input type="checkbox" id="hide-fixed"> hide what <code>--fix</code> fixes</label>'
        '<span class="meta">untick a code in the table to hide it; click a code\'s heading to fold it</span></div>'
    )
    parts.append(
        '<table class="codes"><tr><th>show</th><th>severity</th><th>code</th><th>count</th>'
        "<th>--fix fixes</th><th>meaning</th></tr>"
    )
    for sev, code, n, can in rows:
        parts.append(
            f'<tr class="{sev.value}"><td><input type="checkbox" id="{_slug(code)}" checked aria-label="show {e(code)}"></td>'
            f'<td class="sev">{sev.value}</td><td><a href="#{e(code)}">{e(code)}</a></td><td class="n">{n}</td>'
            f'<td class="n">{can or "-"}</td><td>{e(descriptions.get(code, ""))}</td></tr>'
        )
    parts.append("</table>")
    for sev, code, n, can in rows:
        parts.append(_code_section(sev, code, n, can, findings, fixed_ids, descriptions.get(code, "")))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _code_rows(findings: list[Finding], fixed_ids: set[int]) -> list[tuple[Severity, str, int, int]]:
    """(severity, code, count, fixed by --fix): errors first, then the largest codes."""
    total = Counter((f.severity, f.code) for f in findings)
    can = Counter((f.severity, f.code) for f in findings if id(f) in fixed_ids)
    order = (Severity.ERROR, Severity.WARNING)
    return sorted(((s, c, n, can[(s, c)]) for (s, c), n in total.items()), key=lambda r: (order.index(r[0]), -r[2], r[1]))


def _code_css(rows: list[tuple[Severity, str, int, int]]) -> str:
    """One rule per code: hide its section when its box in the code table is unticked."""
    return "".join(f"body:has(#{_slug(c)}:not(:checked)) details.{_slug(c)}{{display:none}}\n" for _, c, _, _ in rows)


def _code_section(sev: Severity, code: str, n: int, can: int, findings: list[Finding], fixed_ids: set[int], meaning: str) -> str:
    e = html.escape
    mine = [f for f in findings if f.severity is sev and f.code == code]
    is_open = " open" if sev is Severity.ERROR or n <= 10 else ""
    fix_note = f", {can} fixed by --fix" if can else ""
    out = [
        (f'<details class="code sev-{sev.value} {_slug(code)}" id="{e(code)}"{is_open}>'
        f'<summary><span class="sev">{sev.value}</span> {e(code)} <span class="meta">— {n} finding(s){fix_note}. {e(meaning)}</span></summary>'),
        ('<table class="findings"><colgroup><col class="file"><col class="row"><col class="column"><col class="val">'
        '<col><col class="fix"></colgroup>'
        "<tr><th>file</th><th>row</th><th>column</th><th>value</th><th>message</th><th>--fix</th></tr>"),
    ]
    for f in mine:
        hint = f'<div class="hint">hint: {e(f.hint)}</div>' if f.hint else ""
        done = id(f) in fixed_ids
        out.append(
            f'<tr class="{"fixed" if done else "manual"}"><td>{e(f.file or "")}</td><td>{"" if f.row is None else f.row}</td>'
            f'<td>{e(f.column or "")}</td><td class="val">{e("" if f.value is None else repr(f.value))}</td>'
            f'<td>{e(f.message)}{hint}</td><td class="fix">{"✓" if done else ""}</td></tr>'
        )
    out.append("</table></details>")
    return "\n".join(out)


def _plain(value: object) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
