"""The hand-crafted LDA branch a recogniser can carry (`model.fuse_lda`): late fusion at test time.

Fisher's discriminant of the training-free floor's per-sequence features
(`evaluation.handcrafted`: posture, limb proportions, motion; `corpus_features`), fitted on the
training identities when the model is exported. Its buffers (feature mean and std, projection)
live in the model's state, so they are saved, fingerprinted and strictly loaded with the network's
weights. It plays no part in training; `evaluation.evaluate.embed_corpus` concatenates its
embedding of each whole sequence with the network's, both scaled to unit length
(`fuse_embeddings`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import BPMTError
from ..evaluation.handcrafted import FEATURE_DIM, feature_statistics, fit_lda


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
    def fit(self, features: np.ndarray, labels: Sequence[str], shrinkage: float = 0.3) -> None:
        """Fit on the training sequences' features `(N, FEATURE_DIM)` and their identity labels."""
        classes = sorted(set(labels))
        if len(classes) < 2 or min(len(classes) - 1, FEATURE_DIM) != self.dims:
            raise BPMTError(f"the LDA branch has {self.dims} dimensions, which does not fit a training set of "
                            f"{len(classes)} identities (model.fuse_lda needs at least two)")
        mean, std = feature_statistics(features)
        projection = fit_lda((features - mean) / std, np.asarray(labels), shrinkage=shrinkage, dims=self.dims)
        for name, value in (("mean", mean), ("std", std), ("projection", projection)):
            getattr(self, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
        self.fitted.fill_(1.0)

    def embed(self, features: np.ndarray) -> np.ndarray:
        """`(N, dims)` LDA embeddings of whole sequences' features `(N, FEATURE_DIM)`."""
        if not self.is_fitted:
            raise BPMTError("this model's LDA branch (model.fuse_lda) was never fitted; "
                            "it is fitted when training exports the model")
        mean, std, projection = (getattr(self, n).detach().cpu().double().numpy()
                                 for n in ("mean", "std", "projection"))
        return (np.asarray(features, dtype=np.float64) - mean) / std @ projection
