"""A labelled ensemble: the network fused with Fisher's LDA of hand-crafted features (`ensemble.lda`).

`Ensemble(network, lda)` is what `bpmt train` exports when the config asks for it, and what
`engine.export.load_recognizer` returns then; without it the network is exported alone. It is late
fusion, not one network: the network embeds chunks of a sequence (`evaluation.embed`), the LDA
member embeds the whole sequence's hand-crafted statistics (`models.handcrafted`: posture, limb
proportions, motion), and `Ensemble.forward` scales each to unit length and concatenates them
(`handcrafted.fuse_embeddings`: 1:1 weights, so no weight is tuned on any test fold).

The LDA member has no parameters and is never trained by gradient: it is fitted on the training
identities when the model is exported (`fit`), and its buffers (feature mean and std, projection)
live in the exported weights, fingerprinted and strictly loaded like every tensor.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import BPMTError
from .handcrafted import FEATURE_DIM, feature_statistics, fit_lda, fuse_embeddings


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
            raise BPMTError(f"the LDA member has {self.dims} dimensions, which does not fit a training set of "
                            f"{len(classes)} identities (ensemble.lda needs at least two)")
        mean, std = feature_statistics(features)
        projection = fit_lda((features - mean) / std, np.asarray(labels), shrinkage=shrinkage, dims=self.dims)
        for name, value in (("mean", mean), ("std", std), ("projection", projection)):
            getattr(self, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
        self.fitted.fill_(1.0)

    def forward(self, features: np.ndarray) -> np.ndarray:
        """`(N, dims)` LDA embeddings of whole sequences' features `(N, FEATURE_DIM)`."""
        if not self.is_fitted:
            raise BPMTError("this model's LDA member (ensemble.lda) was never fitted; "
                            "it is fitted when training exports the model")
        mean, std, projection = (getattr(self, n).detach().cpu().double().numpy()
                                 for n in ("mean", "std", "projection"))
        return (np.asarray(features, dtype=np.float64) - mean) / std @ projection


class Ensemble(nn.Module):
    """The network and the LDA member, fused 1:1 by unit-length concatenation."""

    def __init__(self, network: nn.Module, lda: HandcraftedLDA):
        super().__init__()
        self.network, self.lda = network, lda

    def forward(self, network_embeddings: np.ndarray, handcrafted: np.ndarray) -> np.ndarray:
        """The network's sequence embeddings `(N, E)` and the sequences' hand-crafted features
        `(N, FEATURE_DIM)` -> the ensemble's embeddings `(N, E + lda.dims)` float32."""
        return fuse_embeddings(network_embeddings, self.lda(handcrafted))


def build_model(network: nn.Module, use_lda: bool, num_classes: int) -> nn.Module:
    """What a config exports: the network alone, or `Ensemble(network, HandcraftedLDA)`."""
    return Ensemble(network, HandcraftedLDA(num_classes)) if use_lda else network


def network_of(model: nn.Module) -> nn.Module:
    """The network inside an exported model (the model itself when it is not an ensemble)."""
    return model.network if isinstance(model, Ensemble) else model
