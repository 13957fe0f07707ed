"""Renderings of a leakage report: text, JSON, CSV and one self-contained HTML page.

Owns presentation only; takes a `leakage.LeakageReport`, returns strings. The HTML shows the
report as `groups` (one per picture, patient or source figure) in severity order, with a filter, a
sort menu and folded evidence, and embeds small JPEG thumbnails (base64) of every member, so it can
be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Callable, Mapping
from pathlib import Path


from ctcurate.core.findings import dump_json, one_line
from ctcurate.core.images import UnreadableImage, open_image
from ctcurate.core.layout import IMAGES_DIR
from ctcurate.leakage.groups import (
    KIND_LEVEL,
    MINOR_KINDS,
    LEVELS,
    Group,
    also_in,
    count_by_level,
    groups_of,
    level_of,
)
from ctcurate.leakage.pipeline import LeakageReport, Pair


NEW_PREFIX = "new:"  # how the report names an image of the `--against` set


def render(report: LeakageReport, fmt: str, data_root: Path, new_images: Mapping[str, Path] | None = None) -> str:
    """The report in `fmt`, ending with a newline; HTML thumbnails read from the dataset
    and from `new_images` (the `--against` set's files by their path in the report)."""
    if fmt == "html":
        text = to_html(report, lambda rel: image_file(rel, data_root, new_images or {}))
    else:
        text = {"text": to_text, "json": to_json, "csv": to_csv}[fmt](report)
    return text if text.endswith("\n") else text + "\n"


def image_file(rel: str, data_root: Path, new_images: Mapping[str, Path]) -> Path | None:
    """The file a report path names: `CT_COVID/x.png` in the dataset, `new:...` in the `--against` set."""
    if rel.startswith(NEW_PREFIX):
        return new_images.get(rel[len(NEW_PREFIX):])
    return data_root / IMAGES_DIR / rel


def to_json(report: LeakageReport) -> str:
    return dump_json(
        {
            "pairs": [p.model_dump(mode="json") for p in report.pairs],
            "clusters": [c.model_dump(mode="json") for c in report.clusters],
            "summary": report.summary(),
        }
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


def summary_line(report: LeakageReport) -> str:
    """One line for the terminal: groups per severity level, most severe first, the pictures the sheet
    gives two patient IDs, and unreadable files."""
    groups = groups_of(report)
    counts = ", ".join(
        f"{n} {'other ' if also_in(groups, k) and lv.id != 'duplicate' else ''}{lv.short}"
        for k, (lv, n) in enumerate(count_by_level(groups))
    )
    conflicts = sum("patient-conflict" in g.kind for g in groups)
    sheet = f"; {conflicts} picture(s) under two patient IDs (patient-conflict)" if conflicts else ""
    return f"{counts}{sheet}; {len(report.findings)} unreadable of {report.stats.get('images', 0)} images"
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
        lines.append(f"{f.severity.value}: {f.file}: {f.code}: {f.message}")
    s = report.summary()
    kinds = ", ".join(f"{k} {v}" for k, v in report.kind_counts().items()) or "none"
    lines.append(
        f"{s['images']} images, {s['pairs']} duplicate pair(s) in {s['duplicate_clusters']} cluster(s), "
        f"{s['unreadable']} unreadable; by kind: {kinds}"
    )
    return "\n".join(one_line(x) for x in lines)  # a file name must not break or reorder a line


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


# The page: a summary with one coloured box per severity level, a filter and a sort menu, then
# one section per level (most severe first) holding its groups; each group shows every member's
# thumbnail and metadata, with the pairs' evidence folded under <details>.

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1500px}
h1{font-size:1.5em;margin:.2em 0} h2{font-size:1.2em;margin:1.4em 0 .3em;padding-left:.5em;border-left:6px solid var(--c)}
.meta{color:#555;font-size:12px} code{background:#f2f2f2;padding:0 .25em;border-radius:3px}
#levels{display:flex;gap:.6em;flex-wrap:wrap;margin:.8em 0}
#levels a{display:block;padding:.45em .8em;border-radius:6px;color:#fff;background:var(--c);text-decoration:none;min-width:11em}
#levels a.zero{background:#e8e8e8;color:#555} #levels b{font-size:1.4em;margin-right:.3em}
#controls{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;z-index:2;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}
#controls input[type=search]{width:22em;padding:.3em}
.todo{background:#f7f7f7;border-left:3px solid var(--c);padding:.4em .7em;margin:.3em 0 .8em;max-width:75em}
.group{border:1px solid #ddd;border-left:6px solid var(--c);border-radius:4px;margin:.7em 0;padding:.5em .8em}
.group[hidden]{display:none} .ghead{display:flex;gap:.6em;align-items:baseline;flex-wrap:wrap}
.badge{display:inline-block;padding:0 .45em;border-radius:3px;font-size:12px;font-weight:600;color:#fff;background:var(--c)}
.badge.minor{background:#fff;color:#333;border:1px solid #bbb}
.members{display:flex;gap:.8em;flex-wrap:wrap;margin:.5em 0}
figure{margin:0;width:200px} figure img{max-width:200px;max-height:200px;display:block;border:1px solid #ccc}
figcaption{font-size:12px;overflow-wrap:anywhere} .path{font-family:ui-monospace,monospace;font-size:12px}
.split{font-weight:600;padding:0 .3em;border-radius:3px;background:#e3ecf7} .split.test{background:#fde2e1} .split.val{background:#fff3c4}
details{margin:.3em 0} summary{cursor:pointer;color:#333}
table.ev{border-collapse:collapse;font-size:12px;margin:.3em 0} table.ev td,table.ev th{border:1px solid #ddd;padding:2px 6px;vertical-align:top;text-align:left}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:0 .8em;margin:0} dl.kv dt{color:#555} dl.kv dd{margin:0;font-family:ui-monospace,monospace}
.empty{color:#2e7d32;font-style:italic} .nomatch{color:#777;font-style:italic}
"""

_JS = """
const groups=[...document.querySelectorAll('.group')];
function apply(){
 const q=document.getElementById('filter').value.trim().toLowerCase();
 const on=new Set([...document.querySelectorAll('input.level')].filter(c=>c.checked).map(c=>c.value));
 let shown=0;
 groups.forEach(g=>{const ok=on.has(g.dataset.level)&&(!q||g.dataset.text.includes(q));g.hidden=!ok;if(ok)shown++;});
 document.querySelectorAll('section.level').forEach(s=>{const n=s.querySelectorAll('.group').length,v=s.querySelectorAll('.group:not([hidden])').length;
  const m=s.querySelector('.nomatch');if(m)m.hidden=!(n>0&&v===0);});
 document.getElementById('shown').textContent=shown+' of '+groups.length+' groups shown';
 document.body.dataset.shown=shown;
}
function sortBy(key){
 document.querySelectorAll('section.level .list').forEach(l=>{[...l.children].sort((a,b)=>{
  if(key==='name')return a.dataset.key.localeCompare(b.dataset.key);
  const d=parseFloat(b.dataset[key])-parseFloat(a.dataset[key]);return d||a.dataset.key.localeCompare(b.dataset.key);
 }).forEach(g=>l.appendChild(g));});
}
document.getElementById('filter').addEventListener('input',apply);
document.querySelectorAll('input.level').forEach(c=>c.addEventListener('change',apply));
document.getElementById('sort').addEventListener('change',e=>sortBy(e.target.value));
const h=new URLSearchParams(location.hash.slice(1));
if(h.get('filter'))document.getElementById('filter').value=h.get('filter');
if(h.get('sort')){document.getElementById('sort').value=h.get('sort');sortBy(h.get('sort'));}
apply();
window.addEventListener('load',()=>{document.body.dataset.imagesShown=[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;});
"""


def _figure(report: LeakageReport, rel: str, resolve: Callable[[str], Path | None], thumbs: dict[str, str]) -> str:
    e = html.escape
    info = report.images.get(rel)
    if rel not in thumbs:
        thumbs[rel] = _thumb(resolve(rel), 200)
    src = thumbs[rel]
    img = f'<img alt="{e(rel)}" src="{src}">' if src else "<em>no preview</em>"
    meta = ""
    if info:
        split = info.split or "no split"
        meta = (
            f'<br>label <b>{e(info.label or "-")}</b> · <span class="split {e(split)}">{e(split)}</span>'
            f"<br>patient {e(info.patient or '-')} · DOI {e(info.doi or '-')}"
        )
    return f'<figure>{img}<figcaption><span class="path">{e(rel)}</span>{meta}</figcaption></figure>'


def _evidence(pairs: list[Pair]) -> str:
    """Every pair of the group with whatever its evidence holds, folded (it is for checking, not reading)."""
    if not pairs:
        return ""
    e = html.escape
    rows = []
    for p in pairs:
        kv = "".join(f"<dt>{e(str(k))}</dt><dd>{e(str(v))}</dd>" for k, v in p.evidence.items())
        rows.append(
            f'<tr><td class="path">{e(p.a)}<br>{e(p.b)}</td><td>{e(", ".join(p.kind))}</td>'
            f'<td>{p.score:.3f}</td><td><dl class="kv">{kv}</dl></td></tr>'
        )
    return (
        f"<details><summary>evidence: {len(pairs)} verified pair(s)</summary><table class=ev>"
        "<tr><th>pair</th><th>kind</th><th>score</th><th>evidence</th></tr>" + "".join(rows) + "</table></details>"
    )


def _group_html(g: Group, report: LeakageReport, resolve: Callable[[str], Path | None], thumbs: dict[str, str]) -> str:
    e = html.escape
    lv = LEVELS[g.level]
    badges = "".join(
        f'<span class="badge" style="--c:{LEVELS[level_of([k])].colour}">{e(k)}</span> ' if k in KIND_LEVEL
        else f'<span class="badge minor" title="{e(MINOR_KINDS.get(k, k))}">{e(k)}</span> '
        for k in g.kind
    )
    where = " · ".join(f"{e(s)}: {len(m)}" for s, m in sorted(g.splits.items()))
    what = {"duplicate": f"{len(g.members)} copies of one picture", "patient": f"patient {g.key}",
            "source": f"source figure {g.key.replace('|', ' ')}"}[g.type]
    text = " ".join([*g.members, *g.kind, g.key, g.type]).lower()
    figures = "".join(_figure(report, m, resolve, thumbs) for m in g.members)
    return (
        f'<div class="group" style="--c:{lv.colour}" data-level="{e(lv.id)}" data-key="{e(g.key)}" '
        f'data-size="{len(g.members)}" data-score="{g.score:.4f}" data-severity="{len(LEVELS) - g.level}" data-text="{e(text)}">'
        f'<div class="ghead">{badges}<b>{e(what)}</b><span class="meta">by split: {where}</span></div>'
        f'<div class="members">{figures}</div>{_evidence(g.pairs)}</div>'
    )


def _empty_text(groups: list[Group], n: int) -> str:
    lv = LEVELS[n]
    more = also_in(groups, n) if lv.id != "duplicate" else 0
    if more:
        return f"None besides the {more} group(s) listed above, which are also {lv.title.lower()}."
    return f"No {lv.title.lower()} found."


def to_html(report: LeakageReport, resolve: Callable[[str], Path | None]) -> str:
    """The page; `resolve` maps a report path (`CT_COVID/x.png`) to the file for its thumbnail."""
    e = html.escape
    groups = groups_of(report)
    thumbs: dict[str, str] = {}
    boxes, toggles, sections = [], [], []
    for (lv, count), n in zip(count_by_level(groups), range(len(LEVELS))):
        more = also_in(groups, n) if lv.id != "duplicate" else 0
        extra = f'<br><small>+{more} listed under a worse kind</small>' if more else ""
        boxes.append(f'<a href="#{lv.id}" class="{"" if count else "zero"}" style="--c:{lv.colour}"><b>{count}</b>{e(lv.title)}{extra}</a>')
        toggles.append(f'<label><input type="checkbox" class="level" value="{lv.id}" checked> {e(lv.title.lower())}</label>')
        mine = [g for g in groups if g.level == n]
        body = "".join(_group_html(g, report, resolve, thumbs) for g in mine)
        empty = "" if mine else f'<p class="empty">{e(_empty_text(groups, n))}</p>'
        sections.append(
            f'<section class="level" id="{lv.id}" style="--c:{lv.colour}"><h2>{e(lv.title)} ({len(mine)})</h2>'
            f'<div class="todo"><b>What to do:</b> {_code(lv.todo)}</div>{empty}'
            f'<p class="nomatch" hidden>Nothing here matches the filter.</p><div class="list">{body}</div></section>'
        )
    finds = "".join(f"<li>{e(f.file or '')}: {e(f.message)}</li>" for f in report.findings)
    unreadable = f"<ul id=unreadable>{finds}</ul>" if finds else '<p class="empty">No unreadable images.</p>'
    s = report.summary()
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ctcurate check-leakage</title>
<style>{_CSS}</style></head><body>
<h1>ctcurate check-leakage</h1>
<p id=summary class=meta>{s['images']} images checked · {s['pairs']} verified duplicate pair(s) in {s['duplicate_clusters']} picture(s) · {len(groups)} group(s) to look at · {s['unreadable']} unreadable</p>
<nav id=levels>{''.join(boxes)}</nav>
<div id=controls><input type=search id=filter placeholder="filter: file name, patient, DOI, kind…" aria-label="filter">
{''.join(toggles)}
<label>sort groups by <select id=sort><option value=size>size</option><option value=score>match score</option><option value=name>name</option></select></label>
<span id=shown class=meta></span></div>
<p class=meta>Sections run from most to least severe; within one, groups start largest first (change it with “sort groups by”).
Each group is one picture's copies, or one patient or source figure spread over splits; open “evidence” for the pixel checks. Add <code>#filter=TEXT</code> to the address to open the page filtered.</p>
{''.join(sections)}
<h2 style="--c:#777">Unreadable images</h2>{unreadable}
<script>{_JS}</script></body></html>
"""


def _code(text: str) -> str:
    """Escape `text` and show `back-quoted` parts and --options as code."""
    import re

    parts = re.split(r"(`[^`]+`|--[a-z-]+(?: OUT)?)", text)
    return "".join(f"<code>{html.escape(p.strip('`'))}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))
