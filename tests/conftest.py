"""Shared fixtures: the real shipped Gait3D subset, extracted once per test session."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
import torch

# Tiny models run fastest on one thread, and two multi-threaded processes on two cores (the test
# run beside a benchmark, or the two DDP ranks) slow each other down tenfold by oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TARBALL = SHARED / "gait3d-2d-poses-38ids.tar.gz"
FOLDS = SHARED / "gait3d-38ids-folds.json"
SPLIT = SHARED / "Gait3D.json"


@pytest.fixture(scope="session")
def gait3d_root(tmp_path_factory, request) -> Path:
    """`2D_Poses` folder of the 38-identity Gait3D subset (skipped when the tarball is absent)."""
    if not TARBALL.is_file():
        pytest.skip(f"real Gait3D subset not found at {TARBALL}")
    # 55,766 small files: extracting to tmpfs takes ~2 s where a busy disk takes up to a minute.
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        out = Path(tempfile.mkdtemp(prefix="bpmt-gait3d-", dir=shm))
        request.addfinalizer(lambda: shutil.rmtree(out, ignore_errors=True))
    else:
        out = tmp_path_factory.mktemp("gait3d")
    with tarfile.open(TARBALL) as tar:
        tar.extractall(out, filter="data")
    return out / "Gait3D" / "2D_Poses"


@pytest.fixture(scope="session")
def gait3d_cache(gait3d_root, tmp_path_factory) -> Path:
    """A prepared cache of the real subset."""
    from bpmt.data.cache import build_cache

    out = tmp_path_factory.mktemp("cache") / "gait3d.cache"
    build_cache(gait3d_root, out, workers=2)
    return out


# A tiny trained recogniser shared by the serving tests (gallery, identify, HTTP service).
TINY_TRAIN = ["phase1.steps=3", "phase2.steps=3", "finetune.steps=6", "engine.log_every=1",
              "finetune.identities_per_batch=4", "finetune.samples_per_identity=2", "phase1.batch_size=4",
              "phase2.batch_size=4", "phase1.warmup_steps=1", "phase2.warmup_steps=1", "finetune.warmup_steps=1",
              "data.clip_len=16", "data.test_max_len=40", "model.dim=16", "model.reduce_dims=[16]",
              "model.embed_dim=16", "eval.batch_size=16"]


@pytest.fixture(scope="session")
def serving_synth(tmp_path_factory) -> Path:
    """`2D_Poses` of 8 synthetic walkers x 3 sequences (seed 1)."""
    from bpmt.data.synth import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("serving-synth"), subjects=8, sequences_per_subject=3, seed=1)


@pytest.fixture(scope="session")
def tiny_model(serving_synth, tmp_path_factory) -> Path:
    """Run folder of a tiny BPMT trained for a few steps on the first 5 identities of `serving_synth`
    (its exported `model.safetensors` + `model.json` are what MODEL arguments take)."""
    from bpmt.cli import main

    out = tmp_path_factory.mktemp("serving-runs") / "tiny"
    config = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    ids = ",".join(f"{i:04d}" for i in range(5))
    assert main(["train", "--config", str(config), "--data", str(serving_synth), "--ids", ids, "--out", str(out),
                 *TINY_TRAIN]) == 0
    return out
