"""Interrupted jobs, for real: `bpmt train` and `bpmt prepare` run as separate processes and are
killed with SIGKILL (no cleanup handler runs) part-way through.

* train, killed inside phase 1, phase 2 or finetuning, then `--resume`d: every stage's weights,
  every logged loss, the exported model and its evaluation equal an uninterrupted run's (CPU).
* prepare, killed while writing: nothing at `--out` loads as a cache (a previous cache there stays
  intact), and rerunning it succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bpmt.cli import main
from bpmt.data.cache import is_cache, load_cache
from bpmt.data.gait3d import read_gait3d
from bpmt.data.source import open_data
from bpmt.data.synth import write_synthetic
from bpmt.engine.export import load_recognizer
from bpmt.errors import DataError
from bpmt.evaluation.evaluate import embed_corpus, score_embeddings

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STAGES = ("phase1", "phase2", "finetune")
# Tiny model, 8 steps per stage, a checkpoint every 2 steps.
OVERRIDES = ["phase1.steps=8", "phase2.steps=8", "finetune.steps=8", "engine.checkpoint_every=2",
             "engine.log_every=1", "finetune.identities_per_batch=4", "finetune.samples_per_identity=2",
             "phase1.batch_size=4", "phase2.batch_size=4", "phase1.warmup_steps=1", "phase2.warmup_steps=1",
             "finetune.warmup_steps=1", "data.clip_len=16", "data.test_max_len=40", "model.dim=16",
             "model.reduce_dims=[16]", "model.embed_dim=16", "eval.batch_size=16"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("interrupt-synth"), subjects=5, sequences_per_subject=3, seed=2)


def train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(data), "--out", str(out),
            "--workers", "1", *extra, *OVERRIDES]


def metrics(run: Path, data: Path) -> dict:
    model, config, _, _ = load_recognizer(run)
    corpus, _ = open_data(data)
    return score_embeddings(embed_corpus(model, config, corpus), corpus.names, corpus.subjects)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("interrupt-runs") / "uninterrupted"
    assert main(train_argv(data, out)) == 0
    return out, metrics(out, data)


# `bpmt train` with every optimiser step made 0.15 s longer by a sleep, so that a poll every few
# milliseconds surely finds it inside the stage with steps to spare. Only the pace changes: the
# hook calls the real step, and nothing else is touched.
PACED_TRAIN = """
import sys, time, torch
real_step = torch.optim.AdamW.step
def paced_step(self, *args, **kwargs):
    time.sleep(0.15)
    return real_step(self, *args, **kwargs)
torch.optim.AdamW.step = paced_step
from bpmt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def kill_when(argv: list[str], ready: Callable[[], bool], log: Path, timeout: float = 240) -> None:
    """Start `argv` as its own process; SIGKILL it as soon as `ready()` holds."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as output:
        proc = subprocess.Popen(argv, stdout=output, stderr=output, env=env)
        deadline = time.monotonic() + timeout
        try:
            while not ready():
                if proc.poll() is not None:
                    pytest.fail(f"the job ended (status {proc.returncode}) before it could be killed:\n"
                                f"{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the job never reached the kill point in {timeout}s")
                time.sleep(0.002)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def logged_steps(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_inside_a_stage_then_resume_equals_uninterrupted(stage, data, uninterrupted, tmp_path, capsys):
    reference, reference_metrics = uninterrupted
    run = tmp_path / "killed"
    stage_dir = run / stage

    def inside_stage_past_a_checkpoint() -> bool:
        # A checkpoint exists and at least one more step has been logged since: the kill lands
        # between checkpoints, so the resumed run must replay steps, not just continue.
        return (stage_dir / "last.ckpt").is_file() and logged_steps(stage_dir / "log.csv") >= 3

    kill_when([sys.executable, "-c", PACED_TRAIN, *train_argv(data, run)], inside_stage_past_a_checkpoint,
              tmp_path / "killed.log")
    assert not (stage_dir / "weights.safetensors").exists(), "killed too late: the stage had finished"
    assert not (run / "model.safetensors").exists()
    for earlier in STAGES[:STAGES.index(stage)]:
        assert (run / earlier / "weights.safetensors").is_file()

    assert main(train_argv(data, run, "--resume")) == 0
    err = capsys.readouterr().err
    resumed_at = int(err.split(f"{stage}: resuming at step ")[1].split("/")[0])
    assert resumed_at >= 2 and resumed_at % 2 == 0

    for name in STAGES:
        assert (run / name / "weights.safetensors").read_bytes() == \
            (reference / name / "weights.safetensors").read_bytes(), f"{name} weights differ"
        assert (run / name / "log.csv").read_text() == (reference / name / "log.csv").read_text(), \
            f"{name} losses differ"
        assert not (run / name / "last.ckpt").exists()
    assert json.loads((run / "model.json").read_text())["sha256"] == \
        json.loads((reference / "model.json").read_text())["sha256"]
    assert metrics(run, data) == reference_metrics


# ---------------------------------------------------------------------------------------------
# bpmt prepare

# `bpmt prepare`, slowed to 50 ms per sequence so that it is surely killed part-way. Only the speed
# changes: the hook wraps the per-sequence reader and calls the real one.
SLOW_PREPARE = """
import sys, time
from bpmt.data import cache, gait3d
real = gait3d.read_sequence_dir
def slow(*args, **kwargs):
    time.sleep(0.05)
    return real(*args, **kwargs)
gait3d.read_sequence_dir = slow
if hasattr(cache, "read_sequence_dir"):
    cache.read_sequence_dir = slow
from bpmt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def leftovers(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.")]


def half_written(folder: Path, name: str) -> bool:
    """The build's temporary folder exists and holds some frames already."""
    for tmp in leftovers(folder, name):
        keypoints = tmp / "keypoints.f32"
        try:
            if keypoints.stat().st_size > 0:
                return True
        except FileNotFoundError:
            pass
    return False


@pytest.mark.parametrize("previous", [False, True], ids=["first-build", "rebuild"])
def test_sigkill_during_prepare_never_leaves_a_loadable_half_cache(serving_synth, tmp_path, previous, capsys):
    out = tmp_path / "g.cache"
    if previous:                                   # an older cache of two identities is there
        assert main(["prepare", "gait3d", str(serving_synth), "--out", str(out), "--ids", "0000,0001",
                     "--workers", "1"]) == 0
        before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()

    kill_when([sys.executable, "-c", SLOW_PREPARE, "prepare", "gait3d", str(serving_synth), "--out", str(out),
               "--workers", "1"], lambda: half_written(tmp_path, out.name), tmp_path / "prepare.log", timeout=60)

    for tmp in leftovers(tmp_path, out.name):      # what the killed build left behind is not a cache
        assert not is_cache(tmp)
        with pytest.raises(DataError, match="incomplete cache|no identity folders|no such file"):
            load_cache(tmp)
    if previous:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert load_cache(out).identities == ["0000", "0001"]
    else:
        assert not out.exists()
        assert main(["stats", str(out), "--json"]) == 2
        assert "no such file or folder" in capsys.readouterr().err

    assert main(["prepare", "gait3d", str(serving_synth), "--out", str(out), "--workers", "1"]) == 0
    corpus = load_cache(out)
    raw, _ = read_gait3d(serving_synth)
    assert corpus.names == [s.name for s in raw] and len(corpus.identities) == 8
    for i, seq in enumerate(raw):
        np.testing.assert_array_equal(corpus.keypoints_of(i), seq.keypoints)
