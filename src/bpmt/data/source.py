"""Open DATA, whatever it is (a prepared cache, a Gait3D `2D_Poses` root, or a pose-pickle root),
and pick identity subsets (`--ids`, `--split Gait3D.json --subset train|test`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from ..errors import DataError
from ..files import read_json
from .cache import is_cache, load_cache
from .corpus import PoseCorpus
from .gait3d import OnError, ParseReport, read_gait3d
from .pose_pickles import read_pose_pickles


def load_split(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read an official-style split file: TRAIN_SET, TEST_SET (identity lists), PROBE_SET (names)."""
    path = Path(path)
    split = read_json(path, "split file")
    if not isinstance(split, dict):
        raise DataError(f"{path}: expected a JSON object with TRAIN_SET/TEST_SET/PROBE_SET")
    split.setdefault("PROBE_SET", [])
    for key in ("TRAIN_SET", "TEST_SET", "PROBE_SET"):
        if not isinstance(split.get(key), list):
            raise DataError(f"{path}: missing list {key}")
        if not all(isinstance(item, str) for item in split[key]):
            # IDs are zero-padded folder names: 2 is not "0002", so numbers would silently match nothing.
            raise DataError(f"{path}: {key} must list strings (identity folder names such as \"0002\")")
    return split


def parse_ids(spec: str | Iterable[str] | None) -> list[str] | None:
    """`--ids` accepts a comma-separated list or a file with one identity per line (or commas)."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        return [str(s) for s in spec]
    if os.path.isfile(spec):
        try:
            text = Path(spec).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{spec}: cannot read identity list ({exc})") from None
        ids = [tok.strip() for line in text.splitlines() for tok in line.split("#")[0].split(",") if tok.strip()]
    elif "/" in spec or os.sep in spec:  # identity names never contain a separator: a missing file
        raise DataError(f"--ids {spec}: no such file")
    else:
        ids = [tok.strip() for tok in spec.split(",") if tok.strip()]
    if not ids:
        raise DataError(f"--ids {spec!r}: no identities given")
    return ids


def resolve_ids(ids: str | Iterable[str] | None = None, split: str | os.PathLike | None = None,
                subset: str | None = None) -> list[str] | None:
    """Combine `--ids` and `--split/--subset` into one identity list (their intersection)."""
    chosen = parse_ids(ids)
    if split is not None:
        if subset not in ("train", "test"):
            raise DataError("--split needs --subset train or --subset test")
        key = "TRAIN_SET" if subset == "train" else "TEST_SET"
        from_split = load_split(split)[key]
        if chosen is None:
            chosen = from_split
        else:
            allowed = set(from_split)
            chosen = [i for i in chosen if i in allowed]
            if not chosen:
                raise DataError(f"none of the --ids identities is in {key} of {split}")
    elif subset is not None:
        raise DataError("--subset needs --split FILE")
    return chosen


def open_data(path: str | os.PathLike, ids: Iterable[str] | None = None, *, workers: int = 1,
              on_error: OnError = "raise", pose_format: str = "auto", allow_pickle: bool = False,
              progress: Callable[[int], None] | None = None) -> tuple[PoseCorpus, ParseReport | None]:
    """Open DATA as a `PoseCorpus`, keeping only `ids` when given.

    Returns the corpus and, for raw input, the parse report (None for a cache).
    """
    path = Path(path)
    if pose_format not in ("auto", "gait3d", "pkl"):
        raise DataError(f"unknown pose format {pose_format!r} (auto, gait3d, pkl)")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    ids = list(ids) if ids is not None else None
    if is_cache(path):
        corpus = load_cache(path)
        return (corpus.select_ids(ids) if ids is not None else corpus), None
    if pose_format == "pkl":
        sequences = read_pose_pickles(path, allow_pickle=allow_pickle, ids=ids)
        return PoseCorpus.from_sequences(sequences, source=str(path)), None
    sequences, report = read_gait3d(path, ids=ids, workers=workers, on_error=on_error, progress=progress)
    return PoseCorpus.from_sequences(sequences, source=str(path)), report
