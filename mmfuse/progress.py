"""Progress of the long tool commands, stage by stage, on stderr: a live bar per stage (counts, rate, ETA) when
stderr is a terminal, else one log line per finished stage, e.g.
``INFO mmfuse.progress: audit: duplicates 3/3 splits done in 4.1 s``.

Library code marks its stages with :func:`stage` or :func:`track`. They report nothing unless :func:`reporting` is
on, which the ``mmfuse`` tool commands turn on around their work (:func:`mmfuse.commands.run_command`): the same
functions called from a notebook, a script or a test stay silent. Off a terminal, a stage whose items are slow also
logs an item line (done, elapsed, ETA) at most every :data:`LOG_EVERY_S` seconds, so CI logs show that a long stage
is moving without a line per item of a fast one. Training keeps Lightning's own progress bar.

The live bars are `tqdm <https://tqdm.github.io>`_'s (a dependency of Lightning, transformers and
huggingface_hub), imported only when a bar is drawn.

Example:
    >>> with stage("duplicates", total=3, unit="splits") as current:  # no reporting turned on: silent
    ...     for split in ("train", "val", "test"):
    ...         current.advance(detail=split)
    >>> current.done, current.detail
    (3, 'test')
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, TypeVar

__all__ = ["LOG_EVERY_S", "Reporter", "Stage", "format_duration", "reporting", "stage", "track"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

LOG_EVERY_S = 10.0
"""Off a terminal, the least time between two item lines of one stage (a stage of fast items logs one line)."""


@dataclass(frozen=True)
class Reporter:
    """How stages are reported while :func:`reporting` is on.

    Attributes:
        command: the prefix of every line and bar, e.g. ``audit``.
        stream: where the live bars are drawn.
        is_terminal: live bars (True) or one log line per stage (False).
        log_every: off a terminal, the least seconds between two item lines of one stage.
    """

    command: str
    stream: IO[str]
    is_terminal: bool
    log_every: float = LOG_EVERY_S


_REPORTER: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("mmfuse_progress", default=None)


@contextlib.contextmanager
def reporting(
    command: str,
    *,
    stream: IO[str] | None = None,
    force_terminal: bool | None = None,
    log_every: float = LOG_EVERY_S,
) -> Iterator[Reporter]:
    """Report the stages that run inside this block (nothing is reported outside one).

    Off a terminal the lines go through :mod:`logging` (logger ``mmfuse.progress``, level INFO, which the ``mmfuse``
    command configures). On a terminal, log records of console handlers are written above the bars instead of
    through them.

    Args:
        command: prefix of every line and bar (the tool command's name).
        stream: where the bars are drawn; None = ``sys.stderr`` at the time of the call.
        force_terminal: draw bars (True) or log lines (False) whatever the stream is; None = bars exactly when
            ``stream`` is a terminal.
        log_every: off a terminal, the least seconds between two item lines of one stage.

    Returns:
        A context manager giving the :class:`Reporter` in force.
    """
    if log_every < 0:
        raise ValueError(f"log_every={log_every}: must be >= 0 seconds")
    out = sys.stderr if stream is None else stream
    is_terminal = _is_terminal(out) if force_terminal is None else force_terminal
    reporter = Reporter(command, out, is_terminal, log_every)
    token = _REPORTER.set(reporter)
    try:
        with _logs_above_bars() if is_terminal else contextlib.nullcontext():
            yield reporter
    finally:
        _REPORTER.reset(token)


class Stage:
    """One stage of work: counts its items as they finish, and reports them while :func:`reporting` is on.

    Made by :func:`stage` (or :func:`track`); not built directly.

    Attributes:
        name: what the stage does, e.g. ``duplicates``.
        total: how many items it has, or None when unknown.
        unit: what an item is (``splits``, ``examples``...), shown after the counts; "" = none.
        done: items finished so far.
        detail: the latest item's description (shown beside a bar and in item lines).
    """

    def __init__(self, name: str, total: int | None, unit: str, reporter: Reporter | None) -> None:
        self.name, self.total, self.unit = name, total, unit
        self.done = 0
        self.detail: str | None = None
        active = reporter if total != 0 else None  # nothing to do: nothing to report
        self._reporter = active
        self._start = self._last_line = time.perf_counter()
        self._bar = _bar(active, name, total, unit) if active is not None and active.is_terminal else None

    def advance(self, n: int = 1, detail: str | None = None) -> None:
        """Count ``n`` more finished items; ``detail`` describes them (e.g. the split just done)."""
        self.done += n
        if detail is not None:
            self.detail = detail
        if self._reporter is None:
            return
        if self._bar is not None:
            if detail is not None:
                self._bar.set_postfix_str(detail, refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        unfinished = self.total is None or self.done < self.total
        if unfinished and now - self._last_line >= self._reporter.log_every:
            self._last_line = now
            logger.info("%s", self.item_line(now - self._start))

    def track(self, items: Iterable[T], detail: Callable[[T], str] | None = None) -> Iterator[T]:
        """Yield ``items``, counting one as done when the next is asked for (or the loop ends).

        Args:
            items: the items of (a part of) this stage.
            detail: ``item -> description`` for the bar and item lines; None = none.
        """
        for item in items:
            yield item
            self.advance(detail=None if detail is None else detail(item))

    def counts(self) -> str:
        """``3/6 splits``, ``3 splits`` without a total, or "" when nothing was counted.

        Example:
            >>> s = Stage("duplicates", 6, "splits", None)
            >>> s.advance(3)
            >>> s.counts()
            '3/6 splits'
        """
        if self.total is None and self.done == 0:
            return ""
        count = str(self.done) if self.total is None else f"{self.done}/{self.total}"
        return f"{count} {self.unit}" if self.unit else count

    def end_line(self, seconds: float) -> str:
        """The line logged when the stage ends, e.g. ``audit: duplicates 3/3 splits done in 4.1 s``."""
        return " ".join(p for p in (self._label(), self.counts(), f"done in {format_duration(seconds)}") if p)

    def item_line(self, seconds: float) -> str:
        """A line while the stage runs, e.g. ``audit: features 128/288 examples (val), 12.0 s, ETA 15.0 s``."""
        parts = [p for p in (self._label(), self.counts()) if p]
        if self.detail:
            parts.append(f"({self.detail})")
        line = " ".join(parts) + f", {format_duration(seconds)}"
        if self.total is not None and 0 < self.done < self.total:
            line += f", ETA {format_duration(seconds / self.done * (self.total - self.done))}"
        return line

    def close(self, failed: bool = False) -> None:
        """End the stage: the bar stays with its final counts (a failed stage's bar is removed), or, off a
        terminal, its end line is logged (none for a failed stage: the error says what happened)."""
        if self._reporter is None:
            return
        if self._bar is not None:
            if failed:
                self._bar.leave = False
            self._bar.close()
        elif not failed:
            logger.info("%s", self.end_line(time.perf_counter() - self._start))

    def _label(self) -> str:
        return f"{self._reporter.command}: {self.name}" if self._reporter is not None else self.name


@contextlib.contextmanager
def stage(name: str, total: int | None = None, unit: str = "") -> Iterator[Stage]:
    """A stage of work that reports its progress while :func:`reporting` is on (silent otherwise).

    Args:
        name: what the stage does, e.g. ``duplicates``.
        total: how many items it has; None = unknown (no ETA).
        unit: what an item is, e.g. ``splits``; "" = none.

    Returns:
        A context manager giving the :class:`Stage`; call its ``advance`` as items finish. The stage ends with the
        block; when the block raises, no end line is logged.
    """
    current = Stage(name, total, unit, _REPORTER.get())
    try:
        yield current
    except BaseException:
        current.close(failed=True)
        raise
    current.close()


def track(
    items: Iterable[T],
    name: str,
    total: int | None = None,
    unit: str = "",
    detail: Callable[[T], str] | None = None,
) -> Iterator[T]:
    """Yield ``items`` as one :func:`stage`, each item counted as done when the next is asked for (a loop left
    early ends the stage like a failed one: no end line).

    Args:
        items: the stage's items.
        name: what the stage does.
        total: how many items; None = ``len(items)`` when it has one.
        unit: what an item is.
        detail: ``item -> description`` for the bar and item lines; None = none.

    Example:
        >>> [split.upper() for split in track(["train", "val"], "balance", unit="splits")]
        ['TRAIN', 'VAL']
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with stage(name, total, unit) as current:
        yield from current.track(items, detail)


def format_duration(seconds: float) -> str:
    """Seconds for a reader: tenths below a minute, then minutes and seconds, then hours and minutes.

    Example:
        >>> format_duration(4.06), format_duration(125.2), format_duration(3725)
        ('4.1 s', '2 min 05 s', '1 h 02 min')
    """
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _columns(stream: IO[str]) -> int:
    """The width of the terminal behind ``stream``; 0 when unknown (not a terminal, or one that reports no size)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # no file descriptor (io.UnsupportedOperation is an OSError)
        return 0


def _bar(reporter: Reporter, name: str, total: int | None, unit: str) -> Any:
    """A tqdm bar on the reporter's stream, as wide as the terminal (80 x 20 when it reports no size, where tqdm
    would draw nothing); a bar inside another one's stage is drawn below it and removed when done (tqdm's
    ``leave=None``)."""
    from tqdm import tqdm

    sized = _columns(reporter.stream) > 0
    return tqdm(
        total=total,
        desc=f"{reporter.command}: {name}",
        unit=f" {unit}" if unit else "it",
        file=reporter.stream,
        leave=None,
        ncols=None if sized else 80,
        nrows=None if sized else 20,
        dynamic_ncols=sized,
        mininterval=0.2,
    )


@contextlib.contextmanager
def _logs_above_bars() -> Iterator[None]:
    """Console log records written with ``tqdm.write`` (above the bars) while the block runs."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
