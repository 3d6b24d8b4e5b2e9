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
