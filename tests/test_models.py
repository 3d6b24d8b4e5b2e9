"""Structure tests of the model pieces on tiny shapes (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from bpmt.config import Config, FinetuneConfig, ModelConfig
from bpmt.finetune.step import Finetuner
from bpmt.models.iip import IIPAttention, IIPLayer
from bpmt.models.recognizer import BPMTRecognizer, build_encoders, build_fusion
from bpmt.models.stack import GridTransformer
from bpmt.models.vanilla import VanillaLayer
from bpmt.pretrain.phase1 import Phase1Pretrainer
from bpmt.pretrain.phase2 import Phase2Pretrainer
from bpmt.skeleton import get_partition

B, S, T, D = 2, 3, 5, 16


def grid(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, S, T, D, generator=g), torch.randn(B, D, generator=g)


def no_hidden() -> torch.Tensor:
    return torch.zeros(B, S, T, dtype=torch.bool)


def test_spatial_iipa_is_per_frame():
    torch.manual_seed(0)
    attn = IIPAttention(D, heads=2, axis="spatial").eval()
    tokens, cls = grid()
    out, _ = attn(tokens, cls, no_hidden())
    changed = tokens.clone()
    changed[:, :, 3] += torch.randn(B, S, D)                      # another frame's tokens
    out2, _ = attn(changed, cls, no_hidden())
    keep = [0, 1, 2, 4]
    assert torch.allclose(out[:, :, keep], out2[:, :, keep], atol=1e-6)
    assert not torch.allclose(out[:, :, 3], out2[:, :, 3])


def test_temporal_iipa_is_per_unit():
    torch.manual_seed(0)
    attn = IIPAttention(D, heads=2, axis="temporal").eval()
    tokens, cls = grid()
    out, _ = attn(tokens, cls, no_hidden())
    changed = tokens.clone()
    changed[:, 1] += torch.randn(B, T, D)                         # another unit's tokens
    out2, _ = attn(changed, cls, no_hidden())
    assert torch.allclose(out[:, [0, 2]], out2[:, [0, 2]], atol=1e-6)
    assert not torch.allclose(out[:, 1], out2[:, 1])


def test_class_token_attends_to_all_tokens():
    torch.manual_seed(0)
    for axis in ("spatial", "temporal"):
        attn = IIPAttention(D, heads=2, axis=axis).eval()
        tokens, cls = grid()
        _, c1 = attn(tokens, cls, no_hidden())
        changed = tokens.clone()
        changed[:, 2, 4] += 1.0
        _, c2 = attn(changed, cls, no_hidden())
        assert not torch.allclose(c1, c2)


@pytest.mark.parametrize("layer_cls", [IIPLayer, VanillaLayer])
def test_padded_frames_have_no_influence(layer_cls):
    torch.manual_seed(0)
    layer = GridTransformer("iip" if layer_cls is IIPLayer else "vanilla", 2, D, 2).eval()
    tokens, cls = grid()
    hidden = no_hidden()
    hidden[0, :, 3:] = True                                       # sample 0: last two frames padded
    out, c = layer(tokens, cls, hidden)
    changed = tokens.clone()
    changed[0, :, 3:] = torch.randn(S, 2, D) * 5
    out2, c2 = layer(changed, cls, hidden)
    assert torch.allclose(out[0, :, :3], out2[0, :, :3], atol=1e-5)
    assert torch.allclose(c, c2, atol=1e-5)
    assert torch.allclose(out[1], out2[1], atol=1e-5)


def test_layers_keep_shapes_and_are_finite_with_hidden_tokens():
    for kind in ("iip", "vanilla"):
        layer = GridTransformer(kind, 1, D, 4)
        tokens, cls = grid()
        hidden = torch.rand(B, S, T) < 0.7
        out, c = layer(tokens, cls, hidden)
        assert out.shape == (B, S, T, D) and c.shape == (B, D)
        assert torch.isfinite(out).all() and torch.isfinite(c).all()


def tiny_model_config(**changes) -> ModelConfig:
    cfg = ModelConfig(dim=16, heads=2, t1_depth=1, t2_depth=1, frames_per_token=2, reduce_dims=[16, 12],
                      embed_dim=8)
    for k, v in changes.items():
        setattr(cfg, k, v)
    return cfg


CHANNELS5 = ["xy", "conf", "bone"]                                  # 5 input channels, as `inputs()` gives


def keypoint_inputs(batch: int = 4, frames: int = 8, seed: int = 0):
    """Normalised keypoints `(B, T, 17, 3)` and padding `(B, T)` for the pretrainers."""
    g = torch.Generator().manual_seed(seed)
    keypoints = torch.randn(batch, frames, 17, 3, generator=g)
    keypoints[..., 2] = torch.rand(batch, frames, 17, generator=g)
    padding = torch.zeros(batch, frames, dtype=torch.bool)
    padding[0, 6:] = True
    keypoints[padding] = 0.0
    return keypoints, padding


def inputs(batch: int = 4, frames: int = 8, channels: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, frames, 17, channels, generator=g)
    coords = torch.randn(batch, frames, 17, 2, generator=g)
    padding = torch.zeros(batch, frames, dtype=torch.bool)
    padding[0, 6:] = True
    return features, coords, padding


def assert_all_grads(module: torch.nn.Module, unused: str | None = None):
    """Every trainable parameter has a non-zero gradient (except names containing `unused`)."""
    missing = [n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
               and not (unused and unused in n)]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("layer", ["iip", "vanilla"])
@pytest.mark.parametrize("shared", [False, True])
def test_finetune_every_parameter_gets_a_gradient(layer, shared):
    torch.manual_seed(0)
    cfg = tiny_model_config(layer=layer, t1_shared=shared)
    model = BPMTRecognizer(cfg, get_partition("default"), 5, num_classes=3)
    step = Finetuner(model, FinetuneConfig())
    features, _, padding = inputs()
    loss, parts = step(features, padding, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert_all_grads(step, unused="mask_token")   # the mask token only serves pretraining
    assert set(parts) == {"triplet", "ce", "accuracy"}


def test_shared_t1_has_fewer_parameters():
    def count(shared: bool) -> int:
        return sum(p.numel() for p in build_encoders(tiny_model_config(t1_shared=shared), get_partition("default"), 5).parameters())

    assert count(True) < count(False)


def test_phase1_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    cfg = tiny_model_config()
    encoders = build_encoders(cfg, get_partition("default"), 5)
    module = Phase1Pretrainer(encoders, CHANNELS5, layer="iip", heads=2, decoder_depth=1, mask_ratio=0.5,
                              mask_type="random")
    keypoints, padding = keypoint_inputs()
    loss, per_part = module(keypoints, padding, torch.Generator().manual_seed(0))
    loss.backward()
    assert_all_grads(module)
    assert set(per_part) == set(get_partition("default"))


def test_phase2_covers_all_pairs_and_trains_t2():
    torch.manual_seed(0)
    cfg = tiny_model_config()
    partition = get_partition("default")
    encoders = build_encoders(cfg, partition, 5)
    module = Phase2Pretrainer(encoders, build_fusion(cfg, partition, encoders.out_dim), CHANNELS5, mask_ratio=0.5,
                              mask_type="tube", freeze_t1=False)
    assert len(module.pairs) == 10
    keypoints, padding = keypoint_inputs()
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        loss, info = module(keypoints, padding, generator)
        loss.backward()
        seen.add(int(info["pair"]))
    assert seen == set(range(10))
    assert_all_grads(module)


def test_phase2_frozen_t1_gets_no_update():
    cfg = tiny_model_config()
    partition = get_partition("default")
    encoders = build_encoders(cfg, partition, 5)
    module = Phase2Pretrainer(encoders, build_fusion(cfg, partition, encoders.out_dim), CHANNELS5, mask_ratio=0.5,
                              mask_type="tube", freeze_t1=True)
    keypoints, padding = keypoint_inputs()
    loss, _ = module(keypoints, padding, torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None for p in module.encoders.parameters())
    assert any(p.grad is not None for p in module.fusion.parameters())


def test_whole_body_single_modality_works_and_phase2_refuses_it():
    cfg = tiny_model_config()
    partition = get_partition("whole_body")
    model = BPMTRecognizer(cfg, partition, 5, num_classes=2).eval()
    features, _, padding = inputs()
    assert model(features, padding).shape == (4, 8)
    encoders = build_encoders(cfg, partition, 5)
    with pytest.raises(ValueError, match="two body parts"):
        Phase2Pretrainer(encoders, build_fusion(cfg, partition, encoders.out_dim), CHANNELS5, mask_ratio=0.5,
                         mask_type="tube", freeze_t1=False)


def test_recognizer_padding_invariance_and_batch_independence():
    torch.manual_seed(0)
    model = BPMTRecognizer(tiny_model_config(), get_partition("default"), 5, num_classes=2).eval()
    features, _, padding = inputs()
    out = model(features, padding)
    changed = features.clone()
    changed[0, 6:] = 100.0                                          # padded frames of sample 0
    assert torch.allclose(out, model(changed, padding), atol=1e-5)
    single = model(features[1:2], padding[1:2])                     # same result alone as in a batch
    assert torch.allclose(out[1:2], single, atol=1e-5)


def test_models_build_from_default_config():
    cfg = Config()
    model = BPMTRecognizer(cfg.model, get_partition(cfg.data.partition), 7, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) > 0


# The inference-speed rewrites (issue 17 §4) compute the same function as the plain per-part /
# per-token code they replaced; these tests hold them to that.

def test_cross_attention_to_other_parts_in_one_pass_equals_one_call_per_part():
    from bpmt.models.attention import CrossAttention

    attn = CrossAttention(D, heads=2).eval()
    G, L = 4, 5
    g = torch.Generator().manual_seed(3)
    tokens = torch.randn(B, G, L, D, generator=g)
    hidden = torch.rand(B, G, L, generator=g) < 0.3
    hidden[1, 1:] = True            # sample 1: part 0's every other token is hidden (attend's fallback)
    hidden[1, 0] = False
    hidden[0, 2] = True             # sample 0: part 2 wholly hidden, the others see none of it
    expected = []
    for i in range(G):
        others = [j for j in range(G) if j != i]
        expected.append(attn(tokens[:, i], tokens[:, others].reshape(B, (G - 1) * L, D),
                             hidden[:, others].reshape(B, (G - 1) * L)))
    with torch.no_grad():
        torch.testing.assert_close(attn.attend_others(tokens, hidden), torch.stack(expected, dim=1),
                                   atol=1e-5, rtol=1e-5)


def test_fusing_all_parts_at_once_equals_fusing_each_part():
    cfg = ModelConfig(dim=16, heads=2, t1_depth=1, t2_depth=1, frames_per_token=2, reduce_dims=[])
    partition = get_partition("default")
    encoders = build_encoders(cfg, partition, in_channels=3).eval()
    fusion = build_fusion(cfg, partition, encoders.out_dim).eval()
    g = torch.Generator().manual_seed(4)
    features = torch.randn(B, 12, 17, 3, generator=g)
    padding = torch.zeros(B, 12, dtype=torch.bool)
    padding[1, 7:] = True
    with torch.no_grad():
        parts = encoders(features, padding)
        z, _, z_hidden = fusion(parts)
        together = fusion.fuse_parts(parts, z, z_hidden)
        assert list(together) == list(parts)
        for name, part in parts.items():            # one cross-attention per part, as the paper draws it
            _, J, Tt, _ = part.tokens.shape
            alone = fusion.out_cross(part.tokens.reshape(B, J * Tt, -1), z.reshape(B, -1, z.shape[-1]),
                                     z_hidden.reshape(B, -1)).view(part.tokens.shape)
            torch.testing.assert_close(together[name], alone, atol=1e-5, rtol=1e-5)


def test_a_time_table_first_made_while_embedding_serves_training():
    from bpmt.models.part_encoder import _cached_time_encoding, time_encoding

    _cached_time_encoding.cache_clear()
    with torch.inference_mode():
        first = time_encoding(7, 16)
    weight = torch.ones(16, requires_grad=True)
    (time_encoding(7, 16) * weight).sum().backward()     # an inference tensor would refuse this
    assert time_encoding(7, 16) is first and weight.grad is not None


@pytest.mark.parametrize("layer, shared", [("iip", False), ("vanilla", False), ("iip", True)])
def test_limbs_in_one_pass_equal_each_limb_alone(layer, shared):
    cfg = ModelConfig(layer=layer, dim=16, heads=2, t1_depth=2, frames_per_token=2, t1_shared=shared,
                      reduce_dims=[8])
    encoders = build_encoders(cfg, get_partition("default"), in_channels=3).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():                 # every part's weights differ, layer norms included (they start at 1, 0)
        for parameter in encoders.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=g) * 0.3 + (parameter == 1).float())
    features = torch.randn(3, 12, 17, 3, generator=g)
    padding = torch.zeros(3, 12, dtype=torch.bool)
    padding[1, 6:] = True
    with torch.no_grad():
        together = encoders(features, padding)                    # no gradients: the grouped path
        assert len(encoders._groups()) == 2 and len(encoders._groups()[1].parts) == 4   # torso; four limbs
        for part in encoders.parts:
            alone = encoders.forward_part(part, features[:, :, encoders.joints[part]], padding)
            for field in ("tokens", "cls", "hidden"):
                torch.testing.assert_close(getattr(together[part], field), getattr(alone, field),
                                           atol=1e-5, rtol=1e-5, msg=f"{part}.{field}")


def test_the_stacked_limb_weights_follow_every_change_of_the_parameters():
    cfg = ModelConfig(dim=16, heads=2, t1_depth=1, frames_per_token=2, reduce_dims=[])
    encoders = build_encoders(cfg, get_partition("default"), in_channels=3).eval()
    features, padding = torch.randn(2, 8, 17, 3), torch.zeros(2, 8, dtype=torch.bool)
    with torch.no_grad():
        before = encoders(features, padding)["left_leg"].tokens
        encoders.transformers[3].layers[0].ffn.net[0].weight.mul_(2.0)       # left leg's T1, in place
        after = encoders(features, padding)["left_leg"].tokens
        alone = encoders.forward_part("left_leg", features[:, :, encoders.joints["left_leg"]], padding).tokens
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, alone, atol=1e-5, rtol=1e-5)
    assert "_grouped" not in "".join(encoders.state_dict())                  # the stacked copy is no state
