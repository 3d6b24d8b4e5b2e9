"""Reading pose sequences from disk: Gait3D's native text layout and OpenGait's pose pickles.

Gait3D layout: `2D_Poses/<ID>/<camidC_videoidV>/<seqK>/human_crop_f<frame>.txt`, each file one
line of 53 comma-separated floats: crop width, crop height, then 17 x (x, y, conf).
A sequence is named `<ID>-<camidC_videoidV>-<seqK>`, as in the official split file.

Bad input never becomes a silent wrong array: with `on_error="raise"` the first problem raises
`DataError` naming the file; with `on_error="skip"` the bad file (or empty sequence) is left out
and counted in a `ParseReport`.

Plausibility rule (files, pose pickles and pose JSON alike): every value is a finite number with
|value| <= 1e6 (a pixel coordinate beyond a million, or one that would overflow float32, is damage,
not a pose); a frame file's values are plain ASCII decimals and its crop width and height are > 0.
Confidences may be negative (heatmap-based detectors report scores <= 0 for unseen joints).

`parse_pose_json` validates a pose sequence sent as JSON (the HTTP service's input).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np

from ..errors import DataError
from ..skeleton import JOINT_NAMES, NUM_JOINTS

FIELDS_PER_FILE = 2 + NUM_JOINTS * 3
MAX_ABS_VALUE = 1e6
# Only plain ASCII decimals: Python's float() would also take "1_000", "١٢" or "１", which no pose
# writer produces, and the fast path (numpy) would refuse them anyway.
NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)\Z", re.IGNORECASE)
ASCII_SPACE = " \t\n\r\f\v"
FRAME_FILE = re.compile(r"human_crop_f([0-9]+)\.txt\Z")
CAMERA_VIDEO = re.compile(r"camid([0-9]+)_videoid([0-9]+)\Z")
OnError = Literal["raise", "skip"]


@dataclass
class Sequence:
    """One walking sequence. `keypoints` is `(T, 17, 3)` = x, y, confidence in crop pixels."""

    name: str
    subject: str
    camera: str
    video: str
    frames: np.ndarray        # (T,) int64 frame numbers, ascending, gaps preserved
    keypoints: np.ndarray     # (T, 17, 3) float32
    crop_sizes: np.ndarray    # (T, 2) float32 crop width, height

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class ParseReport:
    """What a read saw: counts of files and of problems skipped (in `skip` mode)."""

    sequences: int = 0
    files: int = 0
    ignored_files: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add_problem(self, problem: str, where: str) -> None:
        self.skipped[problem] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{where}: {problem}")

    def merge(self, other: "ParseReport") -> None:
        self.sequences += other.sequences
        self.files += other.files
        self.ignored_files += other.ignored_files
        self.skipped.update(other.skipped)
        self.examples.extend(other.examples[: max(0, 10 - len(self.examples))])

    def summary(self) -> str:
        text = f"{self.sequences} sequences, {self.files} frame files"
        if self.ignored_files:
            text += f", {self.ignored_files} non-frame files ignored"
        if self.skipped:
            problems = ", ".join(f"{n} x {p}" for p, n in sorted(self.skipped.items()))
            text += f"; skipped: {problems}"
        return text

    def to_dict(self) -> dict:
        return {"sequences": self.sequences, "files": self.files, "ignored_files": self.ignored_files,
                "skipped": dict(self.skipped), "examples": list(self.examples)}


@dataclass(frozen=True)
class SequenceDir:
    subject: str
    camera_video: str
    seq: str
    path: str

    @property
    def name(self) -> str:
        return f"{self.subject}-{self.camera_video}-{self.seq}"


# ---------------------------------------------------------------------------------------------
# Locating sequences


def resolve_gait3d_root(path: str | os.PathLike) -> Path:
    """Return the folder whose children are `<ID>` folders (accepts its parent holding `2D_Poses`)."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if not root.is_dir():
        raise DataError(f"{root}: expected a Gait3D 2D_Poses folder or a prepared cache, found a file")
    for candidate in (root / "2D_Poses", root / "Gait3D" / "2D_Poses"):
        if candidate.is_dir():
            return candidate
    return root


def list_sequence_dirs(root: str | os.PathLike, ids: Iterable[str] | None = None) -> list[SequenceDir]:
    """Every `<ID>/<cam_video>/<seq>` folder under a Gait3D root, sorted by sequence name.

    Only the fixed three levels are visited, so following symlinked folders cannot loop.
    """
    root = resolve_gait3d_root(root)
    wanted = set(ids) if ids is not None else None
    found: list[SequenceDir] = []
    subjects = _subdirs(root)
    if not subjects:
        raise DataError(f"{root}: no identity folders found (expected 2D_Poses/<ID>/<camid_videoid>/<seq>/)")
    for subject in subjects:
        if wanted is not None and subject not in wanted:
            continue
        for camera_video in _subdirs(root / subject):
            for seq in _subdirs(root / subject / camera_video):
                found.append(SequenceDir(subject, camera_video, seq, str(root / subject / camera_video / seq)))
    if wanted is not None and not found:
        raise DataError(f"{root}: none of the {len(wanted)} requested identities has a sequence folder here "
                        f"(e.g. {sorted(wanted)[:5]})")
    if not found:
        raise DataError(f"{root}: no sequence folders found (expected 2D_Poses/<ID>/<camid_videoid>/<seq>/)")
    found.sort(key=lambda d: d.name)
    return found


def _subdirs(path: Path) -> list[str]:
    """Sorted visible sub-folder names. A symbolic link that cannot be followed (dangling, or a
    loop of links) or that points back to a folder containing it is an error, never a silent skip."""
    try:
        with os.scandir(path) as entries:
            visible = [e for e in entries if not e.name.startswith(".")]
    except OSError as exc:
        raise DataError(f"{path}: cannot list folder ({exc.strerror or exc})") from None
    names = []
    for entry in visible:
        if entry.is_symlink():
            try:
                os.stat(entry.path)
            except OSError as exc:
                raise DataError(f"{entry.path}: symbolic link cannot be followed ({exc.strerror or exc})") from None
            if os.path.isdir(entry.path):
                real, here = os.path.realpath(entry.path), os.path.realpath(path)
                if os.path.commonpath([real, here]) == real:
                    raise DataError(f"{entry.path}: symbolic link loop (points to {real}, which contains it)")
        try:
            if entry.is_dir():
                names.append(entry.name)
        except OSError as exc:
            raise DataError(f"{entry.path}: cannot inspect ({exc.strerror or exc})") from None
    return sorted(names)


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_frame_text(text: bytes | str, path: str = "<text>") -> np.ndarray:
    """Parse one frame file's content into 53 float64 values; raise DataError naming `path`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None
    stripped = text.strip(ASCII_SPACE)
    if not stripped:
        raise DataError(f"{path}: empty file")
    if "\n" in stripped or "\r" in stripped:
        raise DataError(f"{path}: expected one line, found {len(stripped.splitlines())}")
    fields = [token.strip(ASCII_SPACE) for token in stripped.split(",")]
    if len(fields) != FIELDS_PER_FILE:
        raise DataError(f"{path}: expected {FIELDS_PER_FILE} comma-separated values "
                        f"(crop w, crop h, 17 x (x, y, conf)), found {len(fields)}")
    values = np.empty(FIELDS_PER_FILE, dtype=np.float64)
    for i, token in enumerate(fields):
        if NON_FINITE.match(token):
            raise DataError(f"{path}: value {i + 1} is not finite ({token})")
        if not NUMBER.match(token):
            raise DataError(f"{path}: value {i + 1} is not a number: {token[:40]!r}")
        values[i] = float(token)
    problem = frame_values_problem(values)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    return values


def frame_values_problem(values: np.ndarray) -> str | None:
    """What breaks the plausibility rule in one frame file's 53 values (None when nothing does)."""
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        return f"value {bad + 1} is not finite ({values[bad]})"
    big = np.abs(values) > MAX_ABS_VALUE
    if big.any():
        bad = int(np.flatnonzero(big)[0])
        return f"value {bad + 1} is implausible ({values[bad]:g}; |value| must not exceed {MAX_ABS_VALUE:g})"
    for i, what in enumerate(("crop width", "crop height")):
        if not values[i] > 0:
            return f"value {i + 1} ({what}) must be positive, found {values[i]:g}"
    return None


def _plausible_rows(values: np.ndarray) -> bool:
    """`(N, 53)` rows all pass `frame_values_problem` (vectorised; the fast path's check)."""
    return bool(np.isfinite(values).all() and (np.abs(values) <= MAX_ABS_VALUE).all() and (values[:, :2] > 0).all())


def _fast_parse(contents: list[bytes], chunk: int = 4096) -> np.ndarray | None:
    """Parse many well-formed frame files at once; None when anything looks off (caller rechecks).

    One C-level parse per `chunk` files (bounding the text copies and numpy's temporaries for very
    long sequences); each file must be exactly one line (so line i is file i) and each result
    exactly `(n, 53)` and plausible, otherwise the slow path names the bad file.
    """
    if not contents:
        return None
    values = np.empty((len(contents), FIELDS_PER_FILE), dtype=np.float64)
    for start in range(0, len(contents), chunk):
        stripped = [c.strip() for c in contents[start:start + chunk]]
        if not all(stripped):  # an empty file would vanish as a blank line
            return None
        joined = b"\n".join(stripped)
        if joined.count(b"\n") != len(stripped) - 1 or b"\r" in joined:
            return None
        try:
            part = np.loadtxt(io.BytesIO(joined), delimiter=",", dtype=np.float64, ndmin=2, comments=None)
        except ValueError:
            return None
        if part.shape != (len(stripped), FIELDS_PER_FILE) or not _plausible_rows(part):
            return None
        values[start:start + len(stripped)] = part
    return values


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)
_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")


def _read_files(folder: str, names: list[str], unreadable: Callable[[str, OSError], None]) -> list[bytes | None]:
    """Each file's bytes (None where `unreadable(name, error)` was told it could not be read).

    os.open/os.read relative to an open folder cost about a third of `open(path).read()`, which
    matters at tens of thousands of small files per second.
    """
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY) if _DIR_FD else None
    out: list[bytes | None] = []
    try:
        for name in names:
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=folder_fd) if folder_fd is not None \
                    else os.open(os.path.join(folder, name), _READ_FLAGS)
                try:
                    chunks = []
                    while chunk := os.read(fd, 1 << 16):
                        chunks.append(chunk)
                finally:
                    os.close(fd)
            except OSError as exc:
                unreadable(name, exc)
                out.append(None)
                continue
            out.append(chunks[0] if len(chunks) == 1 else b"".join(chunks))
    finally:
        if folder_fd is not None:
            os.close(folder_fd)
    return out


def read_sequence_dir(seq_dir: SequenceDir, on_error: OnError = "raise",
                      report: ParseReport | None = None) -> Sequence | None:
    """Read one sequence folder. Returns None when `on_error="skip"` and nothing valid remains.

    Skipped in skip mode (counted in `report.skipped`): unreadable or non-regular frame entries,
    every file of a frame number claimed twice (`f7` and `f007`), files that fail to parse, and
    the sequence itself when no valid frame remains. Non-frame files are ignored and counted.
    """
    report = report if report is not None else ParseReport()

    def problem(message: str, where: str) -> None:
        if on_error == "raise":
            raise DataError(f"{where}: {message}")
        report.add_problem(message, where)

    try:
        with os.scandir(seq_dir.path) as entries:
            listing = sorted((e.name, _is_regular(e), e.is_symlink()) for e in entries)
    except OSError as exc:
        problem(f"cannot list folder ({exc.strerror or exc})", seq_dir.path)
        return None

    claimed: dict[int, list[str]] = {}
    frame_entries = 0
    for name, regular, link in listing:
        match = FRAME_FILE.match(name)
        if match is None:
            report.ignored_files += 1
            continue
        frame_entries += 1
        digits = match.group(1)
        if len(digits.lstrip("0")) > 18:
            problem(f"frame number {digits} is too large", os.path.join(seq_dir.path, name))
        elif not regular:
            problem(_irregular(os.path.join(seq_dir.path, name), link), os.path.join(seq_dir.path, name))
        else:
            claimed.setdefault(int(digits), []).append(name)

    frames: list[int] = []
    names: list[str] = []
    for frame in sorted(claimed):
        same = claimed[frame]
        if len(same) > 1:  # which one is right is unknowable: leave them all out
            for name in same:
                others = ", ".join(n for n in same if n != name)
                problem(f"duplicate frame number {frame} (also in {others})", os.path.join(seq_dir.path, name))
            continue
        frames.append(frame)
        names.append(same[0])

    def unreadable(name: str, exc: OSError) -> None:
        problem(f"unreadable file ({exc.strerror or exc})", os.path.join(seq_dir.path, name))

    try:
        raw = _read_files(seq_dir.path, names, unreadable)
    except OSError as exc:  # the folder itself vanished or became unreadable
        problem(f"cannot open folder ({exc.strerror or exc})", seq_dir.path)
        return None
    kept = [i for i, content in enumerate(raw) if content is not None]
    kept_frames = [frames[i] for i in kept]
    names = [names[i] for i in kept]
    contents: list[bytes] = [raw[i] for i in kept]  # type: ignore[misc]
    report.files += len(kept_frames)

    values = _fast_parse(contents)
    if values is None:  # slow path: find and name each bad file
        rows, good_frames = [], []
        for frame, name, content in zip(kept_frames, names, contents):
            path = os.path.join(seq_dir.path, name)
            try:
                rows.append(parse_frame_text(content, path))
                good_frames.append(frame)
            except DataError as exc:
                problem(str(exc).removeprefix(f"{path}: "), path)
        kept_frames = good_frames
        values = np.stack(rows) if rows else np.zeros((0, FIELDS_PER_FILE))

    if len(kept_frames) == 0:
        problem("empty sequence folder (no human_crop_f<frame>.txt files)" if not frame_entries
                else "no valid frame files", seq_dir.path)
        return None
    report.sequences += 1
    camera, video = _camera_video(seq_dir.camera_video)
    return Sequence(
        name=seq_dir.name,
        subject=seq_dir.subject,
        camera=camera,
        video=video,
        frames=np.asarray(kept_frames, dtype=np.int64),
        keypoints=values[:, 2:].reshape(-1, NUM_JOINTS, 3).astype(np.float32),
        crop_sizes=values[:, :2].astype(np.float32),
    )


def _is_regular(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:        # e.g. a loop of symbolic links: `_irregular` says why
        return False


def _irregular(path: str, link: bool) -> str:
    """Why a frame entry that is not a regular file cannot be read."""
    if link:
        try:
            os.stat(path)
        except OSError as exc:
            return f"symbolic link cannot be followed ({exc.strerror or exc})"
    return "not a regular file"


def _camera_video(camera_video: str) -> tuple[str, str]:
    match = CAMERA_VIDEO.match(camera_video)
    if match is None:
        return camera_video, ""
    return match.group(1), match.group(2)


def _read_chunk(args: tuple[list[SequenceDir], OnError]) -> tuple[list[Sequence], ParseReport]:
    dirs, on_error = args
    report = ParseReport()
    out = []
    for d in dirs:
        seq = read_sequence_dir(d, on_error, report)
        if seq is not None:
            out.append(seq)
    return out, report


def read_gait3d(root: str | os.PathLike, ids: Iterable[str] | None = None, workers: int = 1,
                on_error: OnError = "raise",
                progress: Callable[[int], None] | None = None) -> tuple[list[Sequence], ParseReport]:
    """Read every sequence under a Gait3D `2D_Poses` root (optionally only `ids`), in parallel.

    `progress(n)` is called with the number of sequences finished since the last call.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    dirs = list_sequence_dirs(root, ids)
    report = ParseReport()
    sequences: list[Sequence] = []
    chunk = max(1, min(64, len(dirs) // max(1, workers * 8) or 1))
    chunks = [dirs[i:i + chunk] for i in range(0, len(dirs), chunk)]
    if workers <= 1 or len(chunks) <= 1:
        results: Iterable = map(_read_chunk, ((c, on_error) for c in chunks))
        for (seqs, rep), c in zip(results, chunks):
            sequences.extend(seqs)
            report.merge(rep)
            if progress:
                progress(len(c))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for (seqs, rep), c in zip(pool.map(_read_chunk, ((c, on_error) for c in chunks)), chunks):
                sequences.extend(seqs)
                report.merge(rep)
                if progress:
                    progress(len(c))
    if not sequences:
        raise DataError(f"{resolve_gait3d_root(root)}: no valid sequences found ({report.summary()})")
    return sequences, report


# ---------------------------------------------------------------------------------------------
# OpenGait pose pickles


def read_pose_pickles(root: str | os.PathLike, allow_pickle: bool = False,
                      ids: Iterable[str] | None = None) -> list[Sequence]:
    """Read OpenGait's `<ID>/<type>/<view>/*.pkl` layout, each pickle a `(T, 17, 3)` array.

    Unpickling runs arbitrary code from the file, so this refuses unless `allow_pickle=True`
    (the CLI's `--allow-pickle`): only open pickles you trust.
    """
    import pickle

    if not allow_pickle:
        raise DataError(f"{root}: reading pose pickles executes code stored in them; "
                        "pass --allow-pickle (allow_pickle=True) only for files you trust")
    root = Path(root)
    wanted = set(ids) if ids is not None else None
    sequences = []
    for subject in _subdirs(root):
        if wanted is not None and subject not in wanted:
            continue
        for kind in _subdirs(root / subject):
            for view in _subdirs(root / subject / kind):
                folder = root / subject / kind / view
                pickles = sorted(p for p in folder.iterdir() if p.suffix == ".pkl")
                for pkl in pickles:
                    try:
                        with open(pkl, "rb") as handle:
                            array = np.asarray(pickle.load(handle), dtype=np.float64)
                    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a data problem
                        raise DataError(f"{pkl}: cannot read pose pickle ({type(exc).__name__}: {exc})") from None
                    if array.ndim != 3 or array.shape[1:] != (NUM_JOINTS, 3) or len(array) == 0:
                        raise DataError(f"{pkl}: expected a (T, 17, 3) array, found shape {array.shape}")
                    check_keypoints(array, str(pkl))
                    array = array.astype(np.float32)
                    name = f"{subject}-{kind}-{view}" + (f"-{pkl.stem}" if len(pickles) > 1 else "")
                    sequences.append(Sequence(
                        name=name, subject=subject, camera=view, video=kind,
                        frames=np.arange(len(array), dtype=np.int64), keypoints=array,
                        crop_sizes=np.zeros((len(array), 2), dtype=np.float32)))
    if not sequences:
        raise DataError(f"{root}: no pose pickles found (expected <ID>/<type>/<view>/*.pkl)")
    return sequences


# ---------------------------------------------------------------------------------------------
# Plausibility of keypoint arrays, and pose sequences sent as JSON


def check_keypoints(keypoints: np.ndarray, where: str) -> None:
    """Raise DataError naming `where`, the frame and the joint unless every value of `(T, 17, 3)`
    keypoints is finite with |value| <= 1e6 (check before casting to float32, which would turn a
    huge value into inf)."""
    bad = ~np.isfinite(keypoints)
    what = "is not finite"
    if not bad.any():
        bad = np.abs(keypoints) > MAX_ABS_VALUE
        what = f"is implausible (|value| must not exceed {MAX_ABS_VALUE:g})"
    if bad.any():
        t, j, c = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where}: frame {t}, joint {j} ({JOINT_NAMES[j]}): {'xy'[c] if c < 2 else 'confidence'} "
                        f"{what} ({keypoints[t, j, c]:g})")


def parse_pose_json(obj: object, source: str = "<json>", *, min_frames: int = 1,
                    max_frames: int | None = None) -> np.ndarray:
    """A pose sequence sent as JSON -> `(T, 17, 3)` float32 keypoints (x, y, confidence).

    `obj` is the decoded JSON value, or the JSON text itself (str or bytes): a list of frames, each
    a list of 17 `[x, y, confidence]` triples in COCO-17 order, or an object whose `"keypoints"`
    holds that list (other keys are the caller's). Every problem - not JSON, a wrong structure or
    shape, a value that is not a number (strings and booleans included), NaN or inf, |value| > 1e6,
    fewer than `min_frames` or more than `max_frames` frames - raises DataError naming `source`,
    the frame and the joint.
    """
    if isinstance(obj, (str, bytes, bytearray)):
        try:
            obj = json.loads(obj)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise DataError(f"{source}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    where = source
    if isinstance(obj, dict):
        if "keypoints" not in obj:
            raise DataError(f"{source}: expected a list of frames or an object with \"keypoints\", "
                            f"found an object with keys {sorted(map(str, obj))[:5]}")
        obj, where = obj["keypoints"], f"{source}: keypoints"
    if not isinstance(obj, (list, tuple)):
        raise DataError(f"{where}: expected a list of frames, each 17 [x, y, confidence] joints; "
                        f"found {_json_kind(obj)}")
    if len(obj) < min_frames:
        raise DataError(f"{where}: {len(obj)} frames, at least {min_frames} needed")
    if max_frames is not None and len(obj) > max_frames:
        raise DataError(f"{where}: {len(obj)} frames, at most {max_frames} allowed")
    flat: list = []
    for t, frame in enumerate(obj):
        if not isinstance(frame, (list, tuple)) or len(frame) != NUM_JOINTS:
            raise DataError(f"{where}: frame {t}: expected a list of {NUM_JOINTS} [x, y, confidence] joints, "
                            f"found {_json_kind(frame)}")
        for j, joint in enumerate(frame):
            if not isinstance(joint, (list, tuple)) or len(joint) != 3:
                raise DataError(f"{where}: frame {t}, joint {j} ({JOINT_NAMES[j]}): expected [x, y, confidence], "
                                f"found {_json_kind(joint)}")
            flat.extend(joint)
    if not all(_is_number_type(kind) for kind in set(map(type, flat))):
        i = next(i for i, v in enumerate(flat) if not _is_number_type(type(v)))
        raise DataError(f"{_joint_of(where, i)}: value {i % 3 + 1} is not a number ({_json_kind(flat[i])})")
    try:
        values = np.array(flat, dtype=np.float64).reshape(len(obj), NUM_JOINTS, 3)
    except OverflowError:                          # an integer beyond float64: implausible anyway
        i = next(i for i, v in enumerate(flat) if abs(v) > MAX_ABS_VALUE)
        raise DataError(f"{_joint_of(where, i)}: value {i % 3 + 1} is implausible "
                        f"(|value| must not exceed {MAX_ABS_VALUE:g})") from None
    check_keypoints(values, where)
    return values.astype(np.float32)


def _joint_of(where: str, index: int) -> str:
    """`where: frame t, joint j (name)` for the `index`-th number of a flattened `(T, 17, 3)` list."""
    frame, joint = index // (NUM_JOINTS * 3), index // 3 % NUM_JOINTS
    return f"{where}: frame {frame}, joint {joint} ({JOINT_NAMES[joint]})"


def _is_number_type(kind: type) -> bool:
    return issubclass(kind, (int, float)) and not issubclass(kind, bool)   # true is not a coordinate


def _json_kind(value: object) -> str:
    """How a JSON value looks, for error messages (never the whole value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) > 10 ** 18:   # repr of a huge int is slow, or refused
        return "a very large integer"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"[:60]
    if isinstance(value, str):
        return f"the string {value[:30]!r}"
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return type(value).__name__
