"""Evaluation protocols: who queries whom, and the identity folds of the development protocol.

* `official_protocol`: Gait3D's probe/gallery split. Probes are the sequences named in the split's
  PROBE_SET; the gallery is every other sequence given (no same-camera filtering, as in OpenGait's
  `evaluate_Gait3D`).
* `leave_one_out`: every sequence queries all the others (itself excluded), for test sets too small
  for a stable probe/gallery number.
* `load_folds` / `fold_split`: the identity-disjoint folds (`gait3d-38ids-folds.json`); train on
  the other folds' identities, leave-one-out on the held-out fold; `mean_std` summarises folds.
* `load_embeddings`: the checked contents of an `EMB.npz` (`embeddings (N, D)`, `seqs (N,)`).

A sequence name is `<ID>-<camidC_videoidV>-<seqK>`; its label (identity) is the part before the
first '-'.
"""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..errors import BPMTError, DataError, ProtocolError
from ..files import read_json
from ..text import plural
from .metrics import rank_in_chunks


def label_of(name: str) -> str:
    """Identity of a sequence name `<ID>-<camid_videoid>-<seq>`."""
    return name.split("-", 1)[0]


def load_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Read `embeddings (N, D)` float and `seqs (N,)` names from an `.npz`; `DataError` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: embeddings file not found")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz archive (expected np.savez(..., embeddings=..., seqs=...))")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in ("embeddings", "seqs") if key not in npz.files]
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(missing)} (found: {', '.join(npz.files) or 'none'})")
            embeddings, seqs = npz["embeddings"], npz["seqs"]
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{path}: holds an object array; save 'seqs' as a string array "
                            "(e.g. np.array(names, dtype=str))") from None
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None

    if embeddings.ndim != 2 or embeddings.dtype.kind not in "fiu":
        raise DataError(f"{path}: 'embeddings' must be a 2-D numeric (N, D) array, got {embeddings.dtype} "
                        f"{embeddings.shape}")
    if seqs.ndim != 1 or seqs.dtype.kind not in "US":
        raise DataError(f"{path}: 'seqs' must be a 1-D array of sequence names, got {seqs.dtype} {seqs.shape}")
    if len(seqs) != len(embeddings):
        raise DataError(f"{path}: {plural(len(embeddings), 'embedding')} but {plural(len(seqs), 'sequence name')}")
    if len(seqs) == 0:
        raise DataError(f"{path}: no embeddings")
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        count = int(bad.sum())
        raise DataError(f"{path}: {plural(count, 'embedding')} {'contains' if count == 1 else 'contain'} NaN or inf "
                        f"(first: row {int(np.argmax(bad))}, {seqs[int(np.argmax(bad))]!s})")
    names = [s.decode() if isinstance(s, bytes) else str(s) for s in seqs.tolist()]
    if len(set(names)) != len(names):
        duplicate, count = Counter(names).most_common(1)[0]
        raise DataError(f"{path}: sequence {duplicate!r} appears {count} times")
    return embeddings.astype(np.float64), names


def _check_embeddings(embeddings: np.ndarray, count: int, what: str) -> np.ndarray:
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) != count:
        raise ValueError(f"embeddings must have shape ({count}, D) to match the {what}, got {embeddings.shape}")
    return embeddings


def official_protocol(embeddings: np.ndarray, names: Sequence[str], probe_names: Iterable[str],
                      metric: str = "euc", chunk_size: int = 256, ranks: Sequence[int] = (1, 5, 10)) -> dict:
    """Probes (names in `probe_names`) against the gallery of all other sequences.

    `embeddings (N, D)` are in the order of `names (N,)`. Probes whose identity has no gallery
    sequence do not count. Raises `ProtocolError` when no probe is among `names`, or every name is one.
    """
    names = list(names)
    embeddings = _check_embeddings(embeddings, len(names), "names")
    probe_list = list(dict.fromkeys(probe_names))
    probe_set = set(probe_list)
    is_probe = np.array([name in probe_set for name in names], dtype=bool)
    if not is_probe.any():
        raise ProtocolError(f"none of the {plural(len(probe_set), 'probe sequence')} of the split is among the "
                            f"{plural(len(names), 'sequence')} given (missing, e.g. {probe_list[:3]})")
    if is_probe.all():
        raise ProtocolError(f"{plural(len(names), 'sequence')} given, all of them probes; the gallery is empty")
    labels = np.array([label_of(name) for name in names])
    return rank_in_chunks(embeddings[is_probe], embeddings[~is_probe], labels[is_probe], labels[~is_probe],
                          metric=metric, chunk_size=chunk_size, ranks=ranks)


def leave_one_out(embeddings: np.ndarray, labels: Sequence[str], metric: str = "euc",
                  chunk_size: int = 256, ranks: Sequence[int] = (1, 5, 10)) -> dict:
    """Every sequence queries all the others; sequences whose identity occurs once do not count."""
    labels = np.asarray(labels)
    embeddings = _check_embeddings(embeddings, len(labels), "labels")
    num = len(labels)

    def itself(query_indices: np.ndarray) -> np.ndarray:
        return query_indices[:, None] == np.arange(num)[None, :]                 # (C, N)

    return rank_in_chunks(embeddings, embeddings, labels, labels, metric=metric, chunk_size=chunk_size,
                          ignore_fn=itself, ranks=ranks)


# ---------------------------------------------------------------------------------------------
# Identity folds


def load_folds(path: str | os.PathLike) -> list[list[str]]:
    """Read `{"folds": [[id, ...], ...]}` (or a bare list of lists); folds must be disjoint."""
    path = Path(path)
    data = read_json(path, "folds file")
    folds = data.get("folds") if isinstance(data, dict) else data
    if (not isinstance(folds, list) or len(folds) < 2
            or not all(isinstance(f, list) and f and all(isinstance(i, str) for i in f) for f in folds)):
        raise DataError(f"{path}: expected 'folds': a list of at least two non-empty lists of identity strings")
    seen: dict[str, int] = {}
    for k, fold in enumerate(folds):
        for identity in fold:
            if identity in seen:
                raise DataError(f"{path}: identity {identity!r} is in fold {seen[identity]} and fold {k}")
            seen[identity] = k
    return [list(fold) for fold in folds]


def fold_split(folds: Sequence[Sequence[str]], k: int) -> tuple[list[str], list[str]]:
    """(train identities = all other folds, test identities = fold `k`)."""
    if not 0 <= k < len(folds):
        raise BPMTError(f"fold {k} does not exist; there are {len(folds)} folds (0..{len(folds) - 1})")
    train = [identity for j, fold in enumerate(folds) if j != k for identity in fold]
    return train, list(folds[k])


def mean_std(results: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """`{metric: {"mean", "std"}}` over per-fold results; std is the sample std (ddof=1).

    With four folds the sample std is the honest spread; a single result gets std 0.
    """
    if not results:
        raise ValueError("no results to summarise")
    summary = {}
    for key in results[0]:
        values = np.array([float(r[key]) for r in results])
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary[key] = {"mean": float(values.mean()), "std": std}
    return summary
