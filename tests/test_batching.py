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

    threads = [threading.Thread(target=call, args=(0, first))]
    threads[0].start()
    assert embedder.started.wait(10)
    for index, items in enumerate(later, 1):
        thread = threading.Thread(target=call, args=(index, items))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10               # queue them in this order
        while len(batcher._waiting) < index and time.monotonic() < deadline:
            time.sleep(0.001)
    embedder.release.set()
    for thread in threads:
        thread.join(10)
    return results


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
    threads = [threading.Thread(target=batcher.embed, args=([i],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert peak[0] == 2


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_sequences"):
        RequestBatcher(lambda items: None, max_sequences=0)


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
