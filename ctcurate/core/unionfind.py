"""Connected components (union-find), the one implementation every command groups things with.

Owns grouping: duplicate clusters (check-leakage), one picture sent several times and patients or
figures that must share a split (add-contribution). Pure; imports nothing from ctcurate.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


def components(nodes: Iterable[T], edges: Iterable[tuple[T, T]]) -> list[list[T]]:
    """The connected components of `nodes` joined by `edges`, singletons included.

    Members keep the order of `nodes`; components come in the order of their first member. An edge
    may name a node not in `nodes`: it is added after them.
    """
    parent: dict[T, T] = {n: n for n in nodes}

    def root(x: T) -> T:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[rb] = ra
    groups: dict[T, list[T]] = {}
    for n in list(parent):
        groups.setdefault(root(n), []).append(n)
    return list(groups.values())
