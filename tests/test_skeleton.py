"""The one module of joint knowledge: partitions, flip permutation, part splitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bpmt import skeleton


def mirror_name(part: str) -> str:
    return part.replace("left", "@").replace("right", "left").replace("@", "right")


@pytest.mark.parametrize("name", list(skeleton.PARTITIONS))
def test_every_joint_in_exactly_one_part(name):
    partition = skeleton.get_partition(name)
    skeleton.validate_partition(partition)
    joints = sorted(j for part in partition.values() for j in part)
    assert joints == list(range(skeleton.NUM_JOINTS))


@pytest.mark.parametrize("name", list(skeleton.PARTITIONS))
def test_partitions_symmetric_under_flip(name):
    partition = skeleton.get_partition(name)
    for part, joints in partition.items():
        flipped = sorted(skeleton.FLIP_PERMUTATION[j] for j in joints)
        assert flipped == sorted(partition[mirror_name(part)]), part


def test_flip_permutation_is_an_involution_matching_names():
    perm = np.array(skeleton.FLIP_PERMUTATION)
    np.testing.assert_array_equal(perm[perm], np.arange(skeleton.NUM_JOINTS))
    for j, k in enumerate(perm):
        assert skeleton.JOINT_NAMES[k] == mirror_name(skeleton.JOINT_NAMES[j])


def test_parents_and_limbs_in_range():
    assert len(skeleton.PARENTS) == skeleton.NUM_JOINTS == len(skeleton.JOINT_NAMES) == 17
    assert all(0 <= p < 17 for p in skeleton.PARENTS)
    assert all(0 <= a < 17 and 0 <= b < 17 for a, b in skeleton.LIMBS)


def test_flip_keypoints_mirrors_x():
    kp = np.random.default_rng(0).normal(size=(4, 17, 3)).astype(np.float32)
    flipped = skeleton.flip_keypoints(kp, width=10.0)
    np.testing.assert_allclose(flipped[:, 1, 0], 10.0 - kp[:, 2, 0])
    np.testing.assert_array_equal(flipped[:, 1, 1:], kp[:, 2, 1:])
    np.testing.assert_allclose(skeleton.flip_keypoints(flipped, width=10.0), kp, atol=1e-6)


@pytest.mark.parametrize("name", list(skeleton.PARTITIONS))
def test_split_parts_shapes(name):
    partition = skeleton.get_partition(name)
    kp = np.arange(2 * 5 * 17 * 3, dtype=np.float32).reshape(2, 5, 17, 3)   # (B, T, J, C)
    parts = skeleton.split_parts(kp, partition)
    assert list(parts) == list(partition)
    for part, joints in partition.items():
        assert parts[part].shape == (2, 5, len(joints), 3)
        np.testing.assert_array_equal(parts[part], kp[:, :, list(joints)])
    torch_parts = skeleton.split_parts(torch.from_numpy(kp), partition)
    for part in partition:
        np.testing.assert_array_equal(torch_parts[part].numpy(), parts[part])


def test_unknown_partition_name():
    with pytest.raises(ValueError, match="unknown body-part partition 'arms'.*default"):
        skeleton.get_partition("arms")


@pytest.mark.parametrize("partition,message", [
    ({"a": tuple(range(16))}, "belong to no part"),
    ({"a": tuple(range(17)), "b": (3,)}, "in both"),
    ({"a": tuple(range(17)), "b": ()}, "no joints"),
    ({"a": tuple(range(17)) + (17,)}, "outside"),
])
def test_validate_partition_errors(partition, message):
    with pytest.raises(ValueError, match=message):
        skeleton.validate_partition(partition)


def test_partitions_are_read_only():
    with pytest.raises(TypeError):
        skeleton.DEFAULT_PARTITION["torso"] = (0,)  # type: ignore[index]


def test_part_colors_stable():
    colors = skeleton.part_colors(skeleton.DEFAULT_PARTITION)
    assert list(colors) == list(skeleton.DEFAULT_PARTITION)
    assert colors == skeleton.part_colors(skeleton.DEFAULT_PARTITION)
