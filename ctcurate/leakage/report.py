"""Renderings of a leakage report: text, JSON, CSV and one self-contained HTML page.

Owns presentation only; takes a `leakage.LeakageReport`, returns strings. The HTML embeds small
JPEG thumbnails (base64) of each reported pair so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Callable
from pathlib import Path


from ctcurate.core.images import UnreadableImage, open_image
from ctcurate.leakage.pipeline import LeakageReport, Pair


def to_json(report: LeakageReport) -> str:
    return json.dumps(
        {
            "pairs": [p.model_dump(mode="json") for p in report.pairs],
            "clusters": [c.model_dump(mode="json") for c in report.clusters],
            "summary": report.summary(),
        },
        indent=2,
        ensure_ascii=False,
    )


def to_csv(report: LeakageReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["a", "b", "kind", "score", "split_a", "split_b", "label_a", "label_b", "match", "stage", "angle", "scale", "mirrored"])
    for p in report.pairs:
        ia, ib = report.images.get(p.a), report.images.get(p.b)
        w.writerow([
            p.a, p.b, ";".join(p.kind), p.score,
            ia.split if ia else "", ib.split if ib else "",
            ia.label if ia else "", ib.label if ib else "",
            p.evidence.get("match", ""), p.stage,
            p.evidence.get("angle", ""), p.evidence.get("scale", ""), p.evidence.get("mirrored", ""),
        ])
    return buf.getvalue()


def _how(p: Pair) -> str:
    """Which stage found the pair, and the transform between the two when keypoints measured it."""
    if "angle" not in p.evidence:
        return f"by {p.stage}"
    mirror = ", mirrored" if p.evidence.get("mirrored") else ""
    return f"by {p.stage}: turned {p.evidence['angle']} deg, scaled {p.evidence['scale']}x{mirror}"


def to_text(report: LeakageReport) -> str:
    lines = []
    for p in report.pairs:
        lines.append(f"{', '.join(p.kind)}: {p.a} <-> {p.b} (score {p.score:.3f}, {p.evidence.get('match')}, {_how(p)})")
    for c in report.clusters:
        if c.type == "duplicate":
            continue
        where = "; ".join(f"{s}: {len(m)}" for s, m in sorted(c.splits.items()))
        lines.append(f"{', '.join(c.kind)}: {c.type} {c.key!r} spans splits ({where})")
    for f in report.findings:
        lines.append(f"error: {f.file}: {f.code}: {f.message}")
    s = report.summary()
    kinds = ", ".join(f"{k} {v}" for k, v in report.kind_counts().items()) or "none"
    lines.append(
        f"{s['images']} images, {s['pairs']} duplicate pair(s) in {s['duplicate_clusters']} cluster(s), "
        f"{s['unreadable']} unreadable; by kind: {kinds}"
    )
    return "\n".join(lines)


def _thumb(path: Path | None, size: int = 220) -> str:
    if path is None:
        return ""
    try:
        im = open_image(path)
    except UnreadableImage:
        return ""
    im = im.convert("RGB")
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}
th{background:#eee;cursor:pointer}img{max-width:220px;max-height:220px;display:block}
.kind{font-weight:bold;color:#a00}.meta{color:#555;font-size:12px}
"""
_JS = """
window.addEventListener('load',()=>{document.body.dataset.imagesShown=[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;});
document.querySelectorAll('th[data-col]').forEach(th=>th.addEventListener('click',()=>{
 const t=th.closest('table'),b=t.tBodies[0],c=+th.dataset.col,asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
 [...b.rows].sort((x,y)=>{const u=x.cells[c].dataset.v||x.cells[c].textContent,v=y.cells[c].dataset.v||y.cells[c].textContent;
 const n=parseFloat(u)-parseFloat(v);return (isNaN(n)?u.localeCompare(v):n)*(asc?1:-1)}).forEach(r=>b.appendChild(r));}));
"""


def to_html(report: LeakageReport, resolve: Callable[[str], Path | None]) -> str:
    """The page; `resolve` maps a report path (`CT_COVID/x.png`) to the file for its thumbnail."""
    e = html.escape

    def side(rel: str) -> str:
        info = report.images.get(rel)
        meta = ""
        if info:
            meta = (
                f"<div class=meta>label {e(info.label)} · split {e(info.split or '-')} · "
                f"patient {e(info.patient or '-')} · DOI {e(info.doi or '-')}</div>"
            )
        src = _thumb(resolve(rel))
        img = f'<img alt="{e(rel)}" src="{src}">' if src else "<em>no preview</em>"
        return f"<td><div class=path>{e(rel)}</div>{img}{meta}</td>"

    rows = []
    for p in report.pairs:
        kinds = ", ".join(p.kind)
        ev = ", ".join(f"{k}={v}" for k, v in p.evidence.items())
        rows.append(
            f"<tr class=pair><td class=kind data-v=\"{e(kinds)}\">{e(kinds)}</td><td data-v=\"{p.score}\">{p.score:.3f}</td>"
            f"{side(p.a)}{side(p.b)}<td class=meta>{e(ev)}</td></tr>"
        )
    groups = []
    for c in report.clusters:
        if c.type == "duplicate":
            continue
        where = "; ".join(f"{s}: {', '.join(m)}" for s, m in sorted(c.splits.items()))
        groups.append(f"<tr class=group><td class=kind>{e(', '.join(c.kind))}</td><td>{e(c.key)}</td><td>{e(where)}</td></tr>")
    finds = "".join(f"<li>{e(f.file or '')}: {e(f.message)}</li>" for f in report.findings)
    s = report.summary()
    kinds = ", ".join(f"{k}: {v}" for k, v in report.kind_counts().items()) or "none"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>ctcurate check-leakage</title>
<style>{_CSS}</style></head><body>
<h1>ctcurate check-leakage</h1>
<p id=summary>{s['images']} images · {s['pairs']} duplicate pair(s) · {s['duplicate_clusters']} cluster(s) · {s['unreadable']} unreadable · by kind: {e(kinds)}</p>
<h2>Duplicate pairs</h2>
<table id=pairs><thead><tr><th data-col=0>kind</th><th data-col=1>score</th><th data-col=2>image a</th><th data-col=3>image b</th><th>evidence</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<h2>Patient and source-figure groups across splits</h2>
<table id=groups><thead><tr><th data-col=0>kind</th><th data-col=1>key</th><th>members by split</th></tr></thead><tbody>{''.join(groups)}</tbody></table>
<h2>Unreadable images</h2><ul id=unreadable>{finds}</ul>
<script>{_JS}</script></body></html>
"""
