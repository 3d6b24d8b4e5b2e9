"""`bpmt import`: AlphaPose, OpenPose and MMPose output -> Gait3D's layout, read back exactly.

One hand-made scene is written in each format: walker A (rightwards) and walker B (leftwards) cross
near frame 14, A is not detected on frames 10-11, B walks out of the frame's left edge (its crop is
clipped at x = 0), and C appears on frames 20-24 only (a track too short to keep). The expected
crops and keypoints are computed here from the documented rule (box grown by 10 % on each side,
whole pixels, clipped at 0; keypoints minus the crop's corner; (0, 0, 0) joints stay missing),
and the joint tables from the joint names, never from the module's tables.

No installed package ships real AlphaPose, OpenPose or MMPose result files (checked with grep over
site-packages), so every input here is hand-made.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bpmt.cli import main
from bpmt.data.cache import build_cache, load_cache
from bpmt.data.source import open_data
from bpmt.errors import DataError
from bpmt.serving.importers import ImportReport, default_subject, import_poses
from bpmt.skeleton import JOINT_NAMES

MARGIN = 0.1                       # the crop margin of the video path, restated
BOX_W, BOX_H = 50.0, 140.0
FRAMES = range(30)
A_MISSING_JOINT = 3                # A's left ear is never found
MIN_FRAMES = "10"


# ---------------------------------------------------------------------------------------------
# The scene and the expected output, computed independently


def scene() -> dict[int, list[tuple[str, np.ndarray, np.ndarray]]]:
    """frame -> [(person, box x1 y1 x2 y2 (4,), keypoints x y conf (17, 3) in image pixels)]."""
    rng = np.random.default_rng(0)
    frames: dict[int, list] = {}
    for f in FRAMES:
        people = []
        if f not in (10, 11):
            people.append(("A", 20.5 + 10 * f, 100.5))
        people.append(("B", 293.5 - 10 * f, 130.5))          # x = 3.5 on frame 29: the crop reaches past 0
        if 20 <= f <= 24:
            people.append(("C", 600.5, 50.5))
        if f % 2:
            people.reverse()                                  # the order in a frame carries no meaning
        frames[f] = []
        for person, x, y in people:
            keypoints = np.stack([rng.uniform(x, x + BOX_W, 17), rng.uniform(y, y + BOX_H, 17),
                                  rng.uniform(0.6, 1.0, 17)], axis=1)
            if person == "A":
                keypoints[A_MISSING_JOINT] = 0
            frames[f].append((person, np.array([x, y, x + BOX_W, y + BOX_H]), keypoints))
    return frames


def keypoint_box(keypoints: np.ndarray) -> np.ndarray:
    """The documented box around a pose: confident (>= 0.5) joints' extent x 1.3 high, half as wide."""
    confident = keypoints[keypoints[:, 2] >= 0.5, :2]
    low, high = confident.min(axis=0), confident.max(axis=0)
    height = max(high[1] - low[1], high[0] - low[0], 1.0) * 1.3
    cx, cy = (low + high) / 2
    return np.array([cx - height / 4, cy - height / 2, cx + height / 4, cy + height / 2])


def in_crop(box: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Keypoints in the crop of `box` and the crop's (width, height)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    left, top = max(0, math.floor(x1 - MARGIN * w)), max(0, math.floor(y1 - MARGIN * h))
    right, bottom = math.ceil(x2 + MARGIN * w), math.ceil(y2 + MARGIN * h)
    out = keypoints.copy()
    found = ~(keypoints == 0).all(axis=1)
    out[found, 0] -= left
    out[found, 1] -= top
    return out, (right - left, bottom - top)


def expected_tracks(frames, persons=("A", "B"), box_from_keypoints=False, frame_offset=0) -> list[tuple]:
    """[(frame numbers (T,), keypoints (T, 17, 3) float32, crop sizes (T, 2) float32)] per person."""
    out = []
    for person in persons:
        numbers, keypoints, sizes = [], [], []
        for f, people in sorted(frames.items()):
            for who, box, points in people:
                if who == person:
                    crop, size = in_crop(keypoint_box(points) if box_from_keypoints else box, points)
                    numbers.append(f + frame_offset)
                    keypoints.append(crop)
                    sizes.append(size)
        out.append((np.array(numbers), np.array(keypoints, dtype=np.float32), np.array(sizes, dtype=np.float32)))
    return out


def assert_written(out: Path, subject: str, expected: list[tuple], camera: str = "camid0_videoid0") -> None:
    """The sequences under `out` are exactly `expected`, in order seq0, seq1, ... (read back by bpmt.data.gait3d)."""
    corpus, _ = open_data(out, workers=1)
    assert corpus.names == [f"{subject}-{camera}-seq{k}" for k in range(len(expected))]
    for k, (frames, keypoints, sizes) in enumerate(expected):
        sequence = corpus.sequence(k)
        np.testing.assert_array_equal(sequence.frames, frames)
        np.testing.assert_array_equal(sequence.crop_sizes, sizes)
        np.testing.assert_array_equal(sequence.keypoints, keypoints)      # exact float32


def run_ok(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def run_error(capsys, *argv) -> str:
    """Run `bpmt` where it must fail cleanly: exit status 2, one `error:` line, no traceback."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------
# Writers of each format


def write_alphapose(path: Path, frames, scores=None) -> Path:
    detections = []
    for f in sorted(frames, reverse=True):                    # frame order comes from image_id, not the list
        for who, (x1, y1, x2, y2), points in frames[f]:
            detections.append({"image_id": f"video2_{f:06d}.jpg", "category_id": 1, "keypoints": points.ravel().tolist(),
                               "score": (scores or {}).get(who, 2.7), "box": [x1, y1, x2 - x1, y2 - y1], "idx": [0]})
    path.write_text(json.dumps(detections))
    return path


def coco_name(openpose_name: str) -> str | None:
    """OpenPose's joint name ("LEye") -> the COCO-17 name ("left_eye"), None for joints COCO lacks."""
    side = {"L": "left_", "R": "right_"}.get(openpose_name[0]) if openpose_name[1:2].isupper() else None
    name = (side + openpose_name[1:].lower()) if side else openpose_name.lower()
    return name if name in JOINT_NAMES else None


# The joint orders as OpenPose documents them (doc/02_output.md).
BODY_25 = ("Nose Neck RShoulder RElbow RWrist LShoulder LElbow LWrist MidHip RHip RKnee RAnkle LHip LKnee LAnkle "
           "REye LEye REar LEar LBigToe LSmallToe LHeel RBigToe RSmallToe RHeel").split()
COCO_18 = ("Nose Neck RShoulder RElbow RWrist LShoulder LElbow LWrist RHip RKnee RAnkle LHip LKnee LAnkle "
           "REye LEye REar LEar").split()


def openpose_array(points: np.ndarray, layout: tuple[str, ...], rng) -> list[float]:
    """A COCO-17 pose spread over an OpenPose layout; joints COCO lacks get decoys far away."""
    rows = []
    for name in layout:
        coco = coco_name(name)
        rows.append(points[JOINT_NAMES.index(coco)] if coco else [rng.uniform(2000, 3000), rng.uniform(2000, 3000), 0.9])
    return np.array(rows).ravel().tolist()


def write_openpose(folder: Path, frames, layout: tuple[str, ...]) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir()
    for f, people in frames.items():
        body = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": openpose_array(points, layout, rng),
                                             "face_keypoints_2d": [], "hand_left_keypoints_2d": []}
                                            for _, _, points in people]}
        (folder / f"walk_{f:012d}_keypoints.json").write_text(json.dumps(body))
    (folder / "notes.txt").write_text("not a pose file")
    return folder


def mmpose_instances(people, nested_box=True, with_box=True) -> list[dict]:
    out = []
    for _, box, points in people:
        instance = {"keypoints": points[:, :2].tolist(), "keypoint_scores": points[:, 2].tolist()}
        if with_box:
            instance["bbox"] = [box.tolist()] if nested_box else box.tolist()
            instance["bbox_score"] = 0.93
        out.append(instance)
    return out


def write_mmpose(path: Path, frames, shape: str, with_box: bool = True) -> Path:
    if shape == "list-of-frames":
        data = [mmpose_instances(frames[f], nested_box=False, with_box=with_box) for f in sorted(frames)]
    else:
        entries = [{"frame_id": f + 1, "instances": mmpose_instances(frames[f], with_box=with_box)} for f in frames]
        data = entries if shape == "frame-id-list" else {"meta_info": {"dataset_name": "coco"}, "instance_info": entries}
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------------------
# Each format, read back exactly


def test_alphapose_results_become_one_sequence_per_tracked_walker(tmp_path, capsys):
    frames = scene()
    src = write_alphapose(tmp_path / "walkers.json", frames)
    printed = run_ok(capsys, "import", "alphapose", src, "--out", tmp_path / "out", "--min-frames", MIN_FRAMES)
    assert_written(tmp_path / "out", "walkers", expected_tracks(frames))
    assert "30 frames, 63 detections, 3 tracks found, 2 kept with 58 frames (dropped: 1 track too short)" in printed
    assert (tmp_path / "out/2D_Poses/walkers/camid0_videoid0/seq0/human_crop_f9.txt").is_file()
    assert not (tmp_path / "out/2D_Poses/walkers/camid0_videoid0/seq0/human_crop_f10.txt").exists()   # A's gap
    # the first value pair of a frame file is the crop size, then 17 x (x, y, conf) in crop pixels
    line = (tmp_path / "out/2D_Poses/walkers/camid0_videoid0/seq1/human_crop_f29.txt").read_text().split(",")
    assert len(line) == 53 and line[:2] == ["59", "169"]          # B at x = 3.5: crop [0, 59) x [116, 285)


def test_openpose_body25_and_coco18_are_mapped_to_coco17(tmp_path, capsys):
    frames = scene()
    for layout, name in ((BODY_25, "body25"), (COCO_18, "coco18")):
        src = write_openpose(tmp_path / name, frames, layout)
        out = tmp_path / f"out-{name}"
        printed = run_ok(capsys, "import", "openpose", src, "--out", out, "--min-frames", MIN_FRAMES)
        assert_written(out, name, expected_tracks(frames, box_from_keypoints=True))
        assert "1 other files ignored" in printed
        corpus, _ = open_data(out, workers=1)
        assert (corpus.sequence(0).keypoints[:, A_MISSING_JOINT] == 0).all()             # missing stays missing
        assert (corpus.sequence(0).keypoints[:, A_MISSING_JOINT + 1, 2] > 0).all()


@pytest.mark.parametrize("shape", ["list-of-frames", "frame-id-list", "instance-info"])
def test_mmpose_predictions_in_each_accepted_shape(tmp_path, capsys, shape):
    frames = scene()
    src = write_mmpose(tmp_path / "preds.json", frames, shape)
    run_ok(capsys, "import", "mmpose", src, "--out", tmp_path / "out", "--min-frames", MIN_FRAMES, "--id", "p7",
           "--camera", "camid3_videoid2")
    offset = 0 if shape == "list-of-frames" else 1                   # frame_id is the writer's frame + 1
    assert_written(tmp_path / "out", "p7", expected_tracks(frames, frame_offset=offset), camera="camid3_videoid2")


def test_mmpose_instances_without_bbox_get_the_box_around_their_pose(tmp_path):
    frames = scene()
    src = write_mmpose(tmp_path / "preds.json", frames, "instance-info", with_box=False)
    sequences = import_poses("mmpose", src, subject="x", min_frames=10)
    expected = expected_tracks(frames, box_from_keypoints=True, frame_offset=1)
    assert [s.name for s in sequences] == ["x-camid0_videoid0-seq0", "x-camid0_videoid0-seq1"]
    for sequence, (numbers, keypoints, sizes) in zip(sequences, expected):
        np.testing.assert_array_equal(sequence.frames, numbers)
        np.testing.assert_array_equal(sequence.keypoints, keypoints)
        np.testing.assert_array_equal(sequence.crop_sizes, sizes)


def test_a_short_max_gap_splits_a_walker_and_min_score_drops_detections(tmp_path):
    frames = scene()
    src = write_alphapose(tmp_path / "w.json", frames, scores={"C": 0.4})
    report = ImportReport()
    sequences = import_poses("alphapose", src, subject="w", min_frames=10, max_gap=1, min_score=1.0, report=report)
    a, b = expected_tracks(frames)
    # A's gap (frames 10-11) ends its track: A before, B, A after, in order of first appearance
    assert [s.frames.tolist() for s in sequences] == [list(range(10)), b[0].tolist(), list(range(12, 30))]
    np.testing.assert_array_equal(sequences[2].keypoints, a[1][10:])
    assert (report.tracks, report.kept, report.dropped["detection below --min-score"]) == (3, 3, 5)


def test_output_reads_through_stats_and_the_cache(tmp_path, capsys):
    frames = scene()
    src = write_alphapose(tmp_path / "w.json", frames)
    run_ok(capsys, "import", "alphapose", src, "--out", tmp_path / "out", "--min-frames", MIN_FRAMES)
    stats = json.loads(run_ok(capsys, "stats", tmp_path / "out", "--json", "--workers", "1"))
    assert (stats["identities"], stats["sequences"], stats["frames"]) == (1, 2, 58)
    build_cache(tmp_path / "out", tmp_path / "out.cache", workers=1)
    cached = load_cache(tmp_path / "out.cache")
    for k, (numbers, keypoints, sizes) in enumerate(expected_tracks(frames)):
        np.testing.assert_array_equal(cached.sequence(k).frames, numbers)
        np.testing.assert_array_equal(cached.sequence(k).keypoints, keypoints)
        np.testing.assert_array_equal(cached.sequence(k).crop_sizes, sizes)


def test_existing_output_is_refused_unless_overwrite(tmp_path, capsys):
    frames = scene()
    src = write_alphapose(tmp_path / "w.json", frames)
    out = tmp_path / "out"
    run_ok(capsys, "import", "alphapose", src, "--out", out, "--min-frames", MIN_FRAMES)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    err = run_error(capsys, "import", "alphapose", src, "--out", out, "--min-frames", "29")
    assert "camid0_videoid0: already holds sequences" in err and "--id or --camera" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    run_ok(capsys, "import", "alphapose", src, "--out", out, "--min-frames", "29", "--overwrite")
    assert_written(out, "w", expected_tracks(frames, persons=("B",)))      # only B has 29 frames; seq1 is gone


def test_default_identity_is_the_sources_name_made_a_valid_folder_name(tmp_path):
    assert default_subject(tmp_path / "alphapose-results.v2.json") == "alphapose_results_v2"
    (tmp_path / "cam-1 json").mkdir()
    assert default_subject(tmp_path / "cam-1 json") == "cam_1_json"


def test_bad_arguments_are_errors(tmp_path, capsys):
    src = write_alphapose(tmp_path / "w.json", scene())
    assert "--id 'a-b'" in run_error(capsys, "import", "alphapose", src, "--out", tmp_path / "o", "--id", "a-b")
    assert "--camera 'cam1'" in run_error(capsys, "import", "alphapose", src, "--out", tmp_path / "o", "--camera", "cam1")
    err = run_error(capsys, "import", "alphapose", src, "--out", tmp_path / "o", "--min-frames", "40")
    assert "no person tracked on at least 40 frames" in err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# Malformed input: one clear error naming the file and the field, nothing written


def alphapose_with(change) -> list[dict]:
    """Two good AlphaPose detections, then `change(detections)` applied."""
    points = np.tile([10.0, 20.0, 0.9], 17).tolist()
    detections = [{"image_id": f"{f}.jpg", "keypoints": list(points), "score": 2.0, "box": [5, 5, 30, 60]}
                  for f in (0, 1)]
    change(detections)
    return detections


def openpose_folder(folder: Path, people_per_file: list) -> Path:
    folder.mkdir()
    for f, people in enumerate(people_per_file):
        text = people if isinstance(people, str) else json.dumps({"people": people})
        (folder / f"v_{f:012d}_keypoints.json").write_text(text)
    return folder


BAD_ALPHAPOSE = {
    "bad-json": ('[{"image_id": "0.jpg", "keypoints": [1, 2', "r.json: not valid JSON"),
    "empty-file": ("", "r.json: empty file"),
    "not-a-list": ('{"image_id": "0.jpg"}', "r.json: expected AlphaPose's list of detections, found an object"),
    "no-detections": ("[]", "r.json: no detections"),
    "wrong-count": (alphapose_with(lambda d: d[1].update(keypoints=d[1]["keypoints"][:48])),
                    'r.json: detection 1: "keypoints" must hold 51 numbers, found 48'),
    "non-numeric": (alphapose_with(lambda d: d[0]["keypoints"].__setitem__(4, "20.0")),
                    """r.json: detection 0: "keypoints" value 5 is not a number (the string '20.0')"""),
    "nan": (alphapose_with(lambda d: d[1]["keypoints"].__setitem__(3, float("nan"))),
            'r.json: detection 1: "keypoints" value 4 is not finite (nan)'),
    "huge": (alphapose_with(lambda d: d[1]["keypoints"].__setitem__(0, 1e300)),
             'r.json: detection 1: "keypoints" value 1 is implausible'),
    "missing-box": (alphapose_with(lambda d: d[0].pop("box")), 'r.json: detection 0: missing field "box"'),
    "missing-score": (alphapose_with(lambda d: d[1].pop("score")), 'r.json: detection 1: missing field "score"'),
    "bool-score": (alphapose_with(lambda d: d[1].update(score=True)),
                   'r.json: detection 1: "score" must be a number, found true'),
    "empty-box": (alphapose_with(lambda d: d[0].update(box=[5, 5, 0, 60])),
                  'r.json: detection 0: "box" must have a positive width and height'),
    "no-frame-number": (alphapose_with(lambda d: d[0].update(image_id="frame.jpg")),
                        """r.json: detection 0: "image_id" 'frame.jpg' holds no frame number"""),
    "two-images-one-frame": (alphapose_with(lambda d: d[1].update(image_id="000.jpg")),
                             """r.json: detection 1: "image_id" '000.jpg' gives frame 0, as '0.jpg' does"""),
    "detection-not-object": (alphapose_with(lambda d: d.append([1, 2])),
                             "r.json: detection 2: expected an object, found a list of 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_ALPHAPOSE))
def test_malformed_alphapose_results(tmp_path, capsys, case):
    content, message = BAD_ALPHAPOSE[case]
    (tmp_path / "r.json").write_text(content if isinstance(content, str) else json.dumps(content))
    err = run_error(capsys, "import", "alphapose", tmp_path / "r.json", "--out", tmp_path / "out")
    assert f"error: {tmp_path}/{message}" in err
    assert not (tmp_path / "out").exists()


GOOD_BODY_25 = [{"pose_keypoints_2d": [10.0, 20.0, 0.9] * 25}]
BAD_OPENPOSE = {
    "wrong-count": ([GOOD_BODY_25, [{"pose_keypoints_2d": [1.0] * 51}]],
                    'v_000000000001_keypoints.json: person 0: "pose_keypoints_2d" must hold 75 (BODY_25) or 54 '
                    "(COCO-18) numbers, found 51"),
    "no-people-anywhere": ([[], [], []], "openpose: no person detected on any of its 3 frames"),
    "missing-people": ([GOOD_BODY_25, "{}"], 'v_000000000001_keypoints.json: missing field "people"'),
    "missing-keypoints": ([[{"person_id": [-1]}]], 'v_000000000000_keypoints.json: person 0: missing field '
                                                   '"pose_keypoints_2d"'),
    "empty-file": ([GOOD_BODY_25, ""], "v_000000000001_keypoints.json: empty file"),
    "bad-json": (["{people: []}"], "v_000000000000_keypoints.json: not valid JSON"),
    "mixed-layouts": ([GOOD_BODY_25, [{"pose_keypoints_2d": [10.0, 20.0, 0.9] * 18}]],
                      "v_000000000001_keypoints.json: person 0: COCO-18 keypoints, but"),
    "nan": ([[{"pose_keypoints_2d": [10.0, 20.0, 0.9] * 24 + [1.0, float("nan"), 0.5]}]],
            'v_000000000000_keypoints.json: person 0: "pose_keypoints_2d" value 74 is not finite (nan)'),
}


@pytest.mark.parametrize("case", sorted(BAD_OPENPOSE))
def test_malformed_openpose_folders(tmp_path, capsys, case):
    files, message = BAD_OPENPOSE[case]
    src = openpose_folder(tmp_path / "openpose", files)
    err = run_error(capsys, "import", "openpose", src, "--out", tmp_path / "out")
    assert (f"error: {src}/{message}" in err) or (f"error: {tmp_path}/{message}" in err), err
    assert not (tmp_path / "out").exists()


def test_openpose_needs_a_folder_of_uniquely_numbered_files(tmp_path, capsys):
    err = run_error(capsys, "import", "openpose", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert "nowhere: expected a folder of OpenPose *_keypoints.json files: no such folder" in err
    src = openpose_folder(tmp_path / "two", [GOOD_BODY_25])
    (src / "other_0_keypoints.json").write_text(json.dumps({"people": GOOD_BODY_25}))
    assert "frame 0 again (also in" in run_error(capsys, "import", "openpose", src, "--out", tmp_path / "out")
    (tmp_path / "none").mkdir()
    assert "none: no OpenPose *_keypoints.json files" in run_error(capsys, "import", "openpose", tmp_path / "none",
                                                                   "--out", tmp_path / "out")


def mmpose_instance(**change) -> dict:
    instance = {"keypoints": [[10.0, 20.0]] * 17, "keypoint_scores": [0.9] * 17, "bbox": [[5, 5, 35, 65]],
                "bbox_score": 0.9}
    return {**instance, **change}


BAD_MMPOSE = {
    "one-image": ([mmpose_instance()], "p.json: item 0 is an object without \"instances\""),
    "other-object": ({"predictions": []}, "p.json: expected a list of frames (each a list of instances)"),
    "no-frames": ({"instance_info": []}, "p.json: instance_info: no frames"),
    "wholebody": ([[mmpose_instance(keypoints=[[1.0, 2.0]] * 133)]],
                  'p.json: frame 0: instance 0: "keypoints" must hold 17 [x, y] points (COCO-17), found 133'),
    "point-with-3": ([[mmpose_instance(keypoints=[[1.0, 2.0]] * 16 + [[1.0, 2.0, 3.0]])]],
                     'p.json: frame 0: instance 0: "keypoints[16]" must hold 2 numbers, found 3'),
    "missing-scores": ([[{"keypoints": [[1.0, 2.0]] * 17}]], 'p.json: frame 0: instance 0: missing field "keypoint_scores"'),
    "string-score": ([[mmpose_instance(bbox_score="high")]],
                     """p.json: frame 0: instance 0: "bbox_score" must be a number, found the string 'high'"""),
    "missing-frame-id": ([{"instances": []}], 'p.json: item 0: missing field "frame_id"'),
    "duplicate-frame-id": ({"instance_info": [{"frame_id": 3, "instances": []}, {"frame_id": 3, "instances": []}]},
                           'p.json: instance_info: item 1: "frame_id" 3 again'),
    "negative-frame-id": ([{"frame_id": -1, "instances": []}],
                          'p.json: item 0: "frame_id" must be a non-negative whole number, found the number -1'),
    "no-people-anywhere": ([[], []], "p.json: no person detected on any of its 2 frames"),
    "instances-not-list": ([[mmpose_instance()], {"a": 1}], "p.json: frame 1: expected a list of instances"),
}


@pytest.mark.parametrize("case", sorted(BAD_MMPOSE))
def test_malformed_mmpose_predictions(tmp_path, capsys, case):
    content, message = BAD_MMPOSE[case]
    (tmp_path / "p.json").write_text(json.dumps(content))
    err = run_error(capsys, "import", "mmpose", tmp_path / "p.json", "--out", tmp_path / "out")
    assert f"error: {tmp_path}/{message}" in err
    assert not (tmp_path / "out").exists()


def test_library_errors_are_data_errors(tmp_path):
    (tmp_path / "r.json").write_text("[]")
    with pytest.raises(DataError, match="no detections"):
        import_poses("alphapose", tmp_path / "r.json", subject="x")
    with pytest.raises(DataError, match="cannot read"):
        import_poses("mmpose", tmp_path / "missing.json", subject="x")


def test_openpose_people_with_fewer_than_4_confident_joints_are_dropped(tmp_path):
    walker = np.array([[100.0 + j, 50.0 + 10 * j, 0.9] for j in range(25)])
    faint = walker.copy()
    faint[3:, 2] = 0.3                                                 # 3 joints of confidence >= 0.5 remain
    src = openpose_folder(tmp_path / "op", [[{"pose_keypoints_2d": walker.ravel().tolist()}],
                                            [{"pose_keypoints_2d": faint.ravel().tolist()}],
                                            [{"pose_keypoints_2d": walker.ravel().tolist()}]])
    report = ImportReport()
    sequences = import_poses("openpose", src, subject="x", min_frames=1, report=report)
    assert [s.frames.tolist() for s in sequences] == [[0, 2]]
    assert report.dropped["detection without 4 joints of confidence >= 0.5"] == 1
