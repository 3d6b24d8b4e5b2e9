"""Load test of the HTTP service: concurrent clients against `POST /identify` over loopback.

Starts `bpmt serve MODEL --gallery DIR` as a subprocess on a free 127.0.0.1 port, sends
`--requests` identifications from `--clients` threads (one httpx client and connection each, the
next request as soon as the previous answer arrived), and prints throughput, latency percentiles,
errors, and the server's resident memory (VmRSS from /proc/<pid>/status) after the warm-up, at
the middle and at the end, so that growth over thousands of requests shows.

    python benchmarks/http_load.py                                   # builds a tiny model + gallery
    python benchmarks/http_load.py --model runs/g3d --gallery gal/ --data /data/gait3d.cache
    python benchmarks/http_load.py --requests 2000 --clients 8 --frames 60 --threads 1
    python benchmarks/http_load.py --backend onnx --frames 100        # the network in ONNX Runtime

Without `--model`, a tiny model is built in a temporary folder first (`bpmt synth`, a short
`bpmt train` with configs/tiny.yaml, `bpmt enroll`; about a minute on 2 cores). Queries are the
first `--frames` frames of sequences of `--data` (default: the synthetic walkers), sent as JSON.
`--backend onnx` serves the network through ONNX Runtime: the tiny model is exported first
(`bpmt export --onnx`); a `--model` must have been exported already. The exit status is 1 if any
request failed. Nothing leaves the machine: the server listens on
127.0.0.1 only and the clients talk to it there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TINY_TRAIN = ["phase1.steps=10", "phase2.steps=10", "finetune.steps=20", "engine.threads=1", "engine.log_every=5",
              "finetune.identities_per_batch=4", "finetune.samples_per_identity=2", "data.test_max_len=40"]
WARMUP = 20


def bpmt(*argv: str) -> None:
    """Run a `bpmt` command in a subprocess; stop with its output if it fails."""
    result = subprocess.run([sys.executable, "-m", "bpmt.cli", *argv], check=False, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"bpmt {' '.join(argv[:2])} failed ({result.returncode}):\n{result.stderr[-2000:]}")


def build_tiny(folder: Path) -> tuple[Path, Path, Path]:
    """-> (model run folder, gallery, data) of a quickly trained tiny model on synthetic walkers."""
    data, run, gallery = folder / "synth", folder / "tiny", folder / "gallery"
    bpmt("synth", str(data), "--subjects", "8", "--sequences-per-subject", "3", "--seed", "1")
    bpmt("train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--data", str(data), "--out", str(run),
         *TINY_TRAIN)
    bpmt("enroll", str(run), "--gallery", str(gallery), "--data", str(data), "--workers", "1")
    return run, gallery, data


def query_bodies(data: Path, frames: int, count: int = 16) -> list[bytes]:
    """JSON bodies of up to `count` queries: the first `frames` frames of sequences of `data`."""
    from bpmt.data.source import open_data

    corpus, _ = open_data(data, workers=1)
    picks = np.linspace(0, len(corpus) - 1, min(count, len(corpus))).astype(int)
    return [json.dumps({"keypoints": np.asarray(corpus.keypoints_of(i))[:frames].tolist(), "top_k": 5}).encode()
            for i in picks]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model: Path, gallery: Path, args, log) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "bpmt.cli", "serve", str(model), "--gallery", str(gallery), "--host", "127.0.0.1",
               "--port", str(port), "--threads", str(args.threads), "--concurrency", str(args.concurrency),
               "--batch", str(args.batch), "--max-connections", str(max(64, 4 * args.clients)), "--no-access-log",
               "--backend", args.backend]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            sys.exit(f"bpmt serve exited with {process.returncode}:\n{log.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.25)
    process.kill()
    sys.exit("bpmt serve did not answer /health within 180 s")


def load(url: str, bodies: list[bytes], total: int, clients: int, on_half: Callable[[], None]) -> tuple[list[float], Counter, float]:
    """Send `total` requests from `clients` threads; -> (latencies in s, errors by kind, wall time)."""
    import httpx

    counter, lock = itertools.count(), threading.Lock()
    latencies: list[float] = []
    errors: Counter = Counter()
    half = total // 2

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60, headers={"content-type": "application/json"}) as session:
            while True:
                with lock:
                    i = next(counter)
                if i >= total:
                    return
                start = time.perf_counter()
                try:
                    reply = session.post("/identify", content=bodies[i % len(bodies)])
                    ok = reply.status_code == 200 and reply.json()["results"][0]["matches"]
                    kind = None if ok else f"HTTP {reply.status_code}"
                except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                    kind = type(exc).__name__
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if kind:
                        errors[kind] += 1
                    done = len(latencies)
                if done == half:
                    on_half()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="run folder or model.safetensors (default: build a tiny one)")
    parser.add_argument("--gallery", type=Path, help="gallery folder of MODEL (with --model)")
    parser.add_argument("--data", type=Path, help="where the query sequences come from (default: the synthetic walkers)")
    parser.add_argument("--requests", type=int, default=2000, help="requests in all (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=60, help="frames per query sequence (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=1, help="the server's parallel embeddings (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=16,
                        help="the server's dynamic batch, sequences per shared pass (`bpmt serve --batch`; 1 = off; "
                             "default: %(default)s)")
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                        help="what runs the server's network (`bpmt serve --backend`; default: %(default)s)")
    args = parser.parse_args()
    if (args.model is None) != (args.gallery is None) or (args.model is not None and args.data is None):
        parser.error("--model, --gallery and --data go together (or none of them: a tiny model is built)")
    if min(args.requests, args.clients, args.frames, args.threads, args.concurrency, args.batch) < 1:
        parser.error("--requests, --clients, --frames, --threads, --concurrency and --batch must be >= 1")

    with tempfile.TemporaryDirectory(prefix="bpmt-http-load-") as work, open(Path(work) / "serve.log", "w+") as log:
        if args.model is None:
            print("building a tiny model and gallery (synth, train, enroll) ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            args.model, args.gallery, args.data = build_tiny(Path(work))
            if args.backend == "onnx":
                bpmt("export", str(args.model), "--onnx")
            print(f"  done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        bodies = query_bodies(args.data, args.frames)
        process, url = start_server(args.model, args.gallery, args, log)
        try:
            _, warm_errors, _ = load(url, bodies, WARMUP, 1, lambda: None)
            rss = {"start": rss_mb(process.pid)}
            latencies, errors, wall = load(url, bodies, args.requests, args.clients,
                                           lambda: rss.setdefault("middle", rss_mb(process.pid)))
            rss["end"] = rss_mb(process.pid)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        errors += warm_errors
        ms = np.array(latencies) * 1000
        body_kb = np.mean([len(b) for b in bodies]) / 1024
        print(f"POST /identify over loopback: {args.requests} requests from {args.clients} clients, "
              f"{args.frames}-frame sequences ({body_kb:.0f} kB JSON each), server --threads {args.threads} "
              f"--concurrency {args.concurrency} --batch {args.batch} --backend {args.backend}, {os.cpu_count()} CPUs")
        print(f"throughput:  {args.requests / wall:.1f} req/s ({wall:.1f} s)")
        print(f"latency:     p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, "
              f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms")
        print(f"errors:      {sum(errors.values())}" + (f" ({dict(errors)})" if errors else ""))
        print(f"server RSS:  start {rss['start']:.1f} MB, middle {rss.get('middle', float('nan')):.1f} MB, "
              f"end {rss['end']:.1f} MB (growth {rss['end'] - rss['start']:+.1f} MB)")
        print(f"server exit: {process.returncode}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
