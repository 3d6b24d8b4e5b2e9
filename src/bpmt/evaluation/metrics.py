"""Retrieval metrics: distances, then CMC Rank-k, mAP and mINP, as Gait3D reports them.

The definitions are those of fast-reid's rank evaluation as used by OpenGait's `evaluate_Gait3D`:
for one query, rank the gallery by ascending distance; with the true matches at 1-based positions
`p_1 < ... < p_m`,

* CMC rank-k hit: `p_1 <= k`;
* AP  = mean over i of precision at the i-th match = `(1/m) * sum_i i / p_i`;
* INP = `m / p_m` (how much of the list must be read to find the hardest match).

Queries without any true match in the gallery are left out of every metric (and of `queries`).
Equal distances keep gallery order (stable sort), so results never depend on the sort algorithm.
All returned numbers are percentages, except `queries` (a count).

Two paths give the same numbers: `evaluate_ranking` on a full `(Q, G)` matrix, and
`rank_in_chunks`, which computes distances a block of queries at a time so that `Q x G` is never
held at once. Both reduce each query to the same per-query statistics (`_query_stats`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..errors import BPMTError
from ..text import plural

METRICS = ("euc", "cos")
DEFAULT_RANKS = (1, 5, 10)

# `ignore_fn(query_indices (C,)) -> (C, G) bool`: gallery entries to leave out for those queries.
IgnoreFn = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Distances


def _distance_block(queries: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """`(C, D)` x `(G, D)` -> `(C, G)` float64 distances; each entry is the same whatever block of
    queries it is computed in (so equal distances tie the same way in every chunking)."""
    if metric == "euc":
        # |q - g|^2 = |q|^2 + |g|^2 - 2 q.g; cancellation can go slightly negative, hence the clamp.
        squared = (np.einsum("cd,cd->c", queries, queries)[:, None]
                   + np.einsum("gd,gd->g", gallery, gallery)[None, :]
                   - 2.0 * _dot(queries, gallery))
        return np.sqrt(np.maximum(squared, 0.0))
    if metric == "cos":
        return 1.0 - _dot(_unit_rows(queries), _unit_rows(gallery))
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


def _dot(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """`(C, D)` x `(G, D)` -> `(C, G)` dot products. Not `@`: BLAS picks its kernel and summation
    order by matrix shape, so a query's products would change in the last bits with the chunk size
    and flip exact ties; einsum sums each entry the same way (several times slower than BLAS, still
    only seconds for 1,000 x 25,000 x 128, where sorting costs as much)."""
    return np.einsum("cd,gd->cg", queries, gallery)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)  # a zero vector stays zero: distance 1 to everything


def _as_matrix(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (N, D) array, got shape {array.shape}")
    return array


def _check_inputs(queries, gallery, metric: str, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Both embedding sets as matrices of equal width; a known metric; a positive chunk size."""
    queries, gallery = _as_matrix(queries, "queries"), _as_matrix(gallery, "gallery")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]} but gallery has {gallery.shape[1]}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return queries, gallery


def pairwise_distances(queries: np.ndarray, gallery: np.ndarray, metric: str = "euc",
                       chunk_size: int = 1024) -> np.ndarray:
    """Distances `(Q, G)` between `queries (Q, D)` and `gallery (G, D)`, in float64.

    `euc`: Euclidean distance; `cos`: 1 - cosine similarity. Computed `chunk_size` queries at a
    time to bound the temporaries.
    """
    queries, gallery = _check_inputs(queries, gallery, metric, chunk_size)
    blocks = [_distance_block(queries[start:start + chunk_size], gallery, metric)
              for start in range(0, len(queries), chunk_size)]
    return np.concatenate(blocks) if blocks else np.zeros((0, len(gallery)))


# ---------------------------------------------------------------------------------------------
# Per-query statistics, then their summary


def _query_stats(distances: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                 ignore: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per query of `distances (C, G)`: (first match position (1-based), AP, INP, has a match).

    Rows without a match get position 0 and AP = INP = 0; `has a match` says which rows count.
    """
    num_queries, num_gallery = distances.shape
    if num_gallery == 0:
        zeros = np.zeros(num_queries)
        return zeros.astype(np.int64), zeros, zeros, zeros.astype(bool)
    order = np.argsort(distances, axis=1, kind="stable")                       # (C, G)
    rows = np.arange(num_queries)[:, None]
    kept = np.ones_like(order, dtype=bool) if ignore is None else ~ignore[rows, order]
    matches = (gallery_labels[order] == query_labels[:, None]) & kept          # (C, G)
    position = np.cumsum(kept, axis=1)              # 1-based rank among the kept entries
    found = np.cumsum(matches, axis=1)              # matches seen so far
    num_matches = found[:, -1]
    has_match = num_matches > 0

    first = position[np.arange(num_queries), np.argmax(matches, axis=1)]
    last_index = num_gallery - 1 - np.argmax(matches[:, ::-1], axis=1)
    last = position[np.arange(num_queries), last_index]
    precision_at_match = np.where(matches, found / np.maximum(position, 1), 0.0)
    safe_count = np.maximum(num_matches, 1)
    ap = np.where(has_match, precision_at_match.sum(axis=1) / safe_count, 0.0)
    inp = np.where(has_match, num_matches / np.maximum(last, 1), 0.0)
    return np.where(has_match, first, 0), ap, inp, has_match


def _summarize(first: np.ndarray, ap: np.ndarray, inp: np.ndarray, has_match: np.ndarray,
               ranks: Sequence[int]) -> dict:
    valid = int(has_match.sum())
    if valid == 0:
        raise BPMTError(f"no query has a true match in the gallery ({plural(len(has_match), 'query')}); "
                        "retrieval metrics are undefined")
    result = {f"rank{k}": 100.0 * float(np.mean(first[has_match] <= k)) for k in ranks}
    result["mAP"] = 100.0 * float(np.mean(ap[has_match]))
    result["mINP"] = 100.0 * float(np.mean(inp[has_match]))
    result["queries"] = valid
    return result


def _check_labels(num_queries: int, num_gallery: int, query_labels, gallery_labels):
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    if query_labels.shape != (num_queries,):
        raise ValueError(f"query_labels must have shape ({num_queries},), got {query_labels.shape}")
    if gallery_labels.shape != (num_gallery,):
        raise ValueError(f"gallery_labels must have shape ({num_gallery},), got {gallery_labels.shape}")
    return query_labels, gallery_labels


def _check_ranks(ranks: Sequence[int]) -> tuple[int, ...]:
    ranks = tuple(int(k) for k in ranks)
    if any(k < 1 for k in ranks):
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    return ranks


# ---------------------------------------------------------------------------------------------
# Public entry points


def evaluate_ranking(distances: np.ndarray, query_labels, gallery_labels,
                     ranks: Sequence[int] = DEFAULT_RANKS, ignore: np.ndarray | None = None) -> dict:
    """CMC/mAP/mINP of a full distance matrix `(Q, G)`.

    `ignore (Q, G)` bool marks gallery entries to leave out for each query (True = ignored), e.g.
    the query itself in leave-one-out retrieval. Returns `{rank<k>..., mAP, mINP}` in percent
    plus `queries`, the number of queries with at least one true match.
    """
    distances = np.asarray(distances, dtype=np.float64)
    if distances.ndim != 2:
        raise ValueError(f"distances must be a 2-D (Q, G) array, got shape {distances.shape}")
    query_labels, gallery_labels = _check_labels(*distances.shape, query_labels, gallery_labels)
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != distances.shape:
            raise ValueError(f"ignore must have shape {distances.shape}, got {ignore.shape}")
    return _summarize(*_query_stats(distances, query_labels, gallery_labels, ignore), _check_ranks(ranks))


def rank_in_chunks(query_emb: np.ndarray, gallery_emb: np.ndarray, query_labels, gallery_labels,
                   metric: str = "euc", chunk_size: int = 256, ignore_fn: IgnoreFn | None = None,
                   ranks: Sequence[int] = DEFAULT_RANKS) -> dict:
    """The metrics of `evaluate_ranking(pairwise_distances(...))`, `chunk_size` queries at a time.

    `ignore_fn(query_indices (C,)) -> (C, G) bool` gives the ignored gallery entries of a block of
    queries. Peak memory is about 40 bytes x `chunk_size` x G (~50 MB for 256 x 5,000) instead of
    growing with Q.
    """
    query_emb, gallery_emb = _check_inputs(query_emb, gallery_emb, metric, chunk_size)
    ranks = _check_ranks(ranks)
    query_labels, gallery_labels = _check_labels(len(query_emb), len(gallery_emb), query_labels, gallery_labels)

    stats = []
    for start in range(0, len(query_emb), chunk_size):
        indices = np.arange(start, min(start + chunk_size, len(query_emb)))
        distances = _distance_block(query_emb[indices], gallery_emb, metric)   # (C, G)
        ignore = None
        if ignore_fn is not None:
            ignore = np.asarray(ignore_fn(indices), dtype=bool)
            if ignore.shape != distances.shape:
                raise ValueError(f"ignore_fn returned shape {ignore.shape}, expected {distances.shape}")
        stats.append(_query_stats(distances, query_labels[indices], gallery_labels, ignore))
    if not stats:
        raise BPMTError("no queries to evaluate")
    return _summarize(*(np.concatenate(parts) for parts in zip(*stats)), ranks)
