"""Progress of long steps: a tqdm bar when stderr is a terminal, a few plain log lines otherwise.

``with Progress("teacher", total=1500, unit="step") as bar: ... bar.update(1, loss=0.8)``. On a
terminal the bar redraws in place on stderr (and log lines print above it); in a pipe, a file or
CI, it writes at most ``milestones`` INFO lines through the ``keco.progress`` logger (one at each
quarter by default, none with ``milestones=0`` when the caller logs its own line per item).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

log = logging.getLogger("keco.progress")
T = TypeVar("T")


def on_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default stderr) is attached to a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """A bar or plain milestone lines for one long step (see the module docstring)."""

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "it",
        milestones: int = 4,
        stream: IO[str] | None = None,
    ) -> None:
        self.desc, self.total, self.unit, self.milestones = desc, total, unit, milestones
        self.done = 0
        self.start = time.perf_counter()
        self._next_mark = 1
        self._bar = None
        self._redirect = None
        if on_terminal(stream):
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()  # log lines print above the bar instead of through it
            self._bar = tqdm(
                total=total, desc=desc, unit=unit, file=stream or sys.stderr, leave=False,
                dynamic_ncols=True,
            )  # fmt: skip

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by ``n``; ``postfix`` values (a loss, a metric) show beside the count."""
        self.done += n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)
            self._bar.update(n)
            return
        if not self.milestones or not self.total:
            return
        while self._next_mark <= self.milestones and (
            self.done * self.milestones >= self._next_mark * self.total
        ):
            self._next_mark += 1
            extra = "".join(f" {k}={_fmt(v)}" for k, v in postfix.items())
            log.info(
                "%s: %d/%d %ss (%d%%)%s, %.0f s",
                self.desc, self.done, self.total, self.unit,
                100 * self.done // self.total, extra, time.perf_counter() - self.start,
            )  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    items: Iterable[T], desc: str, total: int | None = None, unit: str = "it", milestones: int = 4
) -> Iterator[T]:
    """Iterate over ``items`` with a :class:`Progress` (``total`` defaults to ``len(items)``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit, milestones) as bar:
        for item in items:
            yield item
            bar.update(1)
