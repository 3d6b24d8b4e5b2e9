"""Nearest-neighbour search over gallery embeddings with FAISS.

Distances are Euclidean (L2, not squared). Galleries below `exact_limit` entries get an exact
`IndexFlatL2`; larger ones an approximate index:

* `hnsw` (the default): HNSW graph, `HNSW_LINKS` links per node; a query explores `ef_search`
  candidates. The best recall per microsecond in `benchmarks/search.py`, and vectors can be added
  to a built graph (appending enrolments never rebuilds), but a 1M-vector build takes minutes.
* `ivf`: IVF-Flat, `nlist = 4 * sqrt(N)` k-means cells, trained on a random sample of at most
  `TRAIN_POINTS_PER_CELL * nlist` vectors; a query scans its `nprobe` nearest cells. Faster to
  build, but it needs a much larger share of the gallery scanned for the same recall.

On 100k synthetic clustered 128-d embeddings (`python benchmarks/search.py`), recall@10 against
exact search: HNSW (16 links) ef_search 128 / 256 (the default): 0.967 / 0.987; IVF (1265 cells)
nprobe 128 (the default) / 256: 0.933 / 0.982. On 1M, HNSW with 32 links (the default) and
ef_search 256: recall@10 0.990 at p50 3.7 ms per query on one core (16 links: 0.881 at 2.1 ms).

The search-time knobs (`nprobe`, `ef_search`) are set per call, never stored in the index file.

Models whose metric is cosine are served by the same L2 indexes: vectors are L2-normalised
(`prepare_vectors`), and for unit vectors `1 - cos = L2^2 / 2` (`metric_distance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import DataError

DEFAULT_EXACT_LIMIT = 50_000
DEFAULT_APPROXIMATE = "hnsw"
DEFAULT_NPROBE = 128
DEFAULT_EF_SEARCH = 256
HNSW_LINKS = 32     # 16 missed the 1M target (0.937 recall@10 within 5 ms); 32: 0.990 at 3.7 ms
HNSW_EF_CONSTRUCTION = 40
TRAIN_POINTS_PER_CELL = 32
KMEANS_ITERATIONS = 10
APPROXIMATE_KINDS = ("ivf", "hnsw")

IndexKind = Literal["flat", "ivf", "hnsw"]


class IndexFileError(DataError):
    """A stored search index cannot be read."""


@dataclass(frozen=True)
class IndexSpec:
    """What to build for a gallery: `flat` (exact), `ivf` with `nlist` cells, or `hnsw` with `links`."""

    kind: IndexKind
    nlist: int = 0
    links: int = 0

    @property
    def tag(self) -> str:
        """Short name, as stored in the gallery manifest: `flat`, `ivf1265`, `hnsw32`."""
        return {"flat": "flat", "ivf": f"ivf{self.nlist}", "hnsw": f"hnsw{self.links}"}[self.kind]


def ivf_cells(count: int) -> int:
    """`nlist` for `count` vectors: 4 * sqrt(N), at least 1, at most N / 8 (cells need members)."""
    return max(1, min(round(4 * math.sqrt(count)), count // 8))


def choose_spec(count: int, exact_limit: int = DEFAULT_EXACT_LIMIT,
                approximate: str = DEFAULT_APPROXIMATE) -> IndexSpec:
    """Exact below `exact_limit` vectors, the `approximate` kind from there on."""
    if approximate not in APPROXIMATE_KINDS:
        raise ValueError(f"unknown approximate index {approximate!r}; known: {', '.join(APPROXIMATE_KINDS)}")
    if exact_limit < 1:
        raise ValueError(f"exact_limit must be >= 1, got {exact_limit}")
    if count < exact_limit:
        return IndexSpec("flat")
    if approximate == "ivf":
        return IndexSpec("ivf", nlist=ivf_cells(count))
    return IndexSpec("hnsw", links=HNSW_LINKS)


def prepare_vectors(embeddings: np.ndarray, metric: str) -> np.ndarray:
    """`(N, E)` float32 vectors to index or query with: unit rows for `cos`, unchanged for `euc`."""
    vectors = _as_vectors(embeddings, "embeddings")
    if metric == "euc":
        return vectors
    if metric == "cos":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
    raise ValueError(f"unknown metric {metric!r} (euc, cos)")


def metric_distance(l2: np.ndarray, metric: str) -> np.ndarray:
    """L2 distances between prepared vectors -> distances in `metric` (Euclidean, or 1 - cos)."""
    return l2 if metric == "euc" else np.square(l2) / 2


def _as_vectors(values: np.ndarray, what: str) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (N, D) array, got shape {array.shape}")
    return array


def build_index(vectors: np.ndarray, exact_limit: int = DEFAULT_EXACT_LIMIT, approximate: str = DEFAULT_APPROXIMATE,
                spec: IndexSpec | None = None, seed: int = 0):
    """A FAISS index over `vectors (N, D)`; ids are row numbers. `spec` overrides the choice."""
    import faiss

    vectors = _as_vectors(vectors, "vectors")
    count, dim = vectors.shape
    spec = spec or choose_spec(count, exact_limit, approximate)
    if spec.kind == "flat":
        index = faiss.IndexFlatL2(dim)
    elif spec.kind == "ivf":
        if count < spec.nlist:
            raise ValueError(f"IVF with {spec.nlist} cells needs at least {spec.nlist} vectors, got {count}")
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, spec.nlist)
        index.cp.niter = KMEANS_ITERATIONS
        index.cp.seed = seed
        index.cp.max_points_per_centroid = TRAIN_POINTS_PER_CELL
        index.cp.min_points_per_centroid = 8  # ivf_cells keeps >= 8 per cell; silences FAISS's warning
        sample = min(count, TRAIN_POINTS_PER_CELL * spec.nlist)
        rows = np.sort(np.random.default_rng(seed).choice(count, size=sample, replace=False))
        index.train(vectors[rows])
    elif spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.links)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        raise ValueError(f"unknown index kind {spec.kind!r}")
    if count:
        index.add(vectors)
    return index


def index_kind(index) -> IndexKind:
    import faiss

    if isinstance(index, faiss.IndexFlat):
        return "flat"
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    raise ValueError(f"unsupported index type {type(index).__name__}")


def spec_of(index) -> IndexSpec:
    """The `IndexSpec` a built index follows."""
    kind = index_kind(index)
    if kind == "ivf":
        return IndexSpec("ivf", nlist=index.nlist)
    if kind == "hnsw":
        return IndexSpec("hnsw", links=index.hnsw.nb_neighbors(1))
    return IndexSpec("flat")


def can_extend(index, spec: IndexSpec) -> bool:
    """Whether `index` may take appended vectors instead of a rebuild for a gallery now wanting `spec`:
    same kind; for IVF, cells still at least half as many as `spec` asks for (trained on >= N/4)."""
    have = spec_of(index)
    if have.kind != spec.kind:
        return False
    if have.kind == "ivf":
        return 2 * have.nlist >= spec.nlist
    return have == spec


def describe(index) -> str:
    """One line: `exact (flat L2)`, `IVF-Flat, 1264 cells`, `HNSW, 32 links`."""
    kind = index_kind(index)
    if kind == "flat":
        return "exact (flat L2)"
    if kind == "ivf":
        return f"IVF-Flat, {index.nlist} cells"
    return f"HNSW, {index.hnsw.nb_neighbors(1)} links"


def search(index, queries: np.ndarray, k: int, nprobe: int = DEFAULT_NPROBE,
           ef_search: int = DEFAULT_EF_SEARCH) -> tuple[np.ndarray, np.ndarray]:
    """The `k` nearest entries of each query: `(distances (Q, k) float32 L2, ids (Q, k) int64)`.

    Ascending distance. Where fewer than `k` entries are found (small gallery, few IVF cells
    probed) the row is padded with id -1 and distance +inf.
    """
    import faiss

    queries = _as_vectors(queries, "queries")
    if queries.shape[1] != index.d:
        raise ValueError(f"queries have dimension {queries.shape[1]}, the index {index.d}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    kind = index_kind(index)
    if kind == "ivf":
        params = faiss.SearchParametersIVF(nprobe=min(max(1, nprobe), index.nlist))
    elif kind == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=max(ef_search, k))
    else:
        params = None
    squared, ids = index.search(queries, k, params=params)                    # (Q, k), (Q, k)
    missing = ids < 0
    distances = np.sqrt(np.maximum(squared, 0.0)).astype(np.float32)
    distances[missing] = np.inf
    return distances, ids.astype(np.int64)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found_i ∩ truth_i| / k, for `found, truth (Q, k)` id arrays (-1 = none)."""
    found, truth = np.asarray(found), np.asarray(truth)
    if found.shape != truth.shape or found.ndim != 2:
        raise ValueError(f"found {found.shape} and truth {truth.shape} must be equal (Q, k) arrays")
    if found.size == 0:
        return 1.0
    hits = [len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) for f, t in zip(found, truth)]
    return float(np.mean(hits)) / found.shape[1]


def index_bytes(index) -> bytes:
    """`index` serialised (what `read_index` reads back)."""
    import faiss

    return faiss.serialize_index(index).tobytes()


def read_index(data: bytes, where: str):
    """Deserialise an index from `data`; `IndexFileError` naming `where` if it is not one."""
    import faiss

    try:
        return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise IndexFileError(f"{where}: not a readable FAISS index ({first})") from None
