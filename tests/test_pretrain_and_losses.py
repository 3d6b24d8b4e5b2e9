"""Masking, reconstruction targets, triplet/CE losses, pretrained-weight hand-over."""

from __future__ import annotations

import pytest
import torch

from bpmt.config import ModelConfig
from bpmt.engine.trainer import load_pretrained
from bpmt.errors import CheckpointError
from bpmt.finetune.losses import recognition_loss, triplet_loss
from bpmt.models.recognizer import BPMTRecognizer, build_encoders
from bpmt.pretrain.masking import make_mask, random_mask, tube_mask
from bpmt.pretrain.targets import masked_l2, patch_targets
from bpmt.skeleton import get_partition


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


def small_cfg() -> ModelConfig:
    return ModelConfig(dim=16, heads=2, t1_depth=1, t2_depth=1, frames_per_token=2, reduce_dims=[16], embed_dim=8)


def test_load_pretrained_asserts_exact_missing_keys(tmp_path):
    cfg, partition = small_cfg(), get_partition("default")
    encoders = build_encoders(cfg, partition, 5)
    state = {f"encoders.{k}": v for k, v in encoders.state_dict().items()}
    state["decoder.weight"] = torch.zeros(1)                               # dropped: not kept
    model = BPMTRecognizer(cfg, partition, 5, num_classes=3)
    load_pretrained(model, state, ("encoders.",), ("embed.", "head.", "fusion."), tmp_path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if k.startswith("encoders."))
    with pytest.raises(CheckpointError, match="missing"):                  # fusion must come from phase 2
        load_pretrained(model, state, ("encoders.",), ("embed.", "head."), tmp_path)
    state["encoders.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_pretrained(model, state, ("encoders.",), ("embed.", "head.", "fusion."), tmp_path)
    bad = {k: torch.zeros(1) for k in state if k.startswith("encoders.tokenizers.torso.proj")}
    with pytest.raises(CheckpointError):
        load_pretrained(model, bad, ("encoders.",), ("embed.", "head.", "fusion.", "encoders."), tmp_path)
