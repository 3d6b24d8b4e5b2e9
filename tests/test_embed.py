"""`evaluation.embed.embed_sequences` gives exactly (bit for bit) what the straightforward loop gives:
every chunk read and normalised on its own, mirrored by the flip formula, batched in sorted order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bpmt.config import load_config
from bpmt.data.batches import PoseBatcher, collate
from bpmt.data.corpus import PoseCorpus
from bpmt.data.sequence import Sequence
from bpmt.data.transforms import random_flip
from bpmt.evaluation.embed import embed_sequences
from bpmt.skeleton import FLIP_PERMUTATION, flip_keypoints


def reference_embeddings(model, batcher: PoseBatcher, batch_size: int, flip: bool) -> np.ndarray:
    items = []
    for index in range(len(batcher.corpus)):
        for mirrored in ((False, True) if flip else (False,)):
            items.extend((index, span, mirrored) for span in batcher.test_spans(index))
    items.sort(key=lambda item: item[1][1] - item[1][0])
    sums, weights = None, np.zeros(len(batcher.corpus))
    for start in range(0, len(items), batch_size):
        group = items[start:start + batch_size]
        chunks = []
        for index, span, mirrored in group:
            chunk = batcher.normalized(index, np.arange(*span))
            if mirrored:
                chunk = chunk[:, list(FLIP_PERMUTATION)].copy()
                chunk[..., 0] *= -1
            chunks.append(chunk)
        batch = collate(chunks, batcher.cfg.channels, batcher.multiple)
        with torch.no_grad():
            out = model(batch.features, batch.padding_mask).numpy()
        if sums is None:
            sums = np.zeros((len(batcher.corpus), out.shape[1]))
        for (index, _, _), chunk, vector in zip(group, chunks, out):
            sums[index] += len(chunk) * vector
            weights[index] += len(chunk)
    return (sums / weights[:, None]).astype(np.float32)


def corpus_of(lengths: list[int], seed: int = 0) -> PoseCorpus:
    rng = np.random.default_rng(seed)
    sequences = []
    for i, T in enumerate(lengths):
        keypoints = (rng.normal(size=(T, 17, 3)) * 20 + 100).astype(np.float32)
        keypoints[..., 2] = rng.uniform(0.2, 1.0, size=(T, 17))
        sequences.append(Sequence(f"{i % 3:04d}-camid1_videoid1-seq{i}", f"{i % 3:04d}", "1", "1", np.arange(T),
                                  keypoints, np.full((T, 2), 200, np.float32)))
    return PoseCorpus.from_sequences(sequences)


@pytest.mark.parametrize("batch_size,flip", [(1, True), (5, True), (64, True), (4, False)])
def test_embed_sequences_equals_the_reference_loop(batch_size, flip):
    from bpmt.models.recognizer import build_recognizer
    from bpmt.data.channels import num_channels
    from bpmt.skeleton import get_partition

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", ["data.test_max_len=24"])
    torch.manual_seed(0)
    model = build_recognizer(config.model, get_partition(config.data.partition),
                             num_channels(config.data.channels), 4).eval()
    batcher = PoseBatcher(corpus_of([3, 8, 24, 25, 50, 61, 100]), config.data, config.model.frames_per_token,
                          label_of={})
    expected = reference_embeddings(model, batcher, batch_size, flip)
    got = embed_sequences(model, batcher, batch_size=batch_size, flip=flip)
    assert got.dtype == np.float32 and np.array_equal(got, expected)


def test_test_time_flip_is_the_certain_random_flip():
    keypoints = np.random.default_rng(1).normal(size=(7, 17, 3)).astype(np.float32)
    expected = keypoints[:, list(FLIP_PERMUTATION)].copy()
    expected[..., 0] *= -1
    assert np.array_equal(flip_keypoints(keypoints), expected) and flip_keypoints(keypoints).dtype == np.float32
    assert np.array_equal(random_flip(keypoints, np.random.default_rng(0), p=1.0), expected)
    assert np.array_equal(flip_keypoints(flip_keypoints(keypoints)), keypoints)
    assert not np.shares_memory(flip_keypoints(keypoints), keypoints)
