"""What one request to `bpmt serve` may ask for, and the guard that keeps oversized bodies out.

`Limits` holds the bounds; `BodyLimit` (ASGI middleware) enforces the body size: from
`Content-Length` before the body is read, and again while it streams in (chunked or lying
clients), so an oversized body is never buffered or parsed (413). An oversized body that is
already on its way is read and discarded, up to `DRAIN_BYTES` and `DRAIN_SECONDS`, before the 413
is sent, so that clients which send the whole body before reading the answer receive it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import BPMTError

MB = 1 << 20
DEFAULT_MAX_BODY_MB = 8.0
DEFAULT_MAX_VIDEO_MB = 64.0
DEFAULT_MAX_FRAMES = 10_000
DEFAULT_BATCH = 16                   # sequences of waiting requests embedded in one call (batching.py)
MAX_TOP_K = 100
DRAIN_BYTES = 64 * MB
DRAIN_SECONDS = 10.0


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many embedding calls run at once (`concurrency`) over
    how many waiting sequences each (`batch`). `min_frames=None`: the model's minimum (`model_min_frames`)."""

    max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * MB)
    max_video_bytes: int = int(DEFAULT_MAX_VIDEO_MB * MB)
    max_frames: int = DEFAULT_MAX_FRAMES
    min_frames: int | None = None
    concurrency: int = 1
    batch: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        for key in ("max_body_bytes", "max_video_bytes", "max_frames", "concurrency", "batch"):
            if getattr(self, key) < 1:
                raise BPMTError(f"limit {key} must be >= 1, got {getattr(self, key)}")
        if self.min_frames is not None and not 1 <= self.min_frames <= self.max_frames:
            raise BPMTError(f"limit min_frames must lie in [1, max_frames={self.max_frames}], got {self.min_frames}")


def model_min_frames(config) -> int:
    """Fewest frames the service accepts by default: two tokens' worth (the shortest clip a config
    may train on, `2 x model.frames_per_token`)."""
    return 2 * config.model.frames_per_token


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
