"""Progress of long steps: the callback type the library reports through, and the one bar drawer.

Library code takes an optional `StepProgress` (`step, done, total`) and never draws; the CLI passes
`StepBars`, which draws one tqdm bar per step on stderr, and only when stderr is a terminal (a log
or a pipe gets nothing). Imports nothing else from ctcurate.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, Self, TypeVar

if TYPE_CHECKING:
    from tqdm import tqdm

StepProgress = Callable[[str, int, int], None]
"""`(step, done, total)`: called with done = 0 when a step starts and after each unit of work."""

T = TypeVar("T")


def for_step(progress: StepProgress | None, step: str) -> Callable[[int, int], None] | None:
    """A `(done, total)` callback for one named step (for code that counts but does not name)."""
    if progress is None:
        return None
    return lambda done, total: progress(step, done, total)


def counted(items: Iterable[T], total: int, step: str, progress: StepProgress | None) -> Iterator[T]:
    """Yield `items`, reporting `step` after each one (and once at 0 before the first)."""
    if progress is None or total == 0:
        yield from items
        return
    progress(step, 0, total)
    for done, item in enumerate(items, 1):
        yield item
        progress(step, done, total)


class StepBars:
    """A `StepProgress` that draws one bar per step on stderr, on a terminal only; call `close()`."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._bar: tqdm[Any] | None = None
        self._step = ""

    def __call__(self, step: str, done: int, total: int) -> None:
        if not self._enabled:
            return
        if self._bar is None or step != self._step or total != self._bar.total:
            from tqdm import tqdm

            self.close()
            self._step = step
            self._bar = bar = tqdm(total=total, desc=step, unit="img" if step == "hashing" else "pair",
                                   file=self._stream, leave=False, dynamic_ncols=True)
        else:
            bar = self._bar
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
