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
at most `Limits.concurrency` embedding calls at a time (torch's own thread count is the caller's:
`serve` sets it). Requests that wait for a free call share the next one, up to `Limits.batch`
sequences (`Service.embed_sequences`, `batching.RequestBatcher`: one call over many chunks costs
less than one per request; a lone request runs at once). An enrolment embeds under that limit,
then commits through the gallery's atomic write and lock outside it, so identifications go on
while an enrolment waits for the lock.
Every request first checks whether `gallery.json` changed (one `stat`) and reloads the gallery
if so: enrolments made by other processes (`bpmt enroll`) are picked up on the next request.

Status codes: 400 not JSON, 404 no such route, 405 wrong method, 409 gallery of another model or
empty gallery, 413 too large, 415 wrong content type, 422 invalid content, 501 video input not
installed, 503 gallery unreadable. Every error body is `{"detail": "<what is wrong, and where>"}`;
bad input never gives a 500. (Beyond `bpmt serve --max-connections`, uvicorn itself answers 503 in
plain text.)
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException

from ..errors import BPMTError, DataError
from ..text import plural
from . import gallery as store
from .http_errors import install_error_handlers
from .http_limits import MAX_TOP_K, BodyLimit, Limits, model_min_frames
from .http_requests import copy_upload, decode_json, form_options, media_type, pose, require_json, validate
from .http_schemas import (ENROLL_BODY, ERRORS, IDENTIFY_BODY, IDENTIFY_ERRORS, EnrollRequest, EnrollResponse,
                           GalleryResponse, HealthResponse, IdentifyRequest, IdentifyResponse, openapi_with_requests)
from .http_service import Service, video_available

InThread = Callable[..., Awaitable[Any]]     # in_thread(function, *args, limiter="embed" | "video" | None)


def create_app(model: str | os.PathLike, gallery_dir: str | os.PathLike, limits: Limits = Limits(),
               create_gallery: bool = False, backend: str = "auto", threads: int = 0) -> FastAPI:
    """The service for recogniser `model` (run folder or .safetensors) and gallery folder
    `gallery_dir` (with `create_gallery`, a missing or empty folder is created by the first
    enrolment). Raises `BPMTError` if either is unusable, e.g. a gallery of another model.
    `backend`, `threads`: what runs the network (`engine.onnx_model.inference_network`)."""
    from .. import __version__

    service = Service(model, gallery_dir, create_gallery, backend, threads, limits.batch, limits.concurrency)
    min_frames = limits.min_frames or model_min_frames(service.config)
    if min_frames > limits.max_frames:
        raise BPMTError(f"--max-frames {limits.max_frames} is below the minimum sequence length {min_frames}")
    video = video_available()
    runtime: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio

        # Callers wait inside the batcher in their own threads: a limiter of their own, so that they
        # never hold the shared pool's threads (/health, parsing and searching go on meanwhile).
        runtime["embed"] = anyio.CapacityLimiter(limits.concurrency * (limits.batch + 1))
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
              openapi_extra={"requestBody": ENROLL_BODY})
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

    @app.post("/identify", response_model=IdentifyResponse, responses=IDENTIFY_ERRORS,
              summary="Identify a walker from a pose sequence or a video",
              openapi_extra={"requestBody": IDENTIFY_BODY})
    async def identify(request: Request) -> dict:
        """Rank the gallery's identities for a pose sequence (JSON) or for every walker tracked in
        an uploaded video (multipart, field `video`). Distances use the model's metric."""
        if media_type(request) == "multipart/form-data":
            return await identify_video(request, service, limits, in_thread)
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

    @app.get("/gallery", response_model=GalleryResponse, responses={503: ERRORS[503], 409: ERRORS[409]},
             summary="List the enrolled identities")
    async def gallery() -> dict:
        return gallery_listing(service, await in_thread(service.gallery))

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

    app.openapi = lambda: openapi_with_requests(app)
    return app


async def identify_video(request: Request, service: Service, limits: Limits, in_thread: InThread) -> dict:
    """POST /identify with a multipart video upload: every tracked walker identified."""
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


def identification_response(gallery: store.Gallery, results: list, source: str, top_k: int) -> dict:
    manifest = gallery.manifest
    return {"generation": manifest.generation, "model": manifest.fingerprint, "metric": manifest.metric,
            "source": source, "top_k": top_k, "results": [r.to_dict() for r in results]}


def gallery_listing(service: Service, current: store.Gallery | None) -> dict:
    """GET /gallery: the identities of the `current` gallery generation and their sequence counts."""
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


# ---------------------------------------------------------------------------------------------
# Running it


def listening_socket(host: str, port: int):
    """A TCP socket bound to `host:port` (a clear `BPMTError` if it cannot be), for uvicorn to listen on.

    `IPPROTO_TCP` is named explicitly: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    sockets whose `proto` says TCP, and accepted connections inherit the listening socket's. Created
    with proto 0, every answer on a kept-alive connection waited for the client's delayed ACK
    (~40 ms on Linux) before its body went out: 64 ms instead of 25 ms per `/identify` (docs/benchmarks.md).
    """
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BPMTError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    return sock


def serve(model: str | os.PathLike, gallery_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits = Limits(), threads: int = 1, access_log: bool = True,
          max_connections: int | None = None, announce: Callable[[str], None] = print,
          create_gallery: bool = False, backend: str = "auto") -> None:
    """Load, bind `host:port`, serve until interrupted (SIGINT / SIGTERM finish open requests).
    `threads` bounds torch's, ONNX Runtime's and FAISS's threads; `max_connections`: beyond it, 503;
    `create_gallery`, `backend`: see `create_app`."""
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
    sock = listening_socket(host, port)
    service: Service = app.state.service
    current = service.gallery()
    held = f"generation {current.manifest.generation}, {plural(len(current), 'sequence')}" if current else "empty"
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
