"""Split assignment: patients and figures never straddle splits; class ratios are kept."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctcurate.contribution.split_assign import Item, assign, groups_of

EXISTING = {"CT_COVID": {"train": 191, "val": 60, "test": 98}, "CT_NonCOVID": {"train": 234, "val": 58, "test": 105}}


def _items(spec):
    return [Item(f"{c}-{p}-{f}-{i}", c, f"P{p}", f"fig{f}") for i, (c, p, f) in enumerate(spec)]


item_specs = st.lists(
    st.tuples(st.sampled_from(["CT_COVID", "CT_NonCOVID"]), st.integers(0, 30), st.integers(0, 30)), max_size=80
)


@settings(max_examples=60, deadline=None)
@given(item_specs)
def test_no_patient_or_figure_straddles_splits(spec):
    items = _items(spec)
    out = assign(items, "auto", EXISTING)
    assert set(out) == {it.key for it in items}
    by_patient, by_figure = defaultdict(set), defaultdict(set)
    for it in items:
        by_patient[it.patient].add(out[it.key])
        by_figure[(it.class_dir, it.figure)].add(out[it.key])
    assert all(len(s) == 1 for s in by_patient.values())
    assert all(len(s) == 1 for s in by_figure.values())


def test_class_ratios_are_kept_for_many_small_patients():
    items = [Item(f"c{i}", "CT_COVID", f"P{i // 2}", f"f{i}") for i in range(120)]
    items += [Item(f"n{i}", "CT_NonCOVID", f"Q{i}", f"g{i}") for i in range(80)]
    out = assign(items, "auto", EXISTING)
    for c, n in (("CT_COVID", 120), ("CT_NonCOVID", 80)):
        got = Counter(out[it.key] for it in items if it.class_dir == c)
        total = sum(EXISTING[c].values()) + n
        for split in ("train", "val", "test"):
            final_share = (EXISTING[c][split] + got[split]) / total
            assert abs(final_share - EXISTING[c][split] / sum(EXISTING[c].values())) < 0.01, (c, split, got)


def test_forced_split_follows_an_existing_figure_and_pulls_its_patient():
    items = [Item("a", "CT_COVID", "P1", "fig1", forced_split="test"), Item("b", "CT_COVID", "P1", "fig2")]
    assert assign(items, "auto", EXISTING) == {"a": "test", "b": "test"}


@pytest.mark.parametrize("mode", ["train", "val", "test"])
def test_fixed_modes(mode):
    items = _items([("CT_COVID", 1, 1), ("CT_NonCOVID", 2, 2)])
    assert set(assign(items, mode, EXISTING).values()) == {mode}
    assert set(assign(items, "none", EXISTING).values()) == {None}


def test_empty_dataset_uses_default_shares_and_is_deterministic():
    items = [Item(f"k{i}", "CT_COVID", f"P{i}", f"f{i}") for i in range(20)]
    first = assign(items, "auto", {})
    assert first == assign(list(reversed(items)), "auto", {})
    assert Counter(first.values()) == {"train": 12, "test": 5, "val": 3}


def test_groups_join_through_shared_figures():
    items = [Item("a", "C", "P1", "f"), Item("b", "C", "P2", "f"), Item("c", "C", "P2", "g"), Item("d", "C", "P3", "h")]
    assert sorted(sorted(i.key for i in g) for g in groups_of(items)) == [["a", "b", "c"], ["d"]]
