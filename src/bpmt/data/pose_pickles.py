"""Reading OpenGait's pose pickles: `<ID>/<type>/<view>/*.pkl`, each a `(T, 17, 3)` array.

Unpickling runs arbitrary code from the file, so reading refuses unless explicitly allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DataError
from ..files import subfolders
from ..skeleton import NUM_JOINTS
from .sequence import Sequence, check_keypoints


def read_pose_pickles(root: str | os.PathLike, allow_pickle: bool = False,
                      ids: Iterable[str] | None = None) -> list[Sequence]:
    """Read OpenGait's `<ID>/<type>/<view>/*.pkl` layout, each pickle a `(T, 17, 3)` array.

    Unpickling runs arbitrary code from the file, so this refuses unless `allow_pickle=True`
    (the CLI's `--allow-pickle`): only open pickles you trust.
    """
    import pickle

    if not allow_pickle:
        raise DataError(f"{root}: reading pose pickles executes code stored in them; "
                        "pass --allow-pickle (allow_pickle=True) only for files you trust")
    root = Path(root)
    wanted = set(ids) if ids is not None else None
    sequences = []
    for subject in subfolders(root):
        if wanted is not None and subject not in wanted:
            continue
        for kind in subfolders(root / subject):
            for view in subfolders(root / subject / kind):
                folder = root / subject / kind / view
                pickles = sorted(p for p in folder.iterdir() if p.suffix == ".pkl")
                for pkl in pickles:
                    try:
                        with open(pkl, "rb") as handle:
                            array = np.asarray(pickle.load(handle), dtype=np.float64)
                    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a data problem
                        raise DataError(f"{pkl}: cannot read pose pickle ({type(exc).__name__}: {exc})") from None
                    if array.ndim != 3 or array.shape[1:] != (NUM_JOINTS, 3) or len(array) == 0:
                        raise DataError(f"{pkl}: expected a (T, 17, 3) array, found shape {array.shape}")
                    check_keypoints(array, str(pkl))
                    array = array.astype(np.float32)
                    name = f"{subject}-{kind}-{view}" + (f"-{pkl.stem}" if len(pickles) > 1 else "")
                    sequences.append(Sequence(
                        name=name, subject=subject, camera=view, video=kind,
                        frames=np.arange(len(array), dtype=np.int64), keypoints=array,
                        crop_sizes=np.zeros((len(array), 2), dtype=np.float32)))
    if not sequences:
        raise DataError(f"{root}: no pose pickles found (expected <ID>/<type>/<view>/*.pkl)")
    return sequences
