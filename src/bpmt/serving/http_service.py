"""What `bpmt serve` serves: a loaded recogniser and its gallery folder, kept current.

Every request first checks whether `gallery.json` changed (one `stat`) and reloads the gallery if
so: enrolments made by other processes (`bpmt enroll`) are picked up on the next request. A broken
manifest is reported once per change, not reloaded per request.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from . import gallery as store
from .batching import RequestBatcher


class EmptyGallery(store.GalleryError):
    """Identification asked of a gallery that holds nothing."""


class Service:
    """A recogniser plus its gallery folder; the gallery is reloaded whenever `gallery.json` changes.

    The gallery must exist (as `bpmt identify` requires), unless `create_gallery`: then a missing or
    empty folder is a new gallery, which the first enrolment creates."""

    def __init__(self, model: str | os.PathLike, gallery_dir: str | os.PathLike, create_gallery: bool = False,
                 backend: str = "auto", threads: int = 0, batch: int = 1, workers: int = 1):
        from ..engine.export import load_recognizer
        from ..engine.onnx_model import inference_network

        self.model, self.config, self.meta, self.fingerprint = load_recognizer(model)
        self.network = inference_network(model, self.model, self.config, self.fingerprint, backend, threads)
        # Concurrent callers' sequences share embedding calls (at most `workers` at once, `batch` sequences each).
        self._batcher = RequestBatcher(self._embed_now, max_sequences=batch, workers=workers)
        self.metric = self.config.eval.metric
        self.root = Path(gallery_dir)
        self._gallery: store.Gallery | None = None
        self._seen: tuple | None = None               # stat of the manifest last loaded
        self._failed: tuple[tuple, Exception] | None = None
        self._reload = threading.Lock()
        if self.root.exists() and not self.root.is_dir():
            raise store.GalleryError(f"{self.root}: exists and is not a folder")
        if self.root.is_dir() and not (self.root / store.MANIFEST).exists():
            foreign = sorted(p.name for p in self.root.iterdir() if not store.OWN_FILE.match(p.name))
            if foreign:
                raise store.GalleryError(f"{self.root}: not a gallery and not empty (holds {', '.join(foreign[:3])}); "
                                         "pick a gallery made by `bpmt enroll` (or, with --create-gallery, a new "
                                         "or empty folder)")
        if not create_gallery and not (self.root / store.MANIFEST).exists():
            try:
                store.read_manifest(self.root)          # raises what `bpmt identify` says of this folder
            except store.GalleryError as exc:
                raise store.GalleryError(f"{exc}, or start the service with --create-gallery to let the "
                                         "first POST /enroll create it") from None
        self.gallery()

    def _manifest_stat(self) -> tuple | None:
        try:
            st = os.stat(self.root / store.MANIFEST)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def gallery(self) -> store.Gallery | None:
        """The current gallery generation (None: nothing enrolled yet), reloaded if it changed."""
        seen = self._manifest_stat()
        if seen == self._seen:
            return self._gallery
        with self._reload:
            seen = self._manifest_stat()
            if seen == self._seen:
                return self._gallery
            if self._failed is not None and self._failed[0] == seen:
                failure = self._failed[1]               # same broken manifest: don't reload it per request
                raise type(failure)(*failure.args)
            try:
                gallery = None if seen is None else store.load_gallery(self.root)
                if gallery is not None:
                    store.check_model(gallery.manifest, self.fingerprint, self.metric)
            except store.GalleryError as exc:
                self._failed = (seen, exc)
                raise
            self._gallery, self._seen, self._failed = gallery, seen, None
            return gallery

    def embed(self, keypoints: np.ndarray, name: str) -> np.ndarray:
        """`(T, 17, 3)` keypoints -> `(1, E)` embedding."""
        return self.embed_sequences([query_sequence(keypoints, name)])

    def embed_sequences(self, sequences: list) -> np.ndarray:
        """`[Sequence]` -> `(N, E)` embeddings; blocks while the batcher's call slots are busy, then
        shares the next call with other waiting callers (`batching.RequestBatcher`)."""
        return self._batcher.embed(sequences)

    def _embed_now(self, sequences: list) -> np.ndarray:
        from ..data.corpus import PoseCorpus
        from ..evaluation.evaluate import embed_corpus

        return embed_corpus(self.model, self.config, PoseCorpus.from_sequences(sequences, source="request"),
                            network=self.network)

    def identify(self, embeddings: np.ndarray, names: list[str], top_k: int, threshold) -> tuple[store.Gallery, list]:
        from .identify import identify_embeddings

        gallery = self.gallery()
        if gallery is None or len(gallery) == 0:
            raise EmptyGallery(f"{self.root}: gallery is empty; enrol sequences first (POST /enroll)")
        return gallery, identify_embeddings(gallery, embeddings, names, top_k, threshold)

    def enroll(self, embedding: np.ndarray, identity: str, name: str) -> store.Change:
        change = store.enroll(self.root, self.fingerprint, self.metric, embedding, [identity], [name], source="http")
        self.gallery()
        return change


def query_sequence(keypoints: np.ndarray, name: str):
    """A `Sequence` of `(T, 17, 3)` request keypoints: consecutive frames; the crop size (unused by
    the model) is the keypoints' extent."""
    from ..data.sequence import Sequence

    T = len(keypoints)
    extent = np.maximum(keypoints[:, :, :2].max(axis=1), 1.0).astype(np.float32)    # (T, 2)
    return Sequence(name, "query", "http", "http", np.arange(T, dtype=np.int64), keypoints, extent)


def video_available() -> bool:
    """Whether video uploads can be processed (OpenCV and MediaPipe importable)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("cv2", "mediapipe"))
