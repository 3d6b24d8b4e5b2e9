"""Embed whole sequences with a trained recogniser (chunked when long, optional flip TTA).

The network is the torch module or its ONNX export in ONNX Runtime (`engine.onnx_model`): both
get the same batches, so the backends differ only in the network's own arithmetic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn

from ..data.batches import Batch, PoseBatcher, collate
from ..skeleton import flip_keypoints

if TYPE_CHECKING:
    from ..engine.onnx_model import OnnxNetwork


@torch.no_grad()
def embed_sequences(model: nn.Module | OnnxNetwork, batcher: PoseBatcher, *, batch_size: int = 64,
                    flip: bool = True, device: str | torch.device = "cpu",
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
    """-> `(N, E)` float32 embeddings, one per sequence of `batcher.corpus`.

    A sequence longer than `test_max_len` is embedded in chunks; chunk embeddings (and the
    mirrored sequence's, with `flip`) are averaged weighted by their frame counts. `model`: the
    torch network or an `OnnxNetwork` (then `device` is unused: ONNX Runtime runs on the CPU).
    """
    is_torch = isinstance(model, nn.Module)
    was_training = is_torch and model.training
    if was_training:                # eval() walks every submodule: ~24 ms per call, so only when needed
        model.eval()

    def forward(batch: Batch) -> np.ndarray:                                    # (B, E)
        if is_torch:
            return model(batch.features.to(device), batch.padding_mask.to(device)).float().cpu().numpy()
        return model(batch.features.numpy(), batch.padding_mask.numpy())

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
        chunks = _read_chunks(batcher, group)
        out = forward(collate(chunks, batcher.cfg.channels, batcher.multiple))
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


def _read_chunks(batcher: PoseBatcher, group: list[tuple[int, tuple[int, int], bool]]) -> list[np.ndarray]:
    """The normalised frames of each `(sequence, span, mirrored)` item; a chunk and its mirror image
    in the same group are normalised once (equal to `batcher.test_chunk` of each)."""
    plain: dict[tuple[int, tuple[int, int]], np.ndarray] = {}
    for index, span, _ in group:
        key = (index, span)
        if key not in plain:
            plain[key] = batcher.test_chunk(index, span)
    return [flip_keypoints(plain[(index, span)]) if mirrored else plain[(index, span)]
            for index, span, mirrored in group]
