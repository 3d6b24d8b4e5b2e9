"""End to end: the three-phase pipeline on a tiny synthetic dataset, evaluation, export, resume, DDP."""

from __future__ import annotations

import dataclasses

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bpmt.cli import main
from bpmt.config import load_config
from bpmt.data.source import open_data
from bpmt.data.synth import write_synthetic
from bpmt.engine import trainer
from bpmt.engine.stages import STAGE_TABLE
from bpmt.engine.export import load_recognizer
from bpmt.errors import BPMTError, CheckpointError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAST = ["phase1.steps=4", "phase2.steps=4", "finetune.steps=8", "engine.checkpoint_every=3",
        "engine.log_every=1", "finetune.identities_per_batch=4", "finetune.samples_per_identity=2",
        "phase1.batch_size=4", "phase2.batch_size=4", "phase1.warmup_steps=1", "phase2.warmup_steps=1",
        "finetune.warmup_steps=1", "data.clip_len=16", "data.test_max_len=40", "model.dim=16",
        "model.reduce_dims=[16]", "model.embed_dim=16", "eval.batch_size=16"]
# Even shorter, for tests that only check that a path runs.
FASTER = FAST + ["phase1.steps=2", "phase2.steps=2", "finetune.steps=3"]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("synth"), subjects=6, sequences_per_subject=3, seed=0)


@pytest.fixture(scope="module")
def trained_run(synth_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(synth_root), "--out", str(out),
                 *FAST]) == 0
    return out


def test_three_phase_run_folder(trained_run):
    for stage in ("phase1", "phase2", "finetune"):
        assert (trained_run / stage / "weights.safetensors").is_file()
        assert (trained_run / stage / "loss.png").stat().st_size > 0
        assert not (trained_run / stage / "last.ckpt").exists()
        rows = (trained_run / stage / "log.csv").read_text().splitlines()
        assert rows[0].startswith("step,loss,lr")
    assert (trained_run / "model.safetensors").is_file() and (trained_run / "model.json").is_file()
    saved = load_config(trained_run / "config.yaml")
    assert saved.finetune.steps == 8 and saved.model.dim == 16
    meta = json.loads((trained_run / "meta.json").read_text())
    assert meta["num_classes"] == 6


def test_evaluate_embed_score(trained_run, synth_root, tmp_path, capsys):
    plot = tmp_path / "cmc.png"
    assert main(["evaluate", str(trained_run), "--data", str(synth_root), "--json", "--plot", str(plot)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"loo"} and result["loo"]["queries"] == 18
    cmc = result["loo"].pop("cmc")
    assert len(cmc) == 20 and cmc == sorted(cmc) and cmc[0] == result["loo"]["rank1"]
    assert plot.stat().st_size > 0
    emb = tmp_path / "emb.npz"
    assert main(["embed", str(trained_run), "--data", str(synth_root), "--out", str(emb)]) == 0
    capsys.readouterr()
    data = np.load(emb)
    assert data["embeddings"].shape == (18, 16) and len(data["seqs"]) == 18
    assert main(["score", str(emb), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loo"] == result["loo"]


def test_evaluate_with_a_split_whose_probes_are_absent_still_scores_leave_one_out(trained_run, synth_root, tmp_path,
                                                                                 capsys):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"TRAIN_SET": [], "TEST_SET": [], "PROBE_SET": ["0999-camid1_videoid1-seq0"]}))
    assert main(["evaluate", str(trained_run), "--data", str(synth_root), "--split", str(split), "--json"]) == 0
    captured = capsys.readouterr()
    assert set(json.loads(captured.out)) == {"loo"}
    assert "official protocol" in captured.err and "not scored" in captured.err
    assert "none of the 1 probe sequence of the split" in captured.err and "0999-camid1_videoid1-seq0" in captured.err


def test_evaluate_accepts_only_test_time_overrides(trained_run, synth_root, capsys):
    assert main(["evaluate", str(trained_run), "--data", str(synth_root), "--json", "--set", "data.test_max_len=16",
                 "--set", "eval.flip=false"]) == 0
    assert json.loads(capsys.readouterr().out)["loo"]["queries"] == 18
    assert main(["evaluate", str(trained_run), "--data", str(synth_root), "--set", "model.dim=8"]) == 2
    assert "only test-time settings" in capsys.readouterr().err


def test_run_folder_is_not_overwritten(trained_run, synth_root, capsys):
    assert main(["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(synth_root),
                 "--out", str(trained_run)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_exported_model_rejects_tampering(trained_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    model, config, meta, _ = load_recognizer(copy)
    assert not model.training and meta["num_classes"] == 6
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])                        # truncated
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_recognizer(copy)
    (copy / "model.json").write_text("{nonsense")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_recognizer(copy)


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "finetune" / "weights.safetensors"))


def test_interrupted_run_resumes_to_identical_weights(synth_root, trained_run, tmp_path, monkeypatch):
    """Kill finetuning after a checkpoint, resume: the weights equal the uninterrupted run's."""
    corpus, _ = open_data(synth_root)
    config = load_config(CONFIGS / "tiny.yaml", FAST)
    out = tmp_path / "interrupted"
    real = STAGE_TABLE["finetune"]
    calls = {"n": 0}

    def dying_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:                       # after the step-3 checkpoint
            raise KeyboardInterrupt
        return real.loss(*args, **kwargs)

    monkeypatch.setitem(STAGE_TABLE, "finetune", dataclasses.replace(real, loss=dying_loss))
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, corpus, out, show_progress=False, report=lambda m: None)
    assert (out / "finetune" / "last.ckpt").is_file()
    monkeypatch.setitem(STAGE_TABLE, "finetune", real)
    with pytest.raises(BPMTError, match="already exists"):
        trainer.train(config, corpus, out, show_progress=False, report=lambda m: None)
    messages = []
    trainer.train(config, corpus, out, resume=True, show_progress=False, report=messages.append)
    assert any("resuming at step 3" in m for m in messages)
    expected, got = _final_weights(trained_run), _final_weights(out)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_stages_one_at_a_time(synth_root, tmp_path, capsys):
    out = str(tmp_path / "staged")
    base = ["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(synth_root), "--out", out]
    assert main([*base, "--stage", "phase1", *FASTER]) == 0
    assert (tmp_path / "staged" / "phase1" / "weights.safetensors").is_file()
    assert not (tmp_path / "staged" / "phase2").exists()
    capsys.readouterr()
    assert main([*base, "--stage", "finetune", "--resume", *FASTER]) == 2
    assert "needs phase2" in capsys.readouterr().err
    assert main([*base, "--resume", *FASTER]) == 0
    assert "phase1: already complete" in capsys.readouterr().err
    assert (tmp_path / "staged" / "model.safetensors").is_file()


def test_baseline_variants_train(synth_root, tmp_path):
    """Vanilla layers, whole-body single modality, no pretraining, shared T1: all run end to end."""
    corpus, _ = open_data(synth_root)
    variants = [["model.layer=vanilla"], ["data.partition=whole_body", "stages=[phase1,finetune]"],
                ["stages=[finetune]"], ["model.t1_shared=true", "stages=[phase1,finetune]"]]
    for i, extra in enumerate(variants):
        config = load_config(CONFIGS / "tiny.yaml", FASTER + extra)
        run = trainer.train(config, corpus, tmp_path / f"v{i}", show_progress=False, report=lambda m: None)
        assert run.model.is_file()
        stages = [s for s in ("phase1", "phase2", "finetune") if (run.root / s).exists()]
        assert stages == config.stages


def test_demo_command_runs(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "demo"), "--subjects", "6", "--sequences-per-subject", "3",
                 "--test-subjects", "3", *FASTER])
    assert code == 0
    out = capsys.readouterr().out
    assert "Rank-1" in out and "loo" in out


def test_demo_removes_its_temporary_folder_unless_keep(tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))            # where mkdtemp makes the demo's folder
    tiny = ["--subjects", "6", "--sequences-per-subject", "3", "--test-subjects", "3", *FASTER]
    assert main(["demo", *tiny]) == 0
    captured = capsys.readouterr()
    assert "Rank-1" in captured.out and "run folder" not in captured.out
    # demo.yaml has the default ensemble: both rows, labelled
    assert "the network alone:" in captured.out and "ensemble: network + LDA" in captured.out
    assert list(tmp_path.iterdir()) == [] and "removed the temporary folder" in captured.err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)                 # a demo stopped half-way cleans up too
    assert main(["demo", *tiny]) == 130
    assert list(tmp_path.iterdir()) == []
    assert main(["demo", "--keep", *tiny]) == 130                      # ... unless asked to keep it
    (kept,) = tmp_path.iterdir()
    assert kept.name.startswith("bpmt-demo-") and (kept / "data").is_dir()


def test_demo_keep_prints_where_the_run_is(tmp_path, monkeypatch, capsys):
    import tempfile

    from bpmt import demo
    from bpmt.demo import DemoResult

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def tiny_run(root, *args):                                        # the demo's work, without the training
        (root / "run").mkdir()
        return DemoResult(root, root / "run", root / "data", ["0000"], ["0001"],
                          {"loo": {"rank1": 1.0, "rank5": 1.0, "rank10": 1.0, "mAP": 1.0, "mINP": 1.0, "queries": 2}},
                          None, removed=False)

    monkeypatch.setattr(demo, "_run_demo", tiny_run)
    assert main(["demo", "--keep"]) == 0
    (kept,) = tmp_path.iterdir()
    assert f"run folder: {kept / 'run'}" in capsys.readouterr().out and (kept / "run").is_dir()


@pytest.mark.skipif(sys.platform != "linux", reason="DDP smoke test uses Linux process launching")
def test_ddp_two_cpu_processes(synth_root, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bpmt.cli", "train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(synth_root),
         "--out", str(out), "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", *FASTER],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").is_file()
