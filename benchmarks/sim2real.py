"""Real Gait3D sequences against the synthetic walkers: where the generator disagrees (issue 16 §3).

Reads the real sequences of DATA, generates `--synthetic N` sequences with `bpmt.data.synth` at
Gait3D's skew (`gait3d_plan` + `iter_plan`, what `bpmt synth --preset gait3d` writes), computes
the same statistics on both and prints a markdown table: statistic | real | synthetic | synthetic /
real (bold where they differ by more than 1.5x). `--json OUT` writes the numbers.

Definitions (every statistic is a pure function of one sequence's arrays, below):
  torso length       distance between the shoulder midpoint and the hip midpoint; a sequence's
                     scale is its median torso length, so crops of different sizes compare
  jitter             |second difference| of a joint's crop-pixel position over three consecutive
                     frame numbers, / torso length; median over joints and frames of a sequence.
                     "centred": positions relative to the trunk centre first (removes the crop
                     box's own jitter, leaving keypoint noise and limb motion)
  missing frames     frame numbers absent between a sequence's first and last frame (gaps)
  low confidence     keypoint confidence below 0.3
  facing             median over frames of ((x_lsho - x_rsho) + (x_lhip - x_rhip)) / 2 / torso:
                     > +0.3 facing the camera (the person's left appears on the image's right),
                     < -0.3 facing away, otherwise side-on (within about 30 degrees of a profile)
  scale change       |log(crop height in the last 10% of frames / in the first 10%)|: walking
                     towards or away from the camera changes it; crossing the view does not
  order flips        consecutive frames where left-right x order of the shoulders (or hips)
                     reverses while both frames separate them by >= 0.1 torso (profile-view noise
                     around zero does not count), per frame transition
  left/right swaps   consecutive frames where exchanging the left and right joint of a pair
                     matches the previous frame at half the cost or less, the pair at least 0.25
                     torso apart in both frames (legs that cross between two frames are closer in
                     one of them at walking speed): a detector labelling swap; a one-frame swap
                     counts twice (in and out)

    python benchmarks/sim2real.py                                     # extracts the shipped tarball
    python benchmarks/sim2real.py --data PREPARED_CACHE --synthetic 400 --seed 0 --json sim2real.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from bpmt.data.corpus import PoseCorpus
from bpmt.data.source import open_data
from bpmt.data.synth import DETECTORS, GAIT3D_TEST_SEQUENCES, GAIT3D_TRAIN_SEQUENCES, gait3d_plan, iter_plan
from bpmt.errors import BPMTError
from bpmt.skeleton import LEFT_HIP, LEFT_SHOULDER, RIGHT_HIP, RIGHT_SHOULDER

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TARBALL = SHARED / "gait3d-2d-poses-38ids.tar.gz"

JOINT_GROUPS = {
    "head": (0, 1, 2, 3, 4),
    "shoulders_hips": (5, 6, 11, 12),
    "elbows_knees": (7, 8, 13, 14),
    "wrists_ankles": (9, 10, 15, 16),
}
TRUNK = JOINT_GROUPS["shoulders_hips"]
TRUNK_PAIRS = ((LEFT_SHOULDER, RIGHT_SHOULDER), (LEFT_HIP, RIGHT_HIP))
LEG_PAIRS = ((13, 14), (15, 16))
LOW_CONFIDENCE = 0.3
FACING_THRESHOLD = 0.3
RADIAL_CHANGE = math.log(1.25)     # crop height changes by 25% or more: walking towards / away
OFF_BY = 1.5                       # the table marks ratios beyond this factor either way

# An array triple per sequence: keypoints (T, 17, 3), crop sizes (T, 2) = width, height, frame numbers (T,).
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Per-sequence statistics: pure functions of arrays


def torso_lengths(keypoints: np.ndarray) -> np.ndarray:
    """`(T, 17, C)` -> `(T,)` distance between the shoulder midpoint and the hip midpoint."""
    shoulders = keypoints[:, [LEFT_SHOULDER, RIGHT_SHOULDER], :2].mean(axis=1)   # (T, 2)
    hips = keypoints[:, [LEFT_HIP, RIGHT_HIP], :2].mean(axis=1)
    return np.linalg.norm(shoulders - hips, axis=-1)


def body_scale(keypoints: np.ndarray) -> float:
    """A sequence's median torso length (pixels), never zero."""
    return max(float(np.median(torso_lengths(keypoints))), 1e-6)


def consecutive(frames: np.ndarray | None, length: int, steps: int) -> np.ndarray:
    """`(length - steps,)` True where rows t .. t+steps are consecutive frame numbers (all True
    without frame numbers)."""
    if length <= steps:
        return np.zeros(0, dtype=bool)
    if frames is None:
        return np.ones(length - steps, dtype=bool)
    frames = np.asarray(frames, dtype=np.int64)
    return frames[steps:] - frames[:-steps] == steps


def jitter(keypoints: np.ndarray, frames: np.ndarray | None = None, joints: Iterable[int] | None = None,
           centred: bool = False) -> float:
    """Median |second difference| of the joints' positions over consecutive frames, / torso length.

    `keypoints (T, 17, C)`; `joints` restricts the median to some joints; `centred` subtracts the trunk
    centre of each frame first. NaN when no three consecutive frames exist."""
    xy = np.asarray(keypoints[..., :2], dtype=np.float64)                     # (T, 17, 2)
    if centred:
        xy = xy - xy[:, TRUNK].mean(axis=1, keepdims=True)
    ok = consecutive(frames, len(xy), 2)
    if not ok.any():
        return math.nan
    acceleration = (xy[2:] - 2 * xy[1:-1] + xy[:-2])[ok]                      # (N, 17, 2)
    if joints is not None:
        acceleration = acceleration[:, list(joints)]
    return float(np.median(np.linalg.norm(acceleration, axis=-1))) / body_scale(keypoints)


def order_flips(keypoints: np.ndarray, left: int, right: int, frames: np.ndarray | None = None,
                min_separation: float = 0.1) -> tuple[int, int]:
    """(flips, transitions): consecutive-frame transitions where the x order of joints `left` and
    `right` reverses, both frames separating them by at least `min_separation` torso lengths."""
    dx = (keypoints[:, left, 0] - keypoints[:, right, 0]) / body_scale(keypoints)   # (T,)
    ok = consecutive(frames, len(dx), 1)
    clear = np.abs(dx) >= min_separation
    flips = ok & clear[1:] & clear[:-1] & (np.sign(dx[1:]) != np.sign(dx[:-1]))
    return int(flips.sum()), int(ok.sum())


def left_right_swaps(keypoints: np.ndarray, pairs: Iterable[tuple[int, int]], frames: np.ndarray | None = None,
                     min_separation: float = 0.25, margin: float = 0.5) -> tuple[int, int]:
    """(swaps, transitions): consecutive-frame transitions where, for some (left, right) pair at least
    `min_separation` torso lengths apart in both frames, the crossed assignment (left now = right
    before and vice versa) moves the pair at most `margin` times as far as the straight one.

    Both frames must separate the pair: knees or ankles that pass each other between two frames
    also favour the crossed assignment, but at walking speed they are close in one of the frames."""
    xy = np.asarray(keypoints[..., :2], dtype=np.float64)                     # (T, 17, 2)
    ok = consecutive(frames, len(xy), 1)
    scale = body_scale(keypoints)
    swapped = np.zeros(len(ok), dtype=bool)
    for left, right in pairs:
        a, b = xy[:, left], xy[:, right]                                       # (T, 2)
        straight = np.linalg.norm(a[1:] - a[:-1], axis=-1) + np.linalg.norm(b[1:] - b[:-1], axis=-1)
        crossed = np.linalg.norm(a[1:] - b[:-1], axis=-1) + np.linalg.norm(b[1:] - a[:-1], axis=-1)
        separated = np.linalg.norm(a - b, axis=-1) >= min_separation * scale                    # (T,)
        swapped |= separated[1:] & separated[:-1] & (crossed <= margin * straight)
    return int((swapped & ok).sum()), int(ok.sum())


def facing(keypoints: np.ndarray) -> float:
    """Median signed left-minus-right x offset of shoulders and hips, / torso length: positive when the
    person faces the camera (their left appears on the image's right), negative when facing away."""
    dx = 0.5 * ((keypoints[:, LEFT_SHOULDER, 0] - keypoints[:, RIGHT_SHOULDER, 0])
                + (keypoints[:, LEFT_HIP, 0] - keypoints[:, RIGHT_HIP, 0]))   # (T,)
    return float(np.median(dx)) / body_scale(keypoints)


def scale_change(crop_heights: np.ndarray) -> float:
    """|log| of the median crop height of the last tenth of the frames over that of the first tenth."""
    n = max(1, len(crop_heights) // 10)
    first, last = float(np.median(crop_heights[:n])), float(np.median(crop_heights[-n:]))
    return abs(math.log(max(last, 1e-6) / max(first, 1e-6)))


def frame_gaps(frames: np.ndarray) -> np.ndarray:
    """Lengths of the runs of missing frame numbers inside a sequence (empty without gaps)."""
    missing = np.diff(np.asarray(frames, dtype=np.int64)) - 1
    return missing[missing > 0]


def keypoint_boxes(keypoints: np.ndarray) -> np.ndarray:
    """`(T, 17, C)` -> `(T, 2)` width and height of the box around the 17 joints."""
    xy = keypoints[..., :2]
    return xy.max(axis=1) - xy.min(axis=1)


def confidence_summary(confidences: np.ndarray) -> dict[str, float]:
    """`(F, 17)` keypoint confidences -> mean, percentiles, low-confidence fractions, group means."""
    confidences = np.asarray(confidences, dtype=np.float64)
    p10, p50, p90 = np.percentile(confidences, [10, 50, 90])
    low = confidences < LOW_CONFIDENCE
    summary = {"confidence_mean": float(confidences.mean()), "confidence_p10": float(p10),
               "confidence_p50": float(p50), "confidence_p90": float(p90),
               "low_confidence_keypoints": float(low.mean()),
               "frames_with_low_confidence": float(low.any(axis=1).mean())}
    for group, joints in JOINT_GROUPS.items():
        summary[f"confidence_{group}"] = float(confidences[:, list(joints)].mean())
    return summary


# ---------------------------------------------------------------------------------------------
# A whole corpus


def corpus_statistics(sequences: Iterable[Arrays]) -> dict[str, float]:
    """The table's statistics over `(keypoints, crop_sizes, frames)` triples, one per sequence."""
    confidences, crops, boxes, outside = [], [], [], 0
    per_sequence: dict[str, list[float]] = {key: [] for key in (
        "length", "missing", "jitter", "jitter_centred", "jitter_head", "jitter_wrists_ankles",
        "facing", "scale_change")}
    gaps, spans = [], 0
    counts = {"shoulder_flips": [0, 0], "hip_flips": [0, 0], "trunk_swaps": [0, 0], "leg_swaps": [0, 0]}
    for keypoints, crop_sizes, frames in sequences:
        keypoints = np.asarray(keypoints, dtype=np.float64)                   # (T, 17, 3)
        crop_sizes = np.asarray(crop_sizes, dtype=np.float64)                 # (T, 2)
        frames = np.asarray(frames, dtype=np.int64)                           # (T,)
        confidences.append(keypoints[..., 2])
        crops.append(crop_sizes)
        boxes.append(keypoint_boxes(keypoints))
        xy = keypoints[..., :2]
        outside += int(((xy < 0) | (xy > crop_sizes[:, None, :])).any(axis=-1).sum())
        per_sequence["length"].append(len(frames))
        per_sequence["jitter"].append(jitter(keypoints, frames))
        per_sequence["jitter_centred"].append(jitter(keypoints, frames, centred=True))
        per_sequence["jitter_head"].append(jitter(keypoints, frames, JOINT_GROUPS["head"], centred=True))
        per_sequence["jitter_wrists_ankles"].append(
            jitter(keypoints, frames, JOINT_GROUPS["wrists_ankles"], centred=True))
        per_sequence["facing"].append(facing(keypoints))
        per_sequence["scale_change"].append(scale_change(crop_sizes[:, 1]))
        gaps.append(frame_gaps(frames))
        span = int(frames[-1] - frames[0]) + 1
        per_sequence["missing"].append(gaps[-1].sum() / span)
        spans += span
        for key, (flips, transitions) in (
                ("shoulder_flips", order_flips(keypoints, LEFT_SHOULDER, RIGHT_SHOULDER, frames)),
                ("hip_flips", order_flips(keypoints, LEFT_HIP, RIGHT_HIP, frames)),
                ("trunk_swaps", left_right_swaps(keypoints, TRUNK_PAIRS, frames)),
                ("leg_swaps", left_right_swaps(keypoints, LEG_PAIRS, frames))):
            counts[key][0] += flips
            counts[key][1] += transitions
    if not crops:
        raise BPMTError("no sequences to describe")

    confidences, crops, boxes = np.concatenate(confidences), np.concatenate(crops), np.concatenate(boxes)
    values = {key: np.asarray(v, dtype=np.float64) for key, v in per_sequence.items()}
    all_gaps = np.concatenate(gaps)
    heights, aspects = crops[:, 1], crops[:, 0] / np.maximum(crops[:, 1], 1e-6)
    direction = values["facing"]
    stats: dict[str, float] = {"sequences": len(values["length"]), "frames": int(values["length"].sum())}
    for q in (10, 50, 90):
        stats[f"length_p{q}"] = float(np.percentile(values["length"], q))
    stats["length_max"] = float(values["length"].max())
    stats.update({
        "missing_frames": float(all_gaps.sum()) / spans,
        "missing_frames_p50": float(np.median(values["missing"])),
        "missing_frames_p90": float(np.percentile(values["missing"], 90)),
        "sequences_with_gaps": float(np.mean([len(g) > 0 for g in gaps])),
        "gap_median": float(np.median(all_gaps)) if len(all_gaps) else 0.0,
        "gap_p90": float(np.percentile(all_gaps, 90)) if len(all_gaps) else 0.0,
        "gap_max": float(all_gaps.max()) if len(all_gaps) else 0.0,
    })
    stats.update(confidence_summary(confidences))
    for q in (10, 50, 90):
        stats[f"crop_height_p{q}"] = float(np.percentile(heights, q))
    for q in (10, 50, 90):
        stats[f"crop_aspect_p{q}"] = float(np.percentile(aspects, q))
    stats["keypoint_box_aspect_p50"] = float(np.median(boxes[:, 0] / np.maximum(boxes[:, 1], 1e-6)))
    stats["keypoint_box_over_crop_height_p50"] = float(np.median(boxes[:, 1] / np.maximum(heights, 1e-6)))
    stats["keypoints_outside_crop"] = outside / confidences.size
    for key in ("jitter", "jitter_centred", "jitter_head", "jitter_wrists_ankles"):
        stats[f"{key}_p50"] = _finite_percentile(values[key], 50)
    stats["jitter_p90"] = _finite_percentile(values["jitter"], 90)
    stats.update({
        "facing_camera": float(np.mean(direction > FACING_THRESHOLD)),
        "facing_away": float(np.mean(direction < -FACING_THRESHOLD)),
        "side_on": float(np.mean(np.abs(direction) <= FACING_THRESHOLD)),
        "scale_change_p50": float(np.median(values["scale_change"])),
        "radial_sequences": float(np.mean(values["scale_change"] >= RADIAL_CHANGE)),
    })
    for key, (events, transitions) in counts.items():
        stats[key] = events / transitions if transitions else math.nan
    return stats


def _finite_percentile(values: np.ndarray, q: float) -> float:
    """Percentile over the finite values (a sequence without three consecutive frames has no jitter)."""
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if len(finite) else math.nan


def corpus_arrays(corpus: PoseCorpus) -> Iterator[Arrays]:
    for i in range(len(corpus)):
        rows = slice(int(corpus.starts[i]), int(corpus.starts[i] + corpus.lengths[i]))
        yield corpus.keypoints[rows], corpus.crop_sizes[rows], corpus.frames[rows]


def synthetic_arrays(count: int, seed: int, detector: str = "plain") -> Iterator[Arrays]:
    """The first `count` sequences of a Gait3D-shaped synthetic plan just large enough to hold them,
    with the detector model `detector` (`bpmt synth --detector`)."""
    scale = max(count / (GAIT3D_TRAIN_SEQUENCES + GAIT3D_TEST_SEQUENCES), 0.002)
    for sequence in itertools.islice(iter_plan(gait3d_plan(scale, seed, detector=detector), seed), count):
        yield sequence.keypoints, sequence.crop_sizes, sequence.frames


# ---------------------------------------------------------------------------------------------
# The table

# (key, label, kind): kind says how the value prints (count, px, fraction, ratio number)
ROWS = (
    ("sequences", "sequences", "count"),
    ("frames", "frames (stored)", "count"),
    ("length_p10", "frames per sequence, p10", "count"),
    ("length_p50", "frames per sequence, median", "count"),
    ("length_p90", "frames per sequence, p90", "count"),
    ("length_max", "frames per sequence, max", "count"),
    ("missing_frames", "missing frame numbers inside sequences, all", "fraction"),
    ("missing_frames_p50", "missing frame numbers, median sequence", "fraction"),
    ("missing_frames_p90", "missing frame numbers, p90 sequence", "fraction"),
    ("sequences_with_gaps", "sequences with at least one gap", "fraction"),
    ("gap_median", "gap length (frames), median", "number"),
    ("gap_p90", "gap length (frames), p90", "number"),
    ("gap_max", "gap length (frames), max", "count"),
    ("confidence_mean", "confidence, mean", "number"),
    ("confidence_p10", "confidence, p10", "number"),
    ("confidence_p50", "confidence, median", "number"),
    ("confidence_p90", "confidence, p90", "number"),
    ("confidence_head", "confidence mean, head (0-4)", "number"),
    ("confidence_shoulders_hips", "confidence mean, shoulders + hips", "number"),
    ("confidence_elbows_knees", "confidence mean, elbows + knees", "number"),
    ("confidence_wrists_ankles", "confidence mean, wrists + ankles", "number"),
    ("low_confidence_keypoints", f"keypoints with confidence < {LOW_CONFIDENCE}", "fraction"),
    ("frames_with_low_confidence", f"frames with a keypoint < {LOW_CONFIDENCE}", "fraction"),
    ("crop_height_p10", "crop height (px), p10", "count"),
    ("crop_height_p50", "crop height (px), median", "count"),
    ("crop_height_p90", "crop height (px), p90", "count"),
    ("crop_aspect_p10", "crop width / height, p10", "number"),
    ("crop_aspect_p50", "crop width / height, median", "number"),
    ("crop_aspect_p90", "crop width / height, p90", "number"),
    ("keypoint_box_aspect_p50", "keypoint box width / height, median", "number"),
    ("keypoint_box_over_crop_height_p50", "keypoint box height / crop height, median", "number"),
    ("keypoints_outside_crop", "keypoints outside the crop", "fraction"),
    ("jitter_p50", "jitter (crop px / torso), median sequence", "number"),
    ("jitter_p90", "jitter (crop px / torso), p90 sequence", "number"),
    ("jitter_centred_p50", "jitter, trunk-centred, median sequence", "number"),
    ("jitter_head_p50", "jitter, trunk-centred, head", "number"),
    ("jitter_wrists_ankles_p50", "jitter, trunk-centred, wrists + ankles", "number"),
    ("facing_camera", "sequences facing the camera", "fraction"),
    ("facing_away", "sequences facing away", "fraction"),
    ("side_on", "sequences side-on", "fraction"),
    ("scale_change_p50", "crop-height change, abs log(last / first), median", "number"),
    ("radial_sequences", "sequences whose crop height changes >= 25%", "fraction"),
    ("shoulder_flips", "shoulder x-order flips per frame transition", "fraction"),
    ("hip_flips", "hip x-order flips per frame transition", "fraction"),
    ("trunk_swaps", "left/right swaps, shoulders or hips, per transition", "fraction"),
    ("leg_swaps", "left/right swaps, knees or ankles, per transition", "fraction"),
)


def _cell(value: float, kind: str) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if kind == "count":
        return f"{value:,.0f}"
    if kind == "fraction":
        return f"{100 * value:.2f}%"
    return f"{value:.3g}"


def _ratio(real: float, synthetic: float) -> str:
    if not (math.isfinite(real) and math.isfinite(synthetic)):
        return "—"
    if real == 0:
        return "same (0)" if synthetic == 0 else "real is 0"
    ratio = synthetic / real
    text = f"{ratio:.2f}x"
    return f"**{text}**" if ratio <= 0 or abs(math.log(ratio)) > math.log(OFF_BY) else text


def format_table(real: dict[str, float], synthetic: dict[str, dict[str, float]]) -> str:
    """One row per statistic: real, then each detector model's synthetic value and its ratio to real."""
    header = "| statistic | real |" + "".join(f" synthetic, {name} | {name} / real |" for name in synthetic)
    lines = [header, "|---|---:|" + "---:|---:|" * len(synthetic)]
    for key, label, kind in ROWS:
        lines.append(f"| {label} | {_cell(real[key], kind)} |" + "".join(
            f" {_cell(stats[key], kind)} | {_ratio(real[key], stats[key])} |" for stats in synthetic.values()))
    return "\n".join(lines)


def _json_safe(stats: dict[str, float]) -> dict:
    return {key: (None if isinstance(v, float) and not math.isfinite(v) else v) for key, v in stats.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Gait3D 2D_Poses folder or prepared cache "
                                       "(default: extract the shipped tarball to a temporary folder)")
    parser.add_argument("--synthetic", type=int, default=400,
                        help="synthetic sequences to generate (default: %(default)s, about the real subset's 394)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    parser.add_argument("--detectors", default=",".join(DETECTORS),
                        help="comma-separated detector models of the generator to compare (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="parser processes for raw folders")
    parser.add_argument("--json", dest="json_out", help="write the statistics to this JSON file")
    args = parser.parse_args(argv)
    if args.synthetic < 1:
        parser.error("--synthetic must be at least 1")
    detectors = args.detectors.split(",")
    if not detectors or any(d not in DETECTORS for d in detectors):
        parser.error(f"--detectors: choose among {', '.join(DETECTORS)}, got {args.detectors!r}")

    try:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bpmt-sim2real-") as tmp:
            data = args.data
            if data is None:
                if not TARBALL.is_file():
                    raise BPMTError(f"{TARBALL}: not found; pass --data")
                with tarfile.open(TARBALL) as tar:
                    tar.extractall(tmp, filter="data")
                data = Path(tmp) / "Gait3D" / "2D_Poses"
            corpus, _ = open_data(data, workers=args.workers)
            real = corpus_statistics(corpus_arrays(corpus))
        print(f"real: {real['sequences']} sequences, {real['frames']} frames in "
              f"{time.perf_counter() - start:.1f}s", file=sys.stderr)
        synthetic = {}
        for detector in detectors:
            start = time.perf_counter()
            synthetic[detector] = stats = corpus_statistics(synthetic_arrays(args.synthetic, args.seed, detector))
            print(f"synthetic, detector {detector}: {stats['sequences']} sequences (seed {args.seed}), "
                  f"{stats['frames']} frames in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    except (BPMTError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(f"real ({args.data or TARBALL}) vs synthetic (bpmt.data.synth, Gait3D preset, seed {args.seed})")
    print(format_table(real, synthetic))
    if args.json_out:
        result = {"real": _json_safe(real), "synthetic": {d: _json_safe(v) for d, v in synthetic.items()},
                  "data": str(args.data or TARBALL), "seed": args.seed, "synthetic_sequences": args.synthetic}
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
