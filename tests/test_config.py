"""Typed, strict configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpmt.config import Config, load_config, save_config
from bpmt.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["gait3d.yaml", "tiny.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, Config)


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  dimm: 3\n")
    with pytest.raises(ConfigError, match="model.dimm"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("model.dim=abc", "model.dim"), ("model.t1_shared=3", "model.t1_shared"),
    ("model.layer=lstm", "model.layer"), ("data.channels=xy", "data.channels"),
    ("stages=[phase2,phase1,finetune]", "stages"), ("data.channels=[xy,foo]", "foo"),
    ("nonsense", "key=value"), ("phase1.mask_ratio=1.5", "mask_ratio"), ("data.center=hip", "data.center"),
    ("data.origin=knee", "data.origin"),
])
def test_wrong_values_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_clip_centring_refuses_rotation():
    assert load_config(None, ["data.center=clip"]).data.center == "clip"
    with pytest.raises(ConfigError, match="data.center=clip cannot be combined with data.rotate=true"):
        load_config(None, ["data.center=clip", "data.rotate=true"])


def test_overrides_and_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "tiny.yaml", ["seed=3", "model.dim=48", "finetune.lr=1e-4", "stages=[finetune]"])
    assert (cfg.seed, cfg.model.dim, cfg.finetune.lr, cfg.stages) == (3, 48, 1e-4, ["finetune"])
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_int_accepted_for_float_but_not_bool_for_int():
    assert load_config(None, ["finetune.lr=1"]).finetune.lr == 1.0
    with pytest.raises(ConfigError):
        load_config(None, ["seed=true"])


def test_fast_config_is_the_default_with_the_ablation_overrides():
    root = Path(__file__).resolve().parents[1] / "configs"
    fast = load_config(root / "gait3d-fast.yaml")
    assert fast == load_config(root / "gait3d.yaml", ["model.layer=vanilla", "stages=[phase1,finetune]",
                                                        "ensemble.lda=false", "init=", "data.scale=sequence"])


def test_train_without_a_config_trains_the_shipped_gait3d_config(monkeypatch, tmp_path):
    """`bpmt train` without --config trains what configs/gait3d.yaml says: one source of truth."""
    from bpmt import cli
    from bpmt.config import DEFAULT_CONFIG

    assert DEFAULT_CONFIG.read_text() == (CONFIGS / "gait3d.yaml").read_text()
    seen = []

    def stop(path, overrides):
        seen.append(path)
        raise ConfigError("stop here")
    monkeypatch.setattr("bpmt.config.load_config", stop)
    assert cli.main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert seen == [DEFAULT_CONFIG]


def test_the_default_config_starts_from_the_shipped_synthetic_pretraining():
    """configs/gait3d.yaml's `init` names a model shipped in the package whose architecture fits it."""
    from bpmt.engine.init import check_architecture, resolve_init
    from bpmt.engine.pretrained import shipped_model

    cfg = load_config(CONFIGS / "gait3d.yaml")
    assert cfg.init and shipped_model(cfg.init) is not None
    check_architecture(resolve_init(cfg.init), cfg)            # raises on a mismatch
    assert load_config(None).init == ""                         # other configs (demo, tiny) start at random


@pytest.mark.parametrize("override, message", [
    ("phase2.decoder_depth=7", "phase2.decoder_depth"),   # phase 2 has no decoder
    ("phase1.freeze_t1=true", "phase1.freeze_t1"),        # phase 1 trains T1
    ("finetune.mask_ratio=0.5", "finetune.mask_ratio"),
    ("model.fuse_lda=true", "model.fuse_lda"),            # the LDA is an ensemble member, not the model's
])
def test_a_key_a_stage_does_not_read_is_an_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
