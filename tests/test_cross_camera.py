"""Cross-camera identification with the shipped default model (`gait3d-38ids`, no MODEL argument) on
Pose2Sim's synchronised 4-camera demo (fetched from its PyPI wheel on first use, see tests/videos.py;
skipped with the reason when that fails, when the `video` extra is not installed, or when the
shipped Gait3D subset is absent).

A gallery of 12 identities: the man, enrolled from cam01 of `Demo_SinglePerson` (the whole
100-frame clip, 1.7 s at 60 fps); the woman, enrolled from her track in cam02 of `Demo_MultiPerson`
(40 frames; in cam01 she is cut by the frame's edge and the HOG detector finds nobody); and 10
real Gait3D identities as distractors. The man is then identified from cam02, cam03 and cam04 of
`Demo_SinglePerson` (`bpmt identify --video --single-person --no-threshold`).

The clips are not walking (a throwing-like movement on a force plate), so this is a functional
test of the chain across viewpoints, not an accuracy figure. Measured (shipped model with weights
SHA-256 47bbbfd5…, the network alone; MediaPipe 0.10.21 on CPU): distance to the man / best other
identity / the woman, and his rank:

    cam02  10.860 / 17.857 (0003) / 20.010   rank 1
    cam03  16.811 / 18.314 (0010) / 22.446   rank 1 (margin 9 %: not asserted)
    cam04  13.798 / 17.431 (0003) / 20.160   rank 1

Distances are Euclidean between post-BN embeddings, whose scale is the model's, so the margins
are asserted relative to the man's distance. The distractors are identities the shipped model was
trained on (it saw all 38); the man and the woman are new to it. With the earlier shipped model (an
LDA ensemble: cam03 margin 0.026 of 1.545) the woman, enrolled from all 100 frames of her track
instead of 40, came first from cam03, so cam03 is only held to "nearer the man than most strangers".
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics

import numpy as np
import pytest

import videos
from bpmt.cli import main
from bpmt.data.source import open_data
from bpmt.serving.video import VideoDependencyError

DISTRACTORS = ["0000", "0001", "0003", "0004", "0005", "0006", "0008", "0009", "0010", "0012"]
QUERY_CAMERAS = ("cam02", "cam03", "cam04")


@pytest.fixture(scope="module")
def pose2sim():
    from bpmt.serving.video.libs import import_mediapipe_pose

    try:
        import_mediapipe_pose()
    except VideoDependencyError as exc:
        pytest.skip(f"video extra not installed: {exc}")
    try:
        return videos.pose2sim_videos()
    except videos.FetchError as exc:
        pytest.skip(f"test video unavailable: {exc}")


@pytest.fixture(scope="module")
def gallery(pose2sim, gait3d_cache, tmp_path_factory):
    """The gallery folder: the man, the woman and the Gait3D distractors, shipped model."""
    work = tmp_path_factory.mktemp("cross-camera")
    man, pair, gallery = work / "man", work / "pair", work / "gallery"
    assert main(["poses", str(pose2sim["SinglePerson/cam01"]), "--out", str(man), "--subject", "man",
                 "--single-person"]) == 0
    # cam02 of the multi-person demo: the woman stands nearest the camera (seen from behind), the
    # man is behind her and a bystander further back; 40 frames, detector on every 2nd
    assert main(["poses", str(pose2sim["MultiPerson/cam02"]), "--out", str(pair), "--subject", "pair",
                 "--max-frames", "40", "--detect-every", "2"]) == 0
    corpus, _ = open_data(pair, None, workers=1)
    tracks = [corpus.sequence(i) for i in range(len(corpus.names))]
    woman = max(tracks, key=lambda s: np.median(s.crop_sizes[:, 1]))      # the tallest person in the frame
    assert len(woman) >= 35 and np.median(woman.crop_sizes[:, 1]) > 900, \
        [(s.name, len(s), float(np.median(s.crop_sizes[:, 1]))) for s in tracks]
    assert main(["enroll", "--gallery", str(gallery), "--data", str(man), "--identity", "man"]) == 0
    assert main(["enroll", "--gallery", str(gallery), "--data", str(pair), "--seqs", woman.name,
                 "--identity", "woman"]) == 0
    assert main(["enroll", "--gallery", str(gallery), "--data", str(gait3d_cache), "--ids", ",".join(DISTRACTORS),
                 "--workers", "1"]) == 0
    return gallery


@pytest.fixture(scope="module")
def ranked(pose2sim, gallery):
    """`{camera: [(identity, distance), ...] best first}` for the man seen from the other cameras."""
    out = {}
    for camera in QUERY_CAMERAS:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert main(["identify", "--gallery", str(gallery), "--video", str(pose2sim[f"SinglePerson/{camera}"]),
                         "--single-person", "--no-threshold", "--top-k", "12", "--json"]) == 0
        (result,) = json.loads(buffer.getvalue())["results"]
        out[camera] = [(m["identity"], m["distance"]) for m in result["matches"]]
    for camera, matches in out.items():       # shown with `pytest -s` or on a failure
        print(camera, ", ".join(f"{name} {distance:.3f}" for name, distance in matches))
    return out


def distance_to(matches, identity: str) -> float:
    return next(distance for name, distance in matches if name == identity)


def test_every_query_ranks_all_twelve_identities(ranked):
    for camera, matches in ranked.items():
        assert {name for name, _ in matches} == {"man", "woman", *DISTRACTORS}, camera
        distances = [distance for _, distance in matches]
        assert distances == sorted(distances) and all(0 <= d < float("inf") for d in distances), camera


def test_the_man_comes_first_from_cam02_and_cam04(ranked):
    """By chance (12 identities) both at rank 1: 1 in 144. Measured margins over the next identity,
    relative to the man's distance: 64 % (cam02) and 26 % (cam04); asserted: 10 %."""
    for camera in ("cam02", "cam04"):
        (first, best), (_, second) = ranked[camera][:2]
        assert first == "man" and second - best > 0.1 * best, (camera, ranked[camera][:3])


def test_the_man_is_nearer_to_himself_than_to_the_woman_from_cam02_and_cam04(ranked):
    """Measured margins, relative to the man's distance: 84 % (cam02) and 46 % (cam04); asserted:
    20 %. Not asserted on cam03 (see the module's docstring: it depends on how much of the woman's
    track is enrolled)."""
    for camera in ("cam02", "cam04"):
        matches = ranked[camera]
        man = distance_to(matches, "man")
        assert distance_to(matches, "woman") - man > 0.2 * man, (camera, matches)


def test_the_man_is_nearer_than_most_strangers_from_every_camera(ranked):
    """The man's distance is below the median of the 10 Gait3D distractors' from all three cameras
    (measured margins, relative to the man's distance: 81 %, 21 % and 43 % for cam02, cam03, cam04;
    asserted: 5 %)."""
    for camera, matches in ranked.items():
        strangers = statistics.median(distance_to(matches, name) for name in DISTRACTORS)
        man = distance_to(matches, "man")
        assert man < strangers - 0.05 * man, (camera, matches)
