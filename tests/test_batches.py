"""Training batches (P x K, clips) and test chunks."""

from __future__ import annotations

import numpy as np
import pytest

from bpmt.config import DataConfig
from bpmt.data.batches import PoseBatcher
from bpmt.data.corpus import PoseCorpus
from bpmt.data.sequence import Sequence
from bpmt.errors import DataError


def corpus(identities: int = 5, per_identity: int = 3, frames: int = 50) -> PoseCorpus:
    rng = np.random.default_rng(0)
    seqs = []
    for i in range(identities):
        for k in range(per_identity):
            kp = rng.normal(size=(frames + 7 * k, 17, 3)).astype(np.float32)
            kp[..., 2] = 1.0
            seqs.append(Sequence(f"{i:04d}-camid1_videoid1-seq{k}", f"{i:04d}", "1", "1",
                                 np.arange(frames + 7 * k), kp, np.ones((frames + 7 * k, 2), np.float32)))
    return PoseCorpus.from_sequences(seqs)


def test_identity_batch_is_p_by_k_and_deterministic():
    batcher = PoseBatcher(corpus(), DataConfig(clip_len=24, clip_min=0, channels=["xy", "conf", "vel1"]), frames_per_token=4)
    batch = batcher.identity_batch(np.random.default_rng(3), identities=4, per_identity=2)
    assert batch.features.shape == (8, 24, 17, 5) and batch.keypoints.shape == (8, 24, 17, 3)
    assert not batch.padding_mask.any()
    labels = batch.labels.numpy()
    assert len(set(labels)) == 4 and all((labels == l).sum() == 2 for l in set(labels))
    again = batcher.identity_batch(np.random.default_rng(3), identities=4, per_identity=2)
    assert np.array_equal(batch.features.numpy(), again.features.numpy())
    other = batcher.identity_batch(np.random.default_rng([0, 2, 5, 1]), identities=4, per_identity=2)
    assert not np.array_equal(batch.features.numpy(), other.features.numpy())


def test_variable_clip_lengths_stay_multiples_of_the_token_size():
    batcher = PoseBatcher(corpus(), DataConfig(clip_len=40, clip_min=16), frames_per_token=4)
    lengths = {batcher.random_batch(np.random.default_rng(s), 3).keypoints.shape[1] for s in range(30)}
    assert len(lengths) > 2 and all(16 <= n <= 40 and n % 4 == 0 for n in lengths)


def test_test_chunks_cover_the_sequence_and_flip_mirrors():
    batcher = PoseBatcher(corpus(frames=130), DataConfig(test_max_len=60), frames_per_token=4)
    chunks = batcher.test_chunks(0)
    assert sum(len(c) for c in chunks) == 130 and max(len(c) for c in chunks) <= 60
    flipped = batcher.test_chunks(0, flip=True)
    assert np.allclose(flipped[0][:, 1, 0], -chunks[0][:, 2, 0])        # left eye <- mirrored right eye


def test_clip_centred_test_chunks_are_centred_on_their_own_frames():
    from bpmt.data import transforms as tf

    data = corpus(frames=130)
    batcher = PoseBatcher(data, DataConfig(test_max_len=50, center="clip"), frames_per_token=1)
    chunks, spans = batcher.test_chunks(0), batcher.test_spans(0)
    assert [len(c) for c in chunks] == [44, 43, 43]
    whole = data.keypoints_of(0)
    for chunk, (start, stop) in zip(chunks, spans):
        expected = tf.normalize(whole[start:stop], center="clip", torso_length=tf.reference_torso_length(whole))
        np.testing.assert_allclose(chunk, expected, atol=1e-6)
        neck = 0.5 * (chunk[:, 5, :2] + chunk[:, 6, :2])
        np.testing.assert_allclose(neck.mean(axis=0), [0, 0], atol=1e-5)
    assert not np.allclose(chunks[0][:, 5, :2] + chunks[0][:, 6, :2], 0)   # frames keep their own offsets


def test_hip_origin_puts_each_frames_mid_hip_at_zero():
    """`data.origin=hip` (the plain reference's normalisation with `data.scale=frame`): every frame's
    mid-hip at 0, each frame's torso of length 1, the same pose as the neck origin shifted by the spine."""
    from bpmt.data import transforms as tf

    data = corpus(frames=70)
    hip = PoseBatcher(data, DataConfig(origin="hip", scale="frame"), frames_per_token=1).normalized(0)
    neck = PoseBatcher(data, DataConfig(scale="frame"), frames_per_token=1).normalized(0)
    np.testing.assert_allclose(0.5 * (hip[:, 11, :2] + hip[:, 12, :2]), 0, atol=1e-5)
    mid_shoulder = 0.5 * (hip[:, 5, :2] + hip[:, 6, :2])
    np.testing.assert_allclose(np.linalg.norm(mid_shoulder, axis=-1), 1, atol=1e-5)
    np.testing.assert_allclose(hip[..., :2], neck[..., :2] + mid_shoulder[:, None], atol=1e-5)
    np.testing.assert_array_equal(hip[..., 2], neck[..., 2])
    with pytest.raises(ValueError, match="origin"):
        tf.normalize(data.keypoints_of(0), origin="knee")


def test_training_needs_two_identities():
    batcher = PoseBatcher(corpus(identities=1), DataConfig(clip_len=16, clip_min=0), frames_per_token=4)
    with pytest.raises(DataError, match="at least 2 identities"):
        batcher.identity_batch(np.random.default_rng(0), 4, 2)
