"""Progress of a long job: a live tqdm bar on a terminal, a few plain lines anywhere else.

A tqdm bar redraws itself with carriage returns; written to a file or a pipe (a job's log, CI)
every redraw stays, hundreds of kilobytes per training. So when the stream is not a terminal,
`progress` returns a `ProgressLog` instead: one line every `every` units (default: about
`LINES_PER_JOB` lines per job) and one at the end, e.g.

    phase1: 40/300 steps, loss 0.31, 3.1 step/s

Both have `update(n)`, `set_postfix(**values)`, `close()` and work as context managers.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Protocol

LINES_PER_JOB = 20


class Progress(Protocol):
    def update(self, n: int = 1) -> object: ...

    def set_postfix(self, **values: object) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Progress": ...

    def __exit__(self, *exc: object) -> None: ...


def progress(total: int, *, desc: str, unit: str = "it", initial: int = 0, every: int | None = None,
             stream: IO[str] | None = None, leave: bool = True, disable: bool = False) -> Progress:
    """A progress display of `total` units (`initial` already done) on `stream` (default: stderr):
    a tqdm bar when `stream` is a terminal, else a `ProgressLog` writing a line every `every`
    units. `leave=False` clears a terminal bar when it closes; `disable` shows nothing."""
    stream = sys.stderr if stream is None else stream
    if disable:
        return ProgressLog(total, desc=desc, unit=unit, initial=initial, every=every, stream=None)
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, leave=leave,
                    dynamic_ncols=True)
    return ProgressLog(total, desc=desc, unit=unit, initial=initial, every=every, stream=stream)


def is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):          # no isatty, or a closed stream
        return False


def default_every(total: int) -> int:
    """Units between two lines: about `LINES_PER_JOB` lines for the whole job, at least 1."""
    return max(1, math.ceil(total / LINES_PER_JOB))


class ProgressLog:
    """Plain progress lines for logs: `desc: n/total units[, key value ...], rate unit/s`.

    A line whenever another `every` units are done (not at the total: `close` writes that one),
    and one at `close`. `stream=None` writes nothing."""

    def __init__(self, total: int, *, desc: str, unit: str = "it", initial: int = 0, every: int | None = None,
                 stream: IO[str] | None = None):
        if every is not None and every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.n = self.initial = initial
        self.every = every or default_every(total)
        self.postfix: dict[str, object] = {}
        self._next = (initial // self.every + 1) * self.every
        self._start = time.perf_counter()
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next:
            self._next = (self.n // self.every + 1) * self.every
            if self.n < self.total:
                self._write()

    def set_postfix(self, **values: object) -> None:
        self.postfix = values

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._write()

    def line(self) -> str:
        """The current progress line (no newline)."""
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}s"]
        parts += [f"{key} {_format(value)}" for key, value in self.postfix.items()]
        elapsed = time.perf_counter() - self._start
        if self.n > self.initial and elapsed > 0:
            rate = (self.n - self.initial) / elapsed
            parts.append(f"{rate:.2g} {self.unit}/s" if rate < 10 else f"{rate:,.0f} {self.unit}/s")
        return ", ".join(parts)

    def _write(self) -> None:
        if self.stream is not None:
            print(self.line(), file=self.stream, flush=True)

    def __enter__(self) -> "ProgressLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _format(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
