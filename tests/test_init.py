"""`bpmt train --init CHECKPOINT`: a run's first stage starts from another run's weights (issue 16 §2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bpmt.cli import main
from bpmt.config import load_config
from bpmt.data.synth import write_synthetic
from bpmt.engine.init import resolve_init
from bpmt.engine.stages import build_stage_module, read_weights
from bpmt.errors import CheckpointError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ["phase1.steps=2", "phase2.steps=2", "finetune.steps=3", "phase1.batch_size=4", "phase2.batch_size=4",
        "phase1.warmup_steps=1", "phase2.warmup_steps=1", "finetune.warmup_steps=1", "finetune.identities_per_batch=4",
        "finetune.samples_per_identity=2", "data.clip_len=16", "data.test_max_len=32", "model.dim=16",
        "model.reduce_dims=[16]", "model.embed_dim=16", "eval.batch_size=16", "engine.checkpoint_every=1"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("init-synth"), subjects=5, sequences_per_subject=3, seed=0)


@pytest.fixture(scope="module")
def pretrained(synth, tmp_path_factory) -> Path:
    """A pretraining-only run (phases 1 and 2): what a synthetic pretraining shared by all folds is."""
    out = tmp_path_factory.mktemp("init-runs") / "pre"
    args = ["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(synth), "--out", str(out), *TINY]
    assert main([*args, "--stage", "phase1"]) == 0
    assert main([*args, "--stage", "phase2", "--resume"]) == 0
    assert not (out / "finetune").exists()
    return out


def _state(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in module.state_dict().items() if k.startswith(prefix)}


def test_finetuning_starts_from_exactly_the_checkpoints_encoders_and_fusion(pretrained):
    cfg = load_config(CONFIGS / "tiny.yaml", ["stages=[finetune]", *TINY])
    init = resolve_init(pretrained)                        # a run folder -> its latest complete stage
    assert init.path == pretrained / "phase2" / "weights.safetensors"
    saved = read_weights(init.path)
    module = build_stage_module("finetune", cfg, num_classes=5, init=init)
    for component in ("encoders", "fusion"):
        got = _state(module, f"recognizer.{component}.")
        want = {k[len(component) + 1:]: v for k, v in saved.items() if k.startswith(component + ".")}
        assert got.keys() == want.keys() and got
        for key in want:
            assert torch.equal(got[key], want[key]), (component, key)
    fresh = build_stage_module("finetune", cfg, num_classes=5)
    assert not torch.equal(_state(fresh, "recognizer.encoders.")["cls_tokens"],
                           _state(module, "recognizer.encoders.")["cls_tokens"])


def test_init_into_phase1_loads_the_encoders_and_later_stages_follow_the_pipeline(pretrained):
    cfg = load_config(CONFIGS / "tiny.yaml", TINY)
    init = resolve_init(pretrained / "phase1" / "weights.safetensors")
    module = build_stage_module("phase1", cfg, num_classes=5, init=init)
    want = {k[len("encoders."):]: v for k, v in read_weights(init.path).items() if k.startswith("encoders.")}
    got = _state(module, "encoders.")
    assert got.keys() == want.keys() and want and all(torch.equal(got[k], v) for k, v in want.items())


def test_train_with_init_records_the_checkpoints_fingerprint_and_resume_refuses_a_changed_file(
        pretrained, synth, tmp_path, capsys):
    source = tmp_path / "source.safetensors"
    source.write_bytes((pretrained / "phase2" / "weights.safetensors").read_bytes())
    out = tmp_path / "ft"
    assert main(["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(synth), "--out", str(out),
                 "--init", str(source), "stages=[finetune]", *TINY]) == 0
    assert f"finetune: starts from {source} (encoders, fusion)" in capsys.readouterr().err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["init"]["checkpoint"] == str(source.resolve()) and len(meta["init"]["sha256"]) == 64
    exported = json.loads((out / "model.json").read_text())
    assert exported["meta"]["init"] == meta["init"]            # provenance travels with the model

    # An interrupted run (finetune's weights gone, a checkpoint left) resumes from the same file only.
    (out / "finetune" / "weights.safetensors").unlink()
    state = read_weights(source)
    state["encoders.cls_tokens"] = state["encoders.cls_tokens"] + 1.0
    from safetensors.torch import save_file
    save_file(state, str(source))
    assert main(["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(synth), "--out", str(out),
                 "--resume", "stages=[finetune]", *TINY]) == 2
    err = capsys.readouterr().err
    assert "--resume: this run started from a checkpoint with SHA-256" in err and str(source) in err


def test_init_refuses_another_architecture_with_one_clear_error(pretrained, synth, tmp_path, capsys):
    # model.heads changes no tensor shape: only the checkpoint's own config can tell.
    for override, key in (("model.heads=4", "model.heads: 2 there, 4 here"),
                          ("model.dim=32", "model.dim: 16 there, 32 here")):
        out = tmp_path / override.replace("=", "-")
        assert main(["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(synth), "--out", str(out),
                     "--init", str(pretrained), "stages=[finetune]", *TINY, override]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "another architecture" in err[0] and key in err[0] and str(pretrained) in err[0]
        assert not out.exists()                                # nothing written


def test_init_without_a_config_beside_it_is_checked_tensor_by_tensor(pretrained, tmp_path):
    bare = tmp_path / "bare.safetensors"                       # no config.yaml, no sidecar
    bare.write_bytes((pretrained / "phase2" / "weights.safetensors").read_bytes())
    cfg = load_config(CONFIGS / "tiny.yaml", ["stages=[finetune]", *TINY, "model.dim=32", "model.reduce_dims=[32]"])
    with pytest.raises(CheckpointError, match=r"bare.safetensors: --init: its encoders do not fit"):
        build_stage_module("finetune", cfg, num_classes=5, init=resolve_init(bare))


@pytest.mark.parametrize("content, message", [(None, "model file not found"),
                                              (b"not safetensors", "not a readable safetensors file")])
def test_init_names_a_missing_or_broken_file(tmp_path, content, message):
    path = tmp_path / "x.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        resolve_init(path)


def test_init_from_a_folder_without_weights_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="no complete stage"):
        resolve_init(tmp_path)


def test_the_shipped_model_can_start_a_finetuning_on_new_identities():
    from bpmt.engine.init import load_init
    from bpmt.engine.stages import STAGE_TABLE

    init = resolve_init("gait3d-38ids")                       # a shipped model's name (`bpmt models`)
    cfg = load_config(CONFIGS / "gait3d.yaml", ["stages=[finetune]"])
    module = STAGE_TABLE["finetune"].build(cfg, 7)
    assert load_init(module, "finetune", STAGE_TABLE["finetune"].carries, init) == ["encoders", "fusion", "embed"]
    network = "network." if any(k.startswith("network.") for k in init.state) else ""   # an LDA ensemble's or not
    for component in ("encoders", "fusion", "embed"):
        got = _state(module, f"recognizer.{component}.")
        want = {k[len(f"{network}{component}."):]: v for k, v in init.state.items()
                if k.startswith(f"{network}{component}.")}
        assert want and got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert module.recognizer.head.classifier.weight.shape[0] == 7  # a new head for the new identities


def test_a_run_resumed_after_its_first_stage_keeps_the_init_record_in_its_model(pretrained, synth, tmp_path):
    out = tmp_path / "two"
    args = ["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(synth), "--out", str(out),
            "stages=[phase1,finetune]", *TINY]
    assert main([*args, "--init", str(pretrained / "phase1" / "weights.safetensors"), "--stage", "phase1"]) == 0
    assert main([*args, "--resume"]) == 0                # phase 1 is done: the checkpoint is not read again
    record = json.loads((out / "meta.json").read_text())["init"]
    assert json.loads((out / "model.json").read_text())["meta"]["init"] == record


def test_a_plain_exported_network_gives_its_embedding_too(synth, tmp_path):
    from bpmt.engine.init import load_init
    from bpmt.engine.stages import STAGE_TABLE

    out = tmp_path / "full"
    assert main(["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(synth), "--out", str(out),
                 "stages=[finetune]", *TINY]) == 0         # tiny.yaml: no LDA member, a plain network export
    init = resolve_init(out / "model.safetensors")
    assert init.path.name == "model.safetensors" and any(k.startswith("embed.") for k in init.state)
    cfg = load_config(CONFIGS / "tiny.yaml", ["stages=[finetune]", *TINY])
    module = STAGE_TABLE["finetune"].build(cfg, 3)
    assert load_init(module, "finetune", STAGE_TABLE["finetune"].carries, init) == ["encoders", "fusion", "embed"]
    assert torch.equal(module.recognizer.embed.weight, init.state["embed.weight"])


def test_init_refuses_the_frame_transformer(pretrained):
    cfg = load_config(CONFIGS / "gait3d-frame.yaml")
    from bpmt.engine.init import check_architecture
    with pytest.raises(CheckpointError, match="--init starts BPMT networks"):
        check_architecture(resolve_init(pretrained), cfg)


def test_the_configs_init_starts_the_run_and_the_flag_overrides_it(pretrained, synth, tmp_path, capsys):
    """`init: CHECKPOINT` in a config (how configs/gait3d.yaml starts from the shipped synthetic
    pretraining) does what `--init` does; `--init` wins; `init=` on the command line turns it off."""
    config = tmp_path / "with-init.yaml"
    config.write_text((CONFIGS / "tiny.yaml").read_text() + f"\ninit: {pretrained}\n")
    base = ["--data", str(synth), "stages=[finetune]", *TINY]
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "a"), *base]) == 0
    assert "finetune: starts from" in capsys.readouterr().err
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["init"]["checkpoint"] == str((pretrained / "phase2" / "weights.safetensors").resolve())

    other = tmp_path / "other.safetensors"
    other.write_bytes((pretrained / "phase1" / "weights.safetensors").read_bytes())
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "b"), "--init", str(other), *base]) == 0
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["init"]["checkpoint"] == str(other.resolve())
    assert f"starts from {other}" in capsys.readouterr().err

    assert main(["train", "--config", str(config), "--out", str(tmp_path / "c"), *base, "init="]) == 0
    assert "starts from" not in capsys.readouterr().err
    assert "init" not in json.loads((tmp_path / "c" / "meta.json").read_text())
    with pytest.raises(Exception, match="init"):
        load_config(config, ["init=3"])
