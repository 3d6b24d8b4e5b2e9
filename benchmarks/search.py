"""Gallery search: exact versus approximate FAISS indexes on synthetic clustered embeddings.

For each gallery size: identities with `--per-identity` embeddings each (default 5) around random
centres, float32, `--dim` dimensions (default 128). Centres N(0, I) and within-identity noise
N(0, noise^2 I) lie in a random `--intrinsic-dim`-dimensional subspace (default 32), plus a small
isotropic part; `--intrinsic-dim 0` makes everything isotropic, the hardest case for approximate
search. Queries are fresh samples of random enrolled identities (probes of known people).

Prints per index: build time, index size (serialised, about its memory), per-query latency (one
query per call, through `bpmt.serving.search.search`, p50 / p95 / mean) and recall@10 against
exact search, for a sweep of `nprobe` (IVF) or `ef_search` (HNSW).

    python benchmarks/search.py                        # 10k, 100k and 1M
    python benchmarks/search.py --sizes 10000,100000 --threads 1

Latency is measured with `--threads` FAISS threads (default 1: what one request of a busy server
gets); index builds and the exact ground truth (batched) use all threads. At 1M the defaults
need about 2-3 GB of memory, and the HNSW build dominates the run time: an index build predicted
(from the previous size's build) to end later than `--budget-s` seconds after the start
(default 480) is skipped with a message; the query sweeps after the builds add about 1-2 minutes
at 1M, so the whole run stays near 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bpmt.serving.search import (DEFAULT_EF_SEARCH, DEFAULT_NPROBE, HNSW_LINKS, IndexSpec,  # noqa: E402
                                 build_index, describe, ivf_cells, recall_at_k, search)

K = 10
AMBIENT = 0.1


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def index_mb(index) -> float:
    """Size of the serialised index (what the gallery stores and loads), in MB."""
    if isinstance(index, faiss.IndexFlat):
        return index.ntotal * index.d * 4 / 2**20         # vectors only: no need to copy them
    return len(faiss.serialize_index(index)) / 2**20


def clustered(size: int, dim: int, per_identity: int, noise: float, intrinsic: int, queries: int, seed: int):
    """-> gallery `(size, dim)` float32 and `queries (Q, dim)` float32 near enrolled identities.

    Centres N(0, I) and per-embedding noise N(0, noise^2 I) live in a random `intrinsic`-dimensional
    subspace (learned embeddings are far from isotropic), plus a small isotropic part (std
    AMBIENT) in all `dim` dimensions. `intrinsic = 0` or `>= dim`: fully isotropic (the worst case
    for any approximate index: beyond an identity's own embeddings, neighbours are random points).
    """
    rng = np.random.default_rng(seed)
    rank = dim if intrinsic <= 0 or intrinsic >= dim else intrinsic
    identities = max(1, size // per_identity)
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T.astype(np.float32)     # (R, D) orthonormal rows
    centres = rng.standard_normal((identities, rank), dtype=np.float32)                 # (I, R)
    ambient = AMBIENT if rank < dim else 0.0

    def sample(owners: np.ndarray) -> np.ndarray:
        local = centres[owners] + noise * rng.standard_normal((len(owners), rank), dtype=np.float32)
        return local @ basis + ambient * rng.standard_normal((len(owners), dim), dtype=np.float32)

    gallery = np.empty((size, dim), dtype=np.float32)
    block = 1 << 16
    for start in range(0, size, block):                                                 # bounded temporaries
        rows = np.arange(start, min(size, start + block))
        gallery[rows] = sample(rows % identities)
    return gallery, sample(rng.integers(0, identities, size=queries))


def latency_ms(index, queries: np.ndarray, **knobs) -> tuple[np.ndarray, dict]:
    """Search one query per call; -> (ids (Q, K), {p50, p95, mean} in ms)."""
    times, ids = [], []
    for row in range(len(queries)):
        start = time.perf_counter()
        _, found = search(index, queries[row:row + 1], K, **knobs)
        times.append(time.perf_counter() - start)
        ids.append(found[0])
    ms = np.array(times) * 1e3
    return np.stack(ids), {"p50": float(np.median(ms)), "p95": float(np.percentile(ms, 95)), "mean": float(ms.mean())}


# Build time grows like N^(1 + GROWTH): HNSW inserts cost ~log N each; IVF's k-means and
# assignment cost N x nlist with nlist ~ sqrt(N).
GROWTH = {"hnsw": 0.1, "ivf": 0.5}


def predicted_build_s(kind: str, size: int, last: tuple[float, int]) -> float:
    seconds, measured_size = last
    return seconds * (size / measured_size) ** (1 + GROWTH[kind])


def bench_size(size: int, args, last_builds: dict[str, tuple[float, int]], deadline: float) -> dict:
    """Exact and approximate search on one gallery size. `last_builds` (kind -> (seconds, size) of
    its last build) predicts build times: a build predicted to end after `deadline`
    (a time.perf_counter() value) is skipped."""
    out: dict = {"size": size, "dim": args.dim, "indexes": []}
    start = time.perf_counter()
    gallery, queries = clustered(size, args.dim, args.per_identity, args.noise, args.intrinsic_dim, args.queries,
                                 args.seed)
    print(f"\n== {size:,} embeddings x {args.dim} ({size // args.per_identity:,} identities; data "
          f"{time.perf_counter() - start:.1f}s, {gallery.nbytes / 2**20:,.0f} MB), {args.queries} queries", flush=True)

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    flat = build_index(gallery, spec=IndexSpec("flat"))
    flat_build = time.perf_counter() - start
    _, truth = search(flat, queries, K)                                              # ground truth, batched
    faiss.omp_set_num_threads(args.threads)
    exact_queries = queries[: args.exact_queries]
    _, flat_latency = latency_ms(flat, exact_queries)
    row = {"index": "exact (flat L2)", "build_s": flat_build, "index_mb": index_mb(flat), "knob": None,
           "recall@10": 1.0, "latency_ms": flat_latency, "queries": len(exact_queries)}
    out["indexes"].append(row)
    print_row(row)
    del flat

    for kind in args.kinds:
        predicted = predicted_build_s(kind, size, last_builds[kind])
        if time.perf_counter() + predicted > deadline:
            print(f"   {kind}: skipped, its build would take ~{predicted:.0f}s and end after --budget-s "
                  f"(run it alone: --sizes {size} --kinds {kind})", flush=True)
            continue
        spec = IndexSpec("ivf", nlist=ivf_cells(size)) if kind == "ivf" else IndexSpec("hnsw", links=HNSW_LINKS)
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        start = time.perf_counter()
        index = build_index(gallery, spec=spec, seed=args.seed)
        build_s = time.perf_counter() - start
        last_builds[kind] = (build_s, size)
        faiss.omp_set_num_threads(args.threads)
        size_mb = index_mb(index)
        knobs = [{"nprobe": n} for n in args.nprobe] if kind == "ivf" else [{"ef_search": e} for e in args.ef]
        for knob in knobs:
            found, latency = latency_ms(index, queries, **knob)
            row = {"index": describe(index), "build_s": build_s, "index_mb": size_mb, "knob": knob,
                   "recall@10": recall_at_k(found, truth), "latency_ms": latency, "queries": len(queries)}
            out["indexes"].append(row)
            print_row(row)
        del index
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def print_row(row: dict) -> None:
    knob = " ".join(f"{k}={v}" for k, v in (row["knob"] or {}).items()) or "-"
    lat = row["latency_ms"]
    print(f"   {row['index']:<24} {knob:<14} build {row['build_s']:7.1f}s  index {row['index_mb']:7.1f} MB  "
          f"recall@10 {row['recall@10']:.4f}  latency p50 {lat['p50']:.3f} ms  p95 {lat['p95']:.3f} ms  "
          f"mean {lat['mean']:.3f} ms  ({row['queries']} queries)", flush=True)


def target_summary(result: dict, recall: float = 0.95, latency_ms: float = 5.0) -> list[str]:
    """Per approximate index: the fastest setting with recall@10 >= `recall`, against the latency target."""
    lines = []
    for name in dict.fromkeys(r["index"] for r in result["indexes"] if r["knob"]):
        rows = [r for r in result["indexes"] if r["index"] == name and r["recall@10"] >= recall]
        if not rows:
            lines.append(f"   {name}: no setting reached recall@10 {recall}")
            continue
        best = min(rows, key=lambda r: r["latency_ms"]["mean"])
        knob = " ".join(f"{k}={v}" for k, v in best["knob"].items())
        met = "meets" if best["latency_ms"]["p50"] <= latency_ms else "misses"
        lines.append(f"   {name}: {knob} gives recall@10 {best['recall@10']:.4f} at p50 "
                     f"{best['latency_ms']['p50']:.3f} ms -> {met} the target (<= {latency_ms} ms, >= {recall})")
    return lines


def _kinds(text: str) -> list[str]:
    kinds = [k for k in text.split(",") if k and k != "none"]
    unknown = [k for k in kinds if k not in GROWTH]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown index kind(s) {unknown}; known: {', '.join(GROWTH)}")
    return kinds


def _ints(text: str) -> list[int]:
    return [int(float(t)) for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=_ints, default=[10_000, 100_000, 1_000_000], help="gallery sizes")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--per-identity", type=int, default=5, help="embeddings per identity (default 5)")
    parser.add_argument("--noise", type=float, default=0.5, help="within-identity spread (centres have 1)")
    parser.add_argument("--intrinsic-dim", type=int, default=32,
                        help="dimension of the subspace holding the identities (0: isotropic; default 32)")
    parser.add_argument("--queries", type=int, default=1000, help="queries for approximate indexes")
    parser.add_argument("--exact-queries", type=int, default=100, help="queries timed on exact search")
    parser.add_argument("--kinds", type=_kinds, default=["hnsw", "ivf"],
                        help="approximate indexes to measure, or 'none' (default: hnsw,ivf)")
    parser.add_argument("--nprobe", type=_ints, default=sorted({16, 32, 64, 128, 256, 512, DEFAULT_NPROBE}),
                        help="IVF cells scanned per query, swept (default: 16,32,64,128,256,512)")
    parser.add_argument("--ef", type=_ints, default=sorted({32, 64, 128, 256, 512, DEFAULT_EF_SEARCH}),
                        help="HNSW candidates per query, swept (default: 32,64,128,256,512)")
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads while timing queries")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="skip an index build predicted to end later than this many seconds after the "
                             "start (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    print(f"FAISS search benchmark: {os.cpu_count()} CPUs visible, query latency with {args.threads} "
          f"thread(s), one query per call; recall@{K} against exact search")
    started = time.perf_counter()
    # Builds seen at 100k on the 2-core development machine; replaced by each size's measurement.
    last_builds = {"hnsw": (30.0, 100_000), "ivf": (10.0, 100_000)}
    results = [bench_size(size, args, last_builds, started + args.budget_s) for size in sorted(args.sizes)]
    print(f"\ntotal {time.perf_counter() - started:.0f}s, peak memory {peak_rss_mb():,.0f} MB")
    for result in results:
        print(f"{result['size']:,} embeddings:")
        print("\n".join(target_summary(result)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
