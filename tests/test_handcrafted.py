"""The training-free floor: feature shape and invariances, standardisation, and one real fold."""

from __future__ import annotations

import numpy as np
import pytest

from bpmt.models.handcrafted import FEATURE_DIM, handcrafted_features, standardize

from conftest import FOLDS


def walking(num_frames: int = 20, seed: int = 0) -> np.ndarray:
    """A `(T, 17, 3)` upright body in pixels whose joints wobble from frame to frame."""
    rng = np.random.default_rng(seed)
    body = np.array([
        [0, -60], [-3, -63], [3, -63], [-6, -61], [6, -61],      # head
        [-15, -45], [15, -45], [-20, -22], [20, -22], [-22, 0], [22, 0],   # shoulders, elbows, wrists
        [-10, 0], [10, 0], [-11, 30], [11, 30], [-12, 60], [12, 60],       # hips, knees, ankles
    ], dtype=np.float64)
    xy = body[None] + rng.normal(scale=2.0, size=(num_frames, 17, 2)) + [100.0, 150.0]
    conf = rng.uniform(0.3, 1.0, size=(num_frames, 17, 1))
    return np.concatenate([xy, conf], axis=-1)


def test_shape_and_finite():
    features = handcrafted_features(walking())
    assert features.shape == (FEATURE_DIM,) == (68 + 24 + 34,)
    assert np.isfinite(features).all()


def test_invariant_to_translation_and_scale():
    keypoints = walking()
    moved = keypoints.copy()
    moved[..., :2] = keypoints[..., :2] * 2.5 + [37.0, -12.0]
    np.testing.assert_allclose(handcrafted_features(moved), handcrafted_features(keypoints), atol=1e-10)


def test_ignores_confidence():
    keypoints = walking()
    other = keypoints.copy()
    other[..., 2] = 0.01
    np.testing.assert_array_equal(handcrafted_features(other), handcrafted_features(keypoints))


def test_distinguishes_body_proportions():
    keypoints = walking()
    long_legs = keypoints.copy()
    long_legs[:, 13:, 1] += 20.0                                   # knees and ankles lower
    assert not np.allclose(handcrafted_features(long_legs), handcrafted_features(keypoints))


def test_single_frame_and_degenerate_pose():
    assert np.isfinite(handcrafted_features(walking(num_frames=1))).all()
    assert np.isfinite(handcrafted_features(np.zeros((5, 17, 3)))).all()
    with pytest.raises(ValueError, match="shape"):
        handcrafted_features(np.zeros((5, 13, 3)))


def test_standardize_uses_training_statistics():
    rng = np.random.default_rng(0)
    train = rng.normal(loc=3.0, scale=2.0, size=(50, 4))
    train[:, 3] = 7.0                                              # constant: only centred
    standardized = standardize(train, train)
    np.testing.assert_allclose(standardized.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(standardized[:, :3].std(axis=0), 1.0)
    np.testing.assert_allclose(standardized[:, 3], 0.0)
    other = rng.normal(size=(5, 4))
    np.testing.assert_allclose(standardize(train, other),
                               (other - train.mean(0)) / np.where(train.std(0) > 1e-6, train.std(0), 1.0))


def test_floor_on_one_real_fold(gait3d_root):
    """Fold 0 of the shipped folds: leave-one-out Rank-1 well above chance (measured 55.7).

    Chance is high here: one identity has 61 of the fold's 106 sequences.
    """
    from bpmt.data.source import open_data
    from bpmt.evaluation.protocols import fold_split, leave_one_out, load_folds

    folds = load_folds(FOLDS)
    train_ids, test_ids = fold_split(folds, 0)
    corpus, _ = open_data(gait3d_root, train_ids + test_ids, workers=2)
    features = np.stack([handcrafted_features(corpus.keypoints_of(i)) for i in range(len(corpus))])
    subjects = np.array(corpus.subjects)
    train, test = np.isin(subjects, train_ids), np.isin(subjects, test_ids)
    result = leave_one_out(standardize(features[train], features[test]), subjects[test])

    # Chance Rank-1: the share of same-identity sequences among the others, averaged over queries
    # (36.4 for this fold).
    _, counts = np.unique(subjects[test], return_counts=True)
    chance = 100 * np.sum(counts * (counts - 1)) / (test.sum() * (test.sum() - 1))
    assert result["queries"] == test.sum()
    assert result["rank1"] > chance + 10.0
    assert result["rank1"] > 45.0


def test_fit_lda_finds_the_discriminative_direction_and_checks_its_arguments():
    from bpmt.models.handcrafted import fit_lda

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 20)
    features = rng.normal(size=(100, 6)) * np.array([1, 1, 5, 5, 5, 5])    # large but useless dims 2-5
    features[:, 1] += labels * 2.0                                          # identity lives in dim 1
    projection = fit_lda(features, labels, shrinkage=0.1, dims=1)
    assert projection.shape == (6, 1)
    direction = np.abs(projection[:, 0]) / np.linalg.norm(projection[:, 0])
    assert direction[1] > 0.95
    assert fit_lda(features, labels).shape == (6, 4)                        # identities - 1
    with pytest.raises(ValueError, match="two identities"):
        fit_lda(features, np.zeros(100))
    with pytest.raises(ValueError, match="dims must lie in"):
        fit_lda(features, labels, dims=7)


def test_lda_embeddings_use_training_statistics_only():
    from bpmt.models.handcrafted import fit_lda, lda_embeddings, standardize

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 10)
    train = rng.normal(size=(40, 5))
    train[:, 0] += labels
    test = rng.normal(size=(7, 5)) * 3 + 10                                 # other statistics: must not leak in
    expected = standardize(train, test) @ fit_lda(standardize(train, train), labels)
    np.testing.assert_allclose(lda_embeddings(train, labels, test), expected)
    assert lda_embeddings(train, labels, test).shape == (7, 3)


def test_fuse_embeddings_weighs_every_block_the_same():
    from bpmt.models.handcrafted import fuse_embeddings

    a = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    b = np.array([[100.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, -1e-3]])
    fused = fuse_embeddings(a, b)
    assert fused.dtype == np.float32 and fused.shape == (3, 5)
    np.testing.assert_allclose(fused[0], [0.6, 0.8, 1.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(fused[1], [0.0, 0.0, 0.0, 1.0, 0.0])          # a zero row stays zero
    np.testing.assert_allclose(np.linalg.norm(fused[2, 2:]), 1.0, rtol=1e-6)  # tiny rows are scaled up too
    # A block a thousand times larger does not dominate the distance.
    np.testing.assert_allclose(fuse_embeddings(a, 1000 * b), fused, rtol=1e-6)
    with pytest.raises(ValueError, match="same number of rows"):
        fuse_embeddings(a, b[:2])
    with pytest.raises(ValueError, match="2-D"):
        fuse_embeddings(a[:, 0])
    with pytest.raises(ValueError, match="nothing to fuse"):
        fuse_embeddings()
