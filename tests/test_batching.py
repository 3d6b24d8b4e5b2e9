"""`bpmt serve`'s dynamic batching: requests that wait for a pass share the next one."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bpmt.serving.batching import RequestBatcher


class SlowEmbedder:
    """`embed_many` stand-in: item `i` -> row `[i, i]`; records each pass; the first pass waits
    until released, so that other requests queue behind it."""

    def __init__(self, fail_on: int | None = None):
        self.passes: list[list[int]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list) -> np.ndarray:
        self.passes.append(list(items))
        if len(self.passes) == 1:
            self.started.set()
            assert self.release.wait(10)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot embed item {self.fail_on}")
        return np.array([[i, i] for i in items], dtype=np.float32)


def run_requests(batcher: RequestBatcher, embedder: SlowEmbedder, first: list[int], later: list[list[int]]):
    """Submit `first`, then (while its pass runs) each of `later` in order; -> results or errors per request."""
    results: dict[int, object] = {}

    def call(index: int, items: list[int]):
        try:
            results[index] = batcher.embed(items)
        except Exception as exc:          # noqa: BLE001 - the test inspects it
            results[index] = exc

    threads = [threading.Thread(target=call, args=(0, first), daemon=True)]
    threads[0].start()
    assert embedder.started.wait(10)
    for index, items in enumerate(later, 1):
        thread = threading.Thread(target=call, args=(index, items), daemon=True)
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10               # queue them in this order
        while len(batcher._waiting) < index and time.monotonic() < deadline:
            time.sleep(0.001)
    embedder.release.set()
    finish(threads)
    return results


def finish(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive(), "a caller never returned"


def test_requests_waiting_behind_a_pass_share_the_next_one():
    embedder = SlowEmbedder()
    batcher = RequestBatcher(embedder, max_sequences=16, workers=1)
    results = run_requests(batcher, embedder, [1], [[2], [3, 4], [5]])
    assert embedder.passes == [[1], [2, 3, 4, 5]]
    for index, items in enumerate([[1], [2], [3, 4], [5]]):
        np.testing.assert_array_equal(results[index], np.array([[i, i] for i in items], dtype=np.float32))


def test_a_shared_pass_holds_at_most_max_sequences_but_a_long_request_still_runs():
    embedder = SlowEmbedder()
    batcher = RequestBatcher(embedder, max_sequences=3, workers=1)
    results = run_requests(batcher, embedder, [1], [[2], [3, 4], [5], [6, 7, 8, 9]])
    assert embedder.passes == [[1], [2, 3, 4], [5], [6, 7, 8, 9]]
    assert results[4].shape == (4, 2) and results[4][:, 0].tolist() == [6, 7, 8, 9]


def test_a_lone_request_runs_at_once():
    batcher = RequestBatcher(lambda items: np.ones((len(items), 3)), max_sequences=16)
    start = time.perf_counter()
    assert batcher.embed(["a", "b"]).shape == (2, 3)
    assert time.perf_counter() - start < 1.0


def test_one_bad_request_fails_alone():
    embedder = SlowEmbedder(fail_on=3)
    batcher = RequestBatcher(embedder, max_sequences=16, workers=1)
    results = run_requests(batcher, embedder, [1], [[2], [3], [4]])
    assert embedder.passes[:2] == [[1], [2, 3, 4]]                      # shared pass failed ...
    assert embedder.passes[2:] == [[2], [3], [4]]                       # ... so each ran alone
    assert isinstance(results[2], ValueError) and "item 3" in str(results[2])
    assert results[1].tolist() == [[2, 2]] and results[3].tolist() == [[4, 4]]


def test_workers_bound_the_passes_running_at_once():
    running, peak, lock = [0], [0], threading.Lock()

    def embed(items):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return np.zeros((len(items), 1))

    batcher = RequestBatcher(embed, max_sequences=1, workers=2)
    threads = [threading.Thread(target=batcher.embed, args=([i],), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    finish(threads)
    assert peak[0] == 2


def test_a_caller_whose_request_is_in_a_running_pass_does_not_lead_another():
    """Two workers: a caller whose request was taken into another caller's pass answers as soon
    as that pass ends, without first running a pass for later requests."""
    gates = {item: threading.Event() for item in (1, 2, 3, 5)}
    started: list[list[int]] = []
    lock = threading.Lock()

    def embed(items):
        with lock:
            started.append(list(items))
        assert gates[items[0]].wait(10)
        return np.array([[i] for i in items], dtype=np.float32)

    batcher = RequestBatcher(embed, max_sequences=16, workers=2)
    returned: dict[int, float] = {}

    def call(item):
        batcher.embed([item])
        returned[item] = time.monotonic()

    threads: dict[int, threading.Thread] = {}

    def submit(item, passes_started=None, waiting=None):
        threads[item] = threading.Thread(target=call, args=(item,), daemon=True)
        threads[item].start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not ((passes_started is None or len(started) >= passes_started)
                                                   and (waiting is None or len(batcher._waiting) >= waiting)):
            time.sleep(0.001)

    submit(1, passes_started=1)
    submit(2, passes_started=2)                  # both slots busy
    submit(3, waiting=1)
    submit(4, waiting=2)
    gates[1].set()                               # pass [1] ends; 3 and 4 share the next pass
    deadline = time.monotonic() + 10
    while len(started) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert started[2] == [3, 4]
    submit(5, waiting=1)
    gates[2].set()                               # pass [2] ends: only 5's own caller may lead pass [5]
    while len(started) < 4 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert started[3] == [5]
    gates[3].set()                               # pass [3, 4] ends while pass [5] still runs
    for item in (3, 4):
        threads[item].join(10)
        assert not threads[item].is_alive(), f"request {item} waited for a pass that was not its own"
    assert 5 not in returned
    gates[5].set()
    finish(list(threads.values()))


def test_an_interrupted_shared_pass_fails_every_request_in_it():
    class Interrupted(BaseException):
        pass

    embedder = SlowEmbedder()
    original = embedder.__call__

    def embed(items):
        if len(items) > 1:
            raise Interrupted()
        return original(items)

    batcher = RequestBatcher(embed, max_sequences=16, workers=1)
    embedder_calls = embedder
    results: dict[int, object] = {}

    def call(index, items):
        try:
            results[index] = batcher.embed(items)
        except BaseException as exc:      # noqa: BLE001 - the test inspects it
            results[index] = exc

    first = threading.Thread(target=call, args=(0, [1]), daemon=True)
    first.start()
    assert embedder_calls.started.wait(10)
    later = []
    for index, item in enumerate((2, 3), 1):
        later.append(threading.Thread(target=call, args=(index, [item]), daemon=True))
        later[-1].start()
        deadline = time.monotonic() + 10
        while len(batcher._waiting) < index and time.monotonic() < deadline:
            time.sleep(0.001)
    embedder.release.set()
    finish([first, *later])
    assert results[0].tolist() == [[1, 1]]
    outcomes = [results[1], results[2]]
    assert all(isinstance(o, BaseException) for o in outcomes), outcomes      # never a silent None
    assert any(isinstance(o, Interrupted) for o in outcomes)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_sequences"):
        RequestBatcher(lambda items: None, max_sequences=0)
    with pytest.raises(ValueError, match="workers"):
        RequestBatcher(lambda items: None, workers=0)


def test_embedding_requests_together_equals_embedding_each_alone(tiny_model, serving_synth):
    """The real network: sequences of different lengths (so chunks are padded in the shared pass)."""
    from bpmt.data.source import open_data
    from bpmt.serving.http_service import Service, query_sequence

    corpus, _ = open_data(serving_synth)
    service = Service(tiny_model, serving_synth / "no-gallery", create_gallery=True, backend="torch", threads=1)
    sequences = [query_sequence(corpus.sequence(i).keypoints[:frames], f"q{i}")
                 for i, frames in zip(range(4), (37, 60, 100, 130))]
    assert len({len(s) for s in sequences}) == 4
    together = service.embed_sequences(sequences)
    alone = np.concatenate([service.embed_sequences([s]) for s in sequences])
    assert together.shape == alone.shape
    np.testing.assert_allclose(together, alone, atol=1e-5)
