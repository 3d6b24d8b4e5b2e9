"""Normalisation, input channels and augmentations of `bpmt.data.transforms`."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bpmt import skeleton
from bpmt.data import transforms as tf

LIMBS = np.array(skeleton.LIMBS)


def walking(num_frames: int = 12, seed: int = 0) -> np.ndarray:
    """A plausible `(T, 17, 3)` pixel-space sequence: an upright body, tilted, drifting and jittered."""
    rng = np.random.default_rng(seed)
    body = np.array([
        [0, -60], [-5, -65], [5, -65], [-10, -62], [10, -62],      # head
        [-20, -40], [20, -40], [-25, -10], [25, -10], [-27, 15], [27, 15],
        [-12, 10], [12, 10], [-14, 50], [14, 50], [-15, 90], [15, 90],
    ], dtype=np.float64)
    frames = []
    for t in range(num_frames):
        angle = np.deg2rad(rng.uniform(-30, 30))
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        size = rng.uniform(0.8, 1.2)
        xy = body @ rot.T * size + np.array([100 + 3 * t, 200]) + rng.normal(0, 1, body.shape)
        conf = rng.uniform(0.3, 1.0, (17, 1))
        frames.append(np.concatenate([xy, conf], axis=1))
    return np.stack(frames).astype(np.float32)


def neck_hip(kp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (kp[:, 5, :2] + kp[:, 6, :2]) / 2, (kp[:, 11, :2] + kp[:, 12, :2]) / 2


def bone_lengths(kp: np.ndarray) -> np.ndarray:
    return np.linalg.norm(kp[:, LIMBS[:, 0], :2] - kp[:, LIMBS[:, 1], :2], axis=-1)


# ---------------------------------------------------------------------------------------------
# normalize


@pytest.mark.parametrize("rotate", [False, True])
def test_normalize_frame_mode_centres_neck_and_unit_torso(rotate):
    kp = walking()
    out = tf.normalize(kp, rotate=rotate, scale="frame")
    neck, hip = neck_hip(out)
    assert out.shape == kp.shape and out.dtype == np.float32
    np.testing.assert_allclose(neck, 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(hip - neck, axis=-1), 1, atol=1e-5)
    np.testing.assert_array_equal(out[..., 2], kp[..., 2])  # confidence passes through


def test_normalize_sequence_mode_median_torso_is_one_and_keeps_size_changes():
    kp = walking()
    out = tf.normalize(kp, scale="sequence")
    neck, hip = neck_hip(out)
    np.testing.assert_allclose(neck, 0, atol=1e-5)
    torso_out = np.linalg.norm(hip - neck, axis=-1)
    np.testing.assert_allclose(np.median(torso_out), 1, atol=1e-5)
    # One scale for the whole sequence: relative torso lengths are those of the input.
    in_neck, in_hip = neck_hip(kp)
    torso_in = np.linalg.norm(in_hip - in_neck, axis=-1)
    np.testing.assert_allclose(torso_out, torso_in / np.median(torso_in), rtol=1e-5)


def test_rotation_makes_spine_vertical_pointing_down():
    out = tf.normalize(walking(), rotate=True)
    neck, hip = neck_hip(out)
    spine = hip - neck
    angle = np.degrees(np.arctan2(spine[:, 0], spine[:, 1]))   # 0 = straight down (+y)
    np.testing.assert_allclose(angle, 0, atol=1e-3)
    assert (spine[:, 1] > 0).all()


def test_rotation_is_proper_rotation():
    kp = walking()
    plain = tf.normalize(kp, rotate=False, scale="sequence")
    rotated = tf.normalize(kp, rotate=True, scale="sequence")
    np.testing.assert_allclose(bone_lengths(rotated), bone_lengths(plain), rtol=1e-5, atol=1e-6)
    # Orientation kept (no mirror): the signed area of shoulder-shoulder-hip has the same sign.
    def signed_area(k):
        a, b, c = k[:, 5, :2], k[:, 6, :2], k[:, 11, :2]
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    np.testing.assert_array_equal(np.sign(signed_area(rotated)), np.sign(signed_area(plain)))


def test_rotation_known_value():
    # Spine pointing along +x (body lying down): rotate by 90 degrees so that it points along +y.
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, [11, 12], 0] = 2.0    # mid-hip at (2, 0), neck at (0, 0)
    kp[0, 0, :2] = (-1.0, 0.0)  # nose above the neck, opposite the hips
    out = tf.normalize(kp, rotate=True, scale="frame")
    np.testing.assert_allclose(out[0, 11, :2], (0, 1), atol=1e-6)
    np.testing.assert_allclose(out[0, 0, :2], (0, -0.5), atol=1e-6)


def test_degenerate_frames_fall_back():
    kp = walking(5)
    kp[2] = 0.0                  # all-zero frame: no torso
    kp[3, 11:13, :2] = kp[3, 5:7, :2]  # hips on shoulders: zero torso
    for scale in ("frame", "sequence"):
        for rotate in (False, True):
            out = tf.normalize(kp, rotate=rotate, scale=scale)
            assert np.isfinite(out).all()
    np.testing.assert_array_equal(tf.normalize(np.zeros((4, 17, 3), np.float32)), 0)


def test_normalize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        tf.normalize(walking(), scale="body")
    with pytest.raises(ValueError, match="17, 3"):
        tf.normalize(np.zeros((4, 17, 2), np.float32))


special = st.sampled_from([0.0, np.nan, np.inf, -np.inf, 1e-9])
coords = st.one_of(st.floats(-1e4, 1e4, width=32), special)


@settings(max_examples=60, deadline=None)
@given(kp=arrays(np.float32, st.tuples(st.integers(1, 6), st.just(17), st.just(3)), elements=coords),
       rotate=st.booleans(), scale=st.sampled_from(["frame", "sequence"]))
def test_normalize_never_produces_nan_or_inf(kp, rotate, scale):
    out = tf.normalize(kp, rotate=rotate, scale=scale)
    assert np.isfinite(out).all()
    feats = tf.feature_channels(out, list(tf.CHANNELS))
    assert np.isfinite(feats).all()


# ---------------------------------------------------------------------------------------------
# feature_channels


def tiny() -> np.ndarray:
    """Three frames; joint j sits at (j, 10 t) with confidence 0.5 - easy to compute by hand."""
    kp = np.zeros((3, 17, 3), np.float32)
    kp[..., 0] = np.arange(17)
    kp[..., 1] = 10 * np.arange(3)[:, None]
    kp[..., 2] = 0.5
    return kp


def test_channel_counts():
    assert tf.num_channels(["xy"]) == 2
    assert tf.num_channels(list(tf.CHANNELS)) == 11
    kp = tiny()
    for channels in (["xy"], ["conf", "xy"], ["xy", "conf", "bone", "vel1", "vel2", "hip"]):
        feats = tf.feature_channels(kp, channels)
        assert feats.shape == (3, 17, tf.num_channels(channels)) and feats.dtype == np.float32


def test_channel_values():
    kp = tiny()
    feats = tf.feature_channels(kp, ["xy", "conf", "bone", "vel1", "vel2", "hip"])
    xy, conf, bone, vel1, vel2, hip = np.split(feats, [2, 3, 5, 7, 9], axis=-1)
    np.testing.assert_array_equal(xy, kp[..., :2])
    np.testing.assert_array_equal(conf[..., 0], 0.5)
    np.testing.assert_array_equal(bone[..., 0], np.tile(np.arange(17) - np.array(skeleton.PARENTS), (3, 1)))
    np.testing.assert_array_equal(bone[..., 1], 0)
    np.testing.assert_array_equal(vel1[0], 0)
    np.testing.assert_array_equal(vel1[1:, :, 1], 10)
    np.testing.assert_array_equal(vel1[..., 0], 0)
    np.testing.assert_array_equal(vel2[:2], 0)
    np.testing.assert_array_equal(vel2[2, :, 1], 20)
    np.testing.assert_array_equal(hip[..., 0], np.tile(np.arange(17) - 11.5, (3, 1)))   # mid-hip x = (11 + 12) / 2
    np.testing.assert_array_equal(hip[..., 1], 0)


def test_channel_order_follows_request():
    kp = tiny()
    feats = tf.feature_channels(kp, ["conf", "xy"])
    np.testing.assert_array_equal(feats[..., 0], 0.5)
    np.testing.assert_array_equal(feats[..., 1:], kp[..., :2])


def test_short_sequences_have_zero_velocity():
    kp = tiny()[:1]
    feats = tf.feature_channels(kp, ["vel1", "vel2"])
    np.testing.assert_array_equal(feats, 0)


@pytest.mark.parametrize("channels", [["xy", "angle"], ["speed"]])
def test_unknown_channel_is_named(channels):
    with pytest.raises(ValueError, match=channels[-1]):
        tf.feature_channels(tiny(), channels)
    with pytest.raises(ValueError, match=channels[-1]):
        tf.num_channels(channels)


def test_empty_or_repeated_channels_rejected():
    with pytest.raises(ValueError):
        tf.num_channels([])
    with pytest.raises(ValueError, match="twice"):
        tf.feature_channels(tiny(), ["xy", "xy"])


# ---------------------------------------------------------------------------------------------
# Augmentations


def test_flip_twice_is_identity():
    kp = tf.normalize(walking())
    rng = np.random.default_rng(0)
    once = tf.random_flip(kp, rng, p=1.0)
    assert not np.allclose(once, kp)
    np.testing.assert_array_equal(tf.random_flip(once, rng, p=1.0), kp)
    np.testing.assert_array_equal(tf.random_flip(kp, rng, p=0.0), kp)


def test_random_flip_is_the_skeleton_flip():
    """One flip in the project: the augmentation is `skeleton.flip_keypoints` (x -> -x on centred
    keypoints, left and right joints swapped), for any channel count."""
    rng = np.random.default_rng(0)
    for channels in (3, 5):
        kp = rng.normal(size=(6, 17, channels)).astype(np.float32)
        flipped = tf.random_flip(kp, np.random.default_rng(1), p=1.0)
        assert flipped.dtype == np.float32 and np.array_equal(flipped, skeleton.flip_keypoints(kp))
        kept = tf.random_flip(kp, np.random.default_rng(1), p=0.0)
        assert np.array_equal(kept, kp) and not np.shares_memory(kept, kp)
    assert not hasattr(tf, "mirror")


@pytest.mark.parametrize("name", list(skeleton.PARTITIONS))
def test_flip_swaps_left_and_right_parts(name):
    partition = skeleton.get_partition(name)
    kp = tf.normalize(walking())
    flipped = tf.random_flip(kp, np.random.default_rng(0), p=1.0)
    for part, joints in partition.items():
        mirror = part.replace("left", "@").replace("right", "left").replace("@", "right")
        mirror_joints = [skeleton.FLIP_PERMUTATION[j] for j in joints]
        assert sorted(mirror_joints) == sorted(partition[mirror])
        # Each joint of the flipped part holds the mirrored coordinates of its partner.
        np.testing.assert_array_equal(flipped[:, list(joints), 0], -kp[:, mirror_joints, 0])
        np.testing.assert_array_equal(flipped[:, list(joints), 1:], kp[:, mirror_joints, 1:])


def test_rotation_and_scale_augmentations():
    kp = tf.normalize(walking())
    rotated = tf.random_rotation(kp, np.random.default_rng(1), max_degrees=30)
    np.testing.assert_allclose(bone_lengths(rotated), bone_lengths(kp), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rotated[..., :2], axis=-1),
                               np.linalg.norm(kp[..., :2], axis=-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rotated[..., 2], kp[..., 2])
    scaled = tf.random_scale(kp, np.random.default_rng(1), 0.5, 0.5)
    np.testing.assert_allclose(scaled[..., :2], kp[..., :2] * 0.5, rtol=1e-6)
    with pytest.raises(ValueError):
        tf.random_scale(kp, np.random.default_rng(1), 2.0, 1.0)


def test_joint_noise_touches_only_coordinates():
    kp = tf.normalize(walking())
    noisy = tf.joint_noise(kp, np.random.default_rng(2), std=0.05)
    np.testing.assert_array_equal(noisy[..., 2], kp[..., 2])
    assert 0.02 < np.std(noisy[..., :2] - kp[..., :2]) < 0.08


def test_mask_part_zeros_exactly_one_part():
    kp = tf.normalize(walking())
    partition = skeleton.DEFAULT_PARTITION
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(40):
        masked = tf.mask_part(kp, rng, partition, p=1.0)
        zeroed = [part for part, joints in partition.items() if not masked[:, list(joints)].any()]
        assert len(zeroed) == 1
        others = [j for part, joints in partition.items() if part != zeroed[0] for j in joints]
        np.testing.assert_array_equal(masked[:, others], kp[:, others])
        seen.add(zeroed[0])
    assert seen == set(partition)
    np.testing.assert_array_equal(tf.mask_part(kp, rng, partition, p=0.0), kp)


def test_temporal_crop():
    rng = np.random.default_rng(4)
    for _ in range(20):
        idx = tf.temporal_crop(50, 30, rng)
        assert idx.shape == (30,) and 0 <= idx[0] <= 20
        np.testing.assert_array_equal(np.diff(idx), 1)
    short = tf.temporal_crop(7, 30, rng)
    assert short.shape == (30,) and short.min() >= 0 and short.max() <= 6
    # Cyclic: each step advances by one frame, wrapping from the last frame to the first.
    assert set(np.diff(short) % 7) == {1}
    np.testing.assert_array_equal(tf.temporal_crop(30, 30, rng), np.arange(30))
    with pytest.raises(ValueError):
        tf.temporal_crop(0, 30, rng)


def test_temporal_resample():
    kp = tf.normalize(walking(20))
    fast = tf.temporal_resample(kp, np.random.default_rng(5), 0.5, 0.5)
    assert fast.shape == (10, 17, 3)
    np.testing.assert_allclose(fast[0], kp[0])
    np.testing.assert_allclose(fast[-1], kp[-1])
    same = tf.temporal_resample(kp, np.random.default_rng(5), 1.0, 1.0)
    np.testing.assert_allclose(same, kp, atol=1e-6)
    # Linear interpolation: midway between two frames is their mean.
    two = kp[:2]
    three = tf.temporal_resample(two, np.random.default_rng(5), 1.5, 1.5)
    np.testing.assert_allclose(three[1], (two[0] + two[1]) / 2, atol=1e-6)
    assert len(tf.temporal_resample(kp[:1], np.random.default_rng(5), 0.1, 0.1)) == 2


def test_augmentations_deterministic_for_seeded_rng():
    kp = tf.normalize(walking())
    partition = skeleton.DEFAULT_PARTITION

    def pipeline(seed):
        rng = np.random.default_rng(seed)
        out = tf.random_flip(kp, rng, 0.5)
        out = tf.random_rotation(out, rng, 20)
        out = tf.random_scale(out, rng, 0.8, 1.2)
        out = tf.joint_noise(out, rng, 0.01)
        out = tf.mask_part(out, rng, partition, 0.5)
        out = tf.temporal_resample(out, rng, 0.8, 1.2)
        return out[tf.temporal_crop(len(out), 8, rng)]

    np.testing.assert_array_equal(pipeline(7), pipeline(7))
    assert not np.array_equal(pipeline(7), pipeline(8))


def test_augmentations_return_new_arrays():
    kp = tf.normalize(walking())
    before = kp.copy()
    rng = np.random.default_rng(0)
    for out in (tf.random_flip(kp, rng, 0.0), tf.random_rotation(kp, rng, 0), tf.random_scale(kp, rng, 1, 1),
                tf.joint_noise(kp, rng, 0.1), tf.mask_part(kp, rng, skeleton.DEFAULT_PARTITION, 1.0)):
        assert out is not kp and not np.shares_memory(out, kp)
    np.testing.assert_array_equal(kp, before)


# ---------------------------------------------------------------------------------------------
# chunk_indices


@pytest.mark.parametrize("length,max_len", [(1, 5), (10, 5), (11, 5), (100, 30), (7, 1)])
def test_chunk_indices(length, max_len):
    chunks = tf.chunk_indices(length, max_len)
    np.testing.assert_array_equal(np.concatenate(chunks), np.arange(length))
    sizes = [len(c) for c in chunks]
    assert max(sizes) <= max_len and max(sizes) - min(sizes) <= 1
    assert len(chunks) == -(-length // max_len)


def test_chunk_indices_edge_cases():
    assert tf.chunk_indices(0, 5) == []
    with pytest.raises(ValueError):
        tf.chunk_indices(5, 0)


def test_clip_centring_keeps_the_body_motion_in_the_crop():
    rng = np.random.default_rng(3)
    T = 12
    base = rng.normal(size=(17, 2)) * 10 + 100
    keypoints = np.zeros((T, 17, 3), dtype=np.float32)
    keypoints[..., :2] = base
    keypoints[..., 2] = 0.9
    bounce = 5.0 * np.sin(np.arange(T))                               # the whole body moves up and down
    keypoints[:, :, 1] += bounce[:, None]
    per_frame = tf.normalize(keypoints)
    clip = tf.normalize(keypoints, center="clip")
    # Per-frame centring removes the bounce; clip centring keeps it (in torso lengths) around mean 0.
    np.testing.assert_allclose(per_frame[:, :, :2], per_frame[:1, :, :2].repeat(T, 0), atol=1e-5)
    neck = 0.5 * (clip[:, 5, :2] + clip[:, 6, :2])
    torso = np.linalg.norm(0.5 * (base[11] + base[12]) - 0.5 * (base[5] + base[6]))
    np.testing.assert_allclose(neck[:, 1] - neck[:, 1].mean(), (bounce - bounce.mean()) / torso, atol=1e-5)
    np.testing.assert_allclose(neck.mean(axis=0), [0.0, 0.0], atol=1e-5)
    # The shape of each frame is the same either way: only the origin differs.
    np.testing.assert_allclose(clip[:, :, :2] - neck[:, None], per_frame[:, :, :2], atol=1e-5)
    np.testing.assert_array_equal(clip[..., 2], keypoints[..., 2])
    with pytest.raises(ValueError, match="center must be"):
        tf.normalize(keypoints, center="hip")
    with pytest.raises(ValueError, match="cannot be combined"):
        tf.normalize(keypoints, center="clip", rotate=True)

