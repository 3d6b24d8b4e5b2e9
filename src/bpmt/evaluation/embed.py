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
    model.eval()
    items: list[tuple[int, np.ndarray]] = []
    for index in range(len(batcher.corpus)):
        for mirrored in ((False, True) if flip else (False,)):
            items.extend((index, chunk) for chunk in batcher.test_chunks(index, mirrored))
    items.sort(key=lambda item: len(item[1]))              # similar lengths together: less padding
    sums: np.ndarray | None = None
    weights = np.zeros(len(batcher.corpus))
    for start in range(0, len(items), batch_size):
        group = items[start:start + batch_size]
        batch = collate([chunk for _, chunk in group], batcher.cfg.channels, batcher.multiple)
        out = model(batch.features.to(device), batch.padding_mask.to(device)).float().cpu().numpy()
        if sums is None:
            sums = np.zeros((len(batcher.corpus), out.shape[1]))
        for (index, chunk), vector in zip(group, out):
            sums[index] += len(chunk) * vector
            weights[index] += len(chunk)
        if progress:
            progress(len(group))
    model.train(was_training)
    return (sums / weights[:, None]).astype(np.float32)
