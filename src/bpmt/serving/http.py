"""The HTTP service (`bpmt serve`): enrol and identify walkers over a JSON API.

    POST /enroll     {"identity": "0042", "name": optional, "keypoints": [[[x, y, c] * 17] * T]}
    POST /identify   {"keypoints": ..., "top_k": 5, "threshold": optional, "name": optional}
                     or multipart/form-data with a `video` file (needs the `video` extra)
    GET  /gallery    identities and sequence counts of the gallery
    GET  /health     model, gallery generation, limits
    GET  /docs, /openapi.json   the schema of all of the above

Keypoints are COCO-17 `(x, y, confidence)` in person-crop pixel coordinates, as in Gait3D's
`2D_Poses` files; the model normalises them (neck-centred, torso length 1), so any pixel scale
works. Results mirror `bpmt identify --json`.

Limits (`Limits`), all checked before any work: the body size from `Content-Length` before the
body is read, and again while it streams in (chunked or lying clients), so an oversized body is
never buffered or parsed (413); then JSON syntax (400), the body's fields (422), the frame count
(too many: 413, too few: 422) and every value (422, naming the frame and joint). An oversized body
that is already on its way is read and discarded, up to `DRAIN_BYTES` and `DRAIN_SECONDS`, before
the 413 is sent, so that clients which send the whole body before reading the answer receive it.

Concurrency: the event loop only routes; parsing, embedding and searching run in worker threads,
at most `Limits.concurrency` embeddings at a time (torch's own thread count is the caller's:
`serve` sets it). An enrolment embeds under that limit, then commits through the gallery's
atomic write and lock outside it, so identifications go on while an enrolment waits for the lock.
Every request first checks whether `gallery.json` changed (one `stat`) and reloads the gallery
if so: enrolments made by other processes (`bpmt enroll`) are picked up on the next request.

Status codes: 400 not JSON, 404 no such route, 405 wrong method, 409 gallery of another model or
empty gallery, 413 too large, 415 wrong content type, 422 invalid content, 501 video input not
installed, 503 gallery unreadable. Every error body is `{"detail": "<what is wrong, and where>"}`;
bad input never gives a 500. (Beyond `bpmt serve --max-connections`, uvicorn itself answers 503 in
plain text.)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema
from starlette.exceptions import HTTPException

from ..errors import BPMTError, DataError
from ..skeleton import NUM_JOINTS
from . import gallery as store

MB = 1 << 20
DEFAULT_MAX_BODY_MB = 8.0
DEFAULT_MAX_VIDEO_MB = 64.0
DEFAULT_MAX_FRAMES = 10_000
MAX_TOP_K = 100
DRAIN_BYTES = 64 * MB
DRAIN_SECONDS = 10.0
JSON_TYPES = ("application/json",)
ROUTES = "POST /enroll, POST /identify, GET /gallery, GET /health, GET /docs, GET /openapi.json"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. `min_frames=None`: the model's minimum (`model_min_frames`)."""

    max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * MB)
    max_video_bytes: int = int(DEFAULT_MAX_VIDEO_MB * MB)
    max_frames: int = DEFAULT_MAX_FRAMES
    min_frames: int | None = None
    concurrency: int = 1

    def __post_init__(self) -> None:
        for key in ("max_body_bytes", "max_video_bytes", "max_frames", "concurrency"):
            if getattr(self, key) < 1:
                raise BPMTError(f"limit {key} must be >= 1, got {getattr(self, key)}")
        if self.min_frames is not None and not 1 <= self.min_frames <= self.max_frames:
            raise BPMTError(f"limit min_frames must lie in [1, max_frames={self.max_frames}], got {self.min_frames}")


def model_min_frames(config) -> int:
    """Fewest frames the service accepts by default: two tokens' worth (the shortest clip a config
    may train on, `2 x model.frames_per_token`)."""
    return 2 * config.model.frames_per_token


# ---------------------------------------------------------------------------------------------
# Request and response bodies (the OpenAPI schema)

KEYPOINTS_DOC = ("the pose sequence: T frames, each 17 COCO-17 joints (nose, eyes, ears, shoulders, elbows, "
                 "wrists, hips, knees, ankles) as [x, y, confidence]; x and y in person-crop pixels as in Gait3D "
                 "(the model normalises them). Every value a finite number with |value| <= 1e6; "
                 "T between the server's min_frames and max_frames (GET /health)")
KEYPOINTS_SCHEMA = {
    "type": "array",
    "items": {"type": "array", "minItems": NUM_JOINTS, "maxItems": NUM_JOINTS,
              "items": {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "number"}}},
}
# Validated by `bpmt.data.io.parse_pose_json` (messages name the frame and joint), not by pydantic.
Keypoints = Annotated[Any, WithJsonSchema(KEYPOINTS_SCHEMA)]

Label = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class EnrollRequest(BaseModel):
    """One pose sequence of a known walker, to store in the gallery."""

    model_config = ConfigDict(extra="forbid", strict=True)
    identity: Label = Field(description="who walks (any label without control characters)")
    name: Label | None = Field(None, description="sequence name, the gallery's key: enrolling a name already "
                                                 "present replaces that entry (default: a new unique name)")
    keypoints: Keypoints = Field(description=KEYPOINTS_DOC)


class IdentifyRequest(BaseModel):
    """One pose sequence of an unknown walker."""

    model_config = ConfigDict(extra="forbid", strict=True)
    keypoints: Keypoints = Field(description=KEYPOINTS_DOC)
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="identities to rank")
    threshold: float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="decision threshold (a distance): the best identity is `unknown` above it. Absent: the "
                    "gallery's calibrated threshold (`bpmt calibrate --save-threshold`); null: none")
    name: Label | None = Field(None, description="label of the query in the answer (default: `query`)")


class ErrorResponse(BaseModel):
    detail: str = Field(description="what is wrong, and where (field, frame, joint)")


class MatchOut(BaseModel):
    rank: int
    identity: str
    distance: float = Field(description="best distance over the identity's enrolled sequences (model metric)")
    sequence: str = Field(description="the enrolled sequence that gave `distance`")


class IdentificationOut(BaseModel):
    query: str
    identity: str | None = Field(description="decided identity; null when unknown")
    unknown: bool = Field(description="true when the best distance is above the threshold")
    distance: float | None = Field(description="the best identity's distance")
    threshold: float | None
    matches: list[MatchOut] = Field(description="best first, at most top_k identities")


class IdentifyResponse(BaseModel):
    generation: int = Field(description="gallery generation searched")
    model: str = Field(description="SHA-256 of the model weights")
    metric: Literal["euc", "cos"]
    source: str
    top_k: int
    results: list[IdentificationOut] = Field(description="one per query sequence (per tracked walker for videos)")


class EnrollResponse(BaseModel):
    identity: str
    sequence: str
    frames: int
    generation: int = Field(description="gallery generation after the enrolment")
    added: int
    replaced: int
    sequences: int = Field(description="sequences in the gallery")
    identities: int = Field(description="identities in the gallery")
    index: str


class GalleryIdentity(BaseModel):
    identity: str
    sequences: int
    enrolled: str = Field(description="last enrolment time (UTC)")


class GalleryResponse(BaseModel):
    gallery: str
    generation: int | None = Field(description="null while nothing is enrolled")
    model: str
    metric: str
    sequences: int
    threshold: float | None
    index: str | None
    updated: str | None
    identities: list[GalleryIdentity]


class LimitsOut(BaseModel):
    max_body_bytes: int
    max_video_bytes: int
    max_frames: int
    min_frames: int
    concurrency: int
    max_top_k: int


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model: str
    metric: str
    gallery: str
    generation: int | None
    sequences: int
    identities: int
    video: bool = Field(description="whether video uploads can be processed (OpenCV and MediaPipe importable)")
    limits: LimitsOut


# ---------------------------------------------------------------------------------------------
# The loaded model and the gallery it serves


class Service:
    """A recogniser plus its gallery folder; the gallery is reloaded whenever `gallery.json` changes.

    The gallery must exist (as `bpmt identify` requires), unless `create_gallery`: then a missing or
    empty folder is a new gallery, which the first enrolment creates."""

    def __init__(self, model: str | os.PathLike, gallery_dir: str | os.PathLike, create_gallery: bool = False,
                 backend: str = "auto", threads: int = 0):
        from ..engine.export import load_recognizer
        from ..engine.onnx_model import inference_network

        self.model, self.config, self.meta, self.fingerprint = load_recognizer(model)
        self.network = inference_network(model, self.model, self.config, self.fingerprint, backend, threads)
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
        """`[Sequence]` -> `(N, E)` embeddings."""
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


class EmptyGallery(store.GalleryError):
    """Identification asked of a gallery that holds nothing."""


def query_sequence(keypoints: np.ndarray, name: str):
    """A `Sequence` of `(T, 17, 3)` request keypoints: consecutive frames; the crop size (unused by
    the model) is the keypoints' extent."""
    from ..data.io import Sequence

    T = len(keypoints)
    extent = np.maximum(keypoints[:, :, :2].max(axis=1), 1.0).astype(np.float32)    # (T, 2)
    return Sequence(name, "query", "http", "http", np.arange(T, dtype=np.int64), keypoints, extent)


def video_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("cv2", "mediapipe"))


# ---------------------------------------------------------------------------------------------
# Body size limit (ASGI middleware)


class BodyLimit:
    """Refuse request bodies above `limit_of(scope)` bytes with 413: from `Content-Length` before
    reading anything, and while the body streams in. The rest of an oversized body is read and
    discarded (bounded) first, unless the client waits for `100 Continue`."""

    def __init__(self, app, limit_of: Callable[[dict], int]):
        self.app, self.limit_of = app, limit_of

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope)
        headers = {key.lower(): value for key, value in scope.get("headers", [])}
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            if headers.get(b"expect", b"").lower() != b"100-continue" and int(declared) <= DRAIN_BYTES:
                await drain(receive, 0)
            response = JSONResponse({"detail": too_large(f"{int(declared):,} bytes (Content-Length)", limit)}, 413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if message.get("more_body", False):
                        await drain(receive, received)
                    raise HTTPException(413, too_large(f"more than {limit:,} bytes", limit))
            return message

        await self.app(scope, limited_receive, send)


def too_large(size: str, limit: int) -> str:
    return f"request body too large: {size}, at most {limit:,} bytes ({limit / MB:g} MB) allowed"


async def drain(receive, received: int) -> None:
    """Read and drop the rest of a request body, up to `DRAIN_BYTES` in all and `DRAIN_SECONDS`."""
    import anyio

    with anyio.move_on_after(DRAIN_SECONDS):
        while received <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


# ---------------------------------------------------------------------------------------------
# Reading requests


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_json(request: Request, also: str = "") -> None:
    kind = media_type(request)
    if kind not in JSON_TYPES and not kind.endswith("+json"):
        raise HTTPException(415, f"{request.url.path}: Content-Type must be application/json{also}, "
                                 f"got {kind or 'none'}")


def decode_json(body: bytes) -> dict:
    """Request body -> its JSON object (400 if not JSON, 422 if not an object)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:   # JSONDecodeError, UnicodeDecodeError, int too long, nesting
        raise HTTPException(400, f"request body is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(value, dict):
        from ..data.io import _json_kind

        raise HTTPException(422, f"request body: expected a JSON object with \"keypoints\", found {_json_kind(value)}")
    return value


def validate(model: type[BaseModel], value: dict) -> BaseModel:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise HTTPException(422, "request body: " + describe_errors(exc.errors())) from None


def describe_errors(errors: list[dict]) -> str:
    """Pydantic / FastAPI validation errors -> one line: `field: problem; field: problem`."""
    parts = []
    for error in errors[:3]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def pose(keypoints: Any, limits: Limits, min_frames: int) -> np.ndarray:
    """The request's `keypoints` -> `(T, 17, 3)` float32; too many frames is a 413, the rest 422."""
    from ..data.io import _json_kind, parse_pose_json

    if not isinstance(keypoints, list):            # parse_pose_json would read a string as JSON text
        raise HTTPException(422, f"request body: keypoints: expected a list of frames, each {NUM_JOINTS} "
                                 f"[x, y, confidence] joints; found {_json_kind(keypoints)}")
    if len(keypoints) > limits.max_frames:
        raise HTTPException(413, f"request body: keypoints: {len(keypoints):,} frames, "
                                 f"at most {limits.max_frames:,} allowed")
    try:
        return parse_pose_json(keypoints, "request body: keypoints", min_frames=min_frames,
                               max_frames=limits.max_frames)
    except DataError as exc:
        raise HTTPException(422, str(exc)) from None


def identification_response(gallery: store.Gallery, results: list, source: str, top_k: int) -> dict:
    manifest = gallery.manifest
    return {"generation": manifest.generation, "model": manifest.fingerprint, "metric": manifest.metric,
            "source": source, "top_k": top_k, "results": [r.to_dict() for r in results]}


# ---------------------------------------------------------------------------------------------
# The application

ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in {
    400: "body is not valid JSON", 409: "gallery of another model, or empty gallery",
    413: "body, upload or sequence too large", 415: "wrong Content-Type",
    422: "invalid field, shape or value (the detail names the frame and joint)",
    503: "gallery files unreadable"}.items()}
JSON_BODY = {"required": True}


def create_app(model: str | os.PathLike, gallery_dir: str | os.PathLike, limits: Limits = Limits(),
               create_gallery: bool = False, backend: str = "auto", threads: int = 0) -> FastAPI:
    """The service for recogniser `model` (run folder or .safetensors) and gallery folder
    `gallery_dir` (with `create_gallery`, a missing or empty folder is created by the first
    enrolment). Raises `BPMTError` if either is unusable, e.g. a gallery of another model.
    `backend`, `threads`: what runs the network (`engine.onnx_model.inference_network`)."""
    from .. import __version__

    service = Service(model, gallery_dir, create_gallery, backend, threads)
    min_frames = limits.min_frames or model_min_frames(service.config)
    if min_frames > limits.max_frames:
        raise BPMTError(f"--max-frames {limits.max_frames} is below the minimum sequence length {min_frames}")
    video = video_available()
    runtime: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio

        runtime["embed"] = anyio.CapacityLimiter(limits.concurrency)
        runtime["video"] = anyio.CapacityLimiter(1)
        yield

    async def in_thread(function: Callable, *args, limiter: str | None = None):
        import anyio

        return await anyio.to_thread.run_sync(function, *args, limiter=runtime[limiter] if limiter else None)

    app = FastAPI(title="BPMT gait recognition", version=__version__, lifespan=lifespan,
                  description=__doc__.split("\n\n", 1)[1])
    app.state.service, app.state.limits = service, limits

    def limit_of(scope: dict) -> int:
        headers = dict(scope.get("headers", []))
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")
        return limits.max_video_bytes if multipart and scope.get("path") == "/identify" else limits.max_body_bytes

    app.add_middleware(BodyLimit, limit_of=limit_of)
    install_error_handlers(app)

    @app.post("/enroll", response_model=EnrollResponse, responses=ERRORS, summary="Enrol one pose sequence",
              openapi_extra={"requestBody": {**JSON_BODY, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/EnrollRequest"}}}}})
    async def enroll(request: Request) -> dict:
        """Embed a pose sequence and store it in the gallery under `identity` (atomic: concurrent
        readers see the gallery before or after, never half of it)."""
        require_json(request)
        body = await request.body()

        def parse() -> tuple[EnrollRequest, np.ndarray]:
            fields = validate(EnrollRequest, decode_json(body))
            return fields, pose(fields.keypoints, limits, min_frames)

        fields, keypoints = await in_thread(parse)
        await in_thread(service.gallery)                 # 409 for another model's gallery, before the work
        name = fields.name or f"{fields.identity}-http-{uuid.uuid4().hex[:12]}"
        embedding = await in_thread(service.embed, keypoints, name, limiter="embed")
        change = await in_thread(service.enroll, embedding, fields.identity, name)
        manifest = change.manifest
        return {"identity": fields.identity, "sequence": name, "frames": len(keypoints),
                "generation": manifest.generation, "added": change.added, "replaced": change.replaced,
                "sequences": len(manifest.entries), "identities": len(manifest.identities),
                "index": manifest.index_tag}

    @app.post("/identify", response_model=IdentifyResponse, responses={**ERRORS, 501: {
                  "model": ErrorResponse, "description": "video upload without the video extra installed"}},
              summary="Identify a walker from a pose sequence or a video",
              openapi_extra={"requestBody": {**JSON_BODY, "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/IdentifyRequest"}},
                  "multipart/form-data": {"schema": {
                      "type": "object", "required": ["video"], "properties": {
                          "video": {"type": "string", "format": "binary", "description": "the video file"},
                          "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 5},
                          "threshold": {"type": "number", "minimum": 0,
                                        "description": "as in JSON; absent: the gallery's; `none`: no threshold"},
                      }}}}}})
    async def identify(request: Request) -> dict:
        """Rank the gallery's identities for a pose sequence (JSON) or for every walker tracked in
        an uploaded video (multipart, field `video`). Distances use the model's metric."""
        if media_type(request) == "multipart/form-data":
            return await identify_video(request)
        require_json(request, also=" (or multipart/form-data with a video)")
        body = await request.body()

        def parse() -> tuple[IdentifyRequest, np.ndarray]:
            fields = validate(IdentifyRequest, decode_json(body))
            return fields, pose(fields.keypoints, limits, min_frames)

        fields, keypoints = await in_thread(parse)
        threshold = fields.threshold if "threshold" in fields.model_fields_set else "gallery"
        name = fields.name or "query"
        await in_thread(service.gallery)               # reload (or 409) before embedding
        embedding = await in_thread(service.embed, keypoints, name, limiter="embed")
        gallery, results = await in_thread(service.identify, embedding, [name], fields.top_k, threshold)
        return identification_response(gallery, results, "keypoints", fields.top_k)

    async def identify_video(request: Request) -> dict:
        try:
            from .video import VideoDependencyError, extract_sequences, native_stderr_silenced
        except ImportError as exc:
            raise HTTPException(501, f"video input is not available on this server ({exc}); send pose keypoints "
                                     "as JSON, or install the video extra: pip install 'bpmt[video]' && "
                                     "pip install --no-deps mediapipe==0.10.21") from None
        form = await request.form(max_files=1, max_fields=4)
        try:
            upload = form.get("video")
            if upload is None or isinstance(upload, str):
                raise HTTPException(422, "multipart body: field `video` (the video file) is missing")
            top_k, threshold = form_options(form)
            label = upload.filename or "upload"
            with tempfile.TemporaryDirectory(prefix="bpmt-upload-") as folder:
                path = Path(folder) / ("upload" + Path(label).suffix[:10])
                await in_thread(copy_upload, upload.file, path)

                def extract() -> list:
                    # drop MediaPipe's native log lines, as the CLI does; the server's own lines go on
                    with native_stderr_silenced(keep_other_lines=True):
                        return extract_sequences(str(path))

                try:
                    sequences = await in_thread(extract, limiter="video")
                except VideoDependencyError as exc:
                    raise HTTPException(501, f"video input is not available on this server: {exc}") from None
                except DataError as exc:                # name the upload, not the server's temporary file
                    raise HTTPException(422, str(exc).replace(str(path), label)) from None
            if not sequences:
                raise HTTPException(422, f"{label}: no walking person found in the video")
            longest = max(len(s) for s in sequences)
            if longest > limits.max_frames:
                raise HTTPException(413, f"{label}: a tracked walker spans {longest:,} frames, "
                                         f"at most {limits.max_frames:,} allowed")
            await in_thread(service.gallery)
            embeddings = await in_thread(service.embed_sequences, sequences, limiter="embed")
            gallery, results = await in_thread(service.identify, embeddings, [s.name for s in sequences], top_k,
                                               threshold)
            return identification_response(gallery, results, label, top_k)
        finally:
            await form.close()

    @app.get("/gallery", response_model=GalleryResponse, responses={503: ERRORS[503], 409: ERRORS[409]},
             summary="List the enrolled identities")
    async def gallery() -> dict:
        current = await in_thread(service.gallery)
        if current is None:
            return {"gallery": str(service.root), "generation": None, "model": service.fingerprint,
                    "metric": service.metric, "sequences": 0, "threshold": None, "index": None, "updated": None,
                    "identities": []}
        manifest = current.manifest
        rows: dict[str, dict] = {}
        for entry in manifest.entries:
            row = rows.setdefault(entry.identity, {"identity": entry.identity, "sequences": 0, "enrolled": ""})
            row["sequences"] += 1
            row["enrolled"] = max(row["enrolled"], entry.enrolled)
        return {"gallery": str(manifest.root), "generation": manifest.generation, "model": manifest.fingerprint,
                "metric": manifest.metric, "sequences": len(manifest.entries), "threshold": manifest.threshold,
                "index": manifest.index_tag, "updated": manifest.updated,
                "identities": [rows[key] for key in sorted(rows)]}

    @app.get("/health", response_model=HealthResponse, responses={503: ERRORS[503], 409: ERRORS[409]},
             summary="Liveness, model and gallery")
    async def health() -> dict:
        current = await in_thread(service.gallery)
        manifest = current.manifest if current else None
        return {"status": "ok", "model": service.fingerprint, "metric": service.metric, "gallery": str(service.root),
                "generation": manifest.generation if manifest else None,
                "sequences": len(manifest.entries) if manifest else 0,
                "identities": len(manifest.identities) if manifest else 0, "video": video,
                "limits": {**asdict(limits), "min_frames": min_frames, "max_top_k": MAX_TOP_K}}

    app.openapi = lambda: openapi_with_requests(app, (EnrollRequest, IdentifyRequest))
    return app


def copy_upload(source, path: Path) -> None:
    source.seek(0)
    with open(path, "wb") as handle:
        shutil.copyfileobj(source, handle, MB)


def form_options(form) -> tuple[int, Any]:
    """`top_k` and `threshold` of a multipart form (strings), checked like the JSON fields."""
    raw_k, raw_threshold = form.get("top_k", "5"), form.get("threshold")
    try:
        top_k = int(raw_k)
    except (TypeError, ValueError):
        raise HTTPException(422, f"multipart body: top_k: expected a whole number, got {str(raw_k)[:30]!r}") from None
    if not 1 <= top_k <= MAX_TOP_K:
        raise HTTPException(422, f"multipart body: top_k: must lie in [1, {MAX_TOP_K}], got {top_k}")
    if raw_threshold is None:
        return top_k, "gallery"
    if str(raw_threshold).strip().lower() in ("none", "null"):
        return top_k, None
    try:
        threshold = float(raw_threshold)
    except (TypeError, ValueError):
        threshold = float("nan")
    if not (math.isfinite(threshold) and threshold >= 0):
        raise HTTPException(422, f"multipart body: threshold: expected a finite distance >= 0 or `none`, "
                                 f"got {str(raw_threshold)[:30]!r}")
    return top_k, threshold


def install_error_handlers(app: FastAPI) -> None:
    """Every error as `{"detail": "..."}` with a status that says whose fault it is."""

    def error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
        printable = detail.encode("utf-8", "backslashreplace").decode("utf-8")    # details may echo client text
        return JSONResponse({"detail": printable}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path} (endpoints: {ROUTES})"
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.url.path} does not take {request.method} (endpoints: {ROUTES})"
        return error(exc.status_code, str(detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "request: " + describe_errors(list(exc.errors())))

    @app.exception_handler(store.ModelMismatchError)
    async def mismatch(request: Request, exc: store.ModelMismatchError) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(EmptyGallery)
    async def empty(request: Request, exc: EmptyGallery) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(store.GalleryError)
    async def unreadable(request: Request, exc: store.GalleryError) -> JSONResponse:
        return error(503, f"gallery unavailable: {exc}")

    @app.exception_handler(BPMTError)
    async def bad_input(request: Request, exc: BPMTError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error ({type(exc).__name__}); see the server log")


def openapi_with_requests(app: FastAPI, models: tuple[type[BaseModel], ...]) -> dict:
    """FastAPI's schema plus the request models the endpoints read themselves (they parse their
    bodies by hand, to check size and content type first and to name frames and joints in errors)."""
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        app.openapi_schema = schema
    return app.openapi_schema


# ---------------------------------------------------------------------------------------------
# Running it


def serve(model: str | os.PathLike, gallery_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits = Limits(), threads: int = 1, access_log: bool = True,
          max_connections: int | None = None, announce: Callable[[str], None] = print,
          create_gallery: bool = False, backend: str = "auto") -> None:
    """Load, bind `host:port`, serve until interrupted (SIGINT / SIGTERM finish open requests).
    `threads` bounds torch's, ONNX Runtime's and FAISS's threads; `max_connections`: beyond it, 503;
    `create_gallery`, `backend`: see `create_app`."""
    import socket

    import torch
    import uvicorn

    from ..engine.onnx_model import backend_name

    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except (ImportError, AttributeError):
        pass
    app = create_app(model, gallery_dir, limits, create_gallery, backend, threads)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BPMTError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    service: Service = app.state.service
    current = service.gallery()
    held = f"generation {current.manifest.generation}, {len(current)} sequences" if current else "empty"
    network = {"onnx": "ONNX Runtime", "torch": "torch"}[backend_name(service.network)]
    announce(f"bpmt serve: model {service.fingerprint[:12]} ({network}), gallery {service.root} ({held}) "
             f"on http://{host}:{port} (API docs at /docs)")
    config = uvicorn.Config(app, log_level="info", access_log=access_log, limit_concurrency=max_connections,
                            timeout_graceful_shutdown=10)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:           # uvicorn re-raises SIGINT after its graceful shutdown: a normal stop
        pass
    announce("bpmt serve: stopped")
