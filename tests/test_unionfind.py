"""core.unionfind: the one connected-components implementation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ctcurate.core.unionfind import components


def test_components_keep_node_order_and_singletons() -> None:
    assert components("abcde", [("d", "b"), ("e", "a")]) == [["a", "e"], ["b", "d"], ["c"]]


def test_an_edge_may_name_a_node_not_listed() -> None:
    assert components([1], [(2, 3), (1, 3)]) == [[1, 2, 3]]


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=40))
def test_components_partition_the_nodes_and_keep_every_edge_inside_one(edges: list[tuple[int, int]]) -> None:
    comps = components(range(21), edges)
    where = {n: k for k, comp in enumerate(comps) for n in comp}
    assert sorted(where) == list(range(21)) and sum(map(len, comps)) == 21
    assert all(where[a] == where[b] for a, b in edges)
