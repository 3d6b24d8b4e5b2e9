"""Evaluate a trained recogniser on a corpus: embed, then score by the Gait3D rules."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..config import Config
from ..data.batches import PoseBatcher
from ..data.corpus import PoseCorpus
from .embed import embed_sequences
from ..models.ensemble import Ensemble, network_of
from ..models.handcrafted import corpus_features
from .protocols import leave_one_out, official_protocol


def embed_corpus(model, config: Config, corpus: PoseCorpus, device="cpu",
                 progress: Callable[[int], None] | None = None, ensemble: bool = True,
                 network=None) -> np.ndarray:
    """`(N, E)` test embeddings of every sequence of `corpus` (config's test-time settings).

    An exported `Ensemble` (`ensemble.lda`) gives the ensemble's embeddings; `ensemble=False` or
    `eval.ensemble=false` gives its network's alone. `network`: what runs the network instead of
    `model`'s own torch network, e.g. its ONNX export (`engine.onnx_model.inference_network`);
    the LDA member is applied the same way either way.
    """
    batcher = PoseBatcher(corpus, config.data, config.model.frames_per_token, label_of={})
    network = network_of(model) if network is None else network
    embeddings = embed_sequences(network, batcher, batch_size=config.eval.batch_size,
                                 flip=config.eval.flip, device=device, progress=progress)
    if ensemble and config.eval.ensemble and isinstance(model, Ensemble):
        embeddings = model(embeddings, corpus_features(corpus))
    return embeddings


def num_test_items(config: Config, corpus: PoseCorpus) -> int:
    """How many chunks `embed_corpus` runs (for progress bars)."""
    per = [-(-int(n) // config.data.test_max_len) for n in corpus.lengths]
    return sum(per) * (2 if config.eval.flip else 1)


CMC_RANKS = tuple(range(1, 21))


def score_embeddings(embeddings: np.ndarray, names: list[str], subjects: list[str], metric: str = "euc",
                     probe_names: list[str] | None = None, protocols: tuple[str, ...] = ("loo",)) -> dict:
    """`{"official": {...}, "loo": {...}}` for the protocols asked for; each holds rank1/5/10, mAP,
    mINP, queries, and `cmc`, the identification rate (%) at ranks 1..20."""
    results = {}
    for protocol in protocols:
        if protocol == "official":
            full = official_protocol(embeddings, names, probe_names or [], metric=metric, ranks=CMC_RANKS)
        elif protocol == "loo":
            full = leave_one_out(embeddings, subjects, metric=metric, ranks=CMC_RANKS)
        else:
            raise ValueError(f"unknown protocol {protocol!r}")
        results[protocol] = {"rank1": full["rank1"], "rank5": full["rank5"], "rank10": full["rank10"],
                             "mAP": full["mAP"], "mINP": full["mINP"], "queries": full["queries"],
                             "cmc": [full[f"rank{k}"] for k in CMC_RANKS]}
    return results
