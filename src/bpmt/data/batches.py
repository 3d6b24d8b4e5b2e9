"""From a `PoseCorpus` to model-ready batches: training clips (P x K identity batches or plain
random batches for pretraining) and whole test sequences (chunked when long).

Batches for a training step are a pure function of a `np.random.Generator`; the training loop
seeds it from (seed, stage, step, rank), so a resumed run sees exactly the batches it would have
seen, and DDP ranks see distinct batches that each keep K samples per identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from ..skeleton import get_partition
from . import transforms as tf
from .corpus import PoseCorpus


@dataclass
class Batch:
    features: torch.Tensor        # (B, T, 17, C) input channels
    coords: torch.Tensor          # (B, T, 17, 2) normalised x, y (pretraining targets)
    padding_mask: torch.Tensor    # (B, T) True = padded frame
    labels: torch.Tensor          # (B,) identity index (-1 when unknown)

    def to(self, device) -> "Batch":
        return Batch(self.features.to(device), self.coords.to(device), self.padding_mask.to(device),
                     self.labels.to(device))


def collate(clips: list[np.ndarray], channels: list[str], multiple: int, labels: list[int] | None = None) -> Batch:
    """Normalised clips `[(T_i, 17, 3)]` -> a padded `Batch` (T padded to a multiple of `multiple`)."""
    longest = max(len(c) for c in clips)
    T = -(-longest // multiple) * multiple
    C = tf.num_channels(channels)
    features = np.zeros((len(clips), T, 17, C), dtype=np.float32)
    coords = np.zeros((len(clips), T, 17, 2), dtype=np.float32)
    padding = np.ones((len(clips), T), dtype=bool)
    for i, clip in enumerate(clips):
        features[i, :len(clip)] = tf.feature_channels(clip, channels)
        coords[i, :len(clip)] = clip[..., :2]
        padding[i, :len(clip)] = False
    label_array = np.asarray(labels if labels is not None else [-1] * len(clips), dtype=np.int64)
    return Batch(torch.from_numpy(features), torch.from_numpy(coords), torch.from_numpy(padding),
                 torch.from_numpy(label_array))


class PoseBatcher:
    """Normalises every sequence once, then serves training clips and test sequences."""

    def __init__(self, corpus: PoseCorpus, cfg: DataConfig, frames_per_token: int,
                 label_of: dict[str, int] | None = None):
        self.corpus, self.cfg, self.multiple = corpus, cfg, frames_per_token
        self.partition = get_partition(cfg.partition)
        self.sequences = [tf.normalize(corpus.keypoints_of(i), rotate=cfg.rotate, scale=cfg.scale)
                          for i in range(len(corpus))]
        self.label_of = label_of if label_of is not None else {s: i for i, s in enumerate(corpus.identities)}
        self.by_identity: dict[str, list[int]] = {}
        for i, subject in enumerate(corpus.subjects):
            self.by_identity.setdefault(subject, []).append(i)

    @property
    def num_classes(self) -> int:
        return len(self.label_of)

    def clip_length(self, rng: np.random.Generator) -> int:
        """This batch's clip length: `clip_len`, or drawn from [clip_min, clip_len] (multiple of the token size)."""
        cfg = self.cfg
        if not cfg.clip_min:
            return cfg.clip_len
        length = int(rng.integers(cfg.clip_min, cfg.clip_len + 1))
        return max(cfg.clip_min, length - length % self.multiple)

    def train_clip(self, index: int, rng: np.random.Generator, part_mask: bool, length: int) -> np.ndarray:
        """A random augmented clip `(length, 17, 3)` of sequence `index`."""
        cfg = self.cfg
        seq = self.sequences[index]
        if cfg.speed_low != 1.0 or cfg.speed_high != 1.0:
            seq = tf.temporal_resample(seq, rng, cfg.speed_low, cfg.speed_high)
        clip = seq[tf.temporal_crop(len(seq), length, rng)]
        clip = tf.random_flip(clip, rng, cfg.flip_p)
        clip = tf.random_rotation(clip, rng, cfg.rotation_deg)
        clip = tf.random_scale(clip, rng, cfg.scale_low, cfg.scale_high)
        clip = tf.joint_noise(clip, rng, cfg.noise_std)
        if part_mask:
            clip = tf.mask_part(clip, rng, self.partition, cfg.part_mask_p)
        return clip.astype(np.float32)

    def identity_batch(self, rng: np.random.Generator, identities: int, per_identity: int) -> Batch:
        """P x K batch: `identities` random identities, `per_identity` clips each (sequences drawn
        without replacement where the identity has enough of them)."""
        pool = sorted(self.by_identity)
        if len(pool) < 2:
            raise DataError(f"{self.corpus.source}: training needs at least 2 identities, found {len(pool)}")
        chosen = rng.choice(len(pool), size=min(identities, len(pool)), replace=False)
        length = self.clip_length(rng)
        clips, labels = [], []
        for c in chosen:
            subject = pool[c]
            seqs = self.by_identity[subject]
            picks = rng.choice(seqs, size=per_identity, replace=len(seqs) < per_identity)
            for index in picks:
                clips.append(self.train_clip(int(index), rng, part_mask=True, length=length))
                labels.append(self.label_of[subject])
        return collate(clips, self.cfg.channels, self.multiple, labels)

    def random_batch(self, rng: np.random.Generator, size: int) -> Batch:
        """Uniformly random sequences (pretraining needs no identities); no Part-Mask."""
        picks = rng.integers(len(self.sequences), size=size)
        length = self.clip_length(rng)
        return collate([self.train_clip(int(i), rng, part_mask=False, length=length) for i in picks],
                       self.cfg.channels, self.multiple)

    def test_chunks(self, index: int, flip: bool = False) -> list[np.ndarray]:
        """The whole normalised sequence, split into chunks of at most `test_max_len` frames."""
        seq = self.sequences[index]
        if flip:
            seq = tf.random_flip(seq, np.random.default_rng(0), p=1.0)
        return [seq[idx] for idx in tf.chunk_indices(len(seq), self.cfg.test_max_len)]
