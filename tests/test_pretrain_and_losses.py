"""Masking, reconstruction targets, triplet/CE losses."""

from __future__ import annotations

import pytest
import torch

from bpmt.finetune.losses import recognition_loss, triplet_loss
from bpmt.pretrain.masking import make_mask, random_mask, tube_mask, visible_joints
from bpmt.pretrain.targets import masked_l2, patch_targets


def test_random_mask_ratio_and_determinism():
    mask = random_mask(8, 2, 10, 0.6, torch.Generator().manual_seed(1))
    assert mask.shape == (8, 2, 10) and mask.dtype == torch.bool
    assert (mask.view(8, -1).sum(1) == 12).all()
    assert torch.equal(mask, random_mask(8, 2, 10, 0.6, torch.Generator().manual_seed(1)))
    assert not torch.equal(mask, random_mask(8, 2, 10, 0.6, torch.Generator().manual_seed(2)))


def test_tube_mask_covers_all_joints_of_a_step_and_keeps_some_visible():
    mask = tube_mask(16, 9, 15, 0.9, torch.Generator().manual_seed(0))
    assert (mask == mask[:, :1]).all()                                   # same for every joint
    steps_masked = mask[:, 0].sum(1)
    assert (steps_masked < 15).all() and (steps_masked >= 10).all()


@pytest.mark.parametrize("kind", ["random", "tube"])
def test_every_sample_keeps_a_visible_token_even_at_high_ratio(kind):
    mask = make_mask(kind, 64, 2, 3, 0.99, torch.Generator().manual_seed(0))
    assert (~mask).view(64, -1).any(dim=1).all()


def test_unknown_mask_type():
    with pytest.raises(ValueError, match="unknown mask type"):
        make_mask("nope", 1, 1, 4, 0.5, torch.Generator())


def test_patch_targets_are_normalised_and_loss_counts_masked_tokens_only():
    coords = torch.randn(3, 8, 2, 2) * 5 + 3
    target = patch_targets(coords, 4)
    assert target.shape == (3, 2, 2, 8)
    assert torch.allclose(target.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    mask = torch.zeros(3, 2, 2, dtype=torch.bool)
    mask[:, 0, 0] = True
    prediction = target.clone()
    prediction[:, 1] += 100.0                                            # errors on visible tokens only
    assert masked_l2(prediction, target, mask) == 0
    prediction[:, 0, 0] += 1.0
    assert torch.isclose(masked_l2(prediction, target, mask), torch.tensor(1.0))


def test_batch_hard_triplet_by_hand():
    # 1-D embeddings: A0=0, A1=1 (identity a); B0=3, B1=3.5 (identity b)
    emb = torch.tensor([[0.0], [1.0], [3.0], [3.5]])
    labels = torch.tensor([0, 0, 1, 1])
    # hardest pos / neg per anchor: A0 1/3, A1 1/2, B0 0.5/2, B1 0.5/2.5
    expected = torch.tensor([1 - 3 + 2.5, 1 - 2 + 2.5, 0.5 - 2 + 2.5, 0.5 - 2.5 + 2.5]).clamp(min=0).mean()
    assert torch.isclose(triplet_loss(emb, labels, margin=2.5, mining="hard"), expected, atol=1e-5)
    assert triplet_loss(emb, labels, margin=0.1, mining="hard") == 0
    assert triplet_loss(emb, labels, margin=0.1, mining="all") == 0
    assert triplet_loss(emb, labels, margin=5.0, mining="all") > 0


def test_recognition_loss_parts():
    emb = torch.randn(4, 3, requires_grad=True)
    logits = torch.randn(4, 2, requires_grad=True)
    loss, parts = recognition_loss(emb, logits, torch.tensor([0, 0, 1, 1]), margin=0.2, mining="hard",
                                   ce_weight=1.0, label_smoothing=0.1)
    loss.backward()
    assert set(parts) == {"triplet", "ce", "accuracy"} and emb.grad is not None


def test_visible_joints_hides_padding_and_the_masked_tokens_frames():
    padding = torch.tensor([[False] * 6 + [True] * 2])                     # (1, 8)
    mask = torch.zeros(1, 2, 4, dtype=torch.bool)                          # left arm (7, 9), 4 tokens of 2 frames
    mask[0, 1, 2] = True                                                   # joint 9, frames 4-5
    visible = visible_joints(padding, {"left_arm": mask}, {"left_arm": [7, 9]}, frames_per_token=2)
    expected = torch.ones(1, 8, 17, dtype=torch.bool)
    expected[0, 6:] = False
    expected[0, 4:6, 9] = False
    assert torch.equal(visible, expected)
