"""The hand-crafted LDA branch a recogniser can carry (`model.fuse_lda`): late fusion at test time.

Fisher's discriminant of the training-free floor's per-sequence features
(`evaluation.handcrafted`: posture, limb proportions, motion), fitted on the training identities
when the model is exported. Its buffers (feature mean and std, projection) live in the model's
state, so they are saved, fingerprinted and strictly loaded with the network's weights. It plays
no part in training; `evaluation.evaluate.embed_corpus` concatenates its embedding of each whole
sequence with the network's, both scaled to unit length (`fuse_embeddings`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import BPMTError
from ..evaluation.handcrafted import FEATURE_DIM, fit_lda, handcrafted_features


class HandcraftedLDA(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        # The rank of the between-identity scatter, at most the feature count.
        self.dims = max(1, min(num_classes - 1, FEATURE_DIM))
        self.register_buffer("mean", torch.zeros(FEATURE_DIM, dtype=torch.float64))
        self.register_buffer("std", torch.ones(FEATURE_DIM, dtype=torch.float64))
        self.register_buffer("projection", torch.zeros(FEATURE_DIM, self.dims, dtype=torch.float64))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.float64))   # 1.0 once fitted

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted.item() == 1.0)

    @torch.no_grad()
    def fit(self, sequences: Sequence[np.ndarray], labels: Sequence[str], shrinkage: float = 0.3) -> None:
        """Fit on the training sequences `(T, 17, 3)` and their identity labels (one per class)."""
        classes = sorted(set(labels))
        if len(classes) < 2 or min(len(classes) - 1, FEATURE_DIM) != self.dims:
            raise BPMTError(f"the LDA branch has {self.dims} dimensions, which does not fit a training set of "
                            f"{len(classes)} identities (model.fuse_lda needs at least two)")
        features = np.stack([handcrafted_features(s) for s in sequences])
        mean = features.mean(axis=0)
        std = features.std(axis=0)
        std = np.where(std > 1e-6, std, 1.0)                      # as `standardize`
        projection = fit_lda((features - mean) / std, np.asarray(labels), shrinkage=shrinkage, dims=self.dims)
        for name, value in (("mean", mean), ("std", std), ("projection", projection)):
            getattr(self, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
        self.fitted.fill_(1.0)

    def features(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """`(N, dims)` LDA embeddings of whole sequences `(T, 17, 3)`."""
        if not self.is_fitted:
            raise BPMTError("this model's LDA branch (model.fuse_lda) was never fitted; "
                            "it is fitted when training exports the model")
        features = np.stack([handcrafted_features(s) for s in sequences])
        mean, std, projection = (getattr(self, n).detach().cpu().double().numpy()
                                 for n in ("mean", "std", "projection"))
        return (features - mean) / std @ projection
