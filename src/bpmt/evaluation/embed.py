"""Embed whole sequences with a trained recogniser (chunked when long, optional flip TTA)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data.batches import PoseBatcher, collate


@torch.no_grad()
def embed_sequences(model: nn.Module, batcher: PoseBatcher, *, batch_size: int = 64, flip: bool = True,
                    device: str | torch.device = "cpu",
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
    """-> `(N, E)` float32 embeddings, one per sequence of `batcher.corpus`.

    A sequence longer than `test_max_len` is embedded in chunks; chunk embeddings (and the
    mirrored sequence's, with `flip`) are averaged weighted by their frame counts.
    """
    was_training = model.training
    if was_training:                # eval() walks every submodule: ~24 ms per call, so only when needed
        model.eval()
    # Which chunks to embed, not their frames: frames are read per batch, so memory stays bounded.
    items: list[tuple[int, tuple[int, int], bool]] = []     # (sequence, (start, stop), mirrored)
    for index in range(len(batcher.corpus)):
        for mirrored in ((False, True) if flip else (False,)):
            items.extend((index, span, mirrored) for span in batcher.test_spans(index))
    items.sort(key=lambda item: item[1][1] - item[1][0])   # similar lengths together: less padding
    sums: np.ndarray | None = None
    weights = np.zeros(len(batcher.corpus))
    for start in range(0, len(items), batch_size):
        group = items[start:start + batch_size]
        chunks = [batcher.test_chunk(index, span, mirrored) for index, span, mirrored in group]
        batch = collate(chunks, batcher.cfg.channels, batcher.multiple)
        out = model(batch.features.to(device), batch.padding_mask.to(device)).float().cpu().numpy()
        if sums is None:
            sums = np.zeros((len(batcher.corpus), out.shape[1]))
        for (index, _, _), chunk, vector in zip(group, chunks, out):
            sums[index] += len(chunk) * vector
            weights[index] += len(chunk)
        if progress:
            progress(len(group))
    if was_training:
        model.train()
    return (sums / weights[:, None]).astype(np.float32)
