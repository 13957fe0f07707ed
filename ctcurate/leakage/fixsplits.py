"""Corrected split lists: every duplicate cluster, patient and source figure wholly in one split.

Owns the re-assignment and writing the new lists (never touching the originals). Groups are the
connected components of "same picture / same patient / same source figure"; each group moves to
the split that already holds most of it (ties: train, val, test), then whole groups are moved,
smallest first, to bring each split's class ratio back within `MAX_RATIO_DRIFT` of the original.
Deterministic: everything is ordered by name. Moving images cannot fix a label conflict or a
duplicate within a split: the result names those, and a README.md beside the lists says what
moved and what is left. Imports `leakage`, `layout`, `atomic`.
"""

from __future__ import annotations

import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from ctcurate.core.atomic import atomic_write, refuse_existing, refuse_inputs
from ctcurate.core.dataset import read_split_lines
from ctcurate.core.layout import SPLIT_NAMES, label_of_class, split_files
from ctcurate.core.unionfind import components
from ctcurate.leakage.groups import LEVELS, Level, groups_of
from ctcurate.leakage.pipeline import LeakageReport

MAX_RATIO_DRIFT = 0.02


@dataclass(frozen=True)
class FixResult:
    moved: dict[str, tuple[str, str]]  # image -> (old split, new split)
    ratios_before: dict[str, float]
    ratios_after: dict[str, float]
    written: list[Path]
    unfixable: dict[str, list[str]] = field(default_factory=dict)  # level title -> group keys left as they are

    def describe(self) -> str:
        drift = ", ".join(
            f"{s} {self.ratios_before[s]:.3f}->{self.ratios_after.get(s, 0):.3f}" for s in sorted(self.ratios_before)
        )
        lines = [f"fix-splits: moved {len(self.moved)} image(s); first-class share per split {drift}; wrote {sum(p.suffix == '.txt' for p in self.written)} list(s) and README.md"]
        lines += [f"fix-splits cannot fix {len(keys)} {_level(title).short}: {_fix_advice(title)}" for title, keys in self.unfixable.items()]
        return "\n".join(lines)


def _level(title: str) -> Level:
    return next(lv for lv in LEVELS if lv.title == title)


def _fix_advice(title: str) -> str:
    lv = _level(title)
    return "a person must pick the right label" if lv.id == "label-conflict" else "they stay in their split (remove extra copies by hand)"


def unfixable(report: LeakageReport) -> dict[str, list[str]]:
    """Groups that moving images between splits leaves as they are, by level title (pure)."""
    out: dict[str, list[str]] = {}
    for g in groups_of(report):
        lv = LEVELS[g.level]
        if not lv.fixable:
            out.setdefault(lv.title, []).append(" = ".join(g.members))
    return out


def readme(result: FixResult, report: LeakageReport) -> str:
    """README.md beside the new lists: what moved where, and what no split can fix."""
    lines = [
        "Split lists written by `ctcurate check-leakage --fix-splits`.",
        "Each duplicate picture, patient and source figure now lies wholly in one split; the class",
        "share per split stays close to the original. The original lists were not changed.",
        "",
        f"Moved {len(result.moved)} image(s):",
        *[f"  {img}: {old} -> {new}" for img, (old, new) in result.moved.items()],
    ]
    for title, keys in result.unfixable.items():
        lv = next(lv for lv in LEVELS if lv.title == title)
        lines += ["", f"Not fixed: {len(keys)} {title.lower()} (moving images cannot fix these)."]
        lines += [f"  {k}" for k in keys]
        lines += textwrap.wrap("What to do: " + lv.todo.replace("`", ""), 96, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines) + "\n"


def _ratios(assign: dict[str, str], first_class: str) -> dict[str, float]:
    total: Counter[str] = Counter()
    first: Counter[str] = Counter()
    for img, split in assign.items():
        total[split] += 1
        if img.split("/", 1)[0] == first_class:
            first[split] += 1
    return {s: first[s] / total[s] for s in total if total[s]}


def plan(report: LeakageReport, current: dict[str, str]) -> dict[str, str]:
    """The new split of every listed image (pure)."""
    names = sorted(current)
    index = {n: k for k, n in enumerate(names)}
    edges: list[tuple[int, int]] = []
    for c in report.clusters:
        members = [m for m in c.members if m in index]
        edges += [(index[members[0]], index[m]) for m in members[1:]]
    for p in report.pairs:
        if p.a in index and p.b in index:
            edges.append((index[p.a], index[p.b]))
    groups = [[names[k] for k in comp] for comp in components(range(len(names)), edges) if len(comp) > 1]
    assign = dict(current)
    for g in sorted(groups):
        counts = Counter(current[m] for m in g)
        target = max(SPLIT_NAMES, key=lambda s: (counts.get(s, 0), -SPLIT_NAMES.index(s)))
        for m in g:
            assign[m] = target
    classes = sorted({n.split("/", 1)[0] for n in names})
    if len(classes) < 2:
        return assign
    first = classes[0]
    before = _ratios(current, first)
    grouped = {m for g in groups for m in g}
    units = sorted(groups, key=lambda g: (len(g), g)) + [[n] for n in names if n not in grouped]
    for _ in range(len(units)):
        after = _ratios(assign, first)
        worst = max(before, key=lambda s: abs(after.get(s, 0) - before[s]))
        drift = after.get(worst, 0) - before[worst]
        if abs(drift) <= MAX_RATIO_DRIFT:
            break
        # too many first-class images in `worst` (drift > 0): move a first-class unit out, else a second-class one
        want_first = drift > 0
        moved = False
        for unit in units:
            if assign[unit[0]] != worst or any(assign[m] != worst for m in unit):
                continue
            if all((m.split("/", 1)[0] == first) == want_first for m in unit):
                dest = min((s for s in before if s != worst), key=lambda s: (after.get(s, 0) - before[s]) * (1 if want_first else -1))
                for m in unit:
                    assign[m] = dest
                moved = True
                break
        if not moved:
            break
    return assign


def fix_splits(report: LeakageReport, splits_dir: Path, out_dir: Path, force: bool = False) -> FixResult:
    """Write corrected `Data-split`-style lists under `out_dir`; the originals are only read.

    Raises `WouldOverwrite` before writing anything when a list would land on an original, or
    when `out_dir` exists and is not empty (unless `force`).
    """
    files = split_files(splits_dir)
    refuse_inputs([out_dir / label_of_class(c) / f"{s}{c}.txt" for c in {f.class_dir for f in files}
                   for s in SPLIT_NAMES], [f.path for f in files], "--fix-splits")
    refuse_existing(out_dir, force)
    current: dict[str, str] = {}
    order: dict[str, int] = {}
    for line in read_split_lines(splits_dir):
        if line.name:
            rel = f"{line.class_dir}/{line.name}"
            current[rel] = line.split
            order.setdefault(rel, len(order))
    assign = plan(report, current)
    classes = sorted({n.split("/", 1)[0] for n in current})
    first = classes[0] if classes else ""
    written = []
    for class_dir in classes:
        for split in SPLIT_NAMES:
            names = [n.split("/", 1)[1] for n in sorted(assign, key=lambda n: order[n]) if n.startswith(class_dir + "/") and assign[n] == split]
            target = out_dir / label_of_class(class_dir) / f"{split}{class_dir}.txt"
            with atomic_write(target) as fh:
                fh.write("".join(f"{n}\n" for n in names))
            written.append(target)
    moved = {n: (current[n], assign[n]) for n in sorted(current) if current[n] != assign[n]}
    result = FixResult(moved, _ratios(current, first), _ratios(assign, first), written, unfixable(report))
    with atomic_write(out_dir / "README.md") as fh:
        fh.write(readme(result, report))
    return replace(result, written=[*written, out_dir / "README.md"])


def group_violations(report: LeakageReport, assign: dict[str, str]) -> list[str]:
    """Groups still spread over several splits under `assign` (for tests and the bench)."""
    bad = []
    for c in report.clusters:
        if len({assign[m] for m in c.members if m in assign}) > 1:
            bad.append(c.key)
    by: dict[str, set[str]] = defaultdict(set)
    for p in report.pairs:
        if p.a in assign and p.b in assign and assign[p.a] != assign[p.b]:
            bad.append(f"{p.a}|{p.b}")
    return bad + [k for k, v in by.items() if len(v) > 1]
