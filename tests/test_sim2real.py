"""benchmarks/sim2real.py: each statistic on constructed sequences with known answers, then the CLI
end to end on a tiny synthetic folder standing in for the real data."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bpmt.data.synth import write_synthetic

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("sim2real", ROOT / "benchmarks" / "sim2real.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sim2real = _load()

TORSO = 10.0


def standing(frames: int = 10, width: float = 6.0) -> np.ndarray:
    """`(T, 17, 3)` a still person facing the camera (their left joints on the image's right, `width`
    pixels apart), torso length 10 px, confidence 0.9."""
    y = {0: -6, 1: -7, 2: -7, 3: -6, 4: -6, 5: 0, 6: 0, 7: 5, 8: 5, 9: 10, 10: 10,
         11: TORSO, 12: TORSO, 13: 20, 14: 20, 15: 30, 16: 30}
    left, right = {1, 3, 5, 7, 9, 11, 13, 15}, {2, 4, 6, 8, 10, 12, 14, 16}
    pose = np.zeros((17, 3))
    for joint, height in y.items():
        pose[joint] = [20 + width / 2 * ((joint in left) - (joint in right)), 20 + height, 0.9]
    return np.repeat(pose[None], frames, axis=0)


def test_torso_length_and_scale():
    keypoints = standing()
    assert np.allclose(sim2real.torso_lengths(keypoints), TORSO)
    assert sim2real.body_scale(keypoints) == pytest.approx(TORSO)


def test_jitter_is_the_median_second_difference_over_torso_length():
    keypoints = standing(12)
    assert sim2real.jitter(keypoints) == 0.0
    keypoints[:, :, 0] += 0.5 * (-1.0) ** np.arange(12)[:, None]   # every joint: x(t+1) - 2x(t) + x(t-1) = +-2
    assert sim2real.jitter(keypoints) == pytest.approx(2.0 / TORSO)
    # The whole body shakes together (crop box jitter): nothing is left relative to the trunk centre.
    assert sim2real.jitter(keypoints, centred=True) == pytest.approx(0.0, abs=1e-12)
    keypoints[:, 9, 1] += 1.5 * (-1.0) ** np.arange(12)                # the left wrist alone also shakes in y
    assert sim2real.jitter(keypoints, joints=[9], centred=True) == pytest.approx(6.0 / TORSO)

    still = standing(12)
    still[:, 0, :2] += np.array([0.75, 1.0]) * (-1.0) ** np.arange(12)[:, None]   # the nose: second differences (3, 4)
    assert sim2real.jitter(still, joints=[0], centred=True) == pytest.approx(5.0 / TORSO)
    shoulder = standing(12)
    shoulder[:, 5, 0] += 0.5 * (-1.0) ** np.arange(12)                    # moves the trunk centre by a quarter of it
    assert sim2real.jitter(shoulder, joints=[9], centred=True) == pytest.approx(0.5 / TORSO, rel=1e-3)


def test_jitter_skips_triples_across_missing_frames():
    keypoints = standing(6)
    keypoints[3:, :, 0] += 100.0                                          # a jump across the gap 2 -> 10
    frames = np.array([0, 1, 2, 10, 11, 12])
    assert sim2real.jitter(keypoints) == pytest.approx(50.0 / TORSO)     # triples (0,1,2) (1,2,10) (2,10,11) (10,11,12)
    assert sim2real.jitter(keypoints, frames) == 0.0
    assert math.isnan(sim2real.jitter(keypoints[:4], np.array([0, 2, 4, 6])))
    assert sim2real.consecutive(frames, 6, 1).tolist() == [True, True, False, True, True]


def test_order_flips_count_one_reversal_and_ignore_profile_noise():
    keypoints = standing(10)
    keypoints[5:] = keypoints[5:, [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]]   # turns around at frame 5
    assert sim2real.order_flips(keypoints, 5, 6) == (1, 9)
    assert sim2real.order_flips(keypoints, 11, 12) == (1, 9)
    frames = np.array([0, 1, 2, 3, 4, 8, 9, 10, 11, 12])                # the reversal falls in a gap
    assert sim2real.order_flips(keypoints, 5, 6, frames) == (0, 8)
    profile = standing(10, width=0.0)
    profile[:, 5, 0] += 0.3 * (-1.0) ** np.arange(10)                      # 0.06 torso either side of zero
    assert sim2real.order_flips(profile, 5, 6) == (0, 9)


def test_left_right_swaps_count_a_one_frame_swap_twice_and_not_legs_passing():
    keypoints = standing(12)
    keypoints[:, :, 0] += np.arange(12)[:, None]                           # walking right, 1 px per frame
    keypoints[6, [13, 14, 15, 16]] = keypoints[6, [14, 13, 16, 15]]         # the detector swaps the legs once
    assert sim2real.left_right_swaps(keypoints, sim2real.LEG_PAIRS) == (2, 11)
    assert sim2real.left_right_swaps(keypoints, sim2real.TRUNK_PAIRS) == (0, 11)
    frames = np.array([0, 1, 2, 3, 4, 5, 6, 20, 21, 22, 23, 24])          # the way back falls in a gap
    assert sim2real.left_right_swaps(keypoints, sim2real.LEG_PAIRS, frames) == (1, 10)

    passing = standing(40, width=0.0)                                       # side view: the knees cross smoothly
    swing = 6.0 * np.sin(0.2 * np.arange(40))
    passing[:, 13, 0] += swing
    passing[:, 14, 0] -= swing
    assert sim2real.left_right_swaps(passing, sim2real.LEG_PAIRS) == (0, 39)
    fast = standing(4, width=0.0)                                           # knees 3, then 1 px apart the other way
    fast[:, 13, 0] += [3.0, 1.5, -0.5, -2.0]
    fast[:, 14, 0] -= [3.0, 1.5, -0.5, -2.0]
    assert sim2real.left_right_swaps(fast, sim2real.LEG_PAIRS) == (0, 3)


def test_facing_sign_and_scale_change():
    front = standing(5, width=6.0)
    assert sim2real.facing(front) == pytest.approx(0.6)
    back = front[:, [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]]
    assert sim2real.facing(back) == pytest.approx(-0.6)
    heights = np.array([100.0] * 10 + [200.0] * 10)
    assert sim2real.scale_change(heights) == pytest.approx(math.log(2))
    assert sim2real.scale_change(heights[::-1]) == pytest.approx(math.log(2))
    ramp = 100.0 + 10.0 * np.arange(20)                                    # first tenth 100, 110; last 280, 290
    assert sim2real.scale_change(ramp) == pytest.approx(math.log(285 / 105))
    assert sim2real.scale_change(np.full(7, 300.0)) == 0.0


def test_frame_gaps_and_keypoint_boxes():
    assert sim2real.frame_gaps(np.array([3, 4, 6, 10, 11])).tolist() == [1, 3]
    assert len(sim2real.frame_gaps(np.arange(5))) == 0
    boxes = sim2real.keypoint_boxes(standing(2, width=6.0))
    assert np.allclose(boxes, [[6.0, 37.0], [6.0, 37.0]])                  # ears/eyes to ankles: -7 .. 30


def test_confidence_summary_groups_and_low_fractions():
    confidences = np.zeros((4, 17))
    for group, value in (("head", 0.9), ("shoulders_hips", 0.8), ("elbows_knees", 0.3), ("wrists_ankles", 0.25)):
        confidences[:, list(sim2real.JOINT_GROUPS[group])] = value       # 0.3 is not low, 0.25 is
    confidences[2:, 9] = 0.6                                               # frames 2-3: one wrist is found
    summary = sim2real.confidence_summary(confidences)
    assert summary["confidence_head"] == pytest.approx(0.9)
    assert summary["confidence_shoulders_hips"] == pytest.approx(0.8)
    assert summary["confidence_elbows_knees"] == pytest.approx(0.3)
    assert summary["confidence_wrists_ankles"] == pytest.approx((14 * 0.25 + 2 * 0.6) / 16)
    assert summary["low_confidence_keypoints"] == pytest.approx((4 * 4 - 2) / 68)
    assert summary["frames_with_low_confidence"] == 1.0
    assert summary["confidence_p50"] == pytest.approx(np.median(confidences))


def test_corpus_statistics_on_known_sequences():
    front = standing(10, width=6.0)                                        # facing the camera, no gaps
    front[4, 9, 0] = -1.0                                                  # one wrist left of the crop,
    front[5, 10, 0] = 60.0                                                 # one beyond its width
    back = standing(8, width=6.0)[:, [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]]
    side = standing(6, width=-1.0)                                         # facing -0.1: side-on
    crops = np.tile([50.0, 100.0], (10, 1))                                # width / height 0.5
    sequences = [(front, crops, np.arange(10)),
                 (back, crops[:8], np.array([0, 1, 2, 3, 5, 6, 7, 11])),   # gaps of 1 and 3 in a span of 12
                 (side, crops[:6], np.array([0, 1, 2, 3, 4, 6]))]          # a gap of 1 in a span of 7
    stats = sim2real.corpus_statistics(sequences)
    assert stats["sequences"] == 3 and stats["frames"] == 24 and stats["length_max"] == 10
    assert stats["missing_frames"] == pytest.approx(5 / 29)
    assert stats["missing_frames_p50"] == pytest.approx(1 / 7)
    assert stats["sequences_with_gaps"] == pytest.approx(2 / 3) and stats["gap_max"] == 3 and stats["gap_median"] == 1
    assert stats["crop_aspect_p50"] == pytest.approx(0.5) and stats["crop_height_p50"] == 100
    assert stats["keypoint_box_over_crop_height_p50"] == pytest.approx(0.37)
    assert stats["keypoints_outside_crop"] == pytest.approx(2 / (24 * 17))
    for key in ("facing_camera", "facing_away", "side_on"):
        assert stats[key] == pytest.approx(1 / 3), key
    assert stats["radial_sequences"] == 0.0
    assert stats["jitter_p50"] == pytest.approx(0.0, abs=0.02)
    assert stats["shoulder_flips"] == 0.0 and stats["leg_swaps"] == 0.0
    assert set(key for key, _, _ in sim2real.ROWS) <= set(stats)


def test_main_prints_the_table_and_writes_json(tmp_path, capsys):
    real = write_synthetic(tmp_path / "real", subjects=3, sequences_per_subject=2, seed=1)
    out = tmp_path / "sim2real.json"
    assert sim2real.main(["--data", str(real), "--synthetic", "5", "--seed", "0", "--workers", "1",
                          "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    keys = {key for key, _, _ in sim2real.ROWS}
    assert sorted(data["synthetic"]) == ["gait3d", "plain"]
    for stats in data["synthetic"].values():
        assert keys <= set(data["real"]) and keys <= set(stats)
        assert stats["sequences"] == 5 and 0.0 <= stats["leg_swaps"] <= 1.0
    assert data["real"]["sequences"] == 6 and data["real"]["confidence_mean"] > 0.5
    printed = capsys.readouterr().out.splitlines()
    header = printed.index("| statistic | real | synthetic, plain | plain / real | synthetic, gait3d | gait3d / real |")
    rows = printed[header + 2:]
    assert len(rows) == len(sim2real.ROWS) and all(row.count("|") == 7 for row in rows)
    assert rows[0].startswith("| sequences | 6 | 5 |")
    with pytest.raises(SystemExit):
        sim2real.main(["--data", str(real), "--synthetic", "5", "--detectors", "plain,nope"])
    assert "choose among plain, gait3d, got 'plain,nope'" in capsys.readouterr().err
