"""Reading Gait3D's native text layout: correct arrays from good input, a named error or a counted
skip for every kind of bad input."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpmt.data.gait3d import (FIELDS_PER_FILE, _fast_parse, list_sequence_dirs, parse_frame_text, read_gait3d,
                              read_sequence_dir)
from bpmt.data.pose_pickles import read_pose_pickles
from bpmt.data.sequence import MAX_ABS_VALUE
from bpmt.errors import DataError

# sequence -> frame numbers; f2, f10, f100 checks numeric (not string) order with gaps
TREE = {
    ("0001", "camid3_videoid7", "seq0"): (2, 10, 100),
    ("0001", "camid3_videoid7", "seq1"): (1, 2, 3),
    ("0002", "camid0_videoid1", "seq0"): (5, 6),
}
BAD_SEQ = ("0001", "camid3_videoid7", "seq1")


def frame_values(frame: int) -> np.ndarray:
    """The 53 values written for `frame`: crop w, h, then joint j at (j + frame, 2 j + 0.25, 0.5)."""
    joints = np.stack([np.arange(17) + frame, 2 * np.arange(17) + 0.25, np.full(17, 0.5)], axis=1)
    return np.concatenate([[100 + frame, 200 + frame], joints.ravel()])


def frame_line(frame: int) -> str:
    return ",".join(f"{v:g}" for v in frame_values(frame))


def make_tree(base: Path) -> Path:
    root = base / "Gait3D" / "2D_Poses"
    for parts, frames in TREE.items():
        folder = root.joinpath(*parts)
        folder.mkdir(parents=True)
        for f in frames:
            (folder / f"human_crop_f{f}.txt").write_text(frame_line(f))
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path)


def by_name(sequences):
    return {s.name: s for s in sequences}


# ---------------------------------------------------------------------------------------------
# Good input


def test_reads_tiny_tree(tree):
    sequences, report = read_gait3d(tree)
    assert [s.name for s in sequences] == ["0001-camid3_videoid7-seq0", "0001-camid3_videoid7-seq1",
                                           "0002-camid0_videoid1-seq0"]
    first = sequences[0]
    assert (first.subject, first.camera, first.video) == ("0001", "3", "7")
    np.testing.assert_array_equal(first.frames, [2, 10, 100])
    assert first.frames.dtype == np.int64
    assert first.keypoints.shape == (3, 17, 3) and first.keypoints.dtype == np.float32
    for row, f in enumerate(first.frames):
        expected = frame_values(int(f))
        np.testing.assert_array_equal(first.keypoints[row], expected[2:].reshape(17, 3).astype(np.float32))
        np.testing.assert_array_equal(first.crop_sizes[row], expected[:2].astype(np.float32))
    assert first.crop_sizes.shape == (3, 2) and first.crop_sizes.dtype == np.float32
    assert (report.sequences, report.files, report.ignored_files, sum(report.skipped.values())) == (3, 8, 0, 0)


def test_root_may_be_parent_of_2d_poses(tree):
    for path in (tree, tree.parent, tree.parent.parent):
        assert len(read_gait3d(path)[0]) == 3


def test_ids_filter(tree):
    sequences, _ = read_gait3d(tree, ids=["0002", "9999"])
    assert [s.subject for s in sequences] == ["0002"]
    with pytest.raises(DataError, match="none of the 1 requested identities"):
        read_gait3d(tree, ids=["9999"])


def test_parallel_read_matches_serial(tree):
    serial, _ = read_gait3d(tree, workers=1)
    parallel, report = read_gait3d(tree, workers=2)
    assert [s.name for s in parallel] == [s.name for s in serial]
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.frames, b.frames)
    assert report.files == 8


def test_symlinked_sequence_folder_is_followed(tree, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "seq9"
    elsewhere.mkdir(parents=True)
    (elsewhere / "human_crop_f1.txt").write_text(frame_line(1))
    os.symlink(elsewhere, tree / "0002" / "camid0_videoid1" / "seq9")
    names = [s.name for s in read_gait3d(tree)[0]]
    assert "0002-camid0_videoid1-seq9" in names


def test_whitespace_and_trailing_newline_accepted(tree):
    folder = tree.joinpath(*BAD_SEQ)
    (folder / "human_crop_f4.txt").write_text(" " + frame_line(4).replace(",", " , ") + "\r\n")
    seq = by_name(read_gait3d(tree)[0])["-".join(BAD_SEQ)]
    np.testing.assert_array_equal(seq.frames, [1, 2, 3, 4])
    np.testing.assert_array_equal(seq.keypoints[3], frame_values(4)[2:].reshape(17, 3).astype(np.float32))


def test_non_frame_files_ignored_and_counted(tree):
    folder = tree.joinpath(*BAD_SEQ)
    for junk in ("notes.txt", ".DS_Store", "human_crop_f5.txt.bak", "human_crop_fx.txt", "Thumbs.db"):
        (folder / junk).write_text("junk")
    (folder / "subfolder").mkdir()
    sequences, report = read_gait3d(tree)
    assert report.ignored_files == 6 and not report.skipped
    np.testing.assert_array_equal(by_name(sequences)["-".join(BAD_SEQ)].frames, [1, 2, 3])
    assert "6 non-frame files ignored" in report.summary()


# ---------------------------------------------------------------------------------------------
# Bad input: each case writes one problem into BAD_SEQ (frames 1, 2, 3 stay good)


def values_line(values) -> str:
    return ",".join(str(v) for v in values)


def put(name: str, content: str | bytes):
    def write(folder: Path) -> list[str]:
        path = folder / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return [name]
    return write


def directory_named_like_a_frame(folder: Path) -> list[str]:
    (folder / "human_crop_f9.txt").mkdir()
    return ["human_crop_f9.txt"]


def duplicate_frame(folder: Path) -> list[str]:
    (folder / "human_crop_f7.txt").write_text(frame_line(7))
    (folder / "human_crop_f007.txt").write_text(frame_line(7))
    return ["human_crop_f007.txt", "human_crop_f7.txt"]


good = frame_values(4)
BAD_FILES = {
    "too few fields": (put("human_crop_f4.txt", values_line(good[:-1])), "expected 53 comma-separated values.*found 52"),
    "too many fields": (put("human_crop_f4.txt", values_line(list(good) + [1.0])), "found 54"),
    "empty field": (put("human_crop_f4.txt", values_line(good).replace(",", ",,", 1)), "found 54"),
    "non-numeric": (put("human_crop_f4.txt", values_line(list(good[:4]) + ["abc"] + list(good[5:]))),
                    "value 5 is not a number: 'abc'"),
    "nan": (put("human_crop_f4.txt", values_line(list(good[:10]) + ["nan"] + list(good[11:]))), "value 11 is not finite"),
    "inf": (put("human_crop_f4.txt", values_line(list(good[:3]) + ["-inf"] + list(good[4:]))), "value 4 is not finite"),
    "empty file": (put("human_crop_f4.txt", ""), "empty file"),
    "blank file": (put("human_crop_f4.txt", " \n "), "empty file"),
    "multi-line": (put("human_crop_f4.txt", values_line(good[:20]) + "\n" + values_line(good[20:])), "expected one line, found 2"),
    "two frames in one file": (put("human_crop_f4.txt", frame_line(4) + "\n" + frame_line(5)), "expected one line"),
    "not utf-8": (put("human_crop_f4.txt", b"\xff\xfe" + frame_line(4).encode()), "not UTF-8"),
    "not a regular file": (directory_named_like_a_frame, "not a regular file"),
    "duplicate frame": (duplicate_frame, "duplicate frame number 7"),
    "huge frame number": (put("human_crop_f" + "9" * 30 + ".txt", frame_line(4)), "too large"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_raises_naming_file(tree, case):
    make_bad, message = BAD_FILES[case]
    bad_names = make_bad(tree.joinpath(*BAD_SEQ))
    with pytest.raises(DataError, match=message) as info:
        read_gait3d(tree)
    assert any(str(tree.joinpath(*BAD_SEQ, name)) in str(info.value) for name in bad_names)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_skipped_and_counted(tree, case):
    make_bad, message = BAD_FILES[case]
    bad_names = make_bad(tree.joinpath(*BAD_SEQ))
    sequences, report = read_gait3d(tree, on_error="skip", workers=1)
    assert sum(report.skipped.values()) == len(bad_names)
    assert any(re.search(message, p) for p in report.skipped)
    assert any(bad_names[0] in e for e in report.examples)
    assert "skipped" in report.summary()
    # The rest is read correctly.
    seqs = by_name(sequences)
    assert len(seqs) == 3
    np.testing.assert_array_equal(seqs["-".join(BAD_SEQ)].frames, [1, 2, 3])
    for parts, frames in TREE.items():
        seq = seqs["-".join(parts)]
        np.testing.assert_array_equal(seq.frames, frames)
        for row, f in enumerate(frames):
            np.testing.assert_array_equal(seq.keypoints[row], frame_values(f)[2:].reshape(17, 3).astype(np.float32))


def test_unreadable_file(tree):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions (see the directory case instead)")
    path = tree.joinpath(*BAD_SEQ, "human_crop_f4.txt")
    path.write_text(frame_line(4))
    path.chmod(0)
    try:
        with pytest.raises(DataError, match=f"{path}: unreadable file"):
            read_gait3d(tree)
        sequences, report = read_gait3d(tree, on_error="skip")
        assert report.skipped and len(sequences) == 3
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("junk", [[], ["readme.md"]])
def test_empty_sequence_folder(tree, junk):
    folder = tree / "0002" / "camid0_videoid1" / "seq5"
    folder.mkdir()
    for name in junk:
        (folder / name).write_text("x")
    with pytest.raises(DataError, match=f"{folder}: empty sequence folder"):
        read_gait3d(tree)
    sequences, report = read_gait3d(tree, on_error="skip")
    assert len(sequences) == 3 and sum(report.skipped.values()) == 1


def test_sequence_with_only_bad_files_dropped_in_skip_mode(tree):
    folder = tree / "0002" / "camid0_videoid1" / "seq0"
    for f in (5, 6):
        (folder / f"human_crop_f{f}.txt").write_text("1,2,3")
    sequences, report = read_gait3d(tree, on_error="skip")
    assert len(sequences) == 2
    assert report.skipped["no valid frame files"] == 1
    assert sum(report.skipped.values()) == 3


def test_everything_bad_is_an_error_even_when_skipping(tree):
    for parts, frames in TREE.items():
        for f in frames:
            tree.joinpath(*parts, f"human_crop_f{f}.txt").write_text("oops")
    with pytest.raises(DataError, match="no valid sequences"):
        read_gait3d(tree, on_error="skip")


def test_on_error_must_be_known(tree):
    with pytest.raises(ValueError, match="on_error"):
        read_gait3d(tree, on_error="ignore")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Locating sequences


def test_bad_roots(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_gait3d(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="found a file"):
        read_gait3d(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no identity folders"):
        read_gait3d(tmp_path / "empty")


def test_wrong_depth_is_explained(tree):
    # Pointing at one identity's folder: its children are camera folders, not identities.
    with pytest.raises(DataError, match="no sequence folders found"):
        list_sequence_dirs(tree / "0001" / "camid3_videoid7")


def test_read_sequence_dir_reports_in_place(tree):
    seq_dir = list_sequence_dirs(tree)[0]
    seq = read_sequence_dir(seq_dir)
    assert seq is not None and len(seq) == 3 and seq.name == seq_dir.name


# ---------------------------------------------------------------------------------------------
# parse_frame_text


def test_parse_frame_text_values():
    values = parse_frame_text(frame_line(3).encode(), "x.txt")
    assert values.shape == (FIELDS_PER_FILE,) and values.dtype == np.float64
    np.testing.assert_array_equal(values, frame_values(3))
    with pytest.raises(DataError, match=r"^x\.txt: expected 53"):
        parse_frame_text("1,2", "x.txt")


# Plausible values (the rule in bpmt.data.sequence and bpmt.data.gait3d): |value| <= 1e6, crop width and height > 0.
plausible = st.floats(min_value=-MAX_ABS_VALUE, max_value=MAX_ABS_VALUE, width=64)
crop = st.floats(min_value=1.0, max_value=MAX_ABS_VALUE, width=64)
plausible_row = st.tuples(st.lists(crop, min_size=2, max_size=2),
                          st.lists(plausible, min_size=FIELDS_PER_FILE - 2, max_size=FIELDS_PER_FILE - 2)).map(
    lambda parts: parts[0] + parts[1])
formats = st.sampled_from(["{!r}", "{:g}", "{:.8f}", "{:e}", " {!r} "])


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(plausible_row, min_size=1, max_size=4),
       fmt=formats, newline=st.sampled_from(["", "\n", "\r\n"]))
def test_fast_parse_agrees_with_per_file_parser(rows, fmt, newline):
    contents = [(",".join(fmt.format(v) for v in row) + newline).encode() for row in rows]
    fast = _fast_parse(contents)
    slow = np.stack([parse_frame_text(c) for c in contents])
    assert fast is not None
    np.testing.assert_array_equal(fast, slow)


def test_fast_parse_declines_anything_odd():
    line = frame_line(1).encode()
    assert _fast_parse([line, line]) is not None
    for odd in (b"", line + b"\n" + line, line.replace(b",", b";"), line.replace(b"1", b"nan", 1),
                line + b",", line.replace(b",", b",,", 1), line.replace(b",", b"#", 1), b"\xff" + line):
        assert _fast_parse([line, odd]) is None


# ---------------------------------------------------------------------------------------------
# Pose pickles


def test_pose_pickles_need_permission_and_are_validated(tmp_path):
    folder = tmp_path / "001" / "nm-01" / "090"
    folder.mkdir(parents=True)
    array = np.random.default_rng(0).random((5, 17, 3)).astype(np.float32)
    with open(folder / "001-nm-01-090.pkl", "wb") as handle:
        pickle.dump(array, handle)
    with pytest.raises(DataError, match="allow-pickle"):
        read_pose_pickles(tmp_path)
    (seq,) = read_pose_pickles(tmp_path, allow_pickle=True)
    assert seq.name == "001-nm-01-090" and (seq.camera, seq.video) == ("090", "nm-01")
    np.testing.assert_array_equal(seq.keypoints, array)
    with open(folder / "001-nm-01-090.pkl", "wb") as handle:
        pickle.dump(np.zeros((5, 17, 2)), handle)
    with pytest.raises(DataError, match=r"001-nm-01-090\.pkl: expected a \(T, 17, 3\) array"):
        read_pose_pickles(tmp_path, allow_pickle=True)
