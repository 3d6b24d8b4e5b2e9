"""A packed set of pose sequences: every frame in one array plus a per-sequence index.

The same object comes from a raw Gait3D folder, a pose-pickle folder or a memory-mapped cache;
subsets are index selections, so they never copy frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence as Seq

import numpy as np

from ..errors import DataError
from .sequence import Sequence


@dataclass
class PoseCorpus:
    keypoints: np.ndarray     # (F, 17, 3) float32, all frames of all sequences, maybe memory-mapped
    crop_sizes: np.ndarray    # (F, 2) float32
    frames: np.ndarray        # (F,) int64 frame numbers
    starts: np.ndarray        # (S,) int64 first row of each sequence in the frame arrays
    lengths: np.ndarray       # (S,) int64 number of frames of each sequence
    names: list[str]          # (S,) `<ID>-<camid_videoid>-<seq>`
    subjects: list[str]       # (S,)
    cameras: list[str]        # (S,)
    videos: list[str]         # (S,)
    source: str = ""

    @classmethod
    def from_sequences(cls, sequences: Seq[Sequence], source: str = "") -> "PoseCorpus":
        if not sequences:
            raise DataError(f"{source or 'input'}: no sequences")
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return cls(
            keypoints=np.concatenate([s.keypoints for s in sequences]).astype(np.float32, copy=False),
            crop_sizes=np.concatenate([s.crop_sizes for s in sequences]).astype(np.float32, copy=False),
            frames=np.concatenate([s.frames for s in sequences]).astype(np.int64, copy=False),
            starts=starts, lengths=lengths,
            names=[s.name for s in sequences], subjects=[s.subject for s in sequences],
            cameras=[s.camera for s in sequences], videos=[s.video for s in sequences],
            source=source,
        )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    @property
    def identities(self) -> list[str]:
        return sorted(set(self.subjects))

    def keypoints_of(self, index: int) -> np.ndarray:
        """`(T, 17, 3)` keypoints of sequence `index` (a view into the packed array)."""
        start, length = int(self.starts[index]), int(self.lengths[index])
        return self.keypoints[start:start + length]

    def sequence(self, index: int) -> Sequence:
        start, length = int(self.starts[index]), int(self.lengths[index])
        rows = slice(start, start + length)
        return Sequence(self.names[index], self.subjects[index], self.cameras[index], self.videos[index],
                        np.asarray(self.frames[rows]), np.asarray(self.keypoints[rows]),
                        np.asarray(self.crop_sizes[rows]))

    def index_of(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise DataError(f"{self.source or 'data'}: no sequence named {name!r}") from None

    def select(self, indices: Iterable[int]) -> "PoseCorpus":
        idx = np.asarray(list(indices), dtype=np.int64)
        return PoseCorpus(self.keypoints, self.crop_sizes, self.frames, self.starts[idx], self.lengths[idx],
                          [self.names[i] for i in idx], [self.subjects[i] for i in idx],
                          [self.cameras[i] for i in idx], [self.videos[i] for i in idx], self.source)

    def select_ids(self, ids: Iterable[str]) -> "PoseCorpus":
        """Keep the sequences of the given identities; error if none of them is present."""
        wanted = set(ids)
        keep = [i for i, s in enumerate(self.subjects) if s in wanted]
        if not keep:
            raise DataError(f"{self.source or 'data'}: none of the {len(wanted)} requested identities "
                            f"is present (e.g. {sorted(wanted)[:5]})")
        return self.select(keep)

    def stats(self) -> dict:
        lengths = self.lengths
        return {
            "identities": len(set(self.subjects)),
            "sequences": len(self),
            "frames": int(lengths.sum()),
            "frames_per_sequence": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                                    "max": int(lengths.max())},
            "cameras": len(set(self.cameras)),
            "sequences_per_identity": _min_median_max(np.unique(self.subjects, return_counts=True)[1]),
        }


def _min_median_max(values: np.ndarray) -> dict:
    return {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())}
