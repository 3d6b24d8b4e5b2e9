"""Gallery: enrol / identify / list / remove / stats via the CLI, the on-disk store's atomicity and
concurrency, FAISS search (exact and approximate), and threshold calibration."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bpmt.cli import main
from bpmt.serving import gallery as store
from bpmt.serving import search
from bpmt.serving.calibrate import (_round_down, calibrate, equal_error_rate, far_frr, open_set_scores,
                                    threshold_at_far, threshold_decimals)
from bpmt.serving.identify import Identification, Match, identify_embeddings, rank_identities

IDS = [f"{i:04d}" for i in range(8)]
FAKE_MODEL = "f" * 64


# ---------------------------------------------------------------------------------------------
# Helpers and shared fixtures


def run_ok(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def run_json(capsys, *argv) -> dict:
    return json.loads(run_ok(capsys, *argv, "--json"))


def run_error(capsys, *argv) -> str:
    """Run a command that must fail cleanly; return its stderr."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def split_data(serving_synth, tmp_path_factory) -> tuple[Path, Path]:
    """Two Gait3D roots linking into `serving_synth`: the first 2 sequences of each identity
    (to enrol) and the third (held-out probes)."""
    base = tmp_path_factory.mktemp("split")
    enrol, probe = base / "enrol" / "2D_Poses", base / "probe" / "2D_Poses"
    for identity in IDS:
        seqs = sorted(p for p in (serving_synth / identity).glob("*/*") if p.is_dir())
        assert len(seqs) == 3
        for i, seq in enumerate(seqs):
            target = (probe if i == 2 else enrol) / identity / seq.parent.name / seq.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(seq, target_is_directory=True)
    return enrol, probe


@pytest.fixture(scope="module")
def enrolled(tiny_model, split_data, tmp_path_factory) -> Path:
    """A gallery of the 16 enrolment sequences (read-only: copy it before changing it)."""
    root = tmp_path_factory.mktemp("galleries") / "main"
    assert main(["enroll", str(tiny_model), "--gallery", str(root), "--data", str(split_data[0]),
                 "--workers", "1"]) == 0
    return root


@pytest.fixture
def gallery_copy(enrolled, tmp_path) -> Path:
    root = tmp_path / "gallery"
    shutil.copytree(enrolled, root)
    return root


def brute_force(gallery_vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.linalg.norm(queries[:, None, :].astype(np.float64) - gallery_vectors[None].astype(np.float64), axis=2)


def random_gallery(root: Path, count: int, seed: int = 0, dim: int = 8, **settings) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    names = [f"{seed}-seq{i}" for i in range(count)]
    store.enroll(root, FAKE_MODEL, "euc", vectors, [f"id{i % 4}" for i in range(count)], names, "random",
                 store.SearchSettings(**settings) if settings else None)
    return vectors, names


# ---------------------------------------------------------------------------------------------
# enroll, list, stats, remove


def test_enroll_creates_a_gallery_of_the_model(capsys, enrolled, tiny_model):
    from bpmt.engine.export import load_recognizer

    _, _, _, fingerprint = load_recognizer(tiny_model)
    stats = run_json(capsys, "gallery", enrolled, "stats")
    assert stats["sequences"] == 16 and stats["identities"] == 8 and stats["verified"] is True
    assert stats["model"] == fingerprint and stats["metric"] == "euc" and stats["dim"] == 16
    assert stats["sequences_per_identity"] == {"min": 2, "median": 2.0, "max": 2}
    assert stats["index"] == "flat" and stats["threshold"] is None
    manifest = json.loads((enrolled / "gallery.json").read_text())
    assert manifest["format"] == "bpmt-gallery" and manifest["generation"] == 1
    assert {e["identity"] for e in manifest["entries"]} == set(IDS)
    assert all(e["sequence"].startswith(e["identity"] + "-") for e in manifest["entries"])
    text = run_ok(capsys, "gallery", enrolled, "stats")
    assert "identities:  8" in text and "checksums verified" in text


def test_list_remove_and_reenrol(capsys, gallery_copy, tiny_model, split_data):
    listing = run_json(capsys, "gallery", gallery_copy, "list")["identities"]
    assert [row["identity"] for row in listing] == IDS
    assert all(len(row["sequences"]) == 2 for row in listing)
    text = run_ok(capsys, "gallery", gallery_copy, "list")
    assert "8 identities, 16 sequences" in text and "0003" in text

    out = run_ok(capsys, "gallery", gallery_copy, "remove", "0003", "0005")
    assert "removed 4 sequences" in out
    listing = run_json(capsys, "gallery", gallery_copy, "list")["identities"]
    assert [row["identity"] for row in listing] == [i for i in IDS if i not in ("0003", "0005")]
    err = run_error(capsys, "gallery", gallery_copy, "remove", "0003")
    assert str(gallery_copy) in err and "no identity 0003" in err

    # Enrolling the same sequences again replaces them: 2 new (0003's), 12 replaced.
    result = run_json(capsys, "enroll", tiny_model, "--gallery", gallery_copy, "--data", split_data[0],
                      "--ids", ",".join(i for i in IDS if i != "0005"), "--workers", "1")
    assert (result["added"], result["replaced"], result["sequences"]) == (2, 12, 14)
    assert result["generation"] == 3
    names = [e.sequence for e in store.read_manifest(gallery_copy).entries]
    assert len(names) == len(set(names)) == 14
    # Only the current and the previous generation's files remain.
    assert sorted(p.name for p in gallery_copy.glob("embeddings-*")) == ["embeddings-000002.npy",
                                                                         "embeddings-000003.npy"]


# ---------------------------------------------------------------------------------------------
# identify


def test_identify_held_out_sequences(capsys, enrolled, tiny_model, split_data):
    from bpmt.data.source import open_data
    from bpmt.engine.export import load_recognizer
    from bpmt.evaluation.evaluate import embed_corpus

    result = run_json(capsys, "identify", tiny_model / "model.safetensors", "--gallery", enrolled,
                      "--data", split_data[1], "--top-k", "3", "--workers", "1")
    assert result["generation"] == 1 and result["top_k"] == 3 and len(result["results"]) == 8

    # Every distance is the true best-per-identity Euclidean distance (brute force).
    model, config, _, _ = load_recognizer(tiny_model)
    probes, _ = open_data(split_data[1])
    queries = embed_corpus(model, config, probes)
    gallery = store.load_gallery(enrolled)
    distances = brute_force(gallery.vectors, queries)                                 # (8, 16)
    owners = np.array([e.identity for e in gallery.manifest.entries])
    for row, item in enumerate(result["results"]):
        assert item["query"] == probes.names[row]
        best = {i: distances[row, owners == i].min() for i in IDS}
        expected = sorted(best, key=best.get)[:3]
        matches = item["matches"]
        assert [m["rank"] for m in matches] == [1, 2, 3]
        assert [m["identity"] for m in matches] == expected
        assert [m["distance"] for m in matches] == pytest.approx([best[i] for i in expected], rel=1e-4, abs=1e-5)
        assert all(m["sequence"].startswith(m["identity"] + "-") for m in matches)
        assert item["identity"] == expected[0] and item["unknown"] is False and item["threshold"] is None

    text = run_ok(capsys, "identify", tiny_model, "--gallery", enrolled, "--data", split_data[1],
                  "--ids", "0002", "--top-k", "2", "--workers", "1")
    lines = text.strip().splitlines()
    assert lines[0].startswith("1 query from") and "threshold none" in lines[0]          # not "1 queries"
    assert lines[1].startswith(probes.names[2] + ": ") and "(distance " in lines[1]
    assert lines[2].strip().startswith("1. ") and lines[3].strip().startswith("2. ") and len(lines) == 4


def test_identify_unknown_above_threshold(capsys, enrolled, tiny_model, split_data):
    result = run_json(capsys, "identify", tiny_model, "--gallery", enrolled, "--data", split_data[1],
                      "--threshold", "1e-6", "--workers", "1")
    assert all(r["unknown"] and r["identity"] is None and r["threshold"] == 1e-6 for r in result["results"])
    assert all(r["distance"] > 1e-6 and r["matches"] for r in result["results"])
    text = run_ok(capsys, "identify", tiny_model, "--gallery", enrolled, "--data", split_data[1],
                  "--ids", "0001", "--threshold", "1e-6", "--workers", "1")
    assert ": unknown  (best " in text and "> threshold 1e-06" in text


def test_identify_video_identifies_each_tracked_walker(capsys, enrolled, tiny_model, split_data, monkeypatch,
                                                       tmp_path):
    from bpmt.data.source import open_data

    probes, _ = open_data(split_data[1], ids=["0001", "0004"])
    tracked = [probes.sequence(i) for i in range(len(probes))]
    for i, sequence in enumerate(tracked):
        sequence.name = f"track-{i}"
    calls = []

    def extract_video(args):
        calls.append(args.video)
        return tracked if "walkers" in args.video else []

    import bpmt.serving.gallery_cli as gallery_cli
    monkeypatch.setattr(gallery_cli, "extract_video", extract_video)
    video = tmp_path / "walkers.mp4"
    result = run_json(capsys, "identify", tiny_model, "--gallery", enrolled, "--video", video, "--top-k", "2")
    assert calls == [str(video)] and result["source"] == str(video)
    assert [r["query"] for r in result["results"]] == ["track-0", "track-1"]
    from_data = run_json(capsys, "identify", tiny_model, "--gallery", enrolled, "--data", split_data[1],
                         "--ids", "0001,0004", "--top-k", "2", "--workers", "1")
    assert [r["matches"] for r in result["results"]] == [r["matches"] for r in from_data["results"]]

    err = run_error(capsys, "identify", tiny_model, "--gallery", enrolled, "--video", tmp_path / "empty.mp4")
    assert "empty.mp4: no walking person" in err
    err = run_error(capsys, "identify", tiny_model, "--gallery", enrolled)
    assert "exactly one of --data DATA or --video FILE" in err


def test_gallery_of_another_model_is_refused(capsys, tiny_model, split_data, tmp_path):
    root = tmp_path / "other"
    random_gallery(root, 6, dim=16)
    err = run_error(capsys, "identify", tiny_model, "--gallery", root, "--data", split_data[1], "--workers", "1")
    assert str(root) in err and FAKE_MODEL in err and "another model" in err
    from bpmt.engine.export import load_recognizer
    assert load_recognizer(tiny_model)[3] in err
    err = run_error(capsys, "enroll", tiny_model, "--gallery", root, "--data", split_data[1], "--workers", "1")
    assert FAKE_MODEL in err
    assert store.read_manifest(root).generation == 1


def test_missing_and_foreign_folders(capsys, tiny_model, split_data, tmp_path):
    err = run_error(capsys, "gallery", tmp_path / "nowhere", "list")
    assert "nowhere: folder does not exist" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    err = run_error(capsys, "enroll", tiny_model, "--gallery", foreign, "--data", split_data[1], "--workers", "1")
    assert "not a gallery and not empty" in err and "notes.txt" in err


# ---------------------------------------------------------------------------------------------
# Atomic writes, concurrent readers, corrupt files


def test_failed_manifest_swap_keeps_previous_gallery(tmp_path, monkeypatch):
    root = tmp_path / "g"
    vectors, _ = random_gallery(root, 8)
    before = store.load_gallery(root)
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst).name == store.MANIFEST:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", failing_replace)
    with pytest.raises(OSError):
        random_gallery(root, 4, seed=1)
    monkeypatch.undo()

    after = store.load_gallery(root)
    assert after.manifest.generation == 1 and after.manifest.entries == before.manifest.entries
    np.testing.assert_array_equal(after.vectors, vectors)
    assert (root / "embeddings-000002.npy").exists()          # the half-written generation, ignored
    random_gallery(root, 4, seed=1)
    final = store.load_gallery(root)
    assert final.manifest.generation == 2 and len(final) == 12
    assert not list(root.glob("*.tmp"))


def test_enroll_killed_before_commit_leaves_previous_gallery(gallery_copy, tiny_model, split_data, tmp_path):
    marker = tmp_path / "paused"
    env = dict(os.environ, **{store.PAUSE_ENV: str(marker)}, OMP_NUM_THREADS="1")
    before = store.load_gallery(gallery_copy)
    process = subprocess.Popen([sys.executable, "-m", "bpmt.cli", "enroll", str(tiny_model), "--gallery",
                                str(gallery_copy), "--data", str(split_data[1]), "--workers", "1"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "enroll never reached the commit point"
            time.sleep(0.05)
        assert int(marker.read_text()) == process.pid
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert (gallery_copy / "embeddings-000002.npy").exists()  # killed with the new files in place
    after = store.load_gallery(gallery_copy)
    assert after.manifest.generation == 1 and after.manifest.entries == before.manifest.entries
    np.testing.assert_array_equal(after.vectors, before.vectors)


def test_concurrent_readers_never_see_a_half_state(tmp_path):
    root = tmp_path / "g"
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((5, 8)).astype(np.float32) for _ in range(8)]
    truth = {f"b{b}-{i}": batches[b][i] for b in range(len(batches)) for i in range(5)}
    store.enroll(root, FAKE_MODEL, "euc", batches[0], ["a"] * 5, [f"b0-{i}" for i in range(5)], "t")
    done = threading.Event()
    errors: list[BaseException] = []
    seen: list[set[int]] = []

    def reader():
        generations = set()
        try:
            while not done.is_set():
                gallery = store.load_gallery(root)
                entries = gallery.manifest.entries
                assert len(entries) == 5 * gallery.manifest.generation == len(gallery.vectors)
                assert gallery.index.ntotal == len(entries)
                for row, entry in enumerate(entries):
                    np.testing.assert_array_equal(gallery.vectors[row], truth[entry.sequence])
                generations.add(gallery.manifest.generation)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        seen.append(generations)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for b in range(1, len(batches)):
            store.enroll(root, FAKE_MODEL, "euc", batches[b], ["a"] * 5, [f"b{b}-{i}" for i in range(5)], "t")
            time.sleep(0.02)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert not errors, errors[0]
    assert len(set().union(*seen)) >= 3          # the readers really ran during the writes
    assert store.load_gallery(root).manifest.generation == len(batches)


def test_reader_rereads_manifest_when_its_files_were_replaced(tmp_path, monkeypatch):
    root = tmp_path / "g"
    random_gallery(root, 4)
    stale = store.read_manifest(root)
    random_gallery(root, 4, seed=1)
    random_gallery(root, 4, seed=2)                            # generation 1's files are deleted now
    assert not (root / stale.embeddings.name).exists()
    real = store.read_manifest
    answers = iter([stale])
    monkeypatch.setattr(store, "read_manifest", lambda r: next(answers, None) or real(r))
    gallery = store.load_gallery(root)
    assert gallery.manifest.generation == 3 and len(gallery) == 12

    monkeypatch.setattr(store, "read_manifest", lambda r: stale)    # a manifest naming a lost file
    with pytest.raises(store.GalleryError, match=r"embeddings-000001\.npy: missing"):
        store.load_gallery(root)


def test_corrupt_files_give_clear_errors(capsys, tmp_path):
    root = tmp_path / "g"
    random_gallery(root, 40, exact_limit=10)
    manifest = store.read_manifest(root)
    assert manifest.index is not None

    embeddings = root / manifest.embeddings.name
    good = embeddings.read_bytes()
    embeddings.write_bytes(good[:-7])
    err = run_error(capsys, "gallery", root, "stats")
    assert f"{embeddings}: checksum does not match gallery.json" in err
    embeddings.write_bytes(good)

    index = root / manifest.index.name
    index.write_bytes(index.read_bytes()[:100])
    with pytest.raises(store.GalleryError, match=rf"{index.name}: checksum"):
        store.load_gallery(root)
    with pytest.raises(search.IndexFileError, match="bad.faiss: not a readable FAISS index"):
        search.read_index(b"garbage" * 10, "bad.faiss")

    manifest_path = root / "gallery.json"
    text = manifest_path.read_text()
    manifest_path.write_text(text[: len(text) // 2])
    err = run_error(capsys, "gallery", root, "list")
    assert f"{manifest_path}: corrupt gallery manifest" in err
    broken = json.loads(text)
    del broken["entries"][0]["identity"]
    manifest_path.write_text(json.dumps(broken))
    with pytest.raises(store.GalleryError, match="corrupt gallery manifest.*identity"):
        store.read_manifest(root)
    broken = json.loads(text)
    broken["entries"].pop()
    manifest_path.write_text(json.dumps(broken))
    with pytest.raises(store.GalleryError, match=r"holds float32 \(40, 8\).*describes float32 \(39, 8\)"):
        store.load_gallery(root)


# ---------------------------------------------------------------------------------------------
# Search: approximate index against exact, ranking by identity


def clustered(count: int, identities: int, queries: int, dim: int = 16, seed: int = 0):
    """-> gallery (count, dim), its owners (count,), queries (Q, dim) near the same centres, their owners."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((identities, dim)).astype(np.float32)
    owners = np.arange(count) % identities
    query_owners = rng.integers(0, identities, queries)

    def sample(who):
        return centres[who] + 0.3 * rng.standard_normal((len(who), dim)).astype(np.float32)

    return sample(owners), owners, sample(query_owners), query_owners


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_recall_against_exact(kind):
    vectors, _, queries, _ = clustered(3000, 300, 200)
    index = search.build_index(vectors, exact_limit=1000, approximate=kind)
    assert search.index_kind(index) == kind
    assert search.index_kind(search.build_index(vectors, exact_limit=5000, approximate=kind)) == "flat"
    _, truth = search.search(search.build_index(vectors, spec=search.IndexSpec("flat")), queries, 10)
    distances, found = search.search(index, queries, 10, nprobe=16, ef_search=64)
    recall = search.recall_at_k(found, truth)
    assert 0.9 <= recall <= 1.0
    assert np.all(np.diff(distances, axis=1) >= 0)
    exact = brute_force(vectors, queries)
    np.testing.assert_allclose(distances, np.take_along_axis(exact, found, 1), rtol=1e-4, atol=1e-4)
    assert search.recall_at_k(truth, truth) == 1.0
    assert search.recall_at_k(np.full_like(truth, -1), truth) == 0.0


def test_exact_search_distances_are_euclidean():
    vectors, _, queries, _ = clustered(500, 50, 20)
    distances, ids = search.search(search.build_index(vectors), queries, 5)
    exact = brute_force(vectors, queries)
    np.testing.assert_allclose(distances, np.sort(exact, axis=1)[:, :5], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(exact, ids, 1), distances, rtol=1e-4, atol=1e-4)
    padded_d, padded_ids = search.search(search.build_index(vectors[:3]), queries[:1], 5)
    assert padded_ids[0, 3:].tolist() == [-1, -1] and np.isinf(padded_d[0, 3:]).all()


@pytest.mark.parametrize("kind, tag", [("hnsw", "hnsw32"), ("ivf", "ivf133")])
def test_large_gallery_uses_a_stored_approximate_index_and_extends_it(tmp_path, kind, tag):
    root = tmp_path / "g"
    vectors, owners, queries, query_owners = clustered(1200, 120, 60)
    names = [f"s{i}" for i in range(len(vectors))]
    settings = store.SearchSettings(exact_limit=1000, approximate=kind)
    store.enroll(root, FAKE_MODEL, "euc", vectors[:1100], owners[:1100].astype(str), names[:1100], "a", settings)
    first = store.read_manifest(root)
    assert first.index_tag == tag and first.index is not None
    store.enroll(root, FAKE_MODEL, "euc", vectors[1100:], owners[1100:].astype(str), names[1100:], "b")
    gallery = store.load_gallery(root)
    assert gallery.manifest.settings == settings and gallery.index.ntotal == 1200
    assert gallery.manifest.index_tag == tag                  # appended to, not rebuilt (IVF: 139 cells)
    assert gallery.manifest.index.name == "index-000002.faiss"

    results = identify_embeddings(gallery, queries, [f"q{i}" for i in range(60)], top_k=3)
    exact = brute_force(vectors, queries)
    correct = 0
    for row, ident in enumerate(results):
        best = {o: exact[row, owners == o].min() for o in range(120)}
        expected = sorted(best, key=best.get)[:3]
        correct += [m.identity for m in ident.matches] == [str(o) for o in expected]
        assert [m.distance for m in ident.matches] == sorted(m.distance for m in ident.matches)
    assert correct >= 57                            # approximate, but nearly always the exact ranking
    assert sum(r.identity == str(o) for r, o in zip(results, query_owners)) == 60


def test_rank_identities_takes_best_entry_per_identity():
    distances = np.array([0.1, 0.2, 0.3, 0.4, 0.5, np.inf])
    ids = np.array([2, 0, 1, 3, 4, -1])
    identities = ["a", "b", "a", "c", "b"]
    sequences = ["a-0", "b-0", "a-1", "c-0", "b-1"]
    matches = rank_identities(distances, ids, identities, sequences, top_k=5)
    assert matches == (Match("a", 0.1, "a-1"), Match("b", 0.3, "b-0"), Match("c", 0.4, "c-0"))
    assert rank_identities(distances, ids, identities, sequences, top_k=2) == matches[:2]
    decided = Identification("q", matches, threshold=0.05)
    assert decided.identity is None and decided.to_dict()["unknown"] is True
    assert Identification("q", matches, threshold=0.1).identity == "a"
    assert Identification("q", matches, threshold=None).to_dict()["matches"][2] == {
        "rank": 3, "identity": "c", "distance": 0.4, "sequence": "c-0"}


def test_identify_widens_the_search_until_top_k_identities_are_found(tmp_path):
    root = tmp_path / "g"
    rng = np.random.default_rng(0)
    # 100 near-identical entries of "crowd" nearest to the query; "far" only beyond them.
    vectors = np.concatenate([rng.normal(0, 0.01, (100, 4)), [[5, 0, 0, 0]]]).astype(np.float32)
    store.enroll(root, FAKE_MODEL, "euc", vectors, ["crowd"] * 100 + ["far"], [f"s{i}" for i in range(101)], "t")
    (result,) = identify_embeddings(store.load_gallery(root), np.zeros((1, 4), np.float32), ["q"], top_k=2)
    assert [m.identity for m in result.matches] == ["crowd", "far"]
    assert result.matches[1].distance == pytest.approx(5.0)


def test_cosine_galleries_report_cosine_distance(tmp_path):
    root = tmp_path / "g"
    vectors = np.array([[1, 0], [0, 3], [-2, -2]], np.float32)
    store.enroll(root, FAKE_MODEL, "cos", vectors, ["a", "b", "c"], ["a-0", "b-0", "c-0"], "t")
    with pytest.raises(store.ModelMismatchError, match="metric 'cos'"):
        store.check_model(store.read_manifest(root), FAKE_MODEL, "euc")
    (result,) = identify_embeddings(store.load_gallery(root), np.array([[2, 2]], np.float32), ["q"], top_k=3)
    cosine = {"a": 1 - 1 / np.sqrt(2), "b": 1 - 1 / np.sqrt(2), "c": 2.0}
    assert {m.identity: m.distance for m in result.matches} == pytest.approx(cosine, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Calibration


def test_far_frr_and_threshold_on_hand_made_scores():
    genuine = np.array([0.1, 0.2, 0.3, 0.4])
    impostor = np.array([0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3])
    far, frr = far_frr(genuine, impostor, [0.0, 0.25, 0.3, 0.5, 2.0])
    assert far.tolist() == pytest.approx([0.0, 0.1, 0.1, 0.2, 1.0])
    assert frr.tolist() == pytest.approx([1.0, 0.5, 0.25, 0.0, 0.0])
    assert threshold_at_far(impostor, 0.1) == 0.499999          # just below the 2nd impostor
    assert threshold_at_far(impostor, 0.15) == 0.499999         # FAR moves in steps of 1/10
    assert threshold_at_far(impostor, 0.0) == 0.249999
    assert threshold_at_far(impostor, 1.0) == 1.3
    result = calibrate(genuine, impostor, target_far=0.0)
    assert (result.threshold, result.far, result.frr) == (0.249999, 0.0, 0.5)
    assert (result.genuine, result.impostor) == (4, 10)
    assert [row[0] for row in result.table] == sorted(row[0] for row in result.table)
    assert result.eer == pytest.approx(0.05) and result.eer_threshold == 0.4   # FAR 0.1, FRR 0
    assert equal_error_rate(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == (0.0, 0.2)
    with pytest.raises(ValueError, match="within"):
        threshold_at_far(impostor, 1.5)
    assert _round_down(0.4999999999) == 0.499999 and _round_down(0.99999999) == 0.999999


def test_threshold_decimals_print_a_column_of_thresholds_in_one_format():
    # 6 significant digits each (as threshold_at_far rounds them): the column needs 6 decimals,
    # and each value printed with them is exactly the value used.
    column = [0.838962, 1.00373, 1.03028, 0.891096]
    decimals = threshold_decimals(column)
    assert decimals == 6
    assert [f"{t:.{decimals}f}" for t in column] == ["0.838962", "1.003730", "1.030280", "0.891096"]
    assert all(float(f"{t:.{decimals}f}") == t for t in column)
    assert threshold_decimals([0.5, 2.0]) == 1 and threshold_decimals([12.5, 0.0123457]) == 7
    assert threshold_decimals([0.83896234567]) == 6                   # unrounded: 6 significant digits
    assert threshold_decimals([123456.0, 0.0, float("inf")]) == 0


def test_open_set_scores_on_hand_made_embeddings():
    embeddings = np.array([[0.0], [1.0], [5.0], [7.0], [20.0]])
    genuine, impostor = open_set_scores(embeddings, ["a", "a", "b", "b", "c"], chunk_size=2)
    assert sorted(genuine.tolist()) == [1.0, 1.0, 2.0, 2.0]     # "c" has no other sequence
    assert impostor.tolist() == [5.0, 4.0, 4.0, 6.0, 13.0]
    from bpmt.errors import DataError
    with pytest.raises(DataError, match="at least 2 identities"):
        open_set_scores(embeddings, ["a"] * 5)
    with pytest.raises(DataError, match="at least 2 sequences"):
        open_set_scores(embeddings[:2], ["a", "b"])


def test_calibrate_cli_plots_and_saves_the_threshold(capsys, gallery_copy, tiny_model, serving_synth, split_data,
                                                     tmp_path):
    plot = tmp_path / "tradeoff.png"
    result = run_json(capsys, "calibrate", tiny_model, "--data", serving_synth, "--target-far", "0.05",
                      "--plot", plot, "--save-threshold", gallery_copy, "--workers", "1")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (result["sequences"], result["identities"], result["genuine"], result["impostor"]) == (24, 8, 24, 24)
    assert result["far"] <= 0.05 and result["target_far"] == 0.05
    manifest = store.read_manifest(gallery_copy)
    assert manifest.threshold == result["threshold"] and manifest.calibration["target_far"] == 0.05
    identified = run_json(capsys, "identify", tiny_model, "--gallery", gallery_copy, "--data", split_data[1],
                          "--workers", "1")
    assert all(r["threshold"] == result["threshold"] for r in identified["results"])
    assert all(r["unknown"] == (r["distance"] > result["threshold"]) for r in identified["results"])
    ignored = run_json(capsys, "identify", tiny_model, "--gallery", gallery_copy, "--data", split_data[1],
                       "--ids", "0000", "--no-threshold", "--workers", "1")
    assert ignored["results"][0]["threshold"] is None and not ignored["results"][0]["unknown"]

    text = run_ok(capsys, "calibrate", tiny_model, "--data", serving_synth, "--ids", "0000,0001,0002",
                  "--workers", "1")
    assert "threshold for FAR <= 1.00%" in text and "EER" in text and "target FAR" in text
    # one format per quantity: every rate with 2 decimals, every threshold with the same decimals
    rates = re.findall(r"(\d+\.\d+)%", text)
    thresholds = [line.split()[1] for line in text.splitlines() if line.strip().endswith("%") and
                  line.lstrip()[0].isdigit()] + re.findall(r"(?:threshold|FAR <= \S+%:) (\d+\.\d+)", text)
    assert rates and all(len(rate.split(".")[1]) == 2 for rate in rates)
    assert len(thresholds) >= 10 and len({len(t.split(".")[1]) for t in thresholds}) == 1, thresholds
    with pytest.raises(SystemExit):
        main(["calibrate", str(tiny_model), "--data", str(serving_synth), "--target-far", "5"])
    assert "between 0 and 1" in capsys.readouterr().err
