"""Identification: embed query sequences, search the gallery, rank identities, decide.

A query's identities are ranked by their best (smallest) distance over their enrolled entries; a
match names the entry that gave that distance. The decision is the best identity, or unknown
(`identity is None`) when its distance is above the threshold.

Threshold: the one asked for; by default (`threshold="gallery"`) the one stored in the gallery by
`bpmt calibrate --save-threshold`, and without one the best identity is always returned.

Distances are the model's metric (`eval.metric`): Euclidean, or `1 - cos` for cosine models.
On an approximate index (large galleries) the ranking is approximate too.

`Identifier` holds a loaded model and gallery for repeated requests (the CLI's `identify`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from ..errors import DataError
from . import search
from .gallery import Gallery, GalleryError, check_model, load_gallery

Threshold = float | None | Literal["gallery"]
MIN_CANDIDATES = 32


@dataclass(frozen=True)
class Match:
    identity: str
    distance: float
    sequence: str       # the enrolled sequence nearest to the query among the identity's entries


@dataclass(frozen=True)
class Identification:
    query: str
    matches: tuple[Match, ...]      # best first, at most top-k identities
    threshold: float | None

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    @property
    def identity(self) -> str | None:
        """The decided identity; None = unknown (best distance above the threshold)."""
        best = self.best
        if best is None or (self.threshold is not None and best.distance > self.threshold):
            return None
        return best.identity

    def to_dict(self) -> dict:
        best = self.best
        return {"query": self.query, "identity": self.identity, "unknown": self.identity is None,
                "distance": best.distance if best else None, "threshold": self.threshold,
                "matches": [{"rank": rank, "identity": m.identity, "distance": m.distance, "sequence": m.sequence}
                            for rank, m in enumerate(self.matches, 1)]}


def rank_identities(distances: np.ndarray, ids: np.ndarray, identities: Sequence[str],
                    sequences: Sequence[str], top_k: int) -> tuple[Match, ...]:
    """Best-per-identity ranking of one query's nearest entries `distances (K,)`, `ids (K,)` (-1 =
    none): the `top_k` identities by their smallest distance, ties by identity name."""
    best: dict[str, Match] = {}
    for distance, row in zip(distances, ids):
        if row < 0:
            continue
        identity = identities[row]
        if identity not in best or distance < best[identity].distance:
            best[identity] = Match(identity, float(distance), sequences[row])
    return tuple(sorted(best.values(), key=lambda m: (m.distance, m.identity))[:top_k])


def resolve_threshold(threshold: Threshold, gallery: Gallery) -> float | None:
    return gallery.manifest.threshold if threshold == "gallery" else threshold


def identify_embeddings(gallery: Gallery, embeddings: np.ndarray, names: Sequence[str], top_k: int = 5,
                        threshold: Threshold = "gallery", nprobe: int = search.DEFAULT_NPROBE,
                        ef_search: int = search.DEFAULT_EF_SEARCH) -> list[Identification]:
    """Identify each of `embeddings (Q, E)` (model embeddings of queries `names`) in `gallery`."""
    manifest = gallery.manifest
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if len(gallery) == 0:
        raise GalleryError(f"{manifest.root}: gallery is empty (enrol sequences first)")
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[1] != manifest.dim or len(embeddings) != len(names):
        raise GalleryError(f"{manifest.root}: queries {embeddings.shape} for {len(names)} names do not fit "
                           f"the gallery's {manifest.dim}-dimensional embeddings")
    vectors = search.prepare_vectors(embeddings, manifest.metric)                 # (Q, E)
    identities = [entry.identity for entry in manifest.entries]
    sequences = [entry.sequence for entry in manifest.entries]
    wanted = min(top_k, len(set(identities)))
    limit = resolve_threshold(threshold, gallery)

    # Nearest entries, widened until each query's list holds `wanted` distinct identities.
    results: list[tuple[Match, ...] | None] = [None] * len(vectors)
    pending = np.arange(len(vectors))
    k = min(len(gallery), max(MIN_CANDIDATES, 4 * top_k))
    while len(pending):
        l2, ids = search.search(gallery.index, vectors[pending], k, nprobe=nprobe, ef_search=ef_search)
        distances = search.metric_distance(l2, manifest.metric)                   # (P, k)
        still = []
        for row, query in enumerate(pending):
            matches = rank_identities(distances[row], ids[row], identities, sequences, top_k)
            exhausted = k >= len(gallery) or bool((ids[row] < 0).any())  # widening cannot find more
            if len(matches) >= wanted or exhausted:
                results[query] = matches
            else:
                still.append(query)
        pending = np.array(still, dtype=np.int64)
        k = min(len(gallery), 4 * k)
    return [Identification(str(name), matches, limit) for name, matches in zip(names, results)]


class Identifier:
    """A recogniser and a gallery, loaded once."""

    def __init__(self, model: str | os.PathLike, gallery_dir: str | os.PathLike,
                 nprobe: int = search.DEFAULT_NPROBE, ef_search: int = search.DEFAULT_EF_SEARCH,
                 backend: str = "auto", threads: int | None = None):
        """`backend`, `threads` (ONNX Runtime's; None = the config's `engine.threads`): what runs the
        network, see `engine.onnx_model.inference_network`."""
        from ..engine.export import load_recognizer
        from ..engine.onnx_model import inference_network

        self.model, self.config, self.meta, self.fingerprint = load_recognizer(model)
        self.network = inference_network(model, self.model, self.config, self.fingerprint, backend,
                                          self.config.engine.threads if threads is None else threads)
        self.gallery_dir = Path(gallery_dir)
        self.nprobe, self.ef_search = nprobe, ef_search
        self.gallery = self._open()

    def _open(self) -> Gallery:
        gallery = load_gallery(self.gallery_dir)
        check_model(gallery.manifest, self.fingerprint, self.config.eval.metric)
        return gallery

    def embed(self, corpus, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """`(N, E)` test embeddings of a `PoseCorpus`."""
        from ..evaluation.evaluate import embed_corpus

        return embed_corpus(self.model, self.config, corpus, progress=progress, network=self.network)

    def identify_corpus(self, corpus, top_k: int = 5, threshold: Threshold = "gallery",
                        progress: Callable[[int], None] | None = None) -> list[Identification]:
        """One identification per sequence of `corpus`."""
        embeddings = self.embed(corpus, progress)
        return identify_embeddings(self.gallery, embeddings, corpus.names, top_k, threshold, self.nprobe,
                                   self.ef_search)

    def identify_sequences(self, sequences: Sequence, top_k: int = 5, threshold: Threshold = "gallery",
                           source: str = "") -> list[Identification]:
        """One identification per `bpmt.data.sequence.Sequence`."""
        from ..data.corpus import PoseCorpus

        return self.identify_corpus(PoseCorpus.from_sequences(list(sequences), source=source), top_k, threshold)

    def identify_video(self, video: str | os.PathLike, top_k: int = 5, threshold: Threshold = "gallery",
                       progress: Callable[[int], None] | None = None) -> list[Identification]:
        """Extract every tracked walker of `video` and identify each one."""
        from .video import extract_sequences

        sequences = extract_sequences(str(video), progress=progress)
        if not sequences:
            raise DataError(f"{video}: no walking person found in the video")
        return self.identify_sequences(sequences, top_k, threshold, source=str(video))
