"""The on-disk gallery: enrolled embeddings, who they belong to, and the model that made them.

Layout of a gallery folder DIR:

    gallery.json              manifest: format, generation, model fingerprint, metric, dimension,
                              entries (identity, sequence, source, enrol time), search settings,
                              threshold, and the names + SHA-256 of the files below
    embeddings-<gen>.npy      (N, E) float32 stored vectors, row i = entry i (unit rows if cosine)
    index-<gen>.faiss         the approximate index of those vectors (none while search is exact)
    gallery.lock              serialises writers (fcntl)

Files other than the manifest are immutable: a write creates generation g + 1's files under
temporary names, fsyncs them, renames them into place, and only then replaces `gallery.json`
(`os.replace`, atomic). A write killed at any point leaves the previous manifest, which still
references complete files: the previous gallery loads unchanged. Writers hold an exclusive lock
for the whole read-modify-write; readers take no lock. The files of the previous manifest are kept
when a new one is committed, so a reader that read the old manifest can still open them; files
older than that are deleted, and a reader that finds its file gone re-reads the manifest.

Entries are keyed by sequence name: enrolling a name already present replaces its entry.
A gallery belongs to one model (the SHA-256 of its weights): enrolling or searching with another
model's embeddings is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import math
import os
import re
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError
from . import search

FORMAT = "bpmt-gallery"
VERSION = 1
MANIFEST = "gallery.json"
LOCK = "gallery.lock"
OWN_FILE = re.compile(r"(gallery\.json|gallery\.lock|embeddings-\d+\.npy|index-\d+\.faiss)(\.tmp)?\Z")
READ_ATTEMPTS = 5
# Test hook: when set to a path, a writer creates that file and sleeps just before it replaces the
# manifest, so a test can kill it at the one moment where the new generation's files exist.
PAUSE_ENV = "BPMT_GALLERY_PAUSE_BEFORE_COMMIT"


class GalleryError(DataError):
    """A gallery folder is missing, corrupt, or cannot take the requested change."""


class ModelMismatchError(GalleryError):
    """The gallery was built with another model than the one in use."""


@dataclass(frozen=True)
class Entry:
    identity: str
    sequence: str
    source: str
    enrolled: str     # ISO 8601, UTC


@dataclass(frozen=True)
class SearchSettings:
    """Exact search below `exact_limit` entries, the `approximate` index kind from there on."""

    exact_limit: int = search.DEFAULT_EXACT_LIMIT
    approximate: str = search.DEFAULT_APPROXIMATE


@dataclass(frozen=True)
class StoredFile:
    name: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    root: Path
    generation: int
    fingerprint: str
    metric: str
    dim: int
    entries: tuple[Entry, ...]
    embeddings: StoredFile
    index: StoredFile | None          # None: exact search, a flat index built on load
    index_tag: str                    # search.IndexSpec.tag of the stored (or flat) index
    settings: SearchSettings
    threshold: float | None = None
    calibration: dict | None = None
    updated: str = ""

    @property
    def path(self) -> Path:
        return self.root / MANIFEST

    @property
    def identities(self) -> list[str]:
        return sorted({entry.identity for entry in self.entries})

    def files(self) -> set[str]:
        return {f.name for f in (self.embeddings, self.index) if f is not None}


@dataclass(frozen=True)
class Gallery:
    """A loaded, checked gallery generation: manifest, stored vectors and their search index."""

    manifest: Manifest
    vectors: np.ndarray               # (N, E) float32, read-only; unit rows when the metric is cos
    index: object = field(repr=False)  # FAISS index over `vectors`, ids = row numbers

    def __len__(self) -> int:
        return len(self.manifest.entries)


@dataclass(frozen=True)
class Change:
    """What a write did."""

    manifest: Manifest
    added: int = 0
    replaced: int = 0
    removed: int = 0


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Reading


def read_manifest(root: str | os.PathLike) -> Manifest:
    """The checked manifest of gallery `root` (no embeddings read)."""
    root = Path(root)
    path = root / MANIFEST
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        hint = "folder does not exist" if not root.is_dir() else "not a gallery (no gallery.json)"
        raise GalleryError(f"{root}: {hint}; create one with "
                           f"`bpmt enroll MODEL --gallery {root} --data DATA`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GalleryError(f"{path}: corrupt gallery manifest (not valid JSON: {exc})") from None
    except OSError as exc:
        raise GalleryError(f"{path}: cannot read gallery manifest ({exc.strerror or exc})") from None
    try:
        return _manifest_from_dict(root, raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise GalleryError(f"{path}: corrupt gallery manifest ({exc.__class__.__name__}: {exc})") from None


def _manifest_from_dict(root: Path, raw: dict) -> Manifest:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"format is not {FORMAT!r}")
    if raw["version"] != VERSION:
        raise ValueError(f"version {raw['version']} (this program reads version {VERSION})")
    entries = tuple(Entry(**{k: _text(e[k], k) for k in ("identity", "sequence", "source", "enrolled")})
                    for e in raw["entries"])
    if len({e.sequence for e in entries}) != len(entries):
        raise ValueError("duplicate sequence names")
    files = raw["files"]
    index = files.get("index")
    threshold = raw.get("threshold")
    manifest = Manifest(
        root=root, generation=_count(raw["generation"], "generation"), fingerprint=_text(raw["model"], "model"),
        metric=_text(raw["metric"], "metric"), dim=_count(raw["dim"], "dim"), entries=entries,
        embeddings=_stored(files["embeddings"]), index=_stored(index) if index is not None else None,
        index_tag=_text(raw["index_tag"], "index_tag"),
        settings=SearchSettings(_count(raw["search"]["exact_limit"], "exact_limit"),
                                _text(raw["search"]["approximate"], "approximate")),
        threshold=None if threshold is None else float(threshold), calibration=raw.get("calibration"),
        updated=str(raw.get("updated", "")))
    if manifest.metric not in ("euc", "cos"):
        raise ValueError(f"unknown metric {manifest.metric!r}")
    return manifest


def _text(value, key: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, got {type(value).__name__}")
    return value


def _count(value, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"{key} must be a whole number >= 0, got {value!r}")
    return value


def _stored(raw: dict) -> StoredFile:
    name, sha = _text(raw["name"], "file name"), _text(raw["sha256"], "sha256")
    if not OWN_FILE.match(name) or name.endswith(".tmp"):
        raise ValueError(f"unexpected file name {name!r}")
    return StoredFile(name, sha)


def _manifest_to_dict(manifest: Manifest) -> dict:
    return {
        "format": FORMAT, "version": VERSION, "generation": manifest.generation, "model": manifest.fingerprint,
        "metric": manifest.metric, "dim": manifest.dim, "updated": manifest.updated,
        "threshold": manifest.threshold, "calibration": manifest.calibration,
        "search": {"exact_limit": manifest.settings.exact_limit, "approximate": manifest.settings.approximate},
        "index_tag": manifest.index_tag,
        "files": {"embeddings": vars(manifest.embeddings),
                  "index": vars(manifest.index) if manifest.index else None},
        "entries": [vars(entry) for entry in manifest.entries],
    }


def _read_checked(root: Path, stored: StoredFile) -> bytes:
    """Bytes of `stored`, checked against its SHA-256 (FileNotFoundError passes through)."""
    path = root / stored.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise GalleryError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != stored.sha256:
        raise GalleryError(f"{path}: checksum does not match {MANIFEST} (file changed, truncated or corrupt)")
    return data


def _load_files(manifest: Manifest, with_index: bool) -> Gallery:
    root = manifest.root
    data = _read_checked(root, manifest.embeddings)
    path = root / manifest.embeddings.name
    try:
        vectors = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise GalleryError(f"{path}: not a readable .npy file ({exc})") from None
    expected = (len(manifest.entries), manifest.dim)
    if vectors.dtype != np.float32 or vectors.shape != expected:
        raise GalleryError(f"{path}: holds {vectors.dtype} {vectors.shape}, {MANIFEST} describes float32 {expected}")
    vectors.setflags(write=False)
    index = None
    if with_index:
        if manifest.index is None:
            index = search.build_index(vectors, spec=search.IndexSpec("flat"))
        else:
            where = str(root / manifest.index.name)
            index = search.read_index(_read_checked(root, manifest.index), where)
            if index.ntotal != len(vectors) or index.d != manifest.dim:
                raise GalleryError(f"{where}: index holds {index.ntotal} x {index.d} vectors, "
                                   f"{MANIFEST} describes {expected[0]} x {expected[1]}")
    return Gallery(manifest, vectors, index)


def load_gallery(root: str | os.PathLike, with_index: bool = True) -> Gallery:
    """Read gallery `root`: manifest, then the files it names, checksums verified.

    Never takes the writers' lock. If a file named by the manifest vanished (writers committed
    twice since the manifest was read), the manifest is read again.
    """
    root = Path(root)
    last_missing = None
    for _ in range(READ_ATTEMPTS):
        manifest = read_manifest(root)
        try:
            return _load_files(manifest, with_index)
        except FileNotFoundError as exc:
            if last_missing == (manifest.generation, exc.filename):
                break                   # the manifest did not move on: the file is really gone
            last_missing = (manifest.generation, exc.filename)
    raise GalleryError(f"{last_missing[1]}: missing (named by {root / MANIFEST}, generation {last_missing[0]})")


def check_model(manifest: Manifest, fingerprint: str, metric: str | None = None) -> None:
    """Refuse a gallery made by another model (or read with another metric)."""
    if manifest.fingerprint != fingerprint:
        raise ModelMismatchError(
            f"{manifest.root}: gallery was enrolled with another model (gallery model {manifest.fingerprint}, "
            f"this model {fingerprint}); embeddings of different models cannot be compared: use the "
            "gallery's model or another gallery folder")
    if metric is not None and metric != manifest.metric:
        raise ModelMismatchError(f"{manifest.root}: gallery uses metric {manifest.metric!r}, the model {metric!r}")


# ---------------------------------------------------------------------------------------------
# Writing


@contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """Exclusive lock of gallery `root` (created if needed) for one read-modify-write."""
    if root.exists() and not root.is_dir():
        raise GalleryError(f"{root}: exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    try:
        handle = open(root / LOCK, "a+")
    except OSError as exc:
        raise GalleryError(f"{root / LOCK}: cannot open lock file ({exc.strerror or exc})") from None
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _current(root: Path) -> Manifest | None:
    """The manifest a writer starts from; None for a new gallery (refused if `root` holds other files)."""
    if (root / MANIFEST).exists():
        return read_manifest(root)
    foreign = sorted(p.name for p in root.iterdir() if not OWN_FILE.match(p.name))
    if foreign:
        raise GalleryError(f"{root}: not a gallery and not empty (holds {', '.join(foreign[:3])}"
                           f"{' ...' if len(foreign) > 3 else ''}); pick a new or empty folder")
    return None


def _fsync_dir(root: Path) -> None:
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> str:
    """Write `data` to `path`.tmp, fsync, rename to `path`; returns its SHA-256."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def _pause_for_tests() -> None:
    marker = os.environ.get(PAUSE_ENV)
    if marker:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(60)


def _commit(root: Path, old: Manifest | None, new: Manifest, vectors: np.ndarray | None,
            append_from: int | None, previous_index=None) -> Manifest:
    """Write generation `new.generation`: its vectors (None = keep the old file and index), its
    index, then the manifest. `append_from`: rows before it are the old gallery's, unchanged, so an
    extensible old index takes only the new rows."""
    gen = new.generation
    if vectors is not None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
        name = f"embeddings-{gen:06d}.npy"
        embeddings = StoredFile(name, _write_file(root / name, buffer.getvalue()))
        spec = search.choose_spec(len(vectors), new.settings.exact_limit, new.settings.approximate)
        stored_index = None
        if spec.kind != "flat":
            if previous_index is not None and append_from is not None and search.can_extend(previous_index, spec):
                index = previous_index
                index.add(np.ascontiguousarray(vectors[append_from:]))
            else:
                index = search.build_index(vectors, spec=spec)
            tag = search.spec_of(index).tag
            name = f"index-{gen:06d}.faiss"
            stored_index = StoredFile(name, _write_file(root / name, search.index_bytes(index)))
        else:
            tag = spec.tag
        new = replace(new, embeddings=embeddings, index=stored_index, index_tag=tag)
    _fsync_dir(root)
    _pause_for_tests()
    body = json.dumps(_manifest_to_dict(new), indent=1).encode()
    _write_file(root / MANIFEST, body)
    _fsync_dir(root)
    _remove_unreferenced(root, new.files() | (old.files() if old else set()))
    return new


def _remove_unreferenced(root: Path, keep: set[str]) -> None:
    """Delete generation files neither manifest names, and temporary files of crashed writers."""
    for path in root.iterdir():
        name = path.name
        if name in (MANIFEST, LOCK) or name in keep or not OWN_FILE.match(name):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _previous_index(manifest: Manifest | None):
    """The old generation's approximate index, to extend on append (None if none or unusable)."""
    if manifest is None or manifest.index is None:
        return None
    try:
        data = _read_checked(manifest.root, manifest.index)
        return search.read_index(data, str(manifest.root / manifest.index.name))
    except (OSError, GalleryError):
        return None


def enroll(root: str | os.PathLike, fingerprint: str, metric: str, embeddings: np.ndarray,
           identities: Sequence[str], sequences: Sequence[str], source: str,
           settings: SearchSettings | None = None) -> Change:
    """Add `embeddings (N, E)` of `sequences` (owned by `identities`) to gallery `root`, created if
    needed. A sequence name already present is replaced. `settings` (None: keep the gallery's, or
    the defaults) decide exact versus approximate search."""
    root = Path(root)
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or len(embeddings) != len(identities) or len(identities) != len(sequences):
        raise ValueError(f"embeddings {embeddings.shape}, {len(identities)} identities and "
                         f"{len(sequences)} sequences do not match")
    if len(set(sequences)) != len(sequences):
        duplicates = sorted(name for name, count in Counter(sequences).items() if count > 1)
        raise GalleryError(f"{source}: sequence names enrolled twice in one go: {', '.join(duplicates[:5])}")
    if not len(sequences):
        raise GalleryError(f"{source}: nothing to enrol")
    vectors = search.prepare_vectors(embeddings, metric)
    if not np.isfinite(vectors).all():
        raise GalleryError(f"{source}: embeddings contain NaN or infinite values")
    with writer_lock(root):
        old = _current(root)
        if old is not None:
            check_model(old, fingerprint, metric)
            if old.dim != vectors.shape[1]:
                raise GalleryError(f"{root}: gallery embeddings have {old.dim} dimensions, these {vectors.shape[1]}")
            old_vectors = _load_files(old, with_index=False).vectors
        else:
            old_vectors = np.zeros((0, vectors.shape[1]), np.float32)
        incoming = set(sequences)
        old_entries = old.entries if old else ()
        kept = [i for i, entry in enumerate(old_entries) if entry.sequence not in incoming]
        stamp = now_utc()
        entries = tuple(old_entries[i] for i in kept) + tuple(
            Entry(str(identity), str(sequence), source, stamp) for identity, sequence in zip(identities, sequences))
        merged = np.concatenate([old_vectors[kept], vectors])                  # (N', E)
        replaced = len(old_entries) - len(kept)
        settings = settings or (old.settings if old else SearchSettings())
        new = Manifest(root, (old.generation if old else 0) + 1, fingerprint, metric, vectors.shape[1], entries,
                       StoredFile("", ""), None, "", settings, old.threshold if old else None,
                       old.calibration if old else None, stamp)
        appended_only = replaced == 0 and old is not None
        previous = _previous_index(old) if appended_only and settings == old.settings else None
        manifest = _commit(root, old, new, merged, len(old_entries) if appended_only else None, previous)
    return Change(manifest, added=len(sequences) - replaced, replaced=replaced)


def remove_identities(root: str | os.PathLike, identities: Sequence[str]) -> Change:
    """Remove every entry of `identities` from gallery `root`; each must be present."""
    root = Path(root)
    read_manifest(root)                 # a missing gallery is an error, not a folder to create
    with writer_lock(root):
        old = read_manifest(root)
        present = set(old.identities)
        unknown = [i for i in identities if i not in present]
        if unknown:
            raise GalleryError(f"{root}: no identity {', '.join(unknown)} in the gallery "
                               f"({len(present)} identities, e.g. {', '.join(old.identities[:5]) or 'none'})")
        gone = set(identities)
        kept = [i for i, entry in enumerate(old.entries) if entry.identity not in gone]
        old_vectors = _load_files(old, with_index=False).vectors
        new = replace(old, generation=old.generation + 1, entries=tuple(old.entries[i] for i in kept),
                      updated=now_utc())
        manifest = _commit(root, old, new, old_vectors[kept], None)
    return Change(manifest, removed=len(old.entries) - len(kept))


def set_threshold(root: str | os.PathLike, fingerprint: str, threshold: float | None,
                  calibration: dict | None = None) -> Manifest:
    """Store the decision threshold (and how it was chosen) in gallery `root`; vectors unchanged."""
    root = Path(root)
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise GalleryError(f"{root}: threshold must be a finite distance >= 0, got {threshold}")
    read_manifest(root)
    with writer_lock(root):
        old = read_manifest(root)
        check_model(old, fingerprint)
        new = replace(old, generation=old.generation + 1, threshold=threshold, calibration=calibration,
                      updated=now_utc())
        return _commit(root, old, new, None, None)


def summary(manifest: Manifest) -> dict:
    """Counts and settings of a gallery, JSON-ready (what `bpmt gallery DIR stats` prints)."""
    per_identity = {}
    for entry in manifest.entries:
        per_identity[entry.identity] = per_identity.get(entry.identity, 0) + 1
    counts = np.array(sorted(per_identity.values()) or [0])
    sizes = {name: (manifest.root / name).stat().st_size for name in manifest.files()
             if (manifest.root / name).exists()}
    return {
        "gallery": str(manifest.root), "generation": manifest.generation, "model": manifest.fingerprint,
        "metric": manifest.metric, "dim": manifest.dim, "sequences": len(manifest.entries),
        "identities": len(per_identity),
        "sequences_per_identity": {"min": int(counts.min()), "median": float(np.median(counts)),
                                   "max": int(counts.max())},
        "index": manifest.index_tag, "exact_limit": manifest.settings.exact_limit,
        "approximate": manifest.settings.approximate, "threshold": manifest.threshold,
        "calibration": manifest.calibration, "updated": manifest.updated, "bytes": sum(sizes.values()),
    }
