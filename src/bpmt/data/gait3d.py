"""Reading Gait3D's native pose layout.

Layout: `2D_Poses/<ID>/<camidC_videoidV>/<seqK>/human_crop_f<frame>.txt`, each file one line of
53 comma-separated floats: crop width, crop height, then 17 x (x, y, conf). A sequence is named
`<ID>-<camidC_videoidV>-<seqK>`, as in the official split file.

Bad input never becomes a silent wrong array: with `on_error="raise"` the first problem raises
`DataError` naming the file; with `on_error="skip"` the bad file (or empty sequence) is left out
and counted in a `ParseReport`.

Beyond the plausibility rule (`data.sequence`), a frame file's values are plain ASCII decimals and
its crop width and height are > 0.
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np

from ..errors import DataError
from ..files import subfolders
from ..skeleton import NUM_JOINTS
from ..text import plural
from .sequence import MAX_ABS_VALUE, Sequence

FIELDS_PER_FILE = 2 + NUM_JOINTS * 3
# Only plain ASCII decimals: Python's float() would also take "1_000", "١٢" or "１", which no pose
# writer produces, and the fast path (numpy) would refuse them anyway.
NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)\Z", re.IGNORECASE)
ASCII_SPACE = " \t\n\r\f\v"
FRAME_FILE = re.compile(r"human_crop_f([0-9]+)\.txt\Z")
CAMERA_VIDEO = re.compile(r"camid([0-9]+)_videoid([0-9]+)\Z")
OnError = Literal["raise", "skip"]


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
        text = f"{plural(self.sequences, 'sequence')}, {plural(self.files, 'frame file')}"
        if self.ignored_files:
            text += f", {plural(self.ignored_files, 'non-frame file')} ignored"
        if self.skipped:
            problems = ", ".join(f"{n} x {p}" for p, n in sorted(self.skipped.items()))
            text += f"; skipped: {problems}"
            if self.examples:                                   # name a file to look at
                text += f" (first: {self.examples[0]})"
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
    subjects = subfolders(root)
    if not subjects:
        raise DataError(f"{root}: no identity folders found (expected 2D_Poses/<ID>/<camid_videoid>/<seq>/)")
    for subject in subjects:
        if wanted is not None and subject not in wanted:
            continue
        for camera_video in subfolders(root / subject):
            for seq in subfolders(root / subject / camera_video):
                found.append(SequenceDir(subject, camera_video, seq, str(root / subject / camera_video / seq)))
    if wanted is not None and not found:
        raise DataError(f"{root}: none of the {len(wanted)} requested identities has a sequence folder here "
                        f"(e.g. {sorted(wanted)[:5]})")
    if not found:
        raise DataError(f"{root}: no sequence folders found (expected 2D_Poses/<ID>/<camid_videoid>/<seq>/)")
    found.sort(key=lambda d: d.name)
    return found


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
