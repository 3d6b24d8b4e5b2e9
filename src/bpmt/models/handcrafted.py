"""The training-free floor: a fixed per-sequence feature vector any learned model must beat.

Each sequence `(T, 17, 3)` becomes one vector of body-shape and motion statistics, invariant to
where the person stands in the crop and to how large they appear:

1. unit = the sequence's median torso length (neck -> mid-hip, neck = mid-shoulders); the
   confidence channel is not used;
2. posture: mean and std over time of each joint's x, y with the mid-hip as origin (17 * 2 * 2 = 68)
3. proportions: mean and std over time of the 12 `skeleton.LIMBS` lengths          (12 * 2    = 24)
4. motion: mean absolute frame-to-frame change of each joint's x, y in the crop    (17 * 2    = 34)

Motion uses crop coordinates rather than hip-centred ones so that it keeps the hip's own bounce and
sway, which the hip-centred posture statistics cannot see (it scored ~2 Rank-1 points higher on the
shipped folds). Consecutive rows are treated as consecutive frames, gaps included.

Features differ in scale, so retrieval uses them after `standardize` with statistics from the
training identities only.
"""

from __future__ import annotations

import numpy as np

from ..skeleton import LEFT_HIP, LEFT_SHOULDER, LIMBS, NUM_JOINTS, RIGHT_HIP, RIGHT_SHOULDER

FEATURE_DIM = NUM_JOINTS * 2 * 2 + len(LIMBS) * 2 + NUM_JOINTS * 2
_EPS = 1e-6


def torso_normalize(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(T, 17, C>=2)` -> (hip-centred, crop) x, y, both `(T, 17, 2)` float64 in torso lengths."""
    xy = np.asarray(keypoints, dtype=np.float64)[..., :2]                         # (T, 17, 2)
    mid_hip = xy[:, [LEFT_HIP, RIGHT_HIP]].mean(axis=1, keepdims=True)            # (T, 1, 2)
    neck = xy[:, [LEFT_SHOULDER, RIGHT_SHOULDER]].mean(axis=1, keepdims=True)     # (T, 1, 2)
    torso = np.nanmedian(np.linalg.norm(neck - mid_hip, axis=-1))
    # A degenerate torso (all joints on one point) would blow every feature up; keep it finite.
    scale = torso if np.isfinite(torso) and torso > _EPS else 1.0
    return (xy - mid_hip) / scale, xy / scale


def handcrafted_features(keypoints: np.ndarray) -> np.ndarray:
    """`(T, 17, 3)` keypoints (x, y, conf in pixels) -> `(FEATURE_DIM,)` float64 features."""
    keypoints = np.asarray(keypoints)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_JOINTS, 3) or len(keypoints) == 0:
        raise ValueError(f"keypoints must have shape (T>0, {NUM_JOINTS}, 3), got {keypoints.shape}")
    pose, crop = torso_normalize(keypoints)                                       # (T, 17, 2) each

    starts, ends = (np.array(side) for side in zip(*LIMBS))
    limbs = np.linalg.norm(pose[:, ends] - pose[:, starts], axis=-1)              # (T, 12)
    if len(crop) > 1:
        motion = np.nanmean(np.abs(np.diff(crop, axis=0)), axis=0)                # (17, 2)
    else:
        motion = np.zeros((NUM_JOINTS, 2))
    return np.concatenate([
        np.nanmean(pose, axis=0).ravel(), np.nanstd(pose, axis=0).ravel(),
        np.nanmean(limbs, axis=0), np.nanstd(limbs, axis=0),
        motion.ravel(),
    ])


def corpus_features(corpus) -> np.ndarray:
    """`(N, FEATURE_DIM)` features of every sequence of a `PoseCorpus`."""
    return np.stack([handcrafted_features(corpus.keypoints_of(i)) for i in range(len(corpus))])


def feature_statistics(train_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std `(D,)` of `train_features (M, D)` for `standardize`; dimensions
    constant on the training set get std 1 (they are only centred)."""
    train_features = np.asarray(train_features, dtype=np.float64)
    std = train_features.std(axis=0)
    return train_features.mean(axis=0), np.where(std > _EPS, std, 1.0)


def standardize(train_features: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Scale `features (N, D)` to zero mean, unit variance per dimension using `train_features (M, D)`
    (`feature_statistics`)."""
    mean, std = feature_statistics(train_features)
    return (np.asarray(features, dtype=np.float64) - mean) / std


def fit_lda(features: np.ndarray, labels, shrinkage: float = 0.3, dims: int | None = None) -> np.ndarray:
    """Fisher's linear discriminant of standardised `features (N, D)` -> projection `(D, dims)`.

    The learned counterpart of the floor: the directions that best separate the training
    identities (between-identity over within-identity scatter). The within-identity scatter is
    shrunk towards `shrinkage` x its mean eigenvalue x identity so that it stays invertible with
    few sequences per identity. `dims` defaults to (identities - 1), the rank of the
    between-identity scatter.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError("LDA needs at least two identities")
    dims = len(classes) - 1 if dims is None else dims
    if not 1 <= dims <= features.shape[1]:
        raise ValueError(f"dims must lie in [1, {features.shape[1]}], got {dims}")
    mean = features.mean(axis=0)
    within = np.zeros((features.shape[1],) * 2)
    between = np.zeros_like(within)
    for c in classes:
        members = features[labels == c]
        centre = members.mean(axis=0)
        within += (members - centre).T @ (members - centre)
        between += len(members) * np.outer(centre - mean, centre - mean)
    within /= len(features)
    between /= len(features)
    within += shrinkage * np.trace(within) / len(within) * np.eye(len(within))
    values, vectors = np.linalg.eig(np.linalg.solve(within, between))
    order = np.argsort(-values.real)
    return vectors[:, order[:dims]].real


def lda_embeddings(train_features: np.ndarray, train_labels, features: np.ndarray,
                   shrinkage: float = 0.3) -> np.ndarray:
    """The LDA baseline's embeddings `(N, identities - 1)` of `features (N, D)`: standardised with the
    training features' statistics, projected by `fit_lda` fitted on the training identities only."""
    projection = fit_lda(standardize(train_features, train_features), train_labels, shrinkage=shrinkage)
    return standardize(train_features, features) @ projection


def fuse_embeddings(*blocks: np.ndarray) -> np.ndarray:
    """Late fusion: scale every row of each `(N, D_i)` block to unit length, then concatenate.

    Each block then weighs the same in a Euclidean (or cosine) distance, whatever its width or
    scale: the squared distance of fused rows is the sum of the blocks' squared unit-vector
    distances. Rows of zeros stay zero (no division by zero)."""
    if not blocks:
        raise ValueError("nothing to fuse")
    rows = {len(block) for block in blocks}
    if len(rows) != 1:
        raise ValueError(f"blocks to fuse must have the same number of rows, got {sorted(rows)}")
    units = []
    for block in blocks:
        block = np.asarray(block, dtype=np.float64)
        if block.ndim != 2:
            raise ValueError(f"blocks to fuse must be 2-D (N, D), got shape {block.shape}")
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        units.append(block / np.where(norms > _EPS, norms, 1.0))
    return np.concatenate(units, axis=1).astype(np.float32)
