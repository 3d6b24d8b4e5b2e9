"""Model size and CPU speed: parameters, FLOPs per 60-frame clip, embedding throughput.

For each variant (default: the config as is, the vanilla-transformer baseline and the whole-body
single-modality baseline) builds the recogniser with random weights and prints
* parameters,
* forward FLOPs for one 60-frame clip (torch's FLOP counter: matmuls and attention),
* embedding throughput in sequences/s for 100-frame sequences at batch 1 and batch 64, through
  the real test path (`embed_sequences`: chunks of `data.test_max_len`, flip TTA as configured),
* training throughput in clips/s (one finetuning step on a P x K batch, forward + backward).

Time it on an otherwise idle machine.

    python benchmarks/throughput.py --config configs/gait3d.yaml [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bpmt.config import load_config
from bpmt.data.batches import PoseBatcher
from bpmt.data.corpus import PoseCorpus
from bpmt.data.io import Sequence
from bpmt.data.transforms import num_channels
from bpmt.evaluation.embed import embed_sequences
from bpmt.finetune.step import Finetuner
from bpmt.models.recognizer import BPMTRecognizer
from bpmt.skeleton import get_partition

VARIANTS = {
    "bpmt": [],
    "vanilla": ["model.layer=vanilla"],
    "whole_body": ["data.partition=whole_body", "stages=[phase1,finetune]"],
}


def random_corpus(count: int, frames: int, seed: int = 0) -> PoseCorpus:
    rng = np.random.default_rng(seed)
    sequences = []
    for i in range(count):
        kp = rng.normal(size=(frames, 17, 3)).astype(np.float32) * 20 + 100
        kp[..., 2] = 0.9
        sequences.append(Sequence(f"{i:04d}-camid1_videoid1-seq0", f"{i:04d}", "1", "1", np.arange(frames), kp,
                                  np.full((frames, 2), 200, np.float32)))
    return PoseCorpus.from_sequences(sequences)


def forward_flops(model: BPMTRecognizer, channels: int, frames: int = 60) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    features = torch.randn(1, frames, 17, channels)
    padding = torch.zeros(1, frames, dtype=torch.bool)
    with FlopCounterMode(display=False) as counter:    # (its module tracker needs autograd on)
        model(features, padding)
    return int(counter.get_total_flops())


def embed_rate(model, config, corpus: PoseCorpus, batch_size: int, repeats: int = 2) -> float:
    batcher = PoseBatcher(corpus, config.data, config.model.frames_per_token, label_of={})
    embed_sequences(model, batcher, batch_size=batch_size, flip=config.eval.flip)   # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        embed_sequences(model, batcher, batch_size=batch_size, flip=config.eval.flip)
        best = min(best, time.perf_counter() - start)
    return len(corpus) / best


def train_rate(model, config, corpus: PoseCorpus, steps: int = 3) -> float:
    label_of = {s: i for i, s in enumerate(corpus.identities)}
    batcher = PoseBatcher(corpus, config.data, config.model.frames_per_token, label_of)
    step = Finetuner(model, config.finetune).train()
    optimizer = torch.optim.AdamW(step.parameters(), lr=1e-4)
    f = config.finetune
    rng = np.random.default_rng(0)
    times = []
    for _ in range(steps + 1):
        batch = batcher.identity_batch(rng, f.identities_per_batch, f.samples_per_identity)
        start = time.perf_counter()
        loss, _ = step(batch.features, batch.padding_mask, batch.labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return f.identities_per_batch * f.samples_per_identity / min(times[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/gait3d.yaml")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {list(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--sequences", type=int, default=128, help="100-frame sequences to embed")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = random_corpus(args.sequences, 100)
    train_corpus = random_corpus(64, 120, seed=1)
    rows = {}
    for name in args.variants.split(","):
        config = load_config(args.config, VARIANTS[name])
        torch.manual_seed(0)
        channels = num_channels(config.data.channels)
        model = BPMTRecognizer(config.model, get_partition(config.data.partition), channels, num_classes=64).eval()
        row = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "gflops_per_60_frame_clip": forward_flops(model, channels) / 1e9,
            "embed_seq_per_s_batch1": embed_rate(model, config, corpus.select(range(16)), 1),
            "embed_seq_per_s_batch64": embed_rate(model, config, corpus, 64),
            "train_clips_per_s": train_rate(model, config, train_corpus),
        }
        rows[name] = row
        print(f"{name:>10}: {row['parameters']:>9,} params  {row['gflops_per_60_frame_clip']:.3f} GFLOPs/clip  "
              f"embed {row['embed_seq_per_s_batch1']:.1f} seq/s (batch 1)  {row['embed_seq_per_s_batch64']:.1f} seq/s "
              f"(batch 64)  train {row['train_clips_per_s']:.1f} clips/s", flush=True)
    print(f"(100-frame sequences; test path with chunks of {config.data.test_max_len} frames and flip TTA "
          f"{'on' if config.eval.flip else 'off'}; torch threads {torch.get_num_threads()})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"config": args.config, "threads": torch.get_num_threads(),
                                                   "variants": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
