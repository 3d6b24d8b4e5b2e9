"""Property-based fuzzing of the input parsers: whatever the bytes, the frame-file parser and the
pose-JSON parser return a correct array or raise the project's DataError - no other exception,
and never an array that breaks the plausibility rule or differs from what the input says."""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bpmt.data.gait3d import (ASCII_SPACE, FIELDS_PER_FILE, SequenceDir, _fast_parse, parse_frame_text,
                              read_sequence_dir)
from bpmt.data.pose_json import parse_pose_json
from bpmt.data.sequence import MAX_ABS_VALUE
from bpmt.errors import DataError

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# Frame files


def good_values(draw) -> list[float]:
    """53 plausible values: seeded random magnitudes (cheap) plus a few hypothesis-chosen edge floats."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    values = rng.uniform(-MAX_ABS_VALUE, MAX_ABS_VALUE, FIELDS_PER_FILE) * 10.0 ** -rng.integers(0, 12, FIELDS_PER_FILE)
    values[:2] = rng.uniform(1.0, 2000.0, 2)
    for i, v in draw(st.lists(st.tuples(st.integers(2, FIELDS_PER_FILE - 1),
                                        st.floats(-MAX_ABS_VALUE, MAX_ABS_VALUE)), max_size=3)):
        values[i] = v
    return [float(v) for v in values]


@st.composite
def frame_texts(draw) -> str | bytes:
    """Random text, random bytes, and valid lines with one random mutation."""
    kind = draw(st.sampled_from(["text", "bytes", "numbers", "mutated"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "numbers":
        numbers: list = good_values(draw)[:draw(st.integers(0, FIELDS_PER_FILE))]
        numbers += draw(st.lists(st.one_of(st.floats(), st.integers(-10 ** 30, 10 ** 30)), max_size=3))
        separator = draw(st.sampled_from([",", ", ", " ,", ",,", ";", " "]))
        return separator.join(draw(st.sampled_from(["{!r}", "{}", "{:e}", " {} "])).format(v) for v in numbers)
    tokens = [repr(v) for v in good_values(draw)]
    mutation = draw(st.sampled_from(["replace", "insert", "delete", "append_text", "newline"]))
    i = draw(st.integers(0, FIELDS_PER_FILE - 1))
    if mutation == "replace":
        tokens[i] = draw(st.one_of(st.text(max_size=12), st.sampled_from(
            ["nan", "-inf", "1e999", "1_0", "١", "0x1", "1e6", "1000000.0000001", "-0", "+.5", "5.", " 7 ", "\t8"])))
    elif mutation == "insert":
        tokens.insert(i, draw(st.text(max_size=5)))
    elif mutation == "delete":
        del tokens[i]
    elif mutation == "append_text":
        tokens[-1] += draw(st.text(max_size=5))
    else:
        tokens[i] = tokens[i] + draw(st.sampled_from(["\n", "\r", "\r\n", "\x0b", "\x85", "\u2028"])) + tokens[i]
    return ",".join(tokens)


def assert_plausible(values: np.ndarray) -> None:
    assert values.shape == (FIELDS_PER_FILE,) and values.dtype == np.float64
    assert np.isfinite(values).all() and (np.abs(values) <= MAX_ABS_VALUE).all()
    assert values[0] > 0 and values[1] > 0


@FUZZ
@given(content=frame_texts())
@example(content="1,2," + ",".join(["3"] * 51))
@example(content=b"\xef\xbb\xbf1,2," + b",".join([b"3"] * 51))       # UTF-8 byte-order mark
def test_frame_parser_returns_the_values_or_raises_data_error(content):
    try:
        values = parse_frame_text(content, "f.txt")
    except DataError as exc:
        assert str(exc).startswith("f.txt: ")
        return
    assert_plausible(values)
    text = content.decode("utf-8") if isinstance(content, bytes) else content
    tokens = [t.strip(ASCII_SPACE) for t in text.strip(ASCII_SPACE).split(",")]
    assert all(re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", t) for t in tokens)
    np.testing.assert_array_equal(values, [float(t) for t in tokens])


@st.composite
def good_lines(draw) -> bytes:
    text = ",".join(draw(st.sampled_from(["{!r}", "{:g}", "{:.3f}", " {:e} "])).format(v) for v in good_values(draw))
    return (text + draw(st.sampled_from(["", "\n", " \n"]))).encode()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents=st.lists(st.one_of(good_lines(), good_lines(), frame_texts()), min_size=1, max_size=6),
       chunk=st.integers(1, 4))
def test_fast_path_never_accepts_what_the_file_parser_refuses(contents, chunk):
    """The batch parser (numpy, `chunk` files at a time) may decline anything, but what it accepts
    must be exactly what the per-file parser reads from each file."""
    contents = [c if isinstance(c, bytes) else c.encode("utf-8", "surrogatepass") for c in contents]
    fast = _fast_parse(contents, chunk=chunk)
    if fast is None:
        return
    slow = np.stack([parse_frame_text(c, f"f{i}.txt") for i, c in enumerate(contents)])
    np.testing.assert_array_equal(fast, slow)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.dictionaries(st.integers(0, 30), frame_texts(), min_size=1, max_size=6),
       on_error=st.sampled_from(["raise", "skip"]))
def test_sequence_folder_of_random_files(files, on_error):
    """A whole folder of random frame files: a Sequence of exactly the good files (skip mode) or a
    DataError naming one of the files - nothing else."""
    with tempfile.TemporaryDirectory() as folder:
        for frame, content in files.items():
            data = content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass")
            Path(folder, f"human_crop_f{frame}.txt").write_bytes(data)
        seq_dir = SequenceDir("0001", "camid1_videoid1", "seq0", folder)
        try:
            seq = read_sequence_dir(seq_dir, on_error=on_error)
        except DataError as exc:
            assert on_error == "raise" and str(exc).startswith(folder)
            return
        good = {}
        for frame, content in sorted(files.items()):
            try:
                good[frame] = parse_frame_text(content)
            except DataError:
                pass
        if not good:
            assert seq is None
            return
        assert seq is not None and list(seq.frames) == list(good)
        np.testing.assert_array_equal(seq.keypoints, np.stack(list(good.values()))[:, 2:].reshape(-1, 17, 3)
                                      .astype(np.float32))
        assert np.isfinite(seq.keypoints).all()


# ---------------------------------------------------------------------------------------------
# Pose JSON (the HTTP service's input)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=60)



@st.composite
def frames(draw) -> list:
    """A valid pose sequence as JSON lists: seeded random values (floats and integers) plus a few
    hypothesis-chosen edge values."""
    length = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    values = rng.uniform(-MAX_ABS_VALUE, MAX_ABS_VALUE, (length, 17, 3)) * 10.0 ** -rng.integers(0, 12, (length, 17, 3))
    sequence = [[[float(v) for v in joint] for joint in frame] for frame in values]
    edge = st.one_of(st.floats(-MAX_ABS_VALUE, MAX_ABS_VALUE), st.integers(-10 ** 6, 10 ** 6))
    for _ in range(draw(st.integers(0, 4))):
        t, j, c = draw(st.integers(0, length - 1)), draw(st.integers(0, 16)), draw(st.integers(0, 2))
        sequence[t][j][c] = draw(edge)
    return sequence


@FUZZ
@given(obj=json_values)
@example(obj=10 ** 5000)
@example(obj=[10 ** 5000])
@example(obj={"keypoints": [[[1, 2, 3]] * 16 + [[1, 2, -10 ** 400]]]})
def test_pose_json_random_values(obj):
    try:
        array = parse_pose_json(obj, "request")
    except DataError as exc:
        assert str(exc).startswith("request")
        return
    raw = obj["keypoints"] if isinstance(obj, dict) else obj
    np.testing.assert_array_equal(array, np.asarray(raw, dtype=np.float64).astype(np.float32))


@FUZZ
@given(sequence=frames(), wrap=st.booleans())
def test_pose_json_valid_sequences_round_trip(sequence, wrap):
    obj = {"keypoints": sequence, "name": "x"} if wrap else sequence
    for given_as in (obj, json.dumps(obj), json.dumps(obj).encode()):
        array = parse_pose_json(given_as, "request")
        assert array.shape == (len(sequence), 17, 3) and array.dtype == np.float32
        np.testing.assert_array_equal(array, np.asarray(sequence, dtype=np.float64).astype(np.float32))


@st.composite
def broken_sequences(draw):
    """A valid sequence with exactly one thing wrong, and where (frame, joint) it is."""
    sequence = draw(frames())
    t = draw(st.integers(0, len(sequence) - 1))
    j = draw(st.integers(0, 16))
    kind = draw(st.sampled_from(["value", "joint length", "frame length", "frame type"]))
    if kind == "value":
        bad = draw(st.one_of(st.none(), st.booleans(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                             st.sampled_from([math.nan, math.inf, -math.inf, 1e6 * (1 + 1e-9), -2e6, 10**400]),
                             st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
        sequence[t][j][draw(st.integers(0, 2))] = bad
        return sequence, t, j
    if kind == "joint length":
        sequence[t][j] = sequence[t][j][:draw(st.integers(0, 2))] if draw(st.booleans()) else sequence[t][j] + [0.0]
        return sequence, t, j
    if kind == "frame length":
        sequence[t] = sequence[t][:draw(st.integers(0, 16))] if draw(st.booleans()) else sequence[t] + [[0, 0, 0]]
        return sequence, t, None
    sequence[t] = draw(st.one_of(st.none(), st.text(max_size=5), st.integers(), st.dictionaries(st.text(), st.none())))
    return sequence, t, None


@FUZZ
@given(case=broken_sequences())
def test_pose_json_names_the_broken_frame_and_joint(case):
    sequence, t, j = case
    with pytest.raises(DataError) as info:
        parse_pose_json(sequence, "request")
    where = f"request: frame {t}" + (f", joint {j} " if j is not None else ":")
    assert str(info.value).startswith(where), (str(info.value), where)


@FUZZ
@given(text=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
@example(text="[" * 100_000)
@example(text="1" * 5000)
@example(text='{"keypoints": [[[1, 2, NaN]]]}')
def test_pose_json_text_never_crashes(text):
    try:
        parse_pose_json(text, "body")
    except DataError as exc:
        assert str(exc).startswith("body")


@pytest.mark.parametrize("limits,message", [
    ({"min_frames": 3}, "2 frames, at least 3 needed"),
    ({"max_frames": 1}, "2 frames, at most 1 allowed"),
])
def test_pose_json_frame_count_limits(limits, message):
    sequence = [[[1.0, 2.0, 0.5]] * 17] * 2
    with pytest.raises(DataError, match=f"^request: {message}"):
        parse_pose_json(sequence, "request", **limits)
    assert parse_pose_json(sequence, "request").shape == (2, 17, 3)


def test_pose_json_messages():
    joint = [1.0, 2.0, 0.5]
    cases = {
        "not json": ("{", "request: not valid JSON"),
        "wrong key": ({"poses": []}, 'request: expected a list of frames or an object with "keypoints"'),
        "empty": ([], "request: 0 frames, at least 1 needed"),
        "flat frame": ([[1.0] * 51], "request: frame 0: expected a list of 17"),
        "pairs": ([[[1.0, 2.0]] * 17], r"request: frame 0, joint 0 \(nose\): expected \[x, y, confidence\]"),
        "string": ([[joint] * 16 + [[1.0, "2", 0.5]]], r"request: frame 0, joint 16 \(right_ankle\): value 2 is not a"),
        "nan": ([[joint] * 5 + [[1.0, math.nan, 0.5]] + [joint] * 11],
                r"request: frame 0, joint 5 \(left_shoulder\): y is not finite"),
        "huge": ({"keypoints": [[joint] * 17, [[2e6, 0, 0]] + [joint] * 16]},
                 r"request: keypoints: frame 1, joint 0 \(nose\): x is implausible"),
    }
    for obj, message in cases.values():
        with pytest.raises(DataError, match=f"^{message}"):
            parse_pose_json(obj, "request")
