"""Synthetic walkers: Gait3D layout, determinism, identity signal, CLI."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bpmt.cli import main
from bpmt.data.gait3d import read_gait3d
from bpmt.data.synth import (
    FPS, _gaps, detect, gait3d_plan, iter_plan, iter_synthetic, sample_cameras, sample_conditions, sample_route,
    sample_signature, synthesize, uniform_plan, walk_3d, write_synthetic,
)
from bpmt.errors import DataError
from bpmt.skeleton import LIMBS

NAME = re.compile(r"^\d{4}-camid\d+_videoid\d+-seq\d+$")


@pytest.fixture(scope="module")
def small_synth(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("synth"), subjects=3, sequences_per_subject=4, seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.txt"))}


def test_written_data_reads_back_as_gait3d(small_synth):
    assert small_synth.name == "2D_Poses"
    sequences, report = read_gait3d(small_synth)
    assert len(sequences) == 12 and not report.skipped
    assert sorted({s.subject for s in sequences}) == ["0000", "0001", "0002"]
    assert all(sum(s.subject == subject for s in sequences) == 4 for subject in ("0000", "0001", "0002"))
    for s in sequences:
        assert NAME.match(s.name), s.name
        assert s.keypoints.shape == (len(s), 17, 3) and 20 <= len(s) <= 160
        assert (s.crop_sizes > 0).all()
        conf = s.keypoints[..., 2]
        assert ((conf > 0) & (conf < 1)).all()
        # Nearly every joint lies inside its crop, as in the real data.
        inside = ((s.keypoints[..., 0] >= -1) & (s.keypoints[..., 0] <= s.crop_sizes[:, None, 0] + 1)
                  & (s.keypoints[..., 1] >= -1) & (s.keypoints[..., 1] <= s.crop_sizes[:, None, 1] + 1))
        assert inside.mean() > 0.97
    assert any((np.diff(s.frames) > 1).any() for s in sequences), "no dropped-frame gaps"
    assert sum(int((s.keypoints[..., 2] < 0.3).sum()) for s in sequences) > 0, "no low-confidence joints"


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    first = _files(write_synthetic(tmp_path / "a", 2, 3, seed=7))
    again = _files(write_synthetic(tmp_path / "b", 2, 3, seed=7))
    other = _files(write_synthetic(tmp_path / "c", 2, 3, seed=8))
    assert first == again
    assert first != other


def test_memory_and_disk_agree(small_synth):
    on_disk = {s.name: s for s in read_gait3d(small_synth)[0]}
    in_memory = list(iter_synthetic(3, 4, seed=0))
    assert sorted(on_disk) == sorted(s.name for s in in_memory)
    for s in in_memory:
        d = on_disk[s.name]
        np.testing.assert_array_equal(d.frames, s.frames)
        np.testing.assert_allclose(d.keypoints, s.keypoints, atol=1e-3)
        np.testing.assert_allclose(d.crop_sizes, s.crop_sizes)


def test_more_sequences_keep_the_first_ones():
    """A subject's identity and early sequences do not depend on how many sequences are asked for."""
    two = list(iter_synthetic(2, 2, seed=3))
    four = list(iter_synthetic(2, 4, seed=3))
    for s in two:
        match = next(f for f in four if f.name == s.name)
        np.testing.assert_array_equal(match.keypoints, s.keypoints)


def test_synthesize_is_pure_given_the_generator():
    cameras = sample_cameras(np.random.default_rng(0))
    signature = sample_signature(np.random.default_rng(1))
    visit = sample_route(np.random.default_rng(2), 1, cameras)[0]
    conditions = sample_conditions(np.random.default_rng(3), visit, cameras[visit.camera_id], signature)
    a = synthesize(signature, conditions, np.random.default_rng(4))
    b = synthesize(signature, conditions, np.random.default_rng(4))
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.keypoints.shape == (len(a.frames), 17, 3) and a.crop_sizes.shape == (len(a.frames), 2)
    assert len(a.frames) <= conditions.num_frames


def test_walker_moves_like_a_walker():
    cameras = sample_cameras(np.random.default_rng(0))
    signature = sample_signature(np.random.default_rng(1))
    visit = sample_route(np.random.default_rng(2), 1, cameras)[0]
    conditions = sample_conditions(np.random.default_rng(3), visit, cameras[visit.camera_id], signature)
    world = walk_3d(signature, conditions)                                       # (T, 20, 3)
    # Bones keep their length; the head is above the hips, the hips above the ankles.
    thigh = np.linalg.norm(world[:, 13] - world[:, 11], axis=-1)
    assert np.ptp(thigh) < 0.05 * signature.height
    assert (world[:, 0, 2] > world[:, 11, 2]).all() and (world[:, 11, 2] > world[:, 15, 2]).all()
    # Ankles alternate: their forward separation oscillates at the stride frequency.
    heading = np.array([np.cos(conditions.heading), np.sin(conditions.heading), 0.0])
    separation = (world[:, 15] - world[:, 16]) @ heading
    assert separation.max() > 0.2 and separation.min() < -0.2
    travelled = (world[-1, 11] - world[0, 11]) @ heading
    expected = signature.stride_length * signature.cadence / 120 * conditions.speed * (conditions.num_frames - 1) / FPS
    assert travelled == pytest.approx(expected, rel=0.1)


def _proportions(keypoints: np.ndarray) -> np.ndarray:
    """Median over frames of each limb length over the torso length: a crude view-robust signature."""
    xy = keypoints[..., :2].astype(np.float64)
    limbs = np.stack([np.linalg.norm(xy[:, a] - xy[:, b], axis=-1) for a, b in LIMBS], axis=1)
    torso = np.linalg.norm(xy[:, [5, 6]].mean(axis=1) - xy[:, [11, 12]].mean(axis=1), axis=-1)
    return np.median(limbs / torso[:, None], axis=0)


def test_same_subject_sequences_look_alike():
    sequences = list(iter_synthetic(8, 4, seed=0))
    signatures = np.stack([_proportions(s.keypoints) for s in sequences])
    labels = np.array([s.subject for s in sequences])
    distances = np.linalg.norm(signatures[:, None] - signatures[None], axis=-1)
    same = labels[:, None] == labels[None]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    assert distances[same & off_diagonal].mean() < 0.75 * distances[~same].mean()


def test_refuses_to_write_into_existing_data(small_synth):
    with pytest.raises(DataError, match="not an empty folder"):
        write_synthetic(small_synth.parent, 1, 1)


@pytest.mark.parametrize("subjects, sequences, seed", [(0, 1, 0), (1, 0, 0), (1, 1, -1)])
def test_rejects_bad_sizes(tmp_path, subjects, sequences, seed):
    with pytest.raises(ValueError):
        write_synthetic(tmp_path, subjects, sequences, seed=seed)
    assert not (tmp_path / "2D_Poses").exists()


def test_cli_synth(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "out"), "--subjects", "2", "--sequences-per-subject", "2",
                 "--seed", "1"]) == 0
    assert "2 subjects x 2 sequences" in capsys.readouterr().out
    assert len(read_gait3d(tmp_path / "out")[0]) == 4
    assert main(["synth", str(tmp_path / "out"), "--subjects", "1"]) == 2
    assert "not an empty folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The "gait3d" detector model (fitted to real Gait3D sequences, benchmarks/sim2real.py)


def _conditions(detector: str = "plain", **changes):
    cameras = sample_cameras(np.random.default_rng(0))
    signature = sample_signature(np.random.default_rng(1))
    visit = sample_route(np.random.default_rng(2), 1, cameras)[0]
    conditions = sample_conditions(np.random.default_rng(3), visit, cameras[visit.camera_id], signature,
                                   min_frames=400, max_frames=400, detector=detector)
    return replace(conditions, **changes)


def test_gait3d_detector_mirrors_the_whole_body():
    """A whole-body swap puts every left joint where its right twin was (and lowers confidence)."""
    clean = _conditions("gait3d", noise=0.0, box_jitter=0.0, miss_rate=0.0, swap_rate=0.0,
                                   drop_rate=0.0, body_swap_rate=0.0)
    image = np.random.default_rng(5).uniform(0, 300, (clean.num_frames, 20, 2))
    plain = detect(image, clean, np.random.default_rng(6))
    mirrored = detect(image, replace(clean, body_swap_rate=1.0), np.random.default_rng(6))
    left, right = [1, 3, 5, 7, 9, 11, 13, 15], [2, 4, 6, 8, 10, 12, 14, 16]
    kept = np.isin(plain.frames, mirrored.frames)
    np.testing.assert_allclose(mirrored.keypoints[:, left, :2], plain.keypoints[kept][:, right, :2])
    np.testing.assert_allclose(mirrored.keypoints[:, 0, :2], plain.keypoints[kept][:, 0, :2])
    assert mirrored.keypoints[..., 2].mean() < plain.keypoints[..., 2].mean() - 0.05


def test_gait3d_detector_drops_about_its_missing_fraction_in_gaps():
    conditions = _conditions("gait3d", drop_rate=0.3)
    rng = np.random.default_rng(7)
    kept = np.concatenate([_gaps(400, conditions, rng) for _ in range(200)])
    assert 1 - kept.mean() == pytest.approx(0.3 + 0.1 * 85 / 400 / 2, abs=0.05)   # + the rare long gaps
    assert _gaps(400, replace(conditions, drop_rate=0.0), np.random.default_rng(8)).mean() > 0.75


def _stats(sequences):
    missing = np.mean([1 - len(s.frames) / (s.frames[-1] - s.frames[0] + 1) for s in sequences])
    def isolated(keypoints, a, b):     # single frames whose left/right order differs from both neighbours
        order = np.sign(keypoints[:, a, 0] - keypoints[:, b, 0])
        return (order[1:-1] != order[:-2]) & (order[1:-1] != order[2:])
    flips = np.mean(np.concatenate([isolated(s.keypoints, 5, 6) & isolated(s.keypoints, 11, 12)
                                    for s in sequences]))
    jitter = np.median([np.median(np.abs(np.diff(s.keypoints[:, 0, :2], 2, axis=0))) for s in sequences])
    return missing, flips, jitter


def test_gait3d_detector_moves_the_statistics_towards_real_gait3d():
    """Against the plain model: more missing frames, more shoulder-order flips (whole-body swaps), less
    jitter — the directions of the sim-to-real table."""
    plan = gait3d_plan(0.003, seed=2)
    plain = list(iter_plan(plan, seed=2))
    real_like = list(iter_plan(gait3d_plan(0.003, seed=2, detector="gait3d"), seed=2))
    assert len(plain) == len(real_like)
    m_plain, f_plain, j_plain = _stats(plain)
    m_real, f_real, j_real = _stats(real_like)
    assert m_real > 2 * m_plain and f_real > 1.8 * f_plain and j_real < 0.8 * j_plain


def test_gait3d_detector_turns_back_views_round():
    cameras = sample_cameras(np.random.default_rng(0), 39)
    away = {}
    for detector in ("plain", "gait3d"):
        headings = [v.heading for s in range(400) for v in sample_route(np.random.default_rng([9, s]), 2, cameras,
                                                                         detector)]
        away[detector] = np.mean(np.cos(headings) > 0.5)
    assert away["gait3d"] < 0.75 * away["plain"]


def test_unknown_detector_is_an_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="detector"):
        uniform_plan(2, 2, detector="openpose")
    with pytest.raises(ValueError, match="detector"):
        gait3d_plan(0.01, detector="openpose")
    with pytest.raises(SystemExit):
        main(["synth", str(tmp_path / "x"), "--detector", "openpose"])
    assert "invalid choice" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "y"), "--subjects", "2", "--sequences-per-subject", "2",
                 "--detector", "gait3d"]) == 0
