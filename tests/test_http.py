"""HTTP service (`bpmt serve`): enrol / identify / gallery / health in-process (FastAPI's TestClient),
input validation and size limits, a hypothesis fuzz of the JSON inputs, and a real server process
over loopback (limits on the wire, gallery changes by other processes, reads during a blocked
enrolment, concurrent clients, clean shutdown)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpmt.cli import main
from bpmt.serving import gallery as store

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

MAX_FRAMES = 300
MAX_BODY = 1 << 20
ALLOWED_IDENTIFY = {"keypoints", "top_k", "threshold", "name"}
ALLOWED_ENROLL = {"identity", "name", "keypoints"}


# ---------------------------------------------------------------------------------------------
# Fixtures: the tiny model's gallery of 2 sequences per identity, the third kept as probes


@pytest.fixture(scope="module")
def corpus(serving_synth):
    from bpmt.data.source import open_data

    corpus, _ = open_data(serving_synth, workers=1)
    return corpus


@pytest.fixture(scope="module")
def probes(corpus) -> dict[str, np.ndarray]:
    """identity -> `(T, 17, 3)` keypoints of its last sequence (not enrolled)."""
    last = {subject: i for i, subject in enumerate(corpus.subjects)}
    return {subject: np.asarray(corpus.keypoints_of(i)) for subject, i in sorted(last.items())}


@pytest.fixture(scope="module")
def enrolled(tiny_model, corpus, probes, tmp_path_factory) -> Path:
    """A gallery of every sequence but the probes (read-only: tests copy it)."""
    from bpmt.engine.export import load_recognizer
    from bpmt.evaluation.evaluate import embed_corpus

    model, config, _, fingerprint = load_recognizer(tiny_model)
    last = {subject: i for i, subject in enumerate(corpus.subjects)}
    keep = corpus.select([i for i in range(len(corpus)) if i not in set(last.values())])
    root = tmp_path_factory.mktemp("http-galleries") / "main"
    store.enroll(root, fingerprint, config.eval.metric, embed_corpus(model, config, keep), keep.subjects,
                 keep.names, source="test")
    return root


@pytest.fixture
def gallery_copy(enrolled, tmp_path) -> Path:
    root = tmp_path / "gallery"
    shutil.copytree(enrolled, root)
    return root


@pytest.fixture(scope="module")
def make_client(tiny_model):
    """`make_client(gallery, **limits)`: a context manager yielding a TestClient of a fresh app."""
    from fastapi.testclient import TestClient

    from bpmt.serving.http import create_app
    from bpmt.serving.http_limits import Limits

    @contextmanager
    def make(gallery: Path, create_gallery: bool = False, **limits):
        limits = {"max_body_bytes": MAX_BODY, "max_frames": MAX_FRAMES, **limits}
        with TestClient(create_app(tiny_model, gallery, Limits(**limits), create_gallery=create_gallery)) as client:
            yield client

    return make


@pytest.fixture(scope="module")
def readonly_client(make_client, enrolled):
    """One app on the shared gallery, for requests that must not change it."""
    with make_client(enrolled) as client:
        yield client


def post_json(client, path: str, body) -> httpx.Response:
    """POST `body` as JSON text as Python writes it (NaN and Infinity included)."""
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def library_identify(tiny_model, gallery: Path, keypoints: np.ndarray, top_k: int):
    """What `bpmt identify` computes for one sequence, for comparison."""
    from bpmt.data.corpus import PoseCorpus
    from bpmt.engine.export import load_recognizer
    from bpmt.evaluation.evaluate import embed_corpus
    from bpmt.serving.http_service import query_sequence
    from bpmt.serving.identify import identify_embeddings

    model, config, _, _ = load_recognizer(tiny_model)
    embedding = embed_corpus(model, config, PoseCorpus.from_sequences([query_sequence(keypoints, "q")]))
    return identify_embeddings(store.load_gallery(gallery), embedding, ["q"], top_k, None)[0]


# ---------------------------------------------------------------------------------------------
# Identify, enrol, gallery, health


def test_identify_answers_what_the_library_computes(make_client, gallery_copy, probes, tiny_model):
    with make_client(gallery_copy) as client:
        for identity in ("0000", "0005"):
            reply = post_json(client, "/identify", {"keypoints": probes[identity].tolist(), "top_k": 3,
                                                    "threshold": None, "name": f"probe-{identity}"})
            assert reply.status_code == 200, reply.text
            body = reply.json()
            expected = library_identify(tiny_model, gallery_copy, probes[identity], 3)
            assert body["generation"] == 1 and body["metric"] == "euc" and body["top_k"] == 3
            (result,) = body["results"]
            assert result["query"] == f"probe-{identity}" and result["unknown"] is False
            assert [m["rank"] for m in result["matches"]] == [1, 2, 3]
            assert [m["identity"] for m in result["matches"]] == [m.identity for m in expected.matches]
            assert [m["sequence"] for m in result["matches"]] == [m.sequence for m in expected.matches]
            np.testing.assert_allclose([m["distance"] for m in result["matches"]],
                                       [m.distance for m in expected.matches], rtol=1e-5, atol=1e-6)
            assert result["identity"] == expected.identity and result["distance"] == result["matches"][0]["distance"]


def test_enrol_then_identify_list_and_replace(make_client, gallery_copy, probes):
    walk = probes["0002"].tolist()
    with make_client(gallery_copy) as client:
        reply = post_json(client, "/enroll", {"identity": "visitor", "name": "visitor-walk-1", "keypoints": walk})
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"identity": "visitor", "sequence": "visitor-walk-1", "frames": len(walk),
                                "generation": 2, "added": 1, "replaced": 0, "sequences": 17, "identities": 9,
                                "index": "flat"}
        best = post_json(client, "/identify", {"keypoints": walk, "top_k": 1}).json()["results"][0]["matches"][0]
        assert best["sequence"] == "visitor-walk-1" and best["distance"] < 1e-4
        listing = client.get("/gallery").json()
        assert listing["generation"] == 2 and listing["sequences"] == 17
        assert {"identity": "visitor", "sequences": 1} == {k: v for k, v in listing["identities"][-1].items()
                                                           if k != "enrolled"}
        again = post_json(client, "/enroll", {"identity": "visitor", "name": "visitor-walk-1", "keypoints": walk[:50]})
        assert again.json()["replaced"] == 1 and again.json()["added"] == 0 and again.json()["sequences"] == 17
        unnamed = post_json(client, "/enroll", {"identity": "visitor", "keypoints": walk}).json()
        assert unnamed["sequence"].startswith("visitor-http-") and unnamed["sequences"] == 18
    manifest = store.read_manifest(gallery_copy)
    entries = {e.sequence: e for e in manifest.entries}
    assert manifest.generation == 4 and entries["visitor-walk-1"].source == "http"
    assert entries["visitor-walk-1"].identity == "visitor"
    store.load_gallery(gallery_copy)                    # every file still checks out


def test_threshold_absent_null_or_given(make_client, gallery_copy, probes, tiny_model):
    from bpmt.engine.export import load_recognizer

    _, _, _, fingerprint = load_recognizer(tiny_model)
    store.set_threshold(gallery_copy, fingerprint, 0.0)       # every probe is farther than 0
    walk = probes["0001"].tolist()
    with make_client(gallery_copy) as client:
        def ask(**fields):
            return post_json(client, "/identify", {"keypoints": walk, **fields}).json()["results"][0]

        gallery_default = ask()
        assert gallery_default["unknown"] is True and gallery_default["identity"] is None
        assert gallery_default["threshold"] == 0.0 and gallery_default["matches"]
        assert ask(threshold=None)["unknown"] is False and ask(threshold=None)["threshold"] is None
        far = ask(threshold=1e5)
        assert far["unknown"] is False and far["identity"] == far["matches"][0]["identity"]


def test_health_reports_model_gallery_and_limits(make_client, gallery_copy, tiny_model):
    from bpmt.engine.export import load_recognizer

    _, config, _, fingerprint = load_recognizer(tiny_model)
    with make_client(gallery_copy, min_frames=None) as client:
        health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == fingerprint
    assert health["generation"] == 1 and health["sequences"] == 16 and health["identities"] == 8
    assert health["limits"]["min_frames"] == 2 * config.model.frames_per_token
    assert health["limits"]["max_frames"] == MAX_FRAMES and health["limits"]["max_body_bytes"] == MAX_BODY
    assert health["limits"]["batch"] == 16 and health["limits"]["concurrency"] == 1


def test_new_gallery_is_created_by_the_first_enrolment(make_client, tmp_path, probes):
    root = tmp_path / "new-gallery"
    with make_client(root, create_gallery=True) as client:
        assert client.get("/health").json()["generation"] is None
        assert client.get("/gallery").json()["identities"] == []
        empty = post_json(client, "/identify", {"keypoints": probes["0003"].tolist()})
        assert empty.status_code == 409 and "empty" in empty.json()["detail"]
        assert post_json(client, "/enroll", {"identity": "a", "keypoints": probes["0003"].tolist()}).status_code == 200
        reply = post_json(client, "/identify", {"keypoints": probes["0003"].tolist()})
        assert reply.status_code == 200 and reply.json()["results"][0]["identity"] == "a"
    assert store.read_manifest(root).generation == 1


# ---------------------------------------------------------------------------------------------
# Validation: every bad input is a 4xx whose detail names the problem


def frames(count: int) -> list:
    rng = np.random.default_rng(count)
    return np.concatenate([rng.uniform(0, 200, (count, 17, 2)), rng.uniform(0, 1, (count, 17, 1))], -1).tolist()


def with_value(t: int, j: int, c: int, value) -> list:
    walk = frames(20)
    walk[t][j][c] = value
    return walk


INVALID = [
    ("/identify", {"keypoints": with_value(2, 5, 1, float("nan"))}, 422, "frame 2, joint 5 (left_shoulder): y is not finite"),
    ("/identify", {"keypoints": with_value(7, 16, 0, float("inf"))}, 422, "frame 7, joint 16 (right_ankle): x is not finite"),
    ("/identify", {"keypoints": with_value(3, 0, 2, "0.9")}, 422, "frame 3, joint 0 (nose): value 3 is not a number"),
    ("/identify", {"keypoints": with_value(4, 9, 0, True)}, 422, "frame 4, joint 9"),
    ("/identify", {"keypoints": with_value(1, 1, 1, 2e6)}, 422, "frame 1, joint 1 (left_eye): y is implausible"),
    ("/identify", {"keypoints": frames(20)[:5] + [frames(1)[0][:16]] + frames(5)}, 422, "frame 5: expected a list of 17"),
    ("/identify", {"keypoints": [[[1, 2]] * 17] * 20}, 422, "frame 0, joint 0 (nose): expected [x, y, confidence]"),
    ("/identify", {"keypoints": frames(3)}, 422, "3 frames, at least 8 needed"),
    ("/identify", {"keypoints": []}, 422, "0 frames"),
    ("/identify", {"keypoints": "walk"}, 422, "expected a list of frames"),
    ("/identify", {"keypoints": frames(MAX_FRAMES + 1)}, 413, f"{MAX_FRAMES + 1} frames, at most {MAX_FRAMES}"),
    ("/identify", {"top_k": 3}, 422, "keypoints: Field required"),
    ("/identify", {"keypoints": frames(20), "top_k": 0}, 422, "top_k: Input should be greater than or equal to 1"),
    ("/identify", {"keypoints": frames(20), "top_k": 101}, 422, "top_k: Input should be less than or equal to 100"),
    ("/identify", {"keypoints": frames(20), "top_k": "5"}, 422, "top_k: Input should be a valid integer"),
    ("/identify", {"keypoints": frames(20), "top_k": 2.0}, 422, "top_k"),
    ("/identify", {"keypoints": frames(20), "threshold": -1}, 422, "threshold: Input should be greater than or equal to 0"),
    ("/identify", {"keypoints": frames(20), "threshold": float("nan")}, 422, "threshold: Input should be a finite number"),
    ("/identify", {"keypoints": frames(20), "topk": 5}, 422, "topk: Extra inputs are not permitted"),
    ("/identify", [frames(20)], 422, "expected a JSON object"),
    ("/identify", None, 422, "expected a JSON object"),
    ("/enroll", {"keypoints": frames(20)}, 422, "identity: Field required"),
    ("/enroll", {"identity": "", "keypoints": frames(20)}, 422, "identity: String should have at least 1 character"),
    ("/enroll", {"identity": 42, "keypoints": frames(20)}, 422, "identity: Input should be a valid string"),
    ("/enroll", {"identity": "a\nb", "keypoints": frames(20)}, 422, "identity: String should match pattern"),
    ("/enroll", {"identity": "\ud800", "keypoints": frames(20)}, 422, "identity: Input should be a valid string"),
    ("/enroll", {"identity": "x" * 201, "keypoints": frames(20)}, 422, "identity: String should have at most 200"),
    ("/enroll", {"identity": "a", "keypoints": with_value(0, 11, 2, None)}, 422, "frame 0, joint 11 (left_hip)"),
]


@pytest.mark.parametrize("path, body, status, fragment", INVALID,
                         ids=[f"{case[0][1:]}-{i}" for i, case in enumerate(INVALID)])
def test_invalid_json_inputs_are_rejected_with_a_named_problem(readonly_client, enrolled, path, body, status,
                                                               fragment):
    reply = post_json(readonly_client, path, body)
    assert reply.status_code == status, reply.text
    assert fragment in reply.json()["detail"]
    assert store.read_manifest(enrolled).generation == 1


MALFORMED = [
    ("/identify", b'{"keypoints": [[[1, 2, 3]', "application/json", 400, "not valid JSON"),
    ("/identify", b"\xff\xfe\x00garbage", "application/json", 400, "not valid JSON"),
    ("/enroll", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "not valid JSON"),
    ("/identify", b'{"keypoints": [[[1' + b"0" * 5000 + b', 2, 3]]]}', "application/json", 400, "not valid JSON"),
    ("/identify", b"{}", "text/plain", 415, "Content-Type must be application/json"),
    ("/enroll", b"{}", "", 415, "got none"),
    ("/enroll", b"video", "multipart/form-data; boundary=x", 415, "Content-Type must be application/json"),
]


def test_malformed_bodies_and_content_types(readonly_client):
    for path, content, kind, status, fragment in MALFORMED:
        reply = readonly_client.post(path, content=content, headers={"content-type": kind} if kind else {})
        assert reply.status_code == status, (path, content[:20], reply.text)
        assert fragment in reply.json()["detail"]
    assert readonly_client.post("/identify", json={"keypoints": frames(20)},
                                headers={"content-type": "application/json; charset=utf-8"}).status_code == 200


def test_oversized_bodies_are_refused_before_parsing(make_client, enrolled):
    junk = b"not json at all " * (MAX_BODY // 16 + 1)                 # would be a 400 if it were parsed

    def chunks():
        for _ in range(len(junk) // 65536 + 1):
            yield junk[:65536]

    with make_client(enrolled) as client:
        declared = client.post("/identify", content=junk, headers={"content-type": "application/json"})
        assert declared.status_code == 413 and "Content-Length" in declared.json()["detail"]
        streamed = client.post("/enroll", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and f"at most {MAX_BODY:,} bytes" in streamed.json()["detail"]
        fits = client.post("/identify", content=junk[:MAX_BODY], headers={"content-type": "application/json"})
        assert fits.status_code == 400                                  # at the limit: read, then refused as JSON
    with make_client(enrolled, max_video_bytes=1000) as client:
        video = client.post("/identify", files={"video": ("walk.mp4", b"\0" * 2000, "video/mp4")})
        assert video.status_code == 413 and "1,000 bytes" in video.json()["detail"]


def test_unknown_routes_and_methods(make_client, enrolled):
    with make_client(enrolled) as client:
        missing = client.get("/identities")
        assert missing.status_code == 404 and "GET /identities" in missing.json()["detail"]
        wrong = client.get("/identify")
        assert wrong.status_code == 405 and "does not take GET" in wrong.json()["detail"]


def test_openapi_documents_requests_responses_and_errors(make_client, enrolled):
    with make_client(enrolled) as client:
        schema = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    paths, components = schema["paths"], schema["components"]["schemas"]
    assert set(paths) == {"/enroll", "/identify", "/gallery", "/health"}
    assert set(paths["/enroll"]) == {"post"} and set(paths["/gallery"]) == {"get"}
    identify = paths["/identify"]["post"]
    body = identify["requestBody"]["content"]
    assert body["application/json"]["schema"]["$ref"] == "#/components/schemas/IdentifyRequest"
    assert "video" in body["multipart/form-data"]["schema"]["properties"]
    assert {"200", "400", "409", "413", "415", "422", "501"} <= set(identify["responses"])
    assert identify["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("IdentifyResponse")
    request = components["IdentifyRequest"]
    assert request["required"] == ["keypoints"] and request["additionalProperties"] is False
    keypoints = request["properties"]["keypoints"]
    assert "crop pixels" in keypoints["description"] and keypoints["items"]["minItems"] == 17
    assert components["EnrollRequest"]["required"] == ["identity", "keypoints"]
    assert "unknown" in components["IdentificationOut"]["properties"]
    assert all(op.get("description") or op.get("summary") for path in paths.values() for op in path.values())


# ---------------------------------------------------------------------------------------------
# Gallery of another model, foreign folders


def test_gallery_of_another_model_is_a_conflict(make_client, gallery_copy, probes, tiny_model, tmp_path):
    from bpmt.serving.http import create_app

    with make_client(gallery_copy) as client:
        assert post_json(client, "/identify", {"keypoints": probes["0001"].tolist()}).status_code == 200
        manifest = json.loads((gallery_copy / "gallery.json").read_text())
        manifest["model"] = "f" * 64                      # another process swaps in another model's gallery
        (gallery_copy / "gallery.tmp").write_text(json.dumps(manifest))
        os.replace(gallery_copy / "gallery.tmp", gallery_copy / "gallery.json")
        for path, body in (("/identify", {"keypoints": probes["0001"].tolist()}),
                           ("/enroll", {"identity": "x", "keypoints": probes["0001"].tolist()})):
            reply = post_json(client, path, body)
            assert reply.status_code == 409 and "another model" in reply.json()["detail"]
        assert client.get("/gallery").status_code == 409
    assert store.read_manifest(gallery_copy).generation == 1          # the refused enrolment wrote nothing
    with pytest.raises(store.ModelMismatchError, match="another model"):
        create_app(tiny_model, gallery_copy)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"")
    with pytest.raises(store.GalleryError, match="not a gallery and not empty"):
        create_app(tiny_model, foreign)


# ---------------------------------------------------------------------------------------------
# Video uploads


def test_video_upload_identifies_every_tracked_walker(make_client, gallery_copy, probes, monkeypatch):
    from bpmt.serving import video
    from bpmt.serving.http_service import query_sequence

    seen = []

    def extract_sequences(path, progress=None):
        seen.append(Path(path).read_bytes())
        return [query_sequence(probes["0004"], "walker-0"), query_sequence(probes["0006"][:40], "walker-1")]

    monkeypatch.setattr(video, "extract_sequences", extract_sequences)
    with make_client(gallery_copy) as client:
        reply = client.post("/identify", files={"video": ("street.mp4", b"fake video bytes", "video/mp4")},
                            data={"top_k": "2", "threshold": "none"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert seen == [b"fake video bytes"] and body["source"] == "street.mp4" and body["top_k"] == 2
        assert [r["query"] for r in body["results"]] == ["walker-0", "walker-1"]
        assert all(len(r["matches"]) == 2 and r["threshold"] is None for r in body["results"])
        for data, fragment in (({"top_k": "many"}, "top_k: expected a whole number"),
                               ({"threshold": "-2"}, "threshold: expected a finite distance")):
            bad = client.post("/identify", files={"video": ("a.mp4", b"x", "video/mp4")}, data=data)
            assert bad.status_code == 422 and fragment in bad.json()["detail"]
        missing = client.post("/identify", files={"clip": ("a.mp4", b"x", "video/mp4")})
        assert missing.status_code == 422 and "field `video`" in missing.json()["detail"]
        monkeypatch.setattr(video, "extract_sequences", lambda path, progress=None: [])
        nobody = client.post("/identify", files={"video": ("empty.mp4", b"x", "video/mp4")})
        assert nobody.status_code == 422 and "no walking person" in nobody.json()["detail"]

        def undecodable(path, progress=None):
            raise video.VideoError(f"{path}: cannot open as a video")

        monkeypatch.setattr(video, "extract_sequences", undecodable)
        broken = client.post("/identify", files={"video": ("broken.mp4", b"x", "video/mp4")})
        assert broken.status_code == 422 and broken.json()["detail"] == "broken.mp4: cannot open as a video"


# What MediaPipe's C++ side and TFLite print to file descriptor 2 for every pose graph.
NATIVE_LOG = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
              b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
              b"W0000 00:00:1796222912.585543    3340 inference_feedback_manager.cc:114] Feedback manager requires "
              b"a model with a single signature inference. Disabling support for feedback tensors.\n")


def test_video_upload_keeps_mediapipe_log_lines_out_of_the_server_log(make_client, gallery_copy, probes, monkeypatch,
                                                                      capfd):
    from bpmt.serving import video
    from bpmt.serving.http_service import query_sequence

    def extract_sequences(path, progress=None):
        for line in NATIVE_LOG[:2]:
            os.write(2, line)
        os.write(2, b"an ordinary server log line\n")         # anything else still reaches the log
        os.write(2, NATIVE_LOG[2])
        return [query_sequence(probes["0004"], "walker-0")]

    monkeypatch.setattr(video, "extract_sequences", extract_sequences)
    with make_client(gallery_copy) as client:
        reply = client.post("/identify", files={"video": ("street.mp4", b"fake video bytes", "video/mp4")})
        assert reply.status_code == 200, reply.text
    err = capfd.readouterr().err
    assert "an ordinary server log line" in err
    assert not [line for line in NATIVE_LOG if line.decode().strip() in err], err


def test_video_upload_without_the_video_extra_is_501(make_client, enrolled, monkeypatch):
    monkeypatch.setitem(sys.modules, "bpmt.serving.video", None)      # import fails as if not installed
    with make_client(enrolled) as client:
        reply = client.post("/identify", files={"video": ("walk.mp4", b"x", "video/mp4")})
    assert reply.status_code == 501 and "pip install" in reply.json()["detail"]


# ---------------------------------------------------------------------------------------------
# Fuzzing the JSON inputs: a 4xx with a JSON detail, never a 500, unless the body is valid


def valid_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and abs(value) <= 1e6
    except OverflowError:
        return False


def valid_distance(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and value >= 0
    except OverflowError:
        return False


def valid_keypoints(value) -> bool:
    return (isinstance(value, list) and 8 <= len(value) <= MAX_FRAMES
            and all(isinstance(frame, list) and len(frame) == 17
                    and all(isinstance(joint, list) and len(joint) == 3 and all(map(valid_number, joint))
                            for joint in frame) for frame in value))


def valid_label(value) -> bool:
    if not isinstance(value, str) or not 1 <= len(value) <= 200 or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def valid_identify(body) -> bool:
    if not isinstance(body, dict) or not set(body) <= ALLOWED_IDENTIFY or not valid_keypoints(body.get("keypoints")):
        return False
    top_k, threshold = body.get("top_k", 5), body.get("threshold")
    return (isinstance(top_k, int) and not isinstance(top_k, bool) and 1 <= top_k <= 100
            and (threshold is None or valid_distance(threshold))
            and (body.get("name") is None or valid_label(body["name"])))


def valid_enroll(body) -> bool:
    return (isinstance(body, dict) and set(body) <= ALLOWED_ENROLL and valid_label(body.get("identity"))
            and (body.get("name") is None or valid_label(body["name"])) and valid_keypoints(body.get("keypoints")))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)


@st.composite
def mutated(draw, base: dict, keys: list[str]):
    """A valid body, then a few random changes: a field replaced, added or removed, frames cut or
    repeated, one frame, joint or value replaced by a random JSON value."""
    body = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["field", "drop", "frames", "frame", "joint", "value"]))
        walk = body.get("keypoints")
        if kind == "field":
            body[draw(st.sampled_from(keys + ["extra"]) | st.text(max_size=5))] = draw(json_values)
        elif kind == "drop" and body:
            body.pop(draw(st.sampled_from(sorted(body))))
        elif not isinstance(walk, list) or not walk:
            continue
        elif kind == "frames":
            body["keypoints"] = (walk * 3)[:draw(st.integers(0, 30))]
        elif kind == "frame":
            walk[draw(st.integers(0, len(walk) - 1))] = draw(json_values)
        elif isinstance(frame := walk[draw(st.integers(0, len(walk) - 1))], list) and frame:
            j = draw(st.integers(0, len(frame) - 1))
            if kind == "joint" or not isinstance(frame[j], list) or not frame[j]:
                frame[j] = draw(json_values)
            else:
                frame[j][draw(st.integers(0, len(frame[j]) - 1))] = draw(json_values | st.floats(-2e6, 2e6))
    return body


def check_reply(reply: httpx.Response, valid: bool) -> None:
    assert reply.status_code != 500, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    if valid:
        assert reply.status_code == 200, reply.text
    else:
        assert 400 <= reply.status_code < 500, reply.text
        assert isinstance(reply.json()["detail"], str) and reply.json()["detail"]


def test_fuzz_identify_inputs(make_client, gallery_copy):
    base = {"keypoints": frames(10), "top_k": 2, "threshold": 1.5, "name": "q"}
    seen = {True: 0, False: 0}
    with make_client(gallery_copy) as client:
        @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(body=mutated(base, sorted(ALLOWED_IDENTIFY)) | json_values)
        def check(body):
            valid = valid_identify(body)
            seen[valid] += 1
            check_reply(post_json(client, "/identify", body), valid)

        check()
    assert seen[True] and seen[False]                 # both the 200 and the 4xx paths were exercised


def test_fuzz_enroll_inputs(make_client, gallery_copy):
    base = {"identity": "fuzz", "name": "fuzz-1", "keypoints": frames(10)}
    seen = {True: 0, False: 0}
    with make_client(gallery_copy) as client:
        @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(body=mutated(base, sorted(ALLOWED_ENROLL)) | json_values)
        def check(body):
            valid = valid_enroll(body)
            seen[valid] += 1
            check_reply(post_json(client, "/enroll", body), valid)

        check()
    assert seen[True] and seen[False]                 # both the 200 and the 4xx paths were exercised
    store.load_gallery(gallery_copy)                  # whatever was enrolled left a consistent gallery


# ---------------------------------------------------------------------------------------------
# A real server process over loopback


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(model: Path, gallery: Path, log: Path, *extra: str):
    """`bpmt serve` in a subprocess on a free port, its output in `log`; yields (base URL, process);
    stops it with SIGINT."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(3):
        port = free_port()
        with open(log, "w") as output:
            process = subprocess.Popen([sys.executable, "-m", "bpmt.cli", "serve", str(model), "--gallery",
                                        str(gallery), "--port", str(port), "--threads", "1", "--no-access-log", *extra],
                                       env=env, stdout=output, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        if process.poll() is None:
            break
        err = log.read_text()
        if "cannot listen" not in err:            # a port taken between free_port() and bind: try another
            raise AssertionError(f"bpmt serve exited with {process.returncode}: {err}")
    try:
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def live_gallery(enrolled, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("http-live") / "gallery"
    shutil.copytree(enrolled, root)
    return root


@pytest.fixture(scope="module")
def server(tiny_model, live_gallery):
    log = live_gallery.parent / "serve.log"
    with running_server(tiny_model, live_gallery, log, "--max-body-mb", "1", "--max-frames", str(MAX_FRAMES),
                        "--concurrency", "2") as (url, process):
        yield url, process
    output = log.read_text()
    assert process.returncode == 0 and "Traceback" not in output, output
    assert "Finished server process" in output


def test_server_answers_over_loopback(server, probes, tiny_model, enrolled):
    url, _ = server
    with httpx.Client(base_url=url, timeout=60) as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["limits"]["max_body_bytes"] == MAX_BODY
        reply = client.post("/identify", json={"keypoints": probes["0007"].tolist(), "top_k": 4, "threshold": None})
        assert reply.status_code == 200
        expected = library_identify(tiny_model, enrolled, probes["0007"], 4)
        matches = reply.json()["results"][0]["matches"]
        assert [m["identity"] for m in matches] == [m.identity for m in expected.matches]
        np.testing.assert_allclose([m["distance"] for m in matches], [m.distance for m in expected.matches], rtol=1e-5)
        nan = client.post("/identify", content=b'{"keypoints": [' + b",".join([b"[" + b",".join([b"[1, NaN, 1]"] * 17)
                                                                               + b"]"] * 10) + b"]}",
                          headers={"content-type": "application/json"})
        assert nan.status_code == 422 and "frame 0, joint 0 (nose): y is not finite" in nan.json()["detail"]
        assert client.get("/nowhere").status_code == 404
        junk = b"x" * (3 * MAX_BODY)
        declared = client.post("/identify", content=junk, headers={"content-type": "application/json"})
        assert declared.status_code == 413 and "Content-Length" in declared.json()["detail"]
        streamed = client.post("/enroll", content=(junk[i:i + 65536] for i in range(0, len(junk), 65536)),
                               headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and "too large" in streamed.json()["detail"]
        too_long = client.post("/identify", json={"keypoints": frames(MAX_FRAMES + 1)})
        assert too_long.status_code == 413 and "frames" in too_long.json()["detail"]
        assert client.get("/health").status_code == 200               # still serving


def test_server_picks_up_enrolments_by_other_processes(server, live_gallery, tiny_model, serving_synth, tmp_path):
    url, _ = server
    with httpx.Client(base_url=url, timeout=60) as client:
        before = client.get("/gallery").json()["generation"]
        visitor = tmp_path / "2D_Poses"                           # one identity's sequences, enrolled by the CLI
        shutil.copytree(serving_synth / "0003", visitor / "0003")
        (visitor / "0003").rename(visitor / "guest")
        assert main(["enroll", str(tiny_model), "--gallery", str(live_gallery), "--data", str(visitor),
                     "--workers", "1", "--json"]) == 0
        listing = client.get("/gallery").json()
        assert listing["generation"] == before + 1
        assert "guest" in [row["identity"] for row in listing["identities"]]


def test_server_keeps_answering_while_an_enrolment_waits_for_the_lock(server, live_gallery, probes):
    url, _ = server
    walk = probes["0005"].tolist()
    outcome = {}

    def enrol():
        outcome["reply"] = httpx.post(url + "/enroll", json={"identity": "late", "name": "late-1", "keypoints": walk},
                                      timeout=120)

    with httpx.Client(base_url=url, timeout=60) as client:
        generation = client.get("/gallery").json()["generation"]
        with store.writer_lock(live_gallery):                     # another writer holds the gallery
            writer = threading.Thread(target=enrol)
            writer.start()
            time.sleep(1.5)
            for _ in range(3):
                reply = client.post("/identify", json={"keypoints": walk, "top_k": 1})
                assert reply.status_code == 200 and reply.json()["generation"] == generation
            assert writer.is_alive() and "reply" not in outcome   # the enrolment is still waiting
        writer.join(timeout=60)
        assert outcome["reply"].status_code == 200 and outcome["reply"].json()["generation"] == generation + 1
        best = client.post("/identify", json={"keypoints": walk, "top_k": 1}).json()["results"][0]["matches"][0]
        assert best["identity"] == "late" and best["distance"] < 1e-4


def test_server_concurrent_clients_get_consistent_answers(server, probes):
    url, _ = server
    walks = {identity: probes[identity][:60].tolist() for identity in ("0000", "0004", "0006")}
    answers: dict[str, list] = {identity: [] for identity in walks}
    errors = []

    def client_thread(identity: str):
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(4):
                reply = client.post("/identify", json={"keypoints": walks[identity], "top_k": 3, "threshold": None})
                if reply.status_code != 200:
                    errors.append(reply.text)
                else:
                    answers[identity].append(reply.json()["results"][0]["matches"])

    threads = [threading.Thread(target=client_thread, args=(identity,)) for identity in walks for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    for replies in answers.values():          # requests that queued together shared a pass: equal up to rounding
        assert len(replies) == 8
        for reply in replies:
            assert [(m["identity"], m["sequence"]) for m in reply] == [(m["identity"], m["sequence"]) for m in replies[0]]
            assert [m["distance"] for m in reply] == pytest.approx([m["distance"] for m in replies[0]], abs=1e-5)


def test_server_log_has_no_mediapipe_lines_after_a_real_video_upload(tiny_model, gallery_copy, tmp_path):
    """A real video through MediaPipe in a real server: its log keeps the server's lines only."""
    from bpmt.serving.video import VideoDependencyError
    from bpmt.serving.video.libs import NATIVE_LOG_LINE, import_mediapipe_pose

    try:
        import_mediapipe_pose()
    except VideoDependencyError as exc:
        pytest.skip(f"video extra not installed: {exc}")
    import cv2
    import videos

    try:
        source = videos.demo_mp4()
    except videos.FetchError as exc:
        pytest.skip(f"test video unavailable: {exc}")
    clip = tmp_path / "walk.avi"              # 40 frames of the woman walking across, at half size
    reader = cv2.VideoCapture(str(source))
    reader.set(cv2.CAP_PROP_POS_FRAMES, 60)
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (884, 497))
    for _ in range(40):
        ok, frame = reader.read()
        assert ok
        writer.write(cv2.resize(frame, (884, 497)))
    writer.release()
    reader.release()
    log = tmp_path / "serve.log"
    with running_server(tiny_model, gallery_copy, log) as (url, _):
        reply = httpx.post(url + "/identify", files={"video": ("walk.avi", clip.read_bytes(), "video/x-msvideo")},
                           timeout=300)
        assert reply.status_code == 200, reply.text
        assert reply.json()["results"]
    output = log.read_text()
    assert "Finished server process" in output and "Traceback" not in output, output
    assert not [line for line in output.splitlines() if NATIVE_LOG_LINE.match(line)], output
    for fragment in ("TensorFlow Lite", "absl::", ".cc:"):
        assert fragment not in output, output


def test_served_connections_do_not_wait_for_delayed_acks():
    """Connections accepted on `serve`'s socket have Nagle's algorithm off (TCP_NODELAY), as asyncio
    sets it for TCP sockets: otherwise each answer on a kept-alive connection waits ~40 ms."""
    import asyncio
    import socket

    from bpmt.serving.http import listening_socket

    async def accepted_nodelay() -> int:
        loop = asyncio.get_running_loop()
        seen = loop.create_future()

        class Accept(asyncio.Protocol):
            def connection_made(self, transport):
                seen.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        sock = listening_socket("127.0.0.1", 0)
        server = await loop.create_server(Accept, sock=sock)
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) != 0


def test_cli_defaults_are_the_service_defaults():
    from bpmt.serving import http_cli, http_limits

    for name in ("DEFAULT_MAX_BODY_MB", "DEFAULT_MAX_VIDEO_MB", "DEFAULT_MAX_FRAMES", "DEFAULT_BATCH"):
        assert getattr(http_cli, name) == getattr(http_limits, name)
    script = "import sys, bpmt.cli; bpmt.cli.build_parser(); print('fastapi' in sys.modules, 'torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True).stdout.split() == ["False", "False"]


def test_serve_command_errors(tiny_model, gallery_copy, capsys):
    manifest = json.loads((gallery_copy / "gallery.json").read_text())
    other = gallery_copy.parent / "other"
    shutil.copytree(gallery_copy, other)
    (other / "gallery.json").write_text(json.dumps({**manifest, "model": "e" * 64}))
    assert main(["serve", str(tiny_model), "--gallery", str(other), "--threads", "1"]) == 2
    assert "error: " in (err := capsys.readouterr().err) and "another model" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tiny_model), "--gallery", str(gallery_copy), "--port", str(port), "--threads", "1"]) == 2
        assert "cannot listen" in capsys.readouterr().err
    assert main(["serve", str(tiny_model), "--gallery", str(gallery_copy), "--max-frames", "4", "--threads", "1"]) == 2
    assert "minimum sequence length 8" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_serve_refuses_a_gallery_that_identify_refuses(tiny_model, tmp_path, capsys, monkeypatch, kind):
    import uvicorn

    gallery = tmp_path / "no-gallery"
    if kind == "empty":
        gallery.mkdir()
    assert main(["identify", str(tiny_model), "--gallery", str(gallery), "--data", str(tmp_path), "--json"]) == 2
    identify_error = capsys.readouterr().err.strip()
    assert identify_error.startswith("error: ") and str(gallery) in identify_error

    def listening(*args, **kwargs):
        raise AssertionError("bpmt serve started on a gallery that identify refuses")

    monkeypatch.setattr(uvicorn.Server, "run", listening)
    assert main(["serve", str(tiny_model), "--gallery", str(gallery), "--threads", "1", "--port", str(free_port())]) == 2
    serve_error = capsys.readouterr().err.strip()
    assert serve_error.startswith(identify_error) and "--create-gallery" in serve_error
    assert gallery.exists() == (kind == "empty")                      # refused without creating anything


def test_serve_create_gallery_flag_starts_on_a_new_folder(tiny_model, tmp_path, monkeypatch, capsys):
    from bpmt.serving import http

    started = {}

    def serve(model, gallery_dir, **options):          # the app is built, but nothing listens
        started["app"] = http.create_app(model, gallery_dir, options["limits"], options["create_gallery"])

    monkeypatch.setattr(http, "serve", serve)
    gallery = tmp_path / "new-gallery"
    assert main(["serve", str(tiny_model), "--gallery", str(gallery), "--create-gallery", "--threads", "1"]) == 0
    assert started["app"].state.service.gallery() is None and not gallery.exists()
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--create-gallery" in capsys.readouterr().out
