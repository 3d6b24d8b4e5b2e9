"""Tests that fail when the research core is wrong: no leak from masked coordinates, the IIPA
formula, hidden masked tokens, the stage hand-over, and what the embedding reads.

Each test names the wrong implementation it catches (each was checked by making that change in a
scratch copy and watching the test fail).
"""

from __future__ import annotations

import pytest
import torch

from bpmt.config import Config, load_config
from bpmt.data.channels import CHANNELS, derive_channels
from bpmt.engine.run import RunFolder
from bpmt.engine.stages import STAGE_TABLE, build_stage_module
from bpmt.models.attention import attend
from bpmt.models.iip import IIPAttention
from bpmt.models.recognizer import BPMTRecognizer, build_encoders, build_fusion
from bpmt.pretrain.masking import visible_joints
from bpmt.pretrain.phase1 import Phase1Pretrainer
from bpmt.pretrain.phase2 import Phase2Pretrainer
from bpmt.skeleton import PARENTS, get_partition

from test_models import keypoint_inputs, tiny_model_config

SHIPPED = ["gait3d", "gait3d-fast", "gait3d-frame", "tiny", "demo"]
CHANNEL_SETS = sorted({tuple(load_config(f"configs/{name}.yaml").data.channels) for name in SHIPPED}
                      | {(c,) for c in CHANNELS} | {tuple(CHANNELS)})


def scrambled(keypoints: torch.Tensor, visible: torch.Tensor, seed: int) -> torch.Tensor:
    """`keypoints` with every invisible (masked or padded) joint's x, y and conf replaced by random values."""
    noise = torch.randn(keypoints.shape, generator=torch.Generator().manual_seed(seed)) * 3
    return torch.where(visible[..., None], keypoints, noise)


# ---------------------------------------------------------------------------------------------
# 1. Masked pretraining sees nothing derived from a masked coordinate


@pytest.mark.parametrize("channels", CHANNEL_SETS, ids="-".join)
@pytest.mark.parametrize("mask_type", ["random", "tube"])
def test_phase1_encoder_is_blind_to_masked_coordinates(channels, mask_type):
    """Catches: channels derived before masking (vel1 after a masked block, bone to a masked joint,
    ...) and the mask token added to the content instead of replacing it."""
    torch.manual_seed(0)
    cfg = tiny_model_config()
    encoders = build_encoders(cfg, get_partition("default"), sum(CHANNELS[c] for c in channels))
    module = Phase1Pretrainer(encoders, list(channels), layer="iip", heads=2, decoder_depth=1, mask_ratio=0.5,
                              mask_type=mask_type).eval()
    keypoints, padding = keypoint_inputs(frames=12)
    for i, part in enumerate(encoders.parts):
        mask = module.draw_mask(part, 4, 12 // cfg.frames_per_token, torch.Generator().manual_seed(i))
        visible = visible_joints(padding, {part: mask}, encoders.joints, cfg.frames_per_token)
        inputs, out = module.encode(part, keypoints, padding, mask)
        inputs2, out2 = module.encode(part, scrambled(keypoints, visible, i), padding, mask)
        assert torch.equal(inputs, inputs2), f"{part}: the encoder's input depends on masked coordinates"
        assert torch.equal(out.tokens, out2.tokens) and torch.equal(out.cls, out2.cls), part
        # ... and the input is not blind to what it should see
        visible_change = keypoints + torch.randn(keypoints.shape, generator=torch.Generator().manual_seed(9))
        changed = module.encode(part, torch.where(visible[..., None], visible_change, keypoints), padding, mask)[0]
        assert (inputs - changed).abs().max() > 1e-3


@pytest.mark.parametrize("channels", CHANNEL_SETS, ids="-".join)
def test_phase2_encoders_are_blind_to_masked_coordinates_of_either_part(channels):
    """Catches: channels derived per part from the unmasked batch (a visible elbow's bone carries its
    masked parent shoulder when the pair is torso + left arm) - in every pair."""
    torch.manual_seed(0)
    cfg = tiny_model_config()
    partition = get_partition("default")
    encoders = build_encoders(cfg, partition, sum(CHANNELS[c] for c in channels))
    module = Phase2Pretrainer(encoders, build_fusion(cfg, partition, encoders.out_dim), list(channels),
                              mask_ratio=0.5, mask_type="random", freeze_t1=False).eval()
    keypoints, padding = keypoint_inputs(frames=12)
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        pair, masks = module.draw(4, 12 // cfg.frames_per_token, generator)
        if pair in seen:
            continue
        seen.add(pair)
        visible = visible_joints(padding, masks, encoders.joints, cfg.frames_per_token)
        inputs, encoded = module.encode(keypoints, padding, masks)
        inputs2, encoded2 = module.encode(scrambled(keypoints, visible, pair), padding, masks)
        assert torch.equal(inputs, inputs2), f"pair {module.pairs[pair]}: input depends on masked coordinates"
        for part in masks:
            assert torch.equal(encoded[part].tokens, encoded2[part].tokens)
        z, cls, _ = module.fusion(encoded)
        z2, cls2, _ = module.fusion(encoded2)
        assert torch.equal(z, z2) and torch.equal(cls, cls2)
    assert len(seen) == len(module.pairs)                             # every pair was checked


def test_channels_of_visible_joints_equal_the_plain_derivation_and_masked_ones_vanish():
    keypoints, padding = keypoint_inputs(frames=8)
    all_visible = derive_channels(keypoints, list(CHANNELS))
    visible = torch.ones(4, 8, 17, dtype=torch.bool)
    visible[:, 3, 7] = False                                           # one masked left elbow at frame 3
    masked = derive_channels(keypoints, list(CHANNELS), visible)
    # xy conf | bone | vel1 | vel2 | hip  -> columns 0-1, 2, 3-4, 5-6, 7-8, 9-10
    assert (masked[:, 3, 7] == 0).all()
    assert (masked[:, 3, 9, 3:5] == 0).all()                           # the wrist's bone to the elbow
    assert (masked[:, 4, 7, 5:7] == 0).all() and (masked[:, 5, 7, 7:9] == 0).all()   # velocities after it
    assert torch.equal(masked[:, 4, 7, 7:9], all_visible[:, 4, 7, 7:9])  # vel2 at 4 reaches back to 2
    untouched = torch.ones_like(masked, dtype=torch.bool)
    untouched[:, 3, 7] = False
    untouched[:, 3, 9, 3:5] = False
    untouched[:, 4, 7, 5:7] = False
    untouched[:, 5, 7, 7:9] = False
    assert torch.equal(masked[untouched], all_visible[untouched])
    bone = all_visible[..., 3:5]
    assert torch.allclose(bone, keypoints[..., :2] - keypoints[:, :, list(PARENTS), :2])


# ---------------------------------------------------------------------------------------------
# 2. The IIP formula and hidden tokens


def reference_iipa(attn: IIPAttention, tokens, cls, hidden):
    """IIPA from the paper's text, written independently: per group (a time step for S-IIPA, a unit
    for T-IIPA), softmax(QK^T / sqrt(d)) V over the group's visible tokens and the class token,
    plus f_intra(V); the class token attends to every visible token and itself."""
    B, S, T, D = tokens.shape
    h, d = attn.heads, D // attn.heads
    q, k, v = attn.qkv(tokens).chunk(3, dim=-1)
    qc, kc, vc = attn.qkv(cls).chunk(3, dim=-1)

    def heads_attention(query, keys, values, allowed):
        out = []
        for i in range(h):
            sl = slice(i * d, (i + 1) * d)
            scores = query[:, sl] @ keys[:, sl].T / d ** 0.5
            scores = scores.masked_fill(~allowed[None, :], float("-inf"))
            out.append(torch.softmax(scores, dim=-1) @ values[:, sl])
        return torch.cat(out, dim=-1)

    out = torch.zeros_like(tokens)
    cls_out = torch.zeros_like(cls)
    for b in range(B):
        groups = [(slice(None), t) for t in range(T)] if attn.axis == "spatial" else [(s, slice(None)) for s in range(S)]
        for index in groups:
            keys = torch.cat([k[b][index], kc[b][None]])
            values = torch.cat([v[b][index], vc[b][None]])
            allowed = torch.cat([~hidden[b][index], torch.tensor([True])])
            out[b][index] = heads_attention(q[b][index], keys, values, allowed) + attn.intra(v[b][index])
        keys = torch.cat([kc[b][None], k[b].reshape(S * T, D)])
        values = torch.cat([vc[b][None], v[b].reshape(S * T, D)])
        allowed = torch.cat([torch.tensor([True]), ~hidden[b].reshape(-1)])
        cls_out[b] = heads_attention(qc[b][None], keys, values, allowed)[0] + attn.intra(vc[b])
    return attn.proj(out), attn.proj(cls_out)


@pytest.mark.parametrize("axis", ["spatial", "temporal"])
def test_iipa_equals_the_papers_formula(axis):
    """Catches: f_intra applied to Q or to the attention output instead of V; a missing class-token
    key; hidden tokens used as keys."""
    torch.manual_seed(0)
    attn = IIPAttention(16, heads=2, axis=axis).eval()
    tokens, cls = torch.randn(2, 3, 5, 16), torch.randn(2, 16)
    hidden = torch.rand(2, 3, 5) < 0.3
    out, cls_out = attn(tokens, cls, hidden)
    ref, ref_cls = reference_iipa(attn, tokens, cls, hidden)
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(cls_out, ref_cls, atol=1e-5)


def test_attend_ignores_hidden_keys():
    q, k, v = torch.randn(1, 2, 8), torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    hidden = torch.tensor([[False, True, False, True]])
    v2 = v.clone()
    v2[:, [1, 3]] += 100.0
    k2 = k.clone()
    k2[:, [1, 3]] -= 50.0
    assert torch.allclose(attend(q, k, v, 2, hidden), attend(q, k2, v2, 2, hidden), atol=1e-6)


@pytest.mark.parametrize("layer", ["iip", "vanilla"])
def test_visible_tokens_never_see_the_mask_token(layer):
    """Catches: masked tokens visible as attention keys while replaced by the mask token (then the
    visible tokens' and class token's outputs move with the mask token)."""
    torch.manual_seed(0)
    encoders = build_encoders(tiny_model_config(layer=layer), get_partition("default"), 5).eval()
    features = torch.randn(2, 8, 2, 5)
    padding = torch.zeros(2, 8, dtype=torch.bool)
    mask = torch.zeros(2, 2, 4, dtype=torch.bool)
    mask[:, :, 1] = True
    mask[0, 0, 3] = True
    out = encoders.forward_part("left_arm", features, padding, mask)
    with torch.no_grad():
        encoders.tokenizers["left_arm"].mask_token.add_(torch.randn(16) * 10)
    out2 = encoders.forward_part("left_arm", features, padding, mask)
    assert torch.allclose(out.tokens[~mask], out2.tokens[~mask], atol=1e-5)
    assert torch.allclose(out.cls, out2.cls, atol=1e-5)
    assert not torch.allclose(out.tokens[mask], out2.tokens[mask])       # the masked queries do use it


def test_the_mask_token_replaces_the_content_of_masked_tokens():
    """Catches: the mask token added to the real content (or mixed with it) instead of replacing it
    - then a masked token's own output moves with its hidden coordinates."""
    torch.manual_seed(0)
    encoders = build_encoders(tiny_model_config(), get_partition("default"), 5).eval()
    features = torch.randn(2, 8, 2, 5)
    padding = torch.zeros(2, 8, dtype=torch.bool)
    mask = torch.zeros(2, 2, 4, dtype=torch.bool)                       # frames_per_token = 2
    mask[0, 1, 2] = True
    mask[1, :, 0] = True
    frames = mask.repeat_interleave(2, dim=2).transpose(1, 2)            # (B, T, J_p)
    changed = torch.where(frames[..., None], torch.randn(2, 8, 2, 5) * 5, features)
    out = encoders.forward_part("left_arm", features, padding, mask)
    out2 = encoders.forward_part("left_arm", changed, padding, mask)
    assert torch.allclose(out.tokens, out2.tokens, atol=1e-6) and torch.allclose(out.cls, out2.cls, atol=1e-6)
    unmasked = encoders.forward_part("left_arm", changed, padding, None)
    assert not torch.allclose(out.tokens, unmasked.tokens)


# ---------------------------------------------------------------------------------------------
# 3. What the embedding reads


def _perturbing_hook():
    def hook(module, args, output):
        tokens, cls = output
        return tokens, cls + 1.0
    return hook


def test_embedding_reads_t2_class_token():
    """Catches: T2's class token dropped from the embedding."""
    torch.manual_seed(0)
    model = BPMTRecognizer(tiny_model_config(), get_partition("default"), 5, num_classes=3).eval()
    features = torch.randn(2, 8, 17, 5)
    padding = torch.zeros(2, 8, dtype=torch.bool)
    base = model.forward_features(features, padding)
    handle = model.fusion.t2.register_forward_hook(_perturbing_hook())
    moved = model.forward_features(features, padding)
    handle.remove()
    assert not torch.allclose(base, moved), "T2's class token does not reach the embedding"


def test_t1_class_token_is_read_by_its_parts_tokens_and_by_the_phase1_decoder():
    """T1's class token is the key/value every token of its part attends to (so its learned value
    moves the part's tokens) and phase 1's decoder starts from its output. Catches: a class token
    dropped from T1's attention or a decoder that ignores it."""
    torch.manual_seed(0)
    cfg = tiny_model_config()
    encoders = build_encoders(cfg, get_partition("default"), 5).eval()
    features = torch.randn(2, 8, 2, 5)
    padding = torch.zeros(2, 8, dtype=torch.bool)
    out = encoders.forward_part("left_arm", features, padding)
    with torch.no_grad():
        encoders.cls_tokens[encoders.parts.index("left_arm")] += 1.0
    assert not torch.allclose(out.tokens, encoders.forward_part("left_arm", features, padding).tokens)

    module = Phase1Pretrainer(build_encoders(cfg, get_partition("default"), 5), ["xy", "conf", "bone"],
                              layer="iip", heads=2, decoder_depth=1, mask_ratio=0.5, mask_type="random").eval()
    seen = []

    def record_cls(mod, args, output):
        seen.append(args[1].clone())                                     # the decoder's class-token input

    handle = module.decoder.register_forward_hook(record_cls)
    encoded_cls = []
    real_encode = module.encode

    def encode(*args):
        inputs, encoded = real_encode(*args)
        encoded_cls.append(encoded.cls)
        return inputs, encoded

    module.encode = encode
    keypoints, padding = keypoint_inputs(frames=8)
    module(keypoints, padding, torch.Generator().manual_seed(0))       # the real phase-1 step
    handle.remove()
    assert len(seen) == len(encoded_cls) == 5
    assert all(torch.equal(a, b) for a, b in zip(seen, encoded_cls))
    mask = module.draw_mask("left_arm", 4, 4, torch.Generator().manual_seed(0))
    _, encoded = real_encode("left_arm", keypoints, padding, mask)
    with torch.no_grad():
        base = module.predict(module.decoder(encoded.tokens, encoded.cls, encoded.hidden & ~mask)[0])
        moved = module.predict(module.decoder(encoded.tokens, encoded.cls + 1.0, encoded.hidden & ~mask)[0])
    assert not torch.allclose(base, moved)


# ---------------------------------------------------------------------------------------------
# 4. The stage hand-over


def _complete_stage(run: RunFolder, stage: str, cfg: Config, seed: int) -> dict[str, torch.Tensor]:
    """Write a 'finished' stage with recognisable random weights; -> its state."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    module = STAGE_TABLE[stage].build(cfg, 3)
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    run.stage_dir(stage).mkdir(parents=True, exist_ok=True)
    save_file(state, str(run.weights(stage)))
    return state


def _tiny_config(stages: list[str]) -> Config:
    cfg = load_config("configs/tiny.yaml", [f"stages=[{','.join(stages)}]", "model.dim=16", "model.heads=2",
                                             "model.reduce_dims=[16]", "model.embed_dim=8"])
    return cfg


def _under(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]):
    assert want and set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_finetune_starts_from_exactly_phase2s_encoders_and_fusion(tmp_path):
    """Catches: finetuning that skips phase 2's weights (takes phase 1's) or loads none."""
    cfg = _tiny_config(["phase1", "phase2", "finetune"])
    run = RunFolder(tmp_path)
    _complete_stage(run, "phase1", cfg, seed=1)
    phase2 = _complete_stage(run, "phase2", cfg, seed=2)
    torch.manual_seed(3)
    state = build_stage_module("finetune", cfg, 3, run).state_dict()
    _assert_same(_under(state, "recognizer.encoders."), _under(phase2, "encoders."))
    _assert_same(_under(state, "recognizer.fusion."), _under(phase2, "fusion."))
    fresh = STAGE_TABLE["finetune"].build(cfg, 3).state_dict()
    new = [k for k in state if not k.startswith(("recognizer.encoders.", "recognizer.fusion."))]
    assert new and all(k.startswith(("recognizer.embed.", "recognizer.head.")) for k in new)
    assert set(state) == set(fresh)


def test_phase2_starts_from_phase1s_encoders_with_a_new_fusion(tmp_path):
    cfg = _tiny_config(["phase1", "phase2", "finetune"])
    run = RunFolder(tmp_path)
    phase1 = _complete_stage(run, "phase1", cfg, seed=1)
    torch.manual_seed(5)
    state = build_stage_module("phase2", cfg, 3, run).state_dict()
    _assert_same(_under(state, "encoders."), _under(phase1, "encoders."))
    torch.manual_seed(5)
    fresh = STAGE_TABLE["phase2"].build(cfg, 3).state_dict()
    _assert_same(_under(state, "fusion."), _under(fresh, "fusion."))


def test_finetune_after_phase1_only_takes_the_encoders(tmp_path):
    cfg = _tiny_config(["phase1", "finetune"])
    run = RunFolder(tmp_path)
    phase1 = _complete_stage(run, "phase1", cfg, seed=1)
    state = build_stage_module("finetune", cfg, 3, run).state_dict()
    _assert_same(_under(state, "recognizer.encoders."), _under(phase1, "encoders."))


def test_a_stage_refuses_an_incomplete_predecessor_and_foreign_weights(tmp_path):
    from bpmt.errors import BPMTError, CheckpointError

    cfg = _tiny_config(["phase1", "phase2", "finetune"])
    run = RunFolder(tmp_path)
    _complete_stage(run, "phase1", cfg, seed=1)
    with pytest.raises(BPMTError, match="needs phase2"):
        build_stage_module("finetune", cfg, 3, run)
    wider = _tiny_config(["phase1", "phase2", "finetune"])
    wider.model.dim, wider.model.reduce_dims = 32, [32]
    with pytest.raises(CheckpointError, match="encoders of phase1 do not fit phase2"):
        build_stage_module("phase2", wider, 3, run)
