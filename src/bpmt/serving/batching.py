"""Requests that wait together are embedded together (`bpmt serve`'s dynamic batching).

One embedding call over the chunks of several requests costs less than one call per request: at
one 100-frame request (4 chunks with flip TTA) much of the network's time is per-kernel overhead,
which a larger batch shares (docs/benchmarks.md has the measured gain per backend).
`RequestBatcher.embed` is called from the server's worker threads; a caller whose request is still
queued and finds a free slot (at most `workers` calls run at once) takes every request waiting at
that moment, up to `max_sequences` sequences, and embeds them in one `embed_many` call. Nothing
waits for company: a lone request runs at once, so a single client sees no added latency; when all
slots are busy, the requests that queue meanwhile share the next call.

Each request's embeddings are the ones it would get alone (padding is masked; equal up to float
rounding, tested). If a shared pass fails, its requests are embedded one by one, so that each gets
its own result or its own error.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

import numpy as np


class _Request:
    __slots__ = ("items", "result", "error", "done")

    def __init__(self, items: list):
        self.items = items
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class RequestBatcher:
    """Embed lists of sequences, several callers' lists in one `embed_many` pass.

    `embed_many(items) -> (len(items), E)`; `max_sequences` bounds a shared pass (a single
    request longer than that still runs, alone); `workers`: passes running at the same time.
    """

    def __init__(self, embed_many: Callable[[list], np.ndarray], max_sequences: int = 16, workers: int = 1):
        if max_sequences < 1 or workers < 1:
            raise ValueError(f"max_sequences and workers must be >= 1, got {max_sequences} and {workers}")
        self.embed_many, self.max_sequences, self.workers = embed_many, max_sequences, workers
        self._waiting: list[_Request] = []
        self._running = 0
        self._changed = threading.Condition()

    def embed(self, items: Sequence) -> np.ndarray:
        """`items` (sequences) -> `(len(items), E)` embeddings; blocks until they are done."""
        request = _Request(list(items))
        with self._changed:
            self._waiting.append(request)
            while True:
                if request.done:
                    break
                # Lead a pass only while one's own request still waits: a caller whose request is in a
                # running pass must not take on another pass before it can answer.
                if self._running < self.workers and request in self._waiting:
                    batch = self._take()
                    self._running += 1
                    self._changed.release()
                    try:
                        self._run(batch)
                    finally:
                        self._changed.acquire()
                        self._running -= 1
                        self._changed.notify_all()
                    continue
                self._changed.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def _take(self) -> list[_Request]:
        """The oldest waiting requests, as many as fit `max_sequences` (at least one)."""
        batch, total = [], 0
        while self._waiting and (not batch or total + len(self._waiting[0].items) <= self.max_sequences):
            request = self._waiting.pop(0)
            batch.append(request)
            total += len(request.items)
        return batch

    def _run(self, batch: list[_Request]) -> None:
        try:
            if len(batch) == 1:
                self._embed_each(batch)
                return
            try:
                out = self.embed_many([item for request in batch for item in request.items])
            except Exception:            # one request's fault must not fail the others: run them alone
                out = None
            if out is None:              # (outside the except: no request's error carries another's as context)
                self._embed_each(batch)
                return
            start = 0
            for request in batch:
                request.result = out[start:start + len(request.items)]
                start += len(request.items)
        finally:
            with self._changed:
                for request in batch:
                    if request.result is None and request.error is None:    # the pass was aborted
                        request.error = RuntimeError("the shared embedding pass was interrupted")
                    request.done = True

    def _embed_each(self, batch: list[_Request]) -> None:
        for request in batch:
            try:
                request.result = self.embed_many(request.items)
            except Exception as exc:               # handed to the request's own caller, re-raised there
                request.error = exc
