"""From a `PoseCorpus` to model-ready batches: training clips (P x K identity batches or plain
random batches for pretraining) and whole test sequences (chunked when long).

Frames are read straight from the corpus (a memory-mapped cache at scale) and normalised only when
a clip or test sequence needs them: the batcher keeps one number per sequence (its reference torso
length), never a normalised copy of the data, and its clips equal those of normalising every whole
sequence first.

Batches for a training step are a pure function of a `np.random.Generator`, and each is one
*global* batch sharded over DDP ranks: every rank draws the same plan (which identities, which
sequences, clip length, one generator seed per clip) and builds only its `Shard` of it - its own
identities, each with all K samples. The union over ranks is exactly the batch one process draws
with `world_size` times as many identities (or samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from ..skeleton import flip_keypoints, get_partition
from . import transforms as tf
from .channels import derive_channels
from .corpus import PoseCorpus


@dataclass(frozen=True)
class Shard:
    """The part of a global batch that rank `rank` of `world_size` builds."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self):
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in [0, world_size), got rank {self.rank} of {self.world_size}")

    def part(self, count: int) -> slice:
        """This rank's contiguous share of `count` items (sizes differ by at most one, like np.array_split)."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


SINGLE_PROCESS = Shard()


@dataclass
class Batch:
    features: torch.Tensor | None  # (B, T, 17, C) input channels (every real frame visible); None for pretraining
    keypoints: torch.Tensor       # (B, T, 17, 3) normalised x, y, conf (masked pretraining derives its own channels)
    padding_mask: torch.Tensor    # (B, T) True = padded frame
    labels: torch.Tensor          # (B,) identity index (-1 when unknown)

    def to(self, device) -> "Batch":
        features = None if self.features is None else self.features.to(device)
        return Batch(features, self.keypoints.to(device), self.padding_mask.to(device),
                     self.labels.to(device))


def collate(clips: list[np.ndarray], channels: list[str], multiple: int, labels: list[int] | None = None,
            features: bool = True) -> Batch:
    """Normalised clips `[(T_i, 17, 3)]` -> a padded `Batch` (T padded to a multiple of `multiple`);
    the channels of each clip are derived from its own frames only (padding is invisible).
    `features=False` leaves them out (masked pretraining derives its own after masking)."""
    longest = max(len(c) for c in clips)
    T = -(-longest // multiple) * multiple
    keypoints = np.zeros((len(clips), T, 17, 3), dtype=np.float32)
    padding = np.ones((len(clips), T), dtype=bool)
    for i, clip in enumerate(clips):
        keypoints[i, :len(clip)] = clip
        padding[i, :len(clip)] = False
    keypoints_t, padding_t = torch.from_numpy(keypoints), torch.from_numpy(padding)
    derived = derive_channels(keypoints_t, channels, (~padding_t)[:, :, None].expand(-1, -1, 17)) if features else None
    label_array = np.asarray(labels if labels is not None else [-1] * len(clips), dtype=np.int64)
    return Batch(derived, keypoints_t, padding_t, torch.from_numpy(label_array))


class PoseBatcher:
    """Serves augmented training clips and test sequences, normalising only the frames it reads."""

    def __init__(self, corpus: PoseCorpus, cfg: DataConfig, frames_per_token: int,
                 label_of: dict[str, int] | None = None):
        self.corpus, self.cfg, self.multiple = corpus, cfg, frames_per_token
        self.partition = get_partition(cfg.partition)
        self.torso_lengths = np.full(len(corpus), np.nan)       # (S,) per-sequence scale, filled on first use
        self.label_of = label_of if label_of is not None else {s: i for i, s in enumerate(corpus.identities)}
        self.by_identity: dict[str, list[int]] = {}
        for i, subject in enumerate(corpus.subjects):
            self.by_identity.setdefault(subject, []).append(i)

    @property
    def num_classes(self) -> int:
        return len(self.label_of)

    def normalized(self, index: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Frames `rows` (default: all) of sequence `index`, normalised as part of the whole sequence:
        `(len(rows), 17, 3)` float32, equal to `tf.normalize(whole sequence)[rows]` (with
        `data.center=clip` the frames are centred on their own mean neck, or mid-hip, instead)."""
        keypoints = self.corpus.keypoints_of(index)                          # (T, 17, 3), maybe memory-mapped
        cfg = self.cfg
        if rows is None:
            return tf.normalize(keypoints, rotate=cfg.rotate, scale=cfg.scale, center=cfg.center, origin=cfg.origin)
        if np.isnan(self.torso_lengths[index]):
            self.torso_lengths[index] = tf.reference_torso_length(keypoints)
        return tf.normalize(keypoints[rows], rotate=cfg.rotate, scale=cfg.scale,
                            torso_length=self.torso_lengths[index], center=cfg.center, origin=cfg.origin)

    def clip_length(self, rng: np.random.Generator) -> int:
        """This batch's clip length: `clip_len`, or drawn from [clip_min, clip_len] (multiple of the token size)."""
        cfg = self.cfg
        if not cfg.clip_min:
            return cfg.clip_len
        length = int(rng.integers(cfg.clip_min, cfg.clip_len + 1))
        return max(cfg.clip_min, length - length % self.multiple)

    def train_clip(self, index: int, rng: np.random.Generator, part_mask: bool, length: int) -> np.ndarray:
        """A random augmented clip `(length, 17, 3)` of sequence `index` (speed change, crop, flip,
        rotation, scale, noise, Part-Mask); only the frames inside the clip are read."""
        cfg = self.cfg
        total = int(self.corpus.lengths[index])
        if cfg.speed_low != 1.0 or cfg.speed_high != 1.0:
            before, after, weight = tf.resample_positions(total, rng, cfg.speed_low, cfg.speed_high)
            window = tf.temporal_crop(len(before), length, rng)
            rows, where = np.unique(np.concatenate([before[window], after[window]]), return_inverse=True)
            frames = self.normalized(index, rows)                             # (R, 17, 3)
            w = weight[window].astype(frames.dtype)[:, None, None]            # (length, 1, 1)
            clip = frames[where[:length]] * (1 - w) + frames[where[length:]] * w
        else:
            clip = self.normalized(index, tf.temporal_crop(total, length, rng))
        clip = tf.random_flip(clip, rng, cfg.flip_p)
        clip = tf.random_rotation(clip, rng, cfg.rotation_deg)
        clip = tf.random_scale(clip, rng, cfg.scale_low, cfg.scale_high)
        clip = tf.joint_noise(clip, rng, cfg.noise_std)
        if part_mask:
            clip = tf.mask_part(clip, rng, self.partition, cfg.part_mask_p)
        return clip.astype(np.float32)

    def identity_batch(self, rng: np.random.Generator, identities: int, per_identity: int,
                       shard: Shard = SINGLE_PROCESS) -> Batch:
        """P x K batch: `identities` random identities per rank, `per_identity` clips each (sequences
        drawn without replacement where the identity has enough of them).

        The global batch has `identities x world_size` identities (fewer when the data has fewer);
        this rank gets its share of them, each with all its clips.
        """
        pool = sorted(self.by_identity)
        if len(pool) < 2 * shard.world_size:
            per_rank = f" for {shard.world_size} ranks (2 per rank)" if shard.world_size > 1 else ""
            raise DataError(f"{self.corpus.source}: training needs at least 2 identities{per_rank}, found {len(pool)}")
        chosen = rng.choice(len(pool), size=min(identities * shard.world_size, len(pool)), replace=False)
        length = self.clip_length(rng)
        picks = []
        for c in chosen:
            seqs = self.by_identity[pool[c]]
            picks.append(rng.choice(seqs, size=per_identity, replace=len(seqs) < per_identity))
        seeds = rng.integers(2 ** 63, size=(len(chosen), per_identity))       # one generator per clip
        mine = shard.part(len(chosen))
        clips, labels = [], []
        for c, indices, clip_seeds in zip(chosen[mine], picks[mine], seeds[mine]):
            for index, seed in zip(indices, clip_seeds):
                clips.append(self.train_clip(int(index), np.random.default_rng(int(seed)), part_mask=True,
                                             length=length))
                labels.append(self.label_of[pool[c]])
        return collate(clips, self.cfg.channels, self.multiple, labels)

    def random_batch(self, rng: np.random.Generator, size: int, shard: Shard = SINGLE_PROCESS) -> Batch:
        """Uniformly random sequences (pretraining needs no identities); no Part-Mask; keypoints only
        (`features` None: the pretrainers derive the channels after masking). `size` per rank."""
        picks = rng.integers(len(self.corpus), size=size * shard.world_size)
        length = self.clip_length(rng)
        seeds = rng.integers(2 ** 63, size=len(picks))                        # one generator per clip
        mine = shard.part(len(picks))
        return collate([self.train_clip(int(i), np.random.default_rng(int(seed)), part_mask=False, length=length)
                        for i, seed in zip(picks[mine], seeds[mine])], self.cfg.channels, self.multiple,
                       features=False)

    def test_chunks(self, index: int, flip: bool = False) -> list[np.ndarray]:
        """The whole normalised sequence, split into chunks of at most `test_max_len` frames."""
        return [self.test_chunk(index, span, flip) for span in self.test_spans(index)]

    def test_spans(self, index: int) -> list[tuple[int, int]]:
        """`(start, stop)` frame ranges of `test_chunks(index)`, without reading any frame."""
        return [(int(rows[0]), int(rows[-1]) + 1)
                for rows in tf.chunk_indices(int(self.corpus.lengths[index]), self.cfg.test_max_len)]

    def test_chunk(self, index: int, span: tuple[int, int], flip: bool = False) -> np.ndarray:
        """One of `test_chunks(index, flip)`, reading only its frames."""
        chunk = self.normalized(index, np.arange(*span))
        return flip_keypoints(chunk) if flip else chunk
