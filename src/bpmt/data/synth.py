"""Synthetic walkers: the built-in dataset, written in Gait3D's native layout.

Each subject has a stable gait signature (body proportions, cadence, stride, arm swing, lean,
left/right asymmetry, sway); each sequence adds nuisance (which camera, walking direction,
distance, speed, length, detector noise, missing joints, dropped frames). The pipeline, in the
order of this file:

    sample_cameras, sample_signature, sample_route, sample_conditions     seeded random draws
    walk_3d      signature + conditions -> (T, 20, 3) world points, metres, z up
    project      pinhole camera         -> (T, 20, 2) image pixels, y down
    detect       person crop, detector noise, low confidence, dropped frames -> SyntheticWalk
    synthesize   the three above: one sequence from a signature, conditions and a generator
    uniform_plan / gait3d_plan   how many sequences per subject and how long (Gait3D's size and
                 skew times a scale), which subjects train and which test
    iter_plan / write_plan       a plan's sequences in memory, or written in parallel as
                 `2D_Poses/<ID>/<camidC_videoidV>/<seqK>/human_crop_f<frame>.txt` (+ `split.json`)
    iter_synthetic / write_synthetic   the uniform plan: subjects x sequences

`walk_3d` and `project` are deterministic; `detect` draws only from the generator it is given;
every subject and sequence has its own generator derived from the seed, so a dataset is a pure
function of its seed.

Identity lives in proportions, cadence, stride, arm swing and carriage, asymmetries and the
detector's per-person offsets (clothing), which survive every view; view, speed, length and
phase change raw crop coordinates more than identity does. `benchmarks/synth_baseline.py`
measures how poorly nearest neighbours on raw keypoints do (the constants below are tuned so that
it stays around 20-35% Rank-1).
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import DataError
from ..skeleton import NUM_JOINTS
from .sequence import Sequence

FPS = 25.0                      # Gait3D's frame rate
NUM_CAMERAS = 8                 # scene cameras shared by all subjects, like a Gait3D venue
VIDEOS_PER_SUBJECT = 3
PROPORTION_SPREAD = 0.07        # log-std of each body segment around the anthropometric mean
CLOTHING_OFFSET = 0.0225        # std of the per-subject joint offsets that clothing causes, fraction of height
CARRY_RATE = 0.3                # subjects that walk with something in one hand
HEADING_SPREAD = 0.3            # radians a visit's path strays from its camera's corridor
# 17 COCO joints, then three helper points that only shape the person box: head top, two soles.
HEAD_TOP, LEFT_SOLE, RIGHT_SOLE = 17, 18, 19
NUM_POINTS = 20

# Typical detector confidence per COCO joint (face and trunk are easy, wrists and ankles less so).
_BASE_CONFIDENCE = np.array([0.93, 0.92, 0.92, 0.88, 0.88, 0.90, 0.90, 0.84, 0.84,
                             0.78, 0.78, 0.82, 0.82, 0.84, 0.84, 0.79, 0.79])
# Faces are found precisely; clothing moves the detected shoulders, hips and limbs.
_CLOTHING_SCALE = np.array([0.3] * 5 + [1.0] * 12)
_LEFT_JOINTS = np.array([1, 3, 5, 7, 9, 11, 13, 15])
_RIGHT_JOINTS = np.array([2, 4, 6, 8, 10, 12, 14, 16])
_MIRRORED = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]     # every left joint <-> its right

# Detector models (`bpmt synth --detector`): "plain" is the original generator; "gait3d" is fitted to the
# statistics of the shipped real Gait3D sequences (`benchmarks/sim2real.py`, docs/results.md): half the
# keypoint and box jitter, more and longer gaps (a skewed missing fraction per sequence: median ~7%,
# p90 ~35%; gaps of one frame or a few, now and then dozens), single-frame left/right swaps of the whole
# body at low confidence, fewer back views, fewer low-confidence keypoints.
DETECTORS = ("plain", "gait3d")
AWAY_TURN = 0.4                 # gait3d: chance that a path walked away from the camera is walked towards it
GAP_LOG_MEDIAN, GAP_LOG_STD = math.log(0.07), 1.26      # gait3d: missing fraction per sequence (log-normal)


def _check_detector(detector: str) -> None:
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")


# ---------------------------------------------------------------------------------------------
# What is drawn: subject signature, scene cameras, sequence conditions


@dataclass(frozen=True, eq=False)
class GaitSignature:
    """A subject's stable way of walking. Lengths in metres, angles in radians."""

    height: float
    thigh: float              # hip -> knee
    shin: float               # knee -> ankle
    ankle_height: float       # ankle -> sole
    torso: float              # mid-hip -> mid-shoulder
    neck: float               # mid-shoulder -> head centre
    head: float               # head radius
    shoulder_width: float
    hip_width: float
    upper_arm: float
    forearm: float
    cadence: float            # steps per minute at the subject's natural speed
    stride_length: float      # metres per gait cycle (two steps) at natural speed
    knee_flexion: float       # peak extra knee flexion in swing
    arm_swing: float          # shoulder swing amplitude
    elbow_bend: float         # resting elbow flexion
    arm_abduction: float      # arms held away from the body
    torso_lean: float         # forward lean
    head_forward: float       # head carried in front of the shoulders (metres)
    leg_asymmetry: float      # left leg swings (1 + a), right (1 - a)
    arm_asymmetry: float
    phase_asymmetry: float    # right leg lags half a cycle plus this
    sway: float               # lateral pelvis sway amplitude (metres)
    bob: float                # vertical pelvis bob amplitude (metres)
    pelvis_yaw: float         # pelvis rotation amplitude
    leg_abduction: float      # legs angled outward (wide gait) or inward
    carrying: int             # +1 / -1: left / right hand holds something (bag, phone), 0: free
    carry_elbow: float        # elbow flexion of the carrying arm
    joint_offsets: np.ndarray  # (17, 3) where clothing and hair move each detected joint (forward, left, up), metres


@dataclass(frozen=True)
class SceneCamera:
    """A fixed surveillance camera; people pass it along a preferred corridor."""

    height: float             # metres above the floor
    focal: float              # pixels
    distance: float           # typical distance of the corridor from the camera (metres)
    corridor: float           # corridor direction relative to the optical axis (radians)


@dataclass(frozen=True)
class Visit:
    """One pass of a subject along a camera's corridor; it may be recorded as several sequences."""

    camera_id: int
    video: int
    heading: float            # walking direction; 0 = straight away from the camera, pi/2 = to its left
    distance: float           # metres from the camera to the path's midpoint, along the optical axis
    lateral_offset: float     # metres the path's midpoint sits left of the optical axis


@dataclass(frozen=True)
class SequenceConditions:
    """Everything about one recording that is not the subject."""

    camera_height: float
    focal: float
    distance: float
    lateral_offset: float
    heading: float
    speed: float              # multiplies the subject's natural speed (cadence and stride share it)
    num_frames: int           # frames before drops
    start_phase: float
    first_frame: int
    noise: float              # keypoint noise std, fraction of the person-box height
    box_jitter: float         # detector box edge noise, fraction of the box height
    crop_margin: float        # crop padding around the person, fraction of the box height
    miss_rate: float          # chance that a joint starts a low-confidence spell in a frame
    swap_rate: float          # chance per frame that the detector swaps the knees and ankles
    drop_rate: float          # chance per frame that the detection is missing ("gait3d": missing fraction)
    body_swap_rate: float = 0.0   # chance per frame of a whole-body left/right swap ("gait3d")
    detector: str = "plain"       # the detector model (DETECTORS)


@dataclass
class SyntheticWalk:
    """One generated sequence, as the Gait3D files will hold it."""

    frames: np.ndarray        # (T,) int64 frame numbers, ascending, with gaps
    keypoints: np.ndarray     # (T, 17, 3) float32 x, y in crop pixels, confidence
    crop_sizes: np.ndarray    # (T, 2) float32 crop width, height in pixels


def sample_cameras(rng: np.random.Generator, count: int = NUM_CAMERAS) -> list[SceneCamera]:
    return [SceneCamera(height=rng.uniform(2.2, 4.5), focal=rng.uniform(1100.0, 2000.0),
                        distance=rng.uniform(6.0, 11.0), corridor=rng.uniform(0.0, 2 * math.pi))
            for _ in range(count)]


def sample_signature(rng: np.random.Generator) -> GaitSignature:
    """Draw one subject. Proportions follow anthropometric tables (Drillis & Contini), each segment
    varied by `PROPORTION_SPREAD`."""
    height = float(np.clip(rng.normal(1.70, 0.09), 1.48, 1.98))

    def part(fraction: float, spread: float = PROPORTION_SPREAD) -> float:
        return height * fraction * float(np.exp(rng.normal(0.0, spread)))

    thigh, shin = part(0.245), part(0.246)
    return GaitSignature(
        height=height,
        thigh=thigh, shin=shin, ankle_height=part(0.039, 0.03),
        torso=part(0.288), neck=part(0.117, 0.04), head=part(0.062, 0.05),
        shoulder_width=part(0.225, 0.07), hip_width=part(0.150, 0.08),
        upper_arm=part(0.186), forearm=part(0.146),
        cadence=rng.uniform(95.0, 125.0),
        stride_length=(thigh + shin) * rng.uniform(1.35, 1.75),
        knee_flexion=math.radians(rng.uniform(40.0, 60.0)),
        arm_swing=math.radians(rng.uniform(6.0, 35.0)),
        elbow_bend=math.radians(rng.uniform(5.0, 25.0)),
        arm_abduction=math.radians(rng.uniform(3.0, 14.0)),
        torso_lean=math.radians(rng.uniform(-2.0, 12.0)),
        head_forward=height * rng.uniform(-0.01, 0.04),
        leg_asymmetry=rng.normal(0.0, 0.06),
        arm_asymmetry=rng.normal(0.0, 0.15),
        phase_asymmetry=rng.normal(0.0, 0.08),
        sway=rng.uniform(0.01, 0.045),
        bob=rng.uniform(0.012, 0.035),
        pelvis_yaw=math.radians(rng.uniform(2.0, 9.0)),
        leg_abduction=math.radians(rng.uniform(-2.0, 5.0)),
        carrying=int(rng.choice([1, -1])) if rng.random() < CARRY_RATE else 0,
        carry_elbow=math.radians(rng.uniform(10.0, 100.0)),
        joint_offsets=rng.normal(0.0, CLOTHING_OFFSET * height, (NUM_JOINTS, 3)) * _CLOTHING_SCALE[:, None],
    )


def sample_route(rng: np.random.Generator, sequences: int, cameras: list[SceneCamera],
                 detector: str = "plain") -> list[Visit]:
    """Where a subject's sequences were filmed, one `Visit` per sequence.

    Like a Gait3D shopper, a subject passes a few cameras and is often recorded several times
    along the same stretch, so sequences come in visits of about two. With the "gait3d" detector
    model, paths walked away from the camera are turned round with chance `AWAY_TURN` (real Gait3D
    sequences show far fewer back views than both directions of a corridor give).
    """
    visits = []
    for _ in range(max(1, math.ceil(sequences / 2))):
        camera_id = int(rng.integers(len(cameras)))
        camera = cameras[camera_id]
        video = int(rng.integers(1, VIDEOS_PER_SUBJECT + 1))
        heading = camera.corridor + math.pi * int(rng.integers(2)) + rng.normal(0.0, HEADING_SPREAD)
        distance = camera.distance * rng.uniform(0.8, 1.2)
        lateral_offset = rng.normal(0.0, 1.0)
        if detector == "gait3d" and rng.random() < AWAY_TURN and math.cos(heading) > 0.5:
            heading += math.pi
        visits.append(Visit(camera_id=camera_id, video=video, heading=heading, distance=distance,
                            lateral_offset=lateral_offset))
    return [visits[k // 2] for k in range(sequences)]


def sample_conditions(rng: np.random.Generator, visit: Visit, camera: SceneCamera, signature: GaitSignature,
                      min_frames: int = 40, max_frames: int = 160, detector: str = "plain") -> SequenceConditions:
    """Draw one recording during `visit`: exact path, speed, length and detector quality
    (`detector`: the detector model, DETECTORS)."""
    _check_detector(detector)
    num_frames = int(rng.integers(min_frames, max_frames + 1))
    speed = rng.uniform(0.85, 1.15)
    # Keep the whole path well in front of the camera, whichever way it is walked.
    half_path = 0.5 * num_frames / FPS * signature.stride_length * signature.cadence / 120.0 * speed
    real = detector == "gait3d"
    k = 0.5 if real else 1.0            # the gait3d model: half the jitter and the low-confidence spells
    return SequenceConditions(
        camera_height=camera.height,
        focal=camera.focal,
        distance=max(visit.distance * rng.uniform(0.9, 1.1), half_path + 3.0),
        lateral_offset=visit.lateral_offset + rng.normal(0.0, 0.3),
        heading=visit.heading + rng.normal(0.0, 0.1),
        speed=speed,
        num_frames=num_frames,
        start_phase=rng.uniform(0.0, 2 * math.pi),
        first_frame=int(rng.integers(0, 20000)),
        noise=rng.uniform(0.004 * k, 0.015 * k),
        box_jitter=rng.uniform(0.005 * k, 0.02 * k),
        crop_margin=rng.uniform(0.06, 0.12),
        miss_rate=rng.uniform(0.0, 0.006 * k),
        swap_rate=rng.uniform(0.0, 0.004 if real else 0.01),
        drop_rate=float(min(0.6, rng.lognormal(GAP_LOG_MEDIAN, GAP_LOG_STD))) if real else rng.uniform(0.0, 0.06),
        body_swap_rate=rng.uniform(0.0, 0.008) if real else 0.0,
        detector=detector,
    )


# ---------------------------------------------------------------------------------------------
# 3D kinematics


def _knee_profile(phase: np.ndarray) -> np.ndarray:
    """Knee flexion shape over one leg's cycle, in [0, 1]: a big peak in mid swing, a small one after heel strike.

    Hip flexion is `sin(phase)`, so swing runs from toe-off (~ -pi/2) to heel strike (pi/2). The
    knee bends slowly through push-off and early swing and straightens quickly before heel strike.
    """
    def bump(centre: float, rise: float, fall: float) -> np.ndarray:
        offset = np.angle(np.exp(1j * (phase - centre)))     # wrapped to (-pi, pi]
        return np.exp(-0.5 * (offset / np.where(offset < 0, rise, fall)) ** 2)

    return bump(0.4, 0.9, 0.45) + 0.25 * bump(3 * math.pi / 4, 0.4, 0.4)


def walk_3d(signature: GaitSignature, conditions: SequenceConditions) -> np.ndarray:
    """`(T, 20, 3)` world positions (metres, z up) of the 17 joints plus head top and soles.

    The camera sits at `(0, 0, camera_height)` looking along +x; the path is a straight line.
    """
    s, c = signature, conditions
    t = np.arange(c.num_frames) / FPS                                          # (T,)
    frequency = s.cadence / 120.0 * math.sqrt(c.speed)                         # gait cycles per second
    stride = s.stride_length * math.sqrt(c.speed)
    phase = 2 * math.pi * frequency * t + c.start_phase                        # (T,)

    forward = np.array([math.cos(c.heading), math.sin(c.heading), 0.0])
    left = np.array([-math.sin(c.heading), math.cos(c.heading), 0.0])
    up = np.array([0.0, 0.0, 1.0])

    def vec(scalars: np.ndarray, direction: np.ndarray) -> np.ndarray:        # (T,) x (3,) -> (T, 3)
        return np.asarray(scalars)[:, None] * direction

    def sagittal(angle: np.ndarray, side: float = 0.0, abduction: float = 0.0) -> np.ndarray:
        """Unit vector hanging down, swung forward by `angle`, tilted outward by `abduction`."""
        hanging = vec(np.sin(angle), forward) - vec(np.cos(angle), up)
        return math.cos(abduction) * hanging + math.sin(abduction) * side * left

    leg = s.thigh + s.shin
    hip_swing = math.asin(min(stride / (4 * leg), 0.55))                       # step = 2 leg sin(swing)
    hip_height = s.ankle_height + leg * math.cos(0.6 * hip_swing)
    midpoint = np.array([c.distance, c.lateral_offset, 0.0])
    speed = stride * frequency
    pelvis = (midpoint + vec(speed * (t - t[-1] / 2), forward)
              + vec(-s.sway * np.cos(phase), left)                             # over the stance leg
              + vec(hip_height + s.bob * np.cos(2 * phase), up))               # lowest at heel strike

    lean = s.torso_lean + 0.02 * np.cos(2 * phase)
    neck = pelvis + vec(s.torso * np.cos(lean), up) + vec(s.torso * np.sin(lean), forward)
    pelvis_yaw = s.pelvis_yaw * np.sin(phase)                                   # left hip forward with left leg
    shoulder_yaw = -0.7 * s.pelvis_yaw * np.sin(phase)                          # shoulders counter-rotate
    pelvis_side = vec(np.cos(pelvis_yaw), left) + vec(np.sin(pelvis_yaw), forward)
    shoulder_side = vec(np.cos(shoulder_yaw), left) + vec(np.sin(shoulder_yaw), forward)

    points = np.zeros((c.num_frames, NUM_POINTS, 3))
    for side, (hip, knee, ankle, sole, shoulder, elbow, wrist) in (
            (1.0, (11, 13, 15, LEFT_SOLE, 5, 7, 9)), (-1.0, (12, 14, 16, RIGHT_SOLE, 6, 8, 10))):
        leg_phase = phase if side > 0 else phase + math.pi + s.phase_asymmetry
        leg_gain = 1.0 + side * s.leg_asymmetry
        hip_angle = hip_swing * leg_gain * np.sin(leg_phase) + 0.05
        knee_angle = 0.08 + s.knee_flexion * leg_gain * _knee_profile(leg_phase)
        points[:, hip] = pelvis + side * 0.5 * s.hip_width * pelvis_side
        points[:, knee] = points[:, hip] + s.thigh * sagittal(hip_angle, side, s.leg_abduction)
        points[:, ankle] = points[:, knee] + s.shin * sagittal(hip_angle - knee_angle, side, s.leg_abduction)
        points[:, sole] = points[:, ankle] - s.ankle_height * up + 0.05 * s.height * forward

        carrying = s.carrying == side
        arm_gain = (1.0 + side * s.arm_asymmetry) * (0.2 if carrying else 1.0)
        arm_phase = leg_phase + math.pi                                         # arms swing against the legs
        arm_angle = s.arm_swing * arm_gain * np.sin(arm_phase) + 0.3 * s.torso_lean
        forward_swing = np.maximum(np.sin(arm_phase), 0.0)                     # elbows bend on the way forward
        elbow_angle = s.elbow_bend + carrying * s.carry_elbow + 0.6 * s.arm_swing * arm_gain * forward_swing
        points[:, shoulder] = neck + side * 0.5 * s.shoulder_width * shoulder_side
        points[:, elbow] = points[:, shoulder] + s.upper_arm * sagittal(arm_angle, side, s.arm_abduction)
        points[:, wrist] = points[:, elbow] + s.forearm * sagittal(arm_angle + elbow_angle, side,
                                                                    0.6 * s.arm_abduction)

    head = neck + s.neck * up + s.head_forward * forward + vec(s.neck * np.sin(lean), forward)
    r = s.head
    points[:, 0] = head + r * (1.3 * forward - 0.1 * up)                        # nose
    points[:, 1] = head + r * (1.05 * forward + 0.5 * left + 0.35 * up)         # left eye
    points[:, 2] = head + r * (1.05 * forward - 0.5 * left + 0.35 * up)
    points[:, 3] = head + r * (-0.1 * forward + 1.15 * left + 0.15 * up)        # left ear
    points[:, 4] = head + r * (-0.1 * forward - 1.15 * left + 0.15 * up)
    points[:, HEAD_TOP] = head + 1.5 * r * up
    points[:, :NUM_JOINTS] += s.joint_offsets @ np.stack([forward, left, up])   # (17, 3) in the walker's frame
    return points


# ---------------------------------------------------------------------------------------------
# Camera and detector


def project(points: np.ndarray, conditions: SequenceConditions) -> np.ndarray:
    """`(..., 3)` world points -> `(..., 2)` image pixels (y down) of a camera aimed at the path's midpoint."""
    c = conditions
    pitch = math.atan2(c.camera_height - 1.0, c.distance)                       # looks down at the torso
    axis = np.array([math.cos(pitch), 0.0, -math.sin(pitch)])
    right = np.array([0.0, -1.0, 0.0])                                         # world +y is the camera's left
    down = np.cross(axis, right)
    relative = points - np.array([0.0, 0.0, c.camera_height])
    depth = np.maximum(relative @ axis, 0.5)
    return c.focal * np.stack([relative @ right, relative @ down], axis=-1) / depth[..., None]


def detect(image_points: np.ndarray, conditions: SequenceConditions, rng: np.random.Generator,
           far_side: np.ndarray | None = None) -> SyntheticWalk:
    """Turn `(T, 20, 2)` image points into what a pose detector on person crops would record.

    `far_side (T, 17)` in [0, 1] says how hidden each joint is behind the body (lowers confidence).
    """
    c = conditions
    num_frames = len(image_points)
    lo, hi = image_points.min(axis=1), image_points.max(axis=1)                 # (T, 2) person box
    box_height = (hi[:, 1] - lo[:, 1])[:, None]                                 # (T, 1)
    lo = lo + rng.normal(0.0, c.box_jitter, (num_frames, 2)) * box_height
    hi = hi + rng.normal(0.0, c.box_jitter, (num_frames, 2)) * box_height
    pad = c.crop_margin * box_height
    corner = np.floor(lo - pad)
    crop_sizes = np.maximum(np.ceil(hi + pad) - corner, 8.0)                    # (T, 2) width, height
    xy = image_points[:, :NUM_JOINTS] - corner[:, None]                        # (T, 17, 2) crop pixels
    xy = xy + rng.normal(0.0, 1.0, xy.shape) * c.noise * box_height[:, None]

    base = _BASE_CONFIDENCE + (0.04 if c.detector == "gait3d" else 0.0)
    confidence = base + rng.normal(0.0, 0.05, (num_frames, NUM_JOINTS))
    if far_side is not None:
        confidence = confidence - 0.15 * far_side

    # Low-confidence spells: the detector loses a joint for one to three frames and guesses its place.
    starts = rng.random((num_frames, NUM_JOINTS)) < c.miss_rate
    lost = starts.copy()
    lost[1:] |= starts[:-1] & (rng.random((num_frames - 1, NUM_JOINTS)) < 0.6)
    lost[2:] |= lost[1:-1] & starts[:-2] & (rng.random((num_frames - 2, NUM_JOINTS)) < 0.5)
    xy = xy + lost[..., None] * rng.normal(0.0, 0.08, xy.shape) * box_height[:, None]
    confidence = np.where(lost, rng.uniform(0.03, 0.3, confidence.shape), confidence)

    # Left/right leg confusion, the classic detector failure on side views.
    swapped = rng.random(num_frames) < c.swap_rate
    xy[swapped] = xy[swapped][:, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 13, 16, 15]]

    if c.body_swap_rate > 0:
        # The whole body mirrored on single frames, which the detector is unsure of (real back views).
        mirrored = rng.random(num_frames) < c.body_swap_rate
        xy[mirrored] = xy[mirrored][:, _MIRRORED]
        confidence[mirrored] -= rng.uniform(0.1, 0.3, (int(mirrored.sum()), 1))

    keypoints = np.concatenate([xy, np.clip(confidence, 0.02, 0.99)[..., None]], axis=-1)

    if c.detector == "gait3d":
        kept = _gaps(num_frames, c, rng)
    else:
        kept = rng.random(num_frames) >= c.drop_rate
        if rng.random() < 0.3:                                                 # an occasional longer gap
            gap = int(rng.integers(2, 8))
            start = int(rng.integers(1, max(2, num_frames - gap)))
            kept[start:start + gap] = False
    kept[[0, -1]] = True
    frames = c.first_frame + np.flatnonzero(kept)
    return SyntheticWalk(frames=frames.astype(np.int64), keypoints=keypoints[kept].astype(np.float32),
                         crop_sizes=crop_sizes[kept].astype(np.float32))


def _gaps(num_frames: int, c: SequenceConditions, rng: np.random.Generator) -> np.ndarray:
    """The "gait3d" detector's missing frames -> `(T,)` bool kept: gaps of one frame (70%) or a few
    (1 + log-normal, median 3), about `c.drop_rate` of the frames in all, and in one sequence of ten a
    long gap of 20-150 frames (at most a third of the sequence)."""
    kept = np.ones(num_frames, dtype=bool)
    single = 0.7
    mean_gap = single + (1.0 - single) * (1.0 + 3.0 * math.exp(0.9 ** 2 / 2))
    count = int(rng.binomial(num_frames, min(1.0, c.drop_rate / mean_gap)))
    lengths = np.where(rng.random(count) < single, 1, 1 + np.round(rng.lognormal(math.log(3.0), 0.9, count)))
    starts = rng.integers(1, max(2, num_frames - 1), count)
    for start, length in zip(starts, lengths.astype(np.int64)):
        kept[start:start + length] = False
    if rng.random() < 0.1:
        length = min(int(rng.integers(20, 151)), num_frames // 3)
        start = int(rng.integers(1, max(2, num_frames - length)))
        kept[start:start + length] = False
    return kept


def synthesize(signature: GaitSignature, conditions: SequenceConditions,
               rng: np.random.Generator) -> SyntheticWalk:
    """One sequence: walk in 3D, film it, detect it. Pure given `rng`."""
    world = walk_3d(signature, conditions)                                      # (T, 20, 3)
    image = project(world, conditions)                                          # (T, 20, 2)
    # A joint is hidden when its side of the body faces away from the camera.
    camera = np.array([0.0, 0.0, conditions.camera_height])
    to_camera = camera - world[:, [11, 12]].mean(axis=1)                         # (T, 3)
    left = world[:, 11] - world[:, 12]
    facing_left = np.sum(to_camera * left, axis=1) / (np.linalg.norm(to_camera, axis=1)
                                                      * np.linalg.norm(left, axis=1))  # (T,) in [-1, 1]
    far_side = np.zeros((conditions.num_frames, NUM_JOINTS))
    far_side[:, _LEFT_JOINTS] = np.maximum(-facing_left, 0.0)[:, None]
    far_side[:, _RIGHT_JOINTS] = np.maximum(facing_left, 0.0)[:, None]
    return detect(image, conditions, rng, far_side)


# ---------------------------------------------------------------------------------------------
# What to generate: sequences per subject, their lengths, the training/test split


# Gait3D's shape (Zheng et al., CVPR 2022): identities, sequences and cameras of the whole set.
GAIT3D_IDENTITIES, GAIT3D_TRAIN_IDENTITIES = 4000, 3000
GAIT3D_TRAIN_SEQUENCES, GAIT3D_TEST_SEQUENCES = 18940, 6369
GAIT3D_CAMERAS = 39
# Frames per sequence, before the detector drops some: log-normal with the log-spread measured on the
# shipped 38-identity subset (0.754; its median is 104.5 frames), centred so that after drops the mean
# is Gait3D's 3,279,239 / 25,309 = 129.6 frames, clipped to the subset's range.
LENGTH_LOG_MEDIAN, LENGTH_LOG_STD, LENGTH_RANGE = 4.645, 0.754, (25, 489)
# Sequences per identity: heavily skewed, most identities have 1-4, a few over 100 (log-normal,
# median 3.8, log-spread 1.0), then nudged to Gait3D's exact totals. Test identities get at least two
# (a probe and a gallery match).
SEQUENCES_LOG_MEDIAN, SEQUENCES_LOG_STD, MAX_SEQUENCES = math.log(3.8), 1.0, 150


@dataclass(frozen=True, eq=False)
class SynthPlan:
    """How many sequences each subject gets, how long they are, and which subjects are for training."""

    sequences: np.ndarray               # (N,) int64 sequences of each subject
    lengths: np.ndarray | None          # (sum(sequences),) int64 frames before drops, subject-major; None: drawn per sequence from 40-160
    cameras: int = NUM_CAMERAS          # scene cameras shared by all subjects
    train_subjects: int | None = None   # the first ones train, the rest test; None: no split
    detector: str = "plain"             # the detector model (DETECTORS)

    @property
    def subjects(self) -> int:
        return len(self.sequences)

    @property
    def total(self) -> int:
        return int(self.sequences.sum())

    def lengths_of(self, subject: int) -> np.ndarray | None:
        if self.lengths is None:
            return None
        start = int(self.sequences[:subject].sum())
        return self.lengths[start:start + int(self.sequences[subject])]


def uniform_plan(subjects: int, sequences_per_subject: int, detector: str = "plain") -> SynthPlan:
    if subjects < 1 or sequences_per_subject < 1:
        raise ValueError(f"need at least one subject and one sequence each, got {subjects} x {sequences_per_subject}")
    _check_detector(detector)
    return SynthPlan(np.full(subjects, sequences_per_subject, dtype=np.int64), None, detector=detector)


def gait3d_plan(scale: float = 1.0, seed: int = 0, detector: str = "plain") -> SynthPlan:
    """Gait3D's size and shape times `scale`: identities, training/test sequences, the skew of sequences
    per identity and the spread of sequence lengths (scale 1: 4,000 identities, 25,309 sequences,
    about 3.3 million frames). Pure function of `(scale, seed)`."""
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be a positive number, got {scale}")
    _check_detector(detector)
    train_ids = round(GAIT3D_TRAIN_IDENTITIES * scale)
    test_ids = round(GAIT3D_IDENTITIES * scale) - train_ids
    train_seqs, test_seqs = round(GAIT3D_TRAIN_SEQUENCES * scale), round(GAIT3D_TEST_SEQUENCES * scale)
    if train_ids < 2 or test_ids < 1 or train_seqs < train_ids or test_seqs < 2 * test_ids:
        raise ValueError(f"scale {scale} is too small: {train_ids} training and {test_ids} test identities "
                         f"(need at least 2 and 1; try a scale of 0.002 or more)")
    rng = np.random.default_rng([seed, 4])
    draws = rng.lognormal(SEQUENCES_LOG_MEDIAN, SEQUENCES_LOG_STD, train_ids + test_ids)
    counts = np.clip(np.round(draws), 1, MAX_SEQUENCES).astype(np.int64)
    train = _fit_total(counts[:train_ids], train_seqs, 1, rng)
    test = _fit_total(np.maximum(counts[train_ids:], 2), test_seqs, 2, rng)
    sequences = np.concatenate([train, test])
    lengths = np.clip(np.round(rng.lognormal(LENGTH_LOG_MEDIAN, LENGTH_LOG_STD, int(sequences.sum()))),
                      *LENGTH_RANGE).astype(np.int64)
    return SynthPlan(sequences, lengths, cameras=GAIT3D_CAMERAS, train_subjects=train_ids, detector=detector)


def _fit_total(counts: np.ndarray, total: int, floor: int, rng: np.random.Generator) -> np.ndarray:
    """Add or remove sequences, in proportion to what each identity has, until they sum to `total`
    (never below `floor`); the skew of the draws is kept."""
    counts = counts.copy()
    while (missing := total - int(counts.sum())) != 0:
        spare = counts if missing > 0 else counts - floor
        picks = rng.choice(len(counts), size=abs(missing), p=spare / spare.sum())
        change = np.bincount(picks, minlength=len(counts))
        counts = counts + change if missing > 0 else np.maximum(counts - change, floor)
    return counts


# ---------------------------------------------------------------------------------------------
# Generating and writing a dataset


def subject_id(subject: int) -> str:
    return f"{subject:04d}"


def _subject_sequences(subject: int, count: int, lengths: np.ndarray | None, cameras: list[SceneCamera],
                       seed: int, detector: str = "plain") -> Iterator[Sequence]:
    """One subject's `count` sequences. Independent streams per purpose, subject and sequence:
    changing the number of sequences or subjects never changes who a subject is."""
    signature = sample_signature(np.random.default_rng([seed, 0, subject]))
    route = sample_route(np.random.default_rng([seed, 3, subject]), count, cameras, detector)
    folder_counts: dict[str, int] = {}
    for k, visit in enumerate(route):
        rng = np.random.default_rng([seed, 1, subject, k])
        frames = {} if lengths is None else {"min_frames": int(lengths[k]), "max_frames": int(lengths[k])}
        conditions = sample_conditions(rng, visit, cameras[visit.camera_id], signature, **frames,
                                       detector=detector)
        walk = synthesize(signature, conditions, rng)
        camera_video = f"camid{visit.camera_id}_videoid{visit.video}"
        index = folder_counts.get(camera_video, 0)
        folder_counts[camera_video] = index + 1
        yield Sequence(name=f"{subject_id(subject)}-{camera_video}-seq{index}", subject=subject_id(subject),
                       camera=str(visit.camera_id), video=str(visit.video), frames=walk.frames,
                       keypoints=walk.keypoints, crop_sizes=walk.crop_sizes)


def _plan_cameras(plan: SynthPlan, seed: int) -> list[SceneCamera]:
    return sample_cameras(np.random.default_rng([seed, 2]), plan.cameras)


def iter_plan(plan: SynthPlan, seed: int = 0) -> Iterator[Sequence]:
    """The dataset of `plan` in memory, sequence by sequence, exactly as `write_synthetic` writes it
    (up to the text files' rounding)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    cameras = _plan_cameras(plan, seed)
    for subject in range(plan.subjects):
        yield from _subject_sequences(subject, int(plan.sequences[subject]), plan.lengths_of(subject), cameras, seed,
                                      plan.detector)


def iter_synthetic(subjects: int, sequences_per_subject: int, seed: int = 0) -> Iterator[Sequence]:
    """`subjects x sequences_per_subject` synthetic walks in memory (see `iter_plan`)."""
    return iter_plan(uniform_plan(subjects, sequences_per_subject), seed)


_FRAME_FORMAT = "%d,%d," + ",".join(["%.3f,%.3f,%.4f"] * NUM_JOINTS) + "\n"


def _write_sequence(folder: Path, sequence: Sequence) -> None:
    folder.mkdir(parents=True)
    rows = np.concatenate([sequence.crop_sizes.astype(np.float64),
                           sequence.keypoints.reshape(len(sequence), -1).astype(np.float64)], axis=1)
    for frame, row in zip(sequence.frames, rows):
        # os-level calls: a third faster than `open()` for millions of tiny files
        fd = os.open(folder / f"human_crop_f{frame}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(fd, (_FRAME_FORMAT % tuple(row)).encode())
        finally:
            os.close(fd)


# One job: (root, seed, camera count, detector, [(subject, sequences, lengths or None), ...]).
_Job = tuple[str, int, int, str, list[tuple[int, int, "np.ndarray | None"]]]


def _write_subjects(job: _Job) -> tuple[int, dict[int, list[str]]]:
    """Write some subjects' sequences (in a worker process); -> (sequences written, names per subject)."""
    root, seed, num_cameras, detector, subjects = job
    cameras = sample_cameras(np.random.default_rng([seed, 2]), num_cameras)
    names: dict[int, list[str]] = {}
    for subject, count, lengths in subjects:
        names[subject] = []
        for sequence in _subject_sequences(subject, count, lengths, cameras, seed, detector):
            _write_sequence(Path(root) / sequence.subject / f"camid{sequence.camera}_videoid{sequence.video}"
                            / sequence.name.rsplit("-", 1)[1], sequence)
            names[subject].append(sequence.name)
    return sum(len(n) for n in names.values()), names


def _jobs(plan: SynthPlan, root: Path, seed: int, per_job: int) -> list[_Job]:
    """Consecutive subjects grouped into jobs of about `per_job` sequences."""
    jobs, current, size = [], [], 0
    for subject in range(plan.subjects):
        current.append((subject, int(plan.sequences[subject]), plan.lengths_of(subject)))
        size += int(plan.sequences[subject])
        if size >= per_job:
            jobs.append((str(root), seed, plan.cameras, plan.detector, current))
            current, size = [], 0
    if current:
        jobs.append((str(root), seed, plan.cameras, plan.detector, current))
    return jobs


def write_plan(out_dir: str | os.PathLike, plan: SynthPlan, seed: int = 0, workers: int = 1,
               progress: Callable[[int], None] | None = None) -> Path:
    """Write the dataset of `plan` under `out_dir/2D_Poses/`, `workers` processes in parallel; return
    that folder. With a training/test split, also `out_dir/split.json` (Gait3D.json's format: TRAIN_SET,
    TEST_SET, PROBE_SET = each test identity's first sequence). The same seed gives the same bytes,
    whatever the number of workers. `progress(n)` is called with the number of sequences just written.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(out_dir) / "2D_Poses"
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(f"{root}: already exists and is not an empty folder; choose a new folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{root}: cannot create folder ({exc.strerror or exc})") from None
    jobs = _jobs(plan, root, seed, per_job=64)
    names: dict[int, list[str]] = {}
    if workers == 1:
        for written, job_names in map(_write_subjects, jobs):
            names.update(job_names)
            if progress:
                progress(written)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_write_subjects, job) for job in jobs]
            try:
                for future in as_completed(futures):
                    written, job_names = future.result()
                    names.update(job_names)
                    if progress:
                        progress(written)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    if plan.train_subjects is not None:
        test = range(plan.train_subjects, plan.subjects)
        split = {"TRAIN_SET": [subject_id(s) for s in range(plan.train_subjects)],
                 "TEST_SET": [subject_id(s) for s in test],
                 "PROBE_SET": [names[s][0] for s in test]}
        (Path(out_dir) / "split.json").write_text(json.dumps(split, indent=1))
    return root


def write_synthetic(out_dir: str | os.PathLike, subjects: int, sequences_per_subject: int, seed: int = 0,
                    progress: Callable[[int], None] | None = None, workers: int = 1) -> Path:
    """Write `subjects x sequences_per_subject` synthetic walks under `out_dir/2D_Poses/`; return that folder.

    Identities are `0000, 0001, ...`; folders `camid<C>_videoid<V>/seq<K>` as in Gait3D. The same
    seed gives the same bytes. `progress(n)` is called with the number of sequences just written.
    """
    return write_plan(out_dir, uniform_plan(subjects, sequences_per_subject), seed, workers, progress)
