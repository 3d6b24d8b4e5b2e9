"""Shared fixtures: the real shipped Gait3D subset, extracted once per test session."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TARBALL = SHARED / "gait3d-2d-poses-38ids.tar.gz"
FOLDS = SHARED / "gait3d-38ids-folds.json"
SPLIT = SHARED / "Gait3D.json"


@pytest.fixture(scope="session")
def gait3d_root(tmp_path_factory) -> Path:
    """`2D_Poses` folder of the 38-identity Gait3D subset (skipped when the tarball is absent)."""
    if not TARBALL.is_file():
        pytest.skip(f"real Gait3D subset not found at {TARBALL}")
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
