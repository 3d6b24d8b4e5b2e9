"""Throughput of the data layer on the shipped Gait3D subset: raw text -> cache, cache load, and a
full pass over the cached keypoints.

    python benchmarks/parse_throughput.py [--tarball PATH] [--workdir DIR] [--repeats 3]

Extracts the tarball into a temporary folder (under --workdir, default $TMPDIR), reads every file
once so that the timed runs measure parsing rather than the disk (warm page cache), then prints:
  * raw -> cache (`build_cache`) with 1 and 2 workers, best of --repeats, in frame files/s
  * `load_cache` (memory-map + stale check against the source), best of 10
  * one pass reading every sequence's keypoints from the loaded cache
Targets: >= 50,000 files/s warm with 2 workers; cache load <= 0.1 s. Timings depend on what else
runs on the machine: rerun on a quiet one before quoting them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from bpmt.data.cache import build_cache, load_cache
from bpmt.data.gait3d import list_sequence_dirs, resolve_gait3d_root

DEFAULT_TARBALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "gait3d-2d-poses-38ids.tar.gz"
TARGET_FILES_PER_S = 50_000
TARGET_LOAD_S = 0.1


def best_of(repeats: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def warm(root: Path) -> int:
    """Read every frame file once; returns how many there were."""
    files = 0
    for seq_dir in list_sequence_dirs(root):
        for entry in os.scandir(seq_dir.path):
            with open(entry.path, "rb") as handle:
                handle.read()
            files += 1
    return files


def full_pass(corpus) -> float:
    total = 0.0
    for i in range(len(corpus)):
        total += float(np.asarray(corpus.keypoints_of(i))[..., 2].sum())   # touch every frame
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tarball", type=Path, default=DEFAULT_TARBALL)
    parser.add_argument("--workdir", type=Path, default=None, help="where to extract (default: $TMPDIR)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    if not args.tarball.is_file():
        print(f"error: {args.tarball}: tarball not found (pass --tarball)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bpmt-bench-", dir=args.workdir))
    try:
        start = time.perf_counter()
        with tarfile.open(args.tarball) as tar:
            tar.extractall(work, filter="data")
        root = resolve_gait3d_root(work)
        print(f"extracted {args.tarball.name} to {work} in {time.perf_counter() - start:.1f}s")
        files = warm(root)
        print(f"warmed page cache: {files} frame files (cpu count {os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.2f})")

        out = work / "gait3d.cache"
        for workers in args.workers:
            seconds, (corpus, report) = best_of(args.repeats, lambda: build_cache(root, out, workers=workers))
            rate = report.files / seconds
            flag = "" if workers < 2 or rate >= TARGET_FILES_PER_S else f"  (below target {TARGET_FILES_PER_S:,})"
            print(f"raw -> cache, workers={workers}: {seconds:.3f}s best of {args.repeats}, "
                  f"{rate:,.0f} frame files/s, {report.sequences} sequences{flag}")

        seconds, corpus = best_of(10, lambda: load_cache(out))
        flag = "" if seconds <= TARGET_LOAD_S else f"  (above target {TARGET_LOAD_S} s)"
        print(f"load_cache (with stale check): {seconds * 1000:.1f} ms best of 10{flag}")
        seconds_nocheck, _ = best_of(10, lambda: load_cache(out, check_source=False))
        print(f"load_cache (no stale check):   {seconds_nocheck * 1000:.1f} ms best of 10")

        seconds, _ = best_of(3, lambda: full_pass(corpus))
        print(f"full pass over cached keypoints: {seconds * 1000:.1f} ms best of 3 "
              f"({corpus.num_frames / seconds:,.0f} frames/s, {len(corpus)} sequences)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
