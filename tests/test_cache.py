"""The packed cache: exact round trip, memory mapping, refusal of stale or damaged caches, and
atomic replacement (an interrupted build never harms the previous cache)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bpmt.data import cache as cache_module
from bpmt.data.cache import build_cache, is_cache, load_cache
from bpmt.data.corpus import PoseCorpus
from bpmt.data.gait3d import read_gait3d
from bpmt.errors import DataError

TREE = {
    ("0001", "camid3_videoid7", "seq0"): (2, 10, 100),
    ("0001", "camid3_videoid7", "seq1"): (1, 2, 3),
    ("0002", "camid0_videoid1", "seq0"): (5, 6),
}


def frame_line(frame: int, seq: int) -> str:
    rng = np.random.default_rng(1000 * seq + frame)
    values = np.concatenate([[100 + frame, 200 + frame], rng.uniform(-5, 300, 51)])
    return ",".join(repr(float(v)) for v in values)


def age(root: Path) -> None:
    """Date every folder an hour back, so that a change made right after a build moves its mtime
    even on file systems whose timestamps tick only every few milliseconds."""
    past = os.stat(root).st_mtime - 3600
    for folder, _, _ in os.walk(root):
        os.utime(folder, (past, past))


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "2D_Poses"
    for i, (parts, frames) in enumerate(TREE.items()):
        folder = root.joinpath(*parts)
        folder.mkdir(parents=True)
        for f in frames:
            (folder / f"human_crop_f{f}.txt").write_text(frame_line(f, i))
    age(root)
    return root


def assert_same_corpus(corpus: PoseCorpus, sequences) -> None:
    assert corpus.names == [s.name for s in sequences]
    for i, seq in enumerate(sequences):
        loaded = corpus.sequence(i)
        assert (loaded.subject, loaded.camera, loaded.video) == (seq.subject, seq.camera, seq.video)
        np.testing.assert_array_equal(loaded.frames, seq.frames)
        np.testing.assert_array_equal(loaded.keypoints, seq.keypoints)
        np.testing.assert_array_equal(loaded.crop_sizes, seq.crop_sizes)
        assert loaded.keypoints.dtype == np.float32 and loaded.frames.dtype == np.int64


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# ---------------------------------------------------------------------------------------------
# Round trip


@pytest.mark.parametrize("workers", [1, 2])
def test_round_trip_equals_raw_read(tree, tmp_path, workers):
    out = tmp_path / "c.cache"
    built, report = build_cache(tree, out, workers=workers)
    raw, _ = read_gait3d(tree)
    assert is_cache(out) and report.files == 8 and report.sequences == 3
    assert_same_corpus(load_cache(out), raw)
    assert_same_corpus(built, raw)
    assert no_leftovers(tmp_path)


def test_load_is_memory_mapped(tree, tmp_path):
    out = tmp_path / "c.cache"
    build_cache(tree, out)
    corpus = load_cache(out)
    for array in (corpus.keypoints, corpus.crop_sizes, corpus.frames):
        assert isinstance(array, np.memmap) and not array.flags.writeable
    assert np.shares_memory(corpus.keypoints_of(1), corpus.keypoints)


def test_ids_subset(tree, tmp_path):
    out = tmp_path / "c.cache"
    build_cache(tree, out, ids=["0002"])
    corpus = load_cache(out)
    assert corpus.identities == ["0002"] and len(corpus) == 1
    # A change to an identity outside the cache does not make it stale.
    (tree / "0001" / "camid3_videoid7" / "seq0" / "human_crop_f3.txt").write_text(frame_line(3, 0))
    assert len(load_cache(out)) == 1


def test_real_data_round_trip(gait3d_root, gait3d_cache):
    corpus = load_cache(gait3d_cache)
    assert (len(corpus.identities), len(corpus), corpus.num_frames) == (38, 394, 55766)
    raw, report = read_gait3d(gait3d_root, ids=corpus.identities[:3], workers=1)
    subset = corpus.select_ids(corpus.identities[:3])
    assert report.files == subset.num_frames
    for i, seq in enumerate(raw):
        j = subset.index_of(seq.name)
        np.testing.assert_array_equal(subset.keypoints_of(j), seq.keypoints)
        assert i == j


# ---------------------------------------------------------------------------------------------
# Stale and damaged caches


def add_frame(tree: Path) -> None:
    (tree / "0001" / "camid3_videoid7" / "seq0" / "human_crop_f101.txt").write_text(frame_line(101, 0))


def remove_frame(tree: Path) -> None:
    (tree / "0001" / "camid3_videoid7" / "seq1" / "human_crop_f2.txt").unlink()


def rename_frame(tree: Path) -> None:
    folder = tree / "0002" / "camid0_videoid1" / "seq0"
    (folder / "human_crop_f6.txt").rename(folder / "human_crop_f7.txt")


def add_sequence(tree: Path) -> None:
    folder = tree / "0002" / "camid0_videoid1" / "seq1"
    folder.mkdir()
    (folder / "human_crop_f1.txt").write_text(frame_line(1, 9))


def remove_sequence(tree: Path) -> None:
    folder = tree / "0001" / "camid3_videoid7" / "seq1"
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()


def add_identity(tree: Path) -> None:
    folder = tree / "0003" / "camid1_videoid1" / "seq0"
    folder.mkdir(parents=True)
    (folder / "human_crop_f1.txt").write_text(frame_line(1, 8))


@pytest.mark.parametrize("change", [add_frame, remove_frame, rename_frame, add_sequence, remove_sequence, add_identity])
def test_stale_cache_refused(tree, tmp_path, change):
    out = tmp_path / "c.cache"
    build_cache(tree, out)
    change(tree)
    with pytest.raises(DataError, match=f"{out}: stale cache.*rebuild it with bpmt prepare"):
        load_cache(out)
    assert len(load_cache(out, check_source=False)) == 3   # the caller may opt out
    build_cache(tree, out)                                  # a rebuild makes it current again
    load_cache(out)


def test_cache_without_its_source_still_loads(tree, tmp_path):
    out = tmp_path / "c.cache"
    build_cache(tree, out)
    tree.rename(tmp_path / "moved")
    assert len(load_cache(out)) == 3


@pytest.mark.parametrize("name", list(cache_module.ARRAYS))
def test_truncated_array_refused(tree, tmp_path, name):
    out = tmp_path / "c.cache"
    build_cache(tree, out)
    file = out / name
    size = file.stat().st_size
    with open(file, "r+b") as handle:
        handle.truncate(size - 4)
    with pytest.raises(DataError, match=f"{name}: expected {size} bytes, found {size - 4}"):
        load_cache(out)


@pytest.mark.parametrize("damage,message", [
    (lambda out: (out / "index.json").unlink(), "incomplete cache, missing index.json"),
    (lambda out: (out / "index.json").write_text("[{"), "corrupt cache index"),
    (lambda out: (out / "index.json").write_text('[{"name": "x"}]'), "corrupt cache index"),
    (lambda out: (out / "index.json").write_text(
        json.dumps([dict(s, start=s["start"] + 50) for s in json.loads((out / "index.json").read_text())])),
     "out of range"),
    (lambda out: (out / "manifest.json").write_text('{"format": "other"}'), "not a BPMT cache"),
])
def test_damaged_index_refused(tree, tmp_path, damage, message):
    out = tmp_path / "c.cache"
    build_cache(tree, out)
    damage(out)
    with pytest.raises(DataError, match=message):
        load_cache(out)


# ---------------------------------------------------------------------------------------------
# Atomic build


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_build_keeps_previous_cache(tree, tmp_path, monkeypatch, error):
    out = tmp_path / "c.cache"
    build_cache(tree, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    real_read_chunk = cache_module._read_chunk
    calls = []

    def failing_read_chunk(args):
        calls.append(1)
        if len(calls) == 2:
            raise error("interrupted mid-build")
        return real_read_chunk(args)

    monkeypatch.setattr(cache_module, "_read_chunk", failing_read_chunk)
    with pytest.raises(error, match="interrupted mid-build"):
        build_cache(tree, out, workers=1)
    assert len(calls) == 2                                   # it did stop part-way
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(load_cache(out)) == 3
    assert no_leftovers(tmp_path)


def test_interrupted_first_build_leaves_nothing(tree, tmp_path, monkeypatch):
    def failing_read_chunk(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(cache_module, "_read_chunk", failing_read_chunk)
    with pytest.raises(RuntimeError):
        build_cache(tree, tmp_path / "c.cache")
    assert not (tmp_path / "c.cache").exists() and no_leftovers(tmp_path)


def test_refuses_to_overwrite_non_cache(tree, tmp_path):
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="not a BPMT cache; refusing to overwrite"):
        build_cache(tree, precious)
    assert (precious / "thesis.tex").read_text() == "years of work"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="refusing"):
        build_cache(tree, a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    build_cache(tree, empty)                                 # an empty folder is fine
    assert is_cache(empty)


def test_bad_data_in_raise_mode_leaves_no_cache(tree, tmp_path):
    bad = tree / "0002" / "camid0_videoid1" / "seq0" / "human_crop_f6.txt"
    bad.write_text("1,2,3")
    with pytest.raises(DataError, match=str(bad)):
        build_cache(tree, tmp_path / "c.cache")
    assert not (tmp_path / "c.cache").exists() and no_leftovers(tmp_path)


def test_skip_mode_records_report(tree, tmp_path):
    (tree / "0002" / "camid0_videoid1" / "seq0" / "human_crop_f6.txt").write_text("1,2,3")
    out = tmp_path / "c.cache"
    corpus, report = build_cache(tree, out, on_error="skip")
    assert sum(report.skipped.values()) == 1 and corpus.num_frames == 7
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(manifest["report"]["skipped"].values()) == 1
