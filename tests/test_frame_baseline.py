"""The plain frame-token transformer (issue 4's second floor, `model.arch=frame`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bpmt.cli import main
from bpmt.config import load_config
from bpmt.engine.export import load_recognizer
from bpmt.errors import ConfigError
from bpmt.models.frame_baseline import FrameTransformerRecognizer
from bpmt.models.recognizer import BPMTRecognizer, build_recognizer
from bpmt.skeleton import get_partition

from test_models import assert_all_grads, inputs, tiny_model_config

ROOT = Path(__file__).resolve().parents[1]


def frame_config(**changes):
    return tiny_model_config(**{"arch": "frame", "frames_per_token": 1, "t1_depth": 2, **changes})


def test_build_recognizer_dispatches_on_arch():
    partition = get_partition("default")
    assert isinstance(build_recognizer(tiny_model_config(), partition, 5, 3), BPMTRecognizer)
    assert isinstance(build_recognizer(frame_config(), partition, 5, 3), FrameTransformerRecognizer)


@pytest.mark.parametrize("frames_per_token", [1, 2])
def test_frame_transformer_padding_invariance_and_gradients(frames_per_token):
    torch.manual_seed(0)
    model = FrameTransformerRecognizer(frame_config(frames_per_token=frames_per_token), 5, num_classes=3).eval()
    features, _, padding = inputs()
    out = model(features, padding)
    assert out.shape == (4, 8)
    changed = features.clone()
    changed[0, 6:] = 100.0                                          # padded frames of sample 0
    assert torch.allclose(out, model(changed, padding), atol=1e-5)
    assert torch.allclose(out[1:2], model(features[1:2], padding[1:2]), atol=1e-5)
    other = features.clone()
    other[1, 2] += 1.0                                              # a visible frame does matter
    assert not torch.allclose(out[1], model(other, padding)[1], atol=1e-4)
    model.train()
    embedding = model.forward_features(features, padding)
    _, logits = model.forward_head(embedding)
    (embedding.square().mean() + logits.square().mean()).backward()
    assert_all_grads(model)


def test_frame_transformer_refuses_a_length_off_its_patch_size():
    model = FrameTransformerRecognizer(frame_config(frames_per_token=4), 5, num_classes=3)
    features, _, padding = inputs(frames=6)
    with pytest.raises(ValueError, match="multiple of frames_per_token=4"):
        model(features, padding)


def test_frame_arch_has_no_pretraining_stages():
    with pytest.raises(ConfigError, match="model.arch=frame .* stages must be \\[finetune\\]"):
        load_config(ROOT / "configs" / "gait3d-frame.yaml", ["stages=[phase1,finetune]"])
    assert load_config(ROOT / "configs" / "gait3d-frame.yaml").model.arch == "frame"


def test_frame_floor_trains_exports_and_embeds(serving_synth, tmp_path):
    out = tmp_path / "frame"
    ids = ",".join(f"{i:04d}" for i in range(5))
    assert main(["train", "--config", str(ROOT / "configs" / "gait3d-frame.yaml"), "--data", str(serving_synth),
                 "--ids", ids, "--out", str(out), "finetune.steps=3", "finetune.identities_per_batch=4",
                 "finetune.samples_per_identity=2", "model.dim=16", "model.t1_depth=1", "engine.log_every=1",
                 "engine.checkpoint_every=2"]) == 0
    model, cfg, meta, _ = load_recognizer(out)
    assert isinstance(model, FrameTransformerRecognizer) and cfg.model.arch == "frame"
    assert main(["evaluate", str(out), "--data", str(serving_synth), "--ids", "0005,0006,0007"]) == 0
