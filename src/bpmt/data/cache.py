"""The prepared cache: one folder holding every frame in three raw arrays plus a sequence index.

Layout (`CACHE/`):
  manifest.json   format version, array shapes, what it was built from (and its fingerprint)
  index.json      per sequence: name, subject, camera, video, start row, length
  keypoints.f32   (F, 17, 3) float32, raw little-endian, memory-mapped on load
  crop_sizes.f32  (F, 2) float32
  frames.i64      (F,) int64

Writing streams sequences to disk as workers finish them (memory stays bounded by a few chunks per
worker), in
a temporary folder that is renamed into place only when complete: an interrupted `prepare` never
leaves a cache that loads. Loading checks the source folder's fingerprint and refuses a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..errors import DataError
from ..skeleton import NUM_JOINTS
from .corpus import PoseCorpus
from .gait3d import OnError, ParseReport, _read_chunk, list_sequence_dirs, resolve_gait3d_root

FORMAT = "bpmt-pose-cache"
VERSION = 1
ARRAYS = {  # file name -> (dtype, trailing shape)
    "keypoints.f32": ("<f4", (NUM_JOINTS, 3)),
    "crop_sizes.f32": ("<f4", (2,)),
    "frames.i64": ("<i8", ()),
}


def is_cache(path: str | os.PathLike) -> bool:
    return (Path(path) / "manifest.json").is_file()


def source_fingerprint(root: str | os.PathLike, ids: Iterable[str] | None = None) -> str:
    """Hash of the paths, modification times and sizes of the identity, camera and sequence folders.

    A folder's mtime changes when files are added, removed or renamed in it, so this catches new,
    deleted or renamed frames and sequences in a few milliseconds; an in-place edit of a frame
    file's content is not caught (rebuild with `bpmt prepare` after editing files).
    """
    digest = hashlib.sha256()
    seen: set[str] = set()
    for d in list_sequence_dirs(root, ids):
        for path in (os.path.dirname(os.path.dirname(d.path)), os.path.dirname(d.path), d.path):
            if path in seen:
                continue
            seen.add(path)
            info = os.stat(path)
            digest.update(f"{path}\0{info.st_mtime_ns}\0{info.st_size}\0".encode())
    return digest.hexdigest()


def build_cache(src: str | os.PathLike, out: str | os.PathLike, ids: Iterable[str] | None = None,
                workers: int = 1, on_error: OnError = "raise",
                progress: Callable[[int], None] | None = None) -> tuple[PoseCorpus, ParseReport]:
    """Parse a Gait3D root into a cache folder at `out` (replacing an older cache there)."""
    root = resolve_gait3d_root(src)
    ids = sorted(set(ids)) if ids is not None else None
    out = Path(out)
    if out.exists() and not is_cache(out) and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not a BPMT cache; refusing to overwrite it")
    fingerprint = source_fingerprint(root, ids)
    dirs = list_sequence_dirs(root, ids)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    report = ParseReport()
    index: list[dict] = []
    rows = 0
    handles = {name: open(tmp / name, "wb") for name in ARRAYS}
    try:
        chunk = max(1, min(32, len(dirs) // max(1, workers * 8) or 1))
        chunks = [dirs[i:i + chunk] for i in range(0, len(dirs), chunk)]
        jobs = ((c, on_error) for c in chunks)
        pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
        try:
            results = _bounded_map(pool, _read_chunk, jobs, 4 * workers) if pool else map(_read_chunk, jobs)
            for (sequences, chunk_report), c in zip(results, chunks):
                report.merge(chunk_report)
                for s in sequences:
                    handles["keypoints.f32"].write(np.ascontiguousarray(s.keypoints, dtype="<f4").tobytes())
                    handles["crop_sizes.f32"].write(np.ascontiguousarray(s.crop_sizes, dtype="<f4").tobytes())
                    handles["frames.i64"].write(np.ascontiguousarray(s.frames, dtype="<i8").tobytes())
                    index.append({"name": s.name, "subject": s.subject, "camera": s.camera,
                                  "video": s.video, "start": rows, "length": len(s)})
                    rows += len(s)
                if progress:
                    progress(len(c))
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
        for handle in handles.values():
            handle.close()
        if not index:
            raise DataError(f"{root}: no valid sequences found ({report.summary()})")
        _write_json(tmp / "index.json", index)
        _write_json(tmp / "manifest.json", {
            "format": FORMAT, "version": VERSION, "frames": rows, "sequences": len(index),
            "source": {"root": str(root.resolve()), "ids": ids, "fingerprint": fingerprint},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "report": report.to_dict(),
        })
        _replace_dir(tmp, out)
    except BaseException:
        for handle in handles.values():
            handle.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_cache(out, check_source=False), report


def _bounded_map(pool: ProcessPoolExecutor, fn, jobs: Iterable, window: int) -> Iterator:
    """`pool.map` in order, keeping at most `window` jobs in flight (`Executor.map` submits all at
    once, so finished results would pile up in memory while the writer catches up)."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.submit(fn, job))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _write_json(path: Path, obj) -> None:
    with open(path, "w") as handle:
        json.dump(obj, handle, separators=(",", ":"))
        handle.flush()
        os.fsync(handle.fileno())


def _replace_dir(new: Path, target: Path) -> None:
    """Move a finished folder into place; the old one is removed only after the new one is there."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_cache(path: str | os.PathLike, check_source: bool = True) -> PoseCorpus:
    """Memory-map a cache. Refuses a stale one (source folder changed since it was built)."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        index = json.loads((path / "index.json").read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: incomplete cache, missing {Path(exc.filename).name}; rebuild it with bpmt prepare") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: corrupt cache index ({exc}); rebuild it with bpmt prepare") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataError(f"{path}: not a BPMT cache of format version {VERSION}; rebuild it with bpmt prepare")
    try:
        rows = int(manifest["frames"])
        source = manifest["source"]
        starts = np.array([s["start"] for s in index], dtype=np.int64)
        lengths = np.array([s["length"] for s in index], dtype=np.int64)
        names = [str(s["name"]) for s in index]
        subjects, cameras, videos = ([str(s[k]) for s in index] for k in ("subject", "camera", "video"))
        root, ids, fingerprint = source["root"], source["ids"], source["fingerprint"]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: corrupt cache index ({type(exc).__name__}: {exc}); rebuild it with bpmt prepare") from None
    if (len(index) != manifest.get("sequences") or (lengths < 1).any() or (starts < 0).any()
            or (starts + lengths > rows).any()):
        raise DataError(f"{path}: corrupt cache index (sequence rows out of range); rebuild it with bpmt prepare")
    arrays = {}
    for name, (dtype, trailing) in ARRAYS.items():
        file = path / name
        expected = rows * int(np.prod(trailing, dtype=np.int64)) * np.dtype(dtype).itemsize
        size = file.stat().st_size if file.is_file() else -1
        if size != expected:
            raise DataError(f"{file}: expected {expected} bytes, found {size}; the cache is damaged, rebuild it")
        arrays[name] = np.memmap(file, dtype=dtype, mode="r", shape=(rows, *trailing)) if rows else np.zeros((0, *trailing), dtype)
    if check_source and Path(root).is_dir():
        try:
            current = source_fingerprint(root, ids)
        except DataError as exc:
            current = f"unlistable: {exc}"
        if current != fingerprint:
            raise DataError(f"{path}: stale cache: {root} changed since the cache was built "
                            "(frame files or sequences added, removed or renamed); rebuild it with bpmt prepare")
    return PoseCorpus(
        keypoints=arrays["keypoints.f32"], crop_sizes=arrays["crop_sizes.f32"], frames=arrays["frames.i64"],
        starts=starts, lengths=lengths, names=names, subjects=subjects, cameras=cameras, videos=videos,
        source=str(path),
    )
