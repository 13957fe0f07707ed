"""Placing new images in train/val/test at patient level: pure, deterministic, no I/O.

Owns the grouping rule (a patient and every source figure of theirs move together, so nothing
straddles splits) and the balancing rule (`auto`: each group goes where its class lags its share
the most, so class ratios are kept). Imports nothing from ctcurate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ctcurate.core.unionfind import components

SPLITS = ("train", "val", "test")
MODES = ("auto", "none", *SPLITS)
# Shares used for a class that has no split lists yet (COVID-CT's official split is about these).
DEFAULT_SHARES = {"train": 0.6, "val": 0.15, "test": 0.25}


@dataclass(frozen=True)
class Item:
    """One new image: its key, class, dataset patient and source figure."""

    key: str
    class_dir: str
    patient: str
    figure: str
    forced_split: str | None = None  # an existing figure already lives in this split


def groups_of(items: Sequence[Item]) -> list[list[Item]]:
    """Connected components over shared patient or (class, figure): what must share one split."""
    first: dict[tuple[str, ...], int] = {}
    edges: list[tuple[int, int]] = []
    for i, it in enumerate(items):
        for key in (("p", it.patient), ("f", it.class_dir, it.figure)):
            edges.append((first.setdefault(key, i), i))
    return [[items[i] for i in comp] for comp in components(range(len(items)), edges)]


def assign(
    items: Sequence[Item],
    mode: str,
    existing_counts: Mapping[str, Mapping[str, int]],
) -> dict[str, str | None]:
    """Item key -> split (None for mode `none`). `existing_counts`: class -> split -> images."""
    if mode not in MODES:
        raise ValueError(f"unknown split mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "none":
        return {it.key: None for it in items}
    if mode in SPLITS:
        return {it.key: mode for it in items}
    counts = {c: {s: int(existing_counts.get(c, {}).get(s, 0)) for s in SPLITS} for c in {it.class_dir for it in items}}
    shares = {}
    for c, per in counts.items():
        total = sum(per.values())
        shares[c] = {s: per[s] / total for s in SPLITS} if total else dict(DEFAULT_SHARES)
    final_total = {c: sum(per.values()) + sum(1 for it in items if it.class_dir == c) for c, per in counts.items()}

    out: dict[str, str | None] = {}
    # Big groups first (they are the hard ones to place); the sort keys make the result repeatable.
    for group in sorted(groups_of(items), key=lambda g: (-len(g), min(it.key for it in g))):
        forced = sorted({it.forced_split for it in group if it.forced_split})
        if forced:
            choice = forced[0]
        else:
            size: dict[str, int] = defaultdict(int)
            for it in group:
                size[it.class_dir] += 1

            choice = max(SPLITS, key=lambda s: (_deficit(s, size, shares, final_total, counts), -SPLITS.index(s)))
        for it in group:
            out[it.key] = choice
            counts[it.class_dir][choice] += 1
    return out


def _deficit(split: str, size: Mapping[str, int], shares: Mapping[str, Mapping[str, float]],
             final_total: Mapping[str, int], counts: Mapping[str, Mapping[str, int]]) -> float:
    """How far `split` is below its share, over the classes of the group being placed."""
    return sum(shares[c][split] * final_total[c] - counts[c][split] for c in size)
