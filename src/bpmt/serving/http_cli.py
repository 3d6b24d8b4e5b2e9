"""CLI commands of the http feature (registered by bpmt.cli.build_parser):

    bpmt serve MODEL --gallery DIR [--create-gallery] [--host 127.0.0.1] [--port 8000] [--threads 1] [--concurrency 1] [--batch 16]
               [--max-body-mb 8] [--max-video-mb 64] [--max-frames 10000] [--min-frames N]
               [--max-connections 64] [--no-access-log]
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from ..cli import add_backend_arg
from ..cli import positive_int as _positive

# The service's defaults (`bpmt.serving.http_limits`), repeated here so that `bpmt --help` does not import
# FastAPI; tests/test_http.py checks that they agree.
DEFAULT_MAX_BODY_MB = 8.0
DEFAULT_MAX_VIDEO_MB = 64.0
DEFAULT_MAX_FRAMES = 10_000
DEFAULT_BATCH = 16


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port in 1-65535, got {value}")
    return value


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in MB, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a size in MB > 0, got {text}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    from .http import serve
    from .http_limits import MB, Limits

    limits = Limits(max_body_bytes=max(1, int(args.max_body_mb * MB)),
                    max_video_bytes=max(1, int(args.max_video_mb * MB)), max_frames=args.max_frames,
                    min_frames=args.min_frames, concurrency=args.concurrency, batch=args.batch)
    serve(args.model, args.gallery, host=args.host, port=args.port, limits=limits, threads=args.threads,
          access_log=not args.no_access_log, max_connections=args.max_connections,
          announce=lambda line: print(line, file=sys.stderr, flush=True), create_gallery=args.create_gallery,
          backend=args.backend)
    return 0


def register(sub) -> None:
    """Add this feature's subcommands to the `bpmt` parser."""
    from ..engine.pretrained import DEFAULT_MODEL

    p = sub.add_parser("serve", help="HTTP API: POST /enroll, POST /identify, GET /gallery, GET /health",
                       description="Serve a recogniser and its gallery over HTTP (JSON; schema at /openapi.json, "
                                   "interactive docs at /docs). Keypoints are COCO-17 [x, y, confidence] in "
                                   "person-crop pixels, as in Gait3D.")
    p.add_argument("model", metavar="MODEL", nargs="?", default=DEFAULT_MODEL,
                   help="run folder of `bpmt train`, its exported model.safetensors, or a shipped model's name "
                        f"(`bpmt models`; default: {DEFAULT_MODEL})")
    p.add_argument("--gallery", required=True, metavar="DIR",
                   help="gallery folder made by `bpmt enroll` (a missing one is an error, as for `bpmt identify`)")
    p.add_argument("--create-gallery", action="store_true",
                   help="start with a new, empty gallery if DIR does not exist or is an empty folder; "
                        "the first POST /enroll creates it (until then POST /identify answers 409)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="port (default: %(default)s)")
    p.add_argument("--threads", type=_positive, default=min(4, os.cpu_count() or 1),
                   help="torch and FAISS threads (default: %(default)s)")
    p.add_argument("--concurrency", type=_positive, default=1,
                   help="embedding calls run at the same time; more requests wait (default: %(default)s)")
    p.add_argument("--batch", type=_positive, default=DEFAULT_BATCH,
                   help="requests waiting for a free call are embedded together in one, up to this many sequences; "
                        "1 = one request per call (default: %(default)s)")
    p.add_argument("--max-body-mb", type=_megabytes, default=DEFAULT_MAX_BODY_MB,
                   help="largest JSON request body, in MB (default: %(default)s)")
    p.add_argument("--max-video-mb", type=_megabytes, default=DEFAULT_MAX_VIDEO_MB,
                   help="largest video upload, in MB (default: %(default)s)")
    p.add_argument("--max-frames", type=_positive, default=DEFAULT_MAX_FRAMES,
                   help="longest pose sequence, in frames (default: %(default)s)")
    p.add_argument("--min-frames", type=_positive,
                   help="shortest pose sequence (default: the model's minimum, 2 x frames_per_token)")
    p.add_argument("--max-connections", type=_positive, default=64,
                   help="open connections and requests at once; beyond, 503 (default: %(default)s)")
    p.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    add_backend_arg(p)
    p.set_defaults(func=cmd_serve)
