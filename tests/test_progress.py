"""The progress helper: the library reports steps; bars are drawn on a terminal only."""

from __future__ import annotations

import io

from ctcurate.core.progress import StepBars, counted, for_step


def test_counted_reports_each_item_after_a_start_at_zero() -> None:
    seen: list[tuple[str, int, int]] = []
    items = list(counted(iter("abc"), 3, "verifying", lambda *a: seen.append(a)))
    assert items == ["a", "b", "c"]
    assert seen == [("verifying", 0, 3), ("verifying", 1, 3), ("verifying", 2, 3), ("verifying", 3, 3)]
    assert list(counted([1, 2], 2, "x", None)) == [1, 2]


def test_for_step_names_a_plain_counter() -> None:
    seen: list[tuple[str, int, int]] = []
    tick = for_step(lambda *a: seen.append(a), "hashing")
    assert tick is not None
    tick(5, 10)
    assert seen == [("hashing", 5, 10)] and for_step(None, "hashing") is None


def test_bars_only_on_a_terminal_one_per_step() -> None:
    log = io.StringIO()  # not a terminal: nothing is drawn
    with StepBars(log) as bars:
        bars("hashing", 3, 10)
    assert log.getvalue() == ""
    drawn = io.StringIO()
    with StepBars(drawn, enabled=True) as bars:
        for step, total in (("hashing", 4), ("verifying", 2)):
            for done in range(total + 1):
                bars(step, done, total)
    text = drawn.getvalue()
    assert "hashing: 100%" in text and "4/4" in text and "verifying: 100%" in text and "2/2" in text
