"""Hostile and broken Gait3D trees: every case is a DataError naming the file - through the CLI one
`error: <file>: <problem>` line and exit status 2 - or, with `--on-error skip`, a counted skip;
never a wrong array and never a traceback.

The basic cases (field counts, text, NaN/inf, empty files and folders, duplicate frame numbers,
junk files) are defined and tested in test_io.py; this file adds symbolic-link loops, unreadable
files even for root, implausible values, 1-frame and 100,000-frame sequences, and runs every case,
old and new, through `bpmt stats`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_io import BAD_FILES, BAD_SEQ, TREE, frame_line, frame_values, make_tree

from bpmt.cli import main
from bpmt.data.gait3d import parse_frame_text, read_gait3d
from bpmt.data.sequence import MAX_ABS_VALUE
from bpmt.errors import DataError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path)


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def with_value(index: int, token: str, frame: int = 4) -> str:
    """The line of `frame` with value `index` (0-based) replaced by `token`."""
    values = [f"{v:g}" for v in frame_values(frame)]
    values[index] = token
    return ",".join(values)


# ---------------------------------------------------------------------------------------------
# Cases inside one sequence folder (BAD_SEQ, whose frames 1, 2, 3 stay good): an error naming the
# file, or one counted skip. Each writes its damage and returns the bad file names.

FileCase = Callable[[Path, pytest.MonkeyPatch], list[str]]


def write(name: str, content: str) -> FileCase:
    def make(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        (folder / name).write_text(content)
        return [name]
    return make


def symlink(name: str, target: str) -> FileCase:
    def make(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        os.symlink(target, folder / name)
        return [name]
    return make


def fifo(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    os.mkfifo(folder / "human_crop_f4.txt")          # opening it would block forever: never opened
    return ["human_crop_f4.txt"]


def io_error(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A file that fails to read even for root: /proc/self/mem raises EIO at offset 0 (Linux)."""
    if not Path("/proc/self/mem").exists():
        pytest.skip("needs Linux /proc/self/mem")
    os.symlink("/proc/self/mem", folder / "human_crop_f4.txt")
    return ["human_crop_f4.txt"]


def permission_denied(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """chmod 0 does not stop root, so the refusal is simulated at os.open (in this process)."""
    (folder / "human_crop_f4.txt").write_text(frame_line(4))
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if os.fspath(path).endswith("human_crop_f4.txt"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    return ["human_crop_f4.txt"]


FILE_CASES: dict[str, tuple[FileCase, str]] = {
    "symlink loop as frame file": (symlink("human_crop_f4.txt", "human_crop_f4.txt"),
                                   "symbolic link cannot be followed"),
    "two-link loop": (lambda folder, mp: symlink("human_crop_f4.txt", "human_crop_f5.txt")(folder, mp)
                      + symlink("human_crop_f5.txt", "human_crop_f4.txt")(folder, mp),
                      "symbolic link cannot be followed"),
    "dangling symlink": (symlink("human_crop_f4.txt", "/nonexistent/frame.txt"), "symbolic link cannot be followed"),
    "symlink to a parent folder": (symlink("human_crop_f4.txt", ".."), "not a regular file"),
    "fifo": (fifo, "not a regular file"),
    "i/o error": (io_error, r"unreadable file \(Input/output error\)"),
    "permission denied": (permission_denied, r"unreadable file \(Permission denied\)"),
    "huge coordinate": (write("human_crop_f4.txt", with_value(4, "1e7")), r"value 5 is implausible"),
    "huge negative coordinate": (write("human_crop_f4.txt", with_value(30, "-2000000")), r"value 31 is implausible"),
    "float32 overflow": (write("human_crop_f4.txt", with_value(6, "3.5e38")), r"value 7 is implausible"),
    "huge confidence": (write("human_crop_f4.txt", with_value(52, "1e300")), r"value 53 is implausible"),
    "decimal overflow to inf": (write("human_crop_f4.txt", with_value(8, "1e999")), r"value 9 is not finite"),
    "zero crop width": (write("human_crop_f4.txt", with_value(0, "0")), r"value 1 \(crop width\) must be positive"),
    "negative crop height": (write("human_crop_f4.txt", with_value(1, "-200")),
                             r"value 2 \(crop height\) must be positive"),
    "underscore digits": (write("human_crop_f4.txt", with_value(3, "1_000")), r"value 4 is not a number: '1_000'"),
    "non-ascii digits": (write("human_crop_f4.txt", with_value(3, "١٢")), "value 4 is not a number"),
    "hex number": (write("human_crop_f4.txt", with_value(3, "0x1A")), "value 4 is not a number"),
}


def from_test_io(make: Callable[[Path], list[str]]) -> FileCase:
    """One of test_io.py's cases, with this file's signature."""
    return lambda folder, monkeypatch: make(folder)


def all_file_cases() -> dict[str, tuple[FileCase, str]]:
    """test_io.py's cases and this file's."""
    old = {f"io: {name}": (from_test_io(make), message) for name, (make, message) in BAD_FILES.items()}
    return {**old, **FILE_CASES}


ALL_FILE_CASES = all_file_cases()


def expected_sequences(tree: Path) -> dict[str, tuple[int, ...]]:
    return {"-".join(parts): frames for parts, frames in TREE.items()}


def assert_rest_is_exact(sequences) -> None:
    """Everything but the damage reads back to the values written."""
    got = {s.name: s for s in sequences}
    assert sorted(got) == sorted("-".join(p) for p in TREE)
    for parts, frames in TREE.items():
        seq = got["-".join(parts)]
        np.testing.assert_array_equal(seq.frames, frames)
        for row, f in enumerate(frames):
            np.testing.assert_array_equal(seq.keypoints[row], frame_values(f)[2:].reshape(17, 3).astype(np.float32))
            np.testing.assert_array_equal(seq.crop_sizes[row], frame_values(f)[:2].astype(np.float32))


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_file_case_raises_naming_the_file(tree, case, monkeypatch):
    make, message = FILE_CASES[case]
    folder = tree.joinpath(*BAD_SEQ)
    names = make(folder, monkeypatch)
    with pytest.raises(DataError) as info:
        read_gait3d(tree, workers=1)
    assert any(re.match(f"{re.escape(str(folder / n))}: {message}", str(info.value)) for n in names), str(info.value)


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_file_case_skipped_and_counted(tree, case, monkeypatch):
    make, message = FILE_CASES[case]
    names = make(tree.joinpath(*BAD_SEQ), monkeypatch)
    sequences, report = read_gait3d(tree, workers=1, on_error="skip")
    assert sum(report.skipped.values()) == len(names)
    assert all(re.match(message, problem) for problem in report.skipped), report.skipped
    assert_rest_is_exact(sequences)


@pytest.mark.parametrize("case", list(ALL_FILE_CASES))
def test_cli_names_the_file_or_counts_the_skip(tree, case, monkeypatch, capsys):
    """`bpmt stats`: exit 2 with exactly one `error: <file>: <problem>` line; with --on-error skip,
    exit 0 and the skip counted in the summary."""
    make, message = ALL_FILE_CASES[case]
    folder = tree.joinpath(*BAD_SEQ)
    names = make(folder, monkeypatch)
    code, out, err = cli(capsys, "stats", tree, "--workers", "1", "--json")
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert any(lines[0].startswith(f"error: {folder / n}: ") and re.search(message, lines[0]) for n in names), lines[0]

    code, out, err = cli(capsys, "stats", tree, "--workers", "1", "--json", "--on-error", "skip")
    assert code == 0, err
    stats = json.loads(out)
    assert sum(stats["parse"]["skipped"].values()) == len(names)
    assert stats["sequences"] == 3 and stats["frames"] == 8                 # everything else is there
    code, out, err = cli(capsys, "stats", tree, "--workers", "1", "--on-error", "skip")
    assert code == 0 and "skipped: " in out and "skipped" not in err              # the summary, once


def test_parallel_workers_name_the_same_file(tree, capsys):
    folder = tree.joinpath(*BAD_SEQ)
    (folder / "human_crop_f4.txt").write_text(with_value(10, "5e6"))
    code, _, err = cli(capsys, "stats", tree, "--workers", "2", "--json")
    assert code == 2 and err.startswith(f"error: {folder / 'human_crop_f4.txt'}: value 11 is implausible")


# ---------------------------------------------------------------------------------------------
# Damage to the folder tree itself: an error in both modes (the tree, not a frame, is broken)


def folder_link(where: tuple[str, ...], target: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        link = root.joinpath(*where)
        os.symlink(target, link)
        return link
    return make


TREE_CASES = {
    "sequence folder links to itself": (folder_link(("0001", "camid3_videoid7", "seq9"), "seq9"),
                                        "symbolic link cannot be followed"),
    "sequence folder links to an ancestor": (folder_link(("0001", "camid3_videoid7", "seq9"), "../.."),
                                             "symbolic link loop"),
    "camera folder links to the root": (folder_link(("0001", "camid9_videoid9"), "../.."), "symbolic link loop"),
    "identity folder links to the root": (folder_link(("0009",), "."), "symbolic link loop"),
    "dangling identity link": (folder_link(("0009",), "/nonexistent/0009"), "symbolic link cannot be followed"),
}


@pytest.mark.parametrize("case", list(TREE_CASES))
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_broken_tree_is_an_error_in_both_modes(tree, case, on_error, capsys):
    make, message = TREE_CASES[case]
    link = make(tree)
    with pytest.raises(DataError, match=f"^{re.escape(str(link))}: {message}"):
        read_gait3d(tree, on_error=on_error)
    code, _, err = cli(capsys, "stats", tree, "--workers", "1", "--json", "--on-error", on_error)
    assert code == 2 and err.startswith(f"error: {link}: {message}") and len(err.splitlines()) == 1
    out = tree.parent / "c.cache"
    code, _, err = cli(capsys, "prepare", "gait3d", tree, "--out", out, "--workers", "1", "--on-error", on_error)
    assert code == 2 and f"error: {link}: {message}" in err and not out.exists()


def test_links_that_are_not_loops_are_fine(tree, tmp_path):
    """A sequence folder linked from elsewhere is read; a looping link that is not named like a
    frame file is junk: ignored and counted."""
    folder = tree.joinpath(*BAD_SEQ)
    os.symlink(".", folder / "loop")
    os.symlink("notes.txt", folder / "notes.txt")                    # a link loop, but not a frame name
    os.symlink(folder, tree / "0002" / "camid0_videoid1" / "seq7")   # a second name for a real sequence
    sequences, report = read_gait3d(tree)
    got = {s.name: s for s in sequences}
    np.testing.assert_array_equal(got["0002-camid0_videoid1-seq7"].keypoints, got["-".join(BAD_SEQ)].keypoints)
    assert report.ignored_files == 4 and not report.skipped   # loop, notes.txt, in both names of the folder


# ---------------------------------------------------------------------------------------------
# The plausibility rule's edges


def test_values_at_the_limit_and_negative_confidences_are_accepted():
    values = frame_values(4)
    values[2], values[3], values[4] = MAX_ABS_VALUE, -MAX_ABS_VALUE, -0.5        # x, y, conf of the nose
    parsed = parse_frame_text(",".join(repr(float(v)) for v in values), "f.txt")
    np.testing.assert_array_equal(parsed, values)
    with pytest.raises(DataError, match=r"^f\.txt: value 3 is implausible"):
        parse_frame_text(",".join(repr(float(v)) for v in np.r_[values[:2], np.nextafter(MAX_ABS_VALUE, 2e6),
                                                                 values[3:]]), "f.txt")


def test_implausible_value_in_a_large_sequence_is_found_by_the_slow_path(tree):
    """The fast path declines a batch with one huge value; the per-file parser then names it."""
    folder = tree.joinpath(*BAD_SEQ)
    for f in range(10, 200):
        (folder / f"human_crop_f{f}.txt").write_text(frame_line(f))
    (folder / "human_crop_f150.txt").write_text(with_value(1, "9e9", frame=150))
    with pytest.raises(DataError, match=f"{re.escape(str(folder / 'human_crop_f150.txt'))}: value 2 is implausible"):
        read_gait3d(tree)
    sequences, report = read_gait3d(tree, on_error="skip")
    seq = {s.name: s for s in sequences}["-".join(BAD_SEQ)]
    assert len(seq) == 3 + 190 - 1 and 150 not in seq.frames and sum(report.skipped.values()) == 1


# ---------------------------------------------------------------------------------------------
# Sequence lengths at the extremes


@pytest.fixture(scope="module")
def one_frame_data(serving_synth, tmp_path_factory) -> Path:
    """`serving_synth` cut to the first frame of every sequence (8 identities x 3 sequences)."""
    root = tmp_path_factory.mktemp("one-frame") / "2D_Poses"
    for folder in sorted(p for p in serving_synth.glob("*/*/*") if p.is_dir()):
        first = min(folder.glob("human_crop_f*.txt"), key=lambda p: int(p.stem.split("_f")[1]))
        target = root / folder.relative_to(serving_synth)
        target.mkdir(parents=True)
        shutil.copy(first, target / first.name)
    return root


def test_one_frame_sequences_read(one_frame_data):
    sequences, report = read_gait3d(one_frame_data)
    assert len(sequences) == 24 and all(len(s) == 1 for s in sequences)
    assert all(s.keypoints.shape == (1, 17, 3) and s.crop_sizes.shape == (1, 2) for s in sequences)
    assert report.files == 24 and not report.skipped


def test_evaluate_and_embed_one_frame_sequences(tiny_model, one_frame_data, tmp_path, capsys):
    code, out, err = cli(capsys, "evaluate", tiny_model, "--data", one_frame_data, "--json", "--workers", "1")
    assert code == 0, err
    loo = json.loads(out)["loo"]
    assert loo["queries"] == 24 and all(np.isfinite(loo[k]) for k in ("rank1", "mAP", "mINP"))
    emb = tmp_path / "emb.npz"
    code, _, err = cli(capsys, "embed", tiny_model, "--data", one_frame_data, "--out", emb, "--workers", "1")
    assert code == 0, err
    embeddings = np.load(emb)["embeddings"]
    assert embeddings.shape == (24, 16) and np.isfinite(embeddings).all()
    assert len(np.unique(embeddings.round(5), axis=0)) > 1                # not a constant vector


def test_train_on_one_frame_sequences(one_frame_data, tmp_path, capsys):
    from bpmt.engine.export import load_recognizer

    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--config", CONFIGS / "tiny.yaml", "--data", one_frame_data, "--out", out,
                       "--workers", "1", "phase1.steps=2", "phase2.steps=2", "finetune.steps=2",
                       "phase1.batch_size=4", "phase2.batch_size=4", "finetune.identities_per_batch=4",
                       "finetune.samples_per_identity=2", "data.clip_len=16", "model.dim=16",
                       "model.reduce_dims=[16]", "model.embed_dim=16")
    assert code == 0, err[-2000:]
    _, _, meta, _ = load_recognizer(out)
    assert meta["num_classes"] == 8


LONG = 100_000


@pytest.fixture(scope="module")
def long_sequence(request) -> Path:
    """One sequence of 100,000 frame files, x of the nose = frame number (on tmpfs when possible)."""
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="bpmt-long-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    folder = base / "2D_Poses" / "0001" / "camid1_videoid1" / "seq0"
    folder.mkdir(parents=True)
    rest = "," + ",".join(f"{v:g}" for v in frame_values(0)[3:])
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        for f in range(LONG):
            fd = os.open(f"human_crop_f{f}.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=folder_fd)
            os.write(fd, f"100,200,{f}{rest}".encode())
            os.close(fd)
    finally:
        os.close(folder_fd)
    return base / "2D_Poses"


def test_100k_frame_sequence_reads_exactly(long_sequence):
    start = time.perf_counter()
    (seq,), report = read_gait3d(long_sequence)
    seconds = time.perf_counter() - start
    print(f"read {LONG:,} frame files in {seconds:.1f}s")
    assert len(seq) == LONG and report.files == LONG
    np.testing.assert_array_equal(seq.frames, np.arange(LONG))
    np.testing.assert_array_equal(seq.keypoints[:, 0, 0], np.arange(LONG, dtype=np.float32))
    np.testing.assert_array_equal(seq.keypoints[:, 1:], np.broadcast_to(
        frame_values(0)[2:].reshape(17, 3)[1:].astype(np.float32), (LONG, 16, 3)))
    assert seconds < 120


def test_100k_frame_sequence_cli_time_and_memory(long_sequence):
    """`bpmt stats` in a fresh process: the whole read stays well below a gigabyte."""
    # The peak of this process's own memory: Linux's ru_maxrss survives exec, so a child of a large
    # pytest process would report the parent's peak; VmHWM belongs to the new process image.
    script = ("import json, resource, sys, time; from bpmt.cli import main; t = time.perf_counter(); "
              "code = main(sys.argv[1:]); status = open('/proc/self/status').read() if sys.platform == 'linux' else ''; "
              "hwm = [int(l.split()[1]) for l in status.splitlines() if l.startswith('VmHWM:')]; "
              "peak = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
              "print(json.dumps({'code': code, 'seconds': time.perf_counter() - t, "
              "'peak_mb': peak / 1024}), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", script, "stats", str(long_sequence), "--json", "--workers", "1"],
                          capture_output=True, text=True, timeout=300, check=False)
    figures = json.loads(proc.stderr.strip().splitlines()[-1])
    print(f"bpmt stats on {LONG:,} frames: {figures['seconds']:.1f}s, peak RSS {figures['peak_mb']:.0f} MB")
    assert proc.returncode == 0 and figures["code"] == 0, proc.stderr[-2000:]
    stats = json.loads(proc.stdout)
    assert stats["frames"] == LONG and stats["frames_per_sequence"] == {"min": LONG, "median": LONG, "max": LONG}
    assert figures["peak_mb"] < 800            # seen: 370-420 MB (Python objects per file), 20 MB of keypoints
