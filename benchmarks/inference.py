"""Embedding speed of the torch network against its ONNX export in ONNX Runtime, side by side.

Times the real test path (`evaluation.embed_corpus`: normalisation, chunks of `data.test_max_len`,
flip TTA, collate, the network, an ensemble's LDA member) on `--sequences` random
`--frames`-frame sequences, and prints sequences/s
* at batch 1: one chunk per forward pass (`eval.batch_size=1`; 4 passes per 100-frame sequence),
* at batch 64: 64 chunks per forward pass (the default `eval.batch_size`),
* per request: one sequence at a time with the config's batch size, as `bpmt serve` embeds a
  `POST /identify` body (its chunks and their mirror images in one forward pass): latency in ms,
for each backend. Backends are timed interleaved (torch, onnx, torch, ...) and each figure is the
best of `--repeats`, so that a machine shared with other jobs slows both alike: the ratios stay
meaningful there, the absolute rates only on an idle machine.

Without `--model`, the config's network with random weights is exported to a temporary folder
(`bpmt export --onnx`, exporter `--exporter`); with `--model RUN`, RUN's own `model.onnx` is used
(export it first).

    python benchmarks/inference.py --config configs/gait3d.yaml --threads 2
    python benchmarks/inference.py --model runs/g3d --threads 1 --repeats 7 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def random_model(config_path: str, folder: Path, exporter: str) -> Path:
    """An exported recogniser of `config_path` with random weights, and its ONNX export, in `folder`."""
    from bpmt.config import load_config
    from bpmt.data.channels import num_channels
    from bpmt.engine.export import export_recognizer
    from bpmt.engine.onnx_model import export_onnx
    from bpmt.models.ensemble import build_model
    from bpmt.models.recognizer import build_recognizer
    from bpmt.skeleton import get_partition

    config = load_config(config_path, ["ensemble.lda=false"])      # an unfitted LDA member cannot embed
    torch.manual_seed(0)
    classes = 64
    network = build_recognizer(config.model, get_partition(config.data.partition),
                               num_channels(config.data.channels), classes)
    meta = {"num_classes": classes, "identities": [f"{i:04d}" for i in range(classes)]}
    export_recognizer(build_model(network, False, classes), config, meta, folder / "model.safetensors")
    export_onnx(folder, exporter=exporter)
    return folder


def _once(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from bpmt.engine.export import load_recognizer
    from bpmt.engine.onnx_model import inference_network
    from bpmt.evaluation.evaluate import embed_corpus
    from throughput import random_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "gait3d.yaml"),
                        help="config of the random-weight network (without --model)")
    parser.add_argument("--model", help="a trained run folder with model.onnx (bpmt export RUN --onnx)")
    parser.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                        help="exporter for the random-weight network (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (default: %(default)s)")
    parser.add_argument("--sequences", type=int, default=64, help="sequences per timing (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=100, help="frames per sequence (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timings per figure, best kept (default: %(default)s)")
    parser.add_argument("--json", dest="json_out", help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bpmt-inference-") as work:
        started = time.perf_counter()
        run = Path(args.model) if args.model else random_model(args.config, Path(work), args.exporter)
        prepared = time.perf_counter() - started
        model, config, _, fingerprint = load_recognizer(run)
        networks = {"torch": inference_network(run, model, config, fingerprint, "torch"),
                    "onnx": inference_network(run, model, config, fingerprint, "onnx", args.threads)}
        corpus = random_corpus(args.sequences, args.frames)
        singles = [corpus.select([i]) for i in range(min(len(corpus), 16))]
        base_batch = config.eval.batch_size

        def embed_all(backend: str, batch_size: int):
            config.eval.batch_size = batch_size
            embed_corpus(model, config, corpus, network=networks[backend])

        def embed_requests(backend: str):
            config.eval.batch_size = base_batch
            for single in singles:
                embed_corpus(model, config, single, network=networks[backend])

        cases = {"batch 1": (lambda b: embed_all(b, 1), len(corpus)),
                 "batch 64": (lambda b: embed_all(b, 64), len(corpus)),
                 "request": (embed_requests, len(singles))}
        results: dict[str, dict[str, float]] = {}
        for case, (function, count) in cases.items():
            for backend in networks:
                function(backend)                                   # warm-up
            best = {backend: float("inf") for backend in networks}
            for _ in range(args.repeats):
                for backend in networks:                            # interleaved: shared load hits both
                    best[backend] = min(best[backend], _once(lambda: function(backend)))
            results[case] = {backend: count / seconds for backend, seconds in best.items()}
        config.eval.batch_size = base_batch
        torch_embeddings = embed_corpus(model, config, corpus.select(range(8)), network=networks["torch"])
        onnx_embeddings = embed_corpus(model, config, corpus.select(range(8)), network=networks["onnx"])
        difference = float(np.abs(torch_embeddings - onnx_embeddings).max())

    source = args.model or f"{args.config} (random weights, {args.exporter} export, {prepared:.0f} s to build)"
    print(f"embedding {args.frames}-frame sequences: chunks of {config.data.test_max_len} frames, flip TTA "
          f"{'on' if config.eval.flip else 'off'}; model {source}; {args.threads} thread(s); best of {args.repeats}, "
          f"backends interleaved")
    print(f"{'':>10} {'torch':>12} {'onnx':>12} {'onnx/torch':>11}")
    for case, rates in results.items():
        unit = "seq/s"
        if case == "request":
            print(f"{'request':>10} {1e3 / rates['torch']:>9.2f} ms {1e3 / rates['onnx']:>9.2f} ms "
                  f"{rates['onnx'] / rates['torch']:>10.2f}x   (one sequence per call, batch {base_batch})")
        else:
            print(f"{case:>10} {rates['torch']:>6.1f} {unit} {rates['onnx']:>6.1f} {unit} "
                  f"{rates['onnx'] / rates['torch']:>10.2f}x")
    print(f"max |onnx - torch| over the embeddings: {difference:.2g}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"model": source, "threads": args.threads, "frames": args.frames,
                                                   "seq_per_s": results, "max_abs_difference": difference}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
