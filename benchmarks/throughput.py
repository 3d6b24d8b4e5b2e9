"""Model size and CPU speed, side by side for BPMT and its baselines, and what they mean for a full
Gait3D training.

For each variant (default: the config as is, the vanilla-transformer baseline and the whole-body
single-modality baseline) builds the stage modules with random weights and prints
* parameters of the recogniser,
* forward FLOPs for one 60-frame clip: recogniser, phase-1 and phase-2 pretrainers (torch's FLOP
  counter: matmuls and attention),
* inference throughput in sequences/s for 100-frame sequences at batch 1 and batch 64, through
  the real test path (`embed_sequences`: chunks of `data.test_max_len`, flip TTA as configured),
* training throughput in sequences (clips)/s of each stage: one optimiser step on the config's
  batch (P x K for finetuning), forward + backward, with clips of the config's longest length,
* the data pipeline alone: augmented training clips/s built by one CPU core,
and then ESTIMATES, labelled so, of a full-Gait3D training (every stage for `--epochs` epochs over
Gait3D's 18,940 training sequences) on this CPU (from the measured rates) and on one GPU: the larger
of the compute time from the FLOPs (training ~ 3 x forward FLOPs, at an assumed sustained
`--gpu-tflops`) and the time the CPU needs to build the clips (`--data-cores`).

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
from bpmt.data.sequence import Sequence
from bpmt.data.transforms import num_channels
from bpmt.engine.stages import build_stage_module
from bpmt.evaluation.embed import embed_sequences

VARIANTS = {
    "bpmt": [],
    "vanilla": ["model.layer=vanilla"],
    "whole_body": ["data.partition=whole_body", "stages=[phase1,finetune]"],
}
GAIT3D_TRAIN_SEQUENCES = 18940
GAIT3D_TEST_SEQUENCES, GAIT3D_MEAN_FRAMES = 6369, 129.6


def random_corpus(count: int, frames: int, seed: int = 0) -> PoseCorpus:
    rng = np.random.default_rng(seed)
    sequences = []
    for i in range(count):
        kp = rng.normal(size=(frames, 17, 3)).astype(np.float32) * 20 + 100
        kp[..., 2] = 0.9
        sequences.append(Sequence(f"{i:04d}-camid1_videoid1-seq0", f"{i:04d}", "1", "1", np.arange(frames), kp,
                                  np.full((frames, 2), 200, np.float32)))
    return PoseCorpus.from_sequences(sequences)


def stage_inputs(stage: str, channels: int, frames: int, batch: int = 1) -> tuple:
    """Random inputs of a stage module's forward for `batch` clips of `frames` frames."""
    features = torch.randn(batch, frames, 17, channels)
    padding = torch.zeros(batch, frames, dtype=torch.bool)
    if stage == "finetune":
        return features, padding, torch.arange(batch) % 4
    return torch.randn(batch, frames, 17, 3), padding, torch.Generator().manual_seed(0)   # keypoints


def forward_flops(module, inputs: tuple) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:    # (its module tracker needs autograd on)
        module(*inputs)
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


def batch_size_of(config, stage: str) -> int:
    f = config.finetune
    return f.identities_per_batch * f.samples_per_identity if stage == "finetune" else getattr(config, stage).batch_size


def train_rate(stage: str, config, channels: int, steps: int = 3) -> float:
    """Training clips/s of one stage: best of `steps` optimiser steps (after one warm-up step)."""
    torch.manual_seed(0)
    module = build_stage_module(stage, config, 64).train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    size = batch_size_of(config, stage)
    inputs = stage_inputs(stage, channels, config.data.clip_len, size)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss, _ = module(*inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return size / min(times[1:])


def data_rate(config, corpus: PoseCorpus, batches: int = 5) -> float:
    """Augmented P x K training clips/s built by the batcher (lazy normalisation, one core)."""
    batcher = PoseBatcher(corpus, config.data, config.model.frames_per_token)
    f = config.finetune
    identities = min(f.identities_per_batch, len(corpus.identities))
    start = time.perf_counter()
    for step in range(batches):
        batcher.identity_batch(np.random.default_rng(step), identities, f.samples_per_identity)
    return batches * identities * f.samples_per_identity / (time.perf_counter() - start)


def estimates(row: dict, stages: list[str], epochs: int, gpu_tflops: float, data_cores: int) -> dict:
    """ESTIMATED hours of `epochs` epochs of every stage over Gait3D's training set (+ one evaluation).

    CPU: the measured training rates. GPU: the larger of the compute time (3 x forward FLOPs per
    clip at an assumed sustained rate) and the time to build the clips on `data_cores` CPU cores
    (the trainer builds each batch in its own process, so 1 core per GPU as it stands).
    """
    clips = epochs * GAIT3D_TRAIN_SEQUENCES
    cpu_s = sum(clips / row[f"train_seq_per_s_{s}"] for s in stages)
    eval_s = GAIT3D_TEST_SEQUENCES * GAIT3D_MEAN_FRAMES / 100 / row["embed_seq_per_s_batch64"]
    flops = sum(3 * clips * row[f"gflops_per_60_frame_clip_{s}"] * 1e9 for s in stages)
    compute_s = flops / (gpu_tflops * 1e12)
    data_s = clips * len(stages) / (row["data_clips_per_s_per_core"] * data_cores)
    return {"epochs": epochs, "cpu_train_hours": cpu_s / 3600, "cpu_eval_minutes": eval_s / 60,
            "train_pflops": flops / 1e15, "gpu_tflops_assumed": gpu_tflops, "gpu_compute_minutes": compute_s / 60,
            "data_cores": data_cores, "data_minutes": data_s / 60, "gpu_train_hours": max(compute_s, data_s) / 3600}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/gait3d.yaml")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {list(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--sequences", type=int, default=128, help="100-frame sequences to embed")
    parser.add_argument("--epochs", type=int, default=100,
                        help="epochs per stage of the full-Gait3D training to estimate (default: %(default)s)")
    parser.add_argument("--gpu-tflops", type=float, default=100.0,
                        help="sustained bf16 TFLOP/s assumed for the GPU estimate (default: %(default)s, ~10%% "
                             "of an H100's dense peak; small models reach little more)")
    parser.add_argument("--data-cores", type=int, default=1,
                        help="CPU cores building clips for the GPU estimate (default: %(default)s, as the trainer is)")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = random_corpus(args.sequences, 100)
    train_corpus = random_corpus(64, 120, seed=1)
    rows = {}
    for name in args.variants.split(","):
        config = load_config(args.config, VARIANTS[name])
        channels = num_channels(config.data.channels)
        torch.manual_seed(0)
        model = build_stage_module("finetune", config, 64).recognizer.eval()
        row = {"parameters": sum(p.numel() for p in model.parameters()),
               "gflops_per_60_frame_clip": forward_flops(model, stage_inputs("finetune", channels, 60)[:2]) / 1e9}
        for stage in config.stages:
            module = build_stage_module(stage, config, 64)
            # Two clips (BatchNorm trains on at least two), FLOPs per clip.
            row[f"gflops_per_60_frame_clip_{stage}"] = forward_flops(module, stage_inputs(stage, channels, 60, 2)) / 2e9
        row["embed_seq_per_s_batch1"] = embed_rate(model, config, corpus.select(range(16)), 1)
        row["embed_seq_per_s_batch64"] = embed_rate(model, config, corpus, 64)
        for stage in config.stages:
            row[f"train_seq_per_s_{stage}"] = train_rate(stage, config, channels)
        row["data_clips_per_s_per_core"] = data_rate(config, train_corpus)
        row["estimate"] = estimates(row, config.stages, args.epochs, args.gpu_tflops, args.data_cores)
        rows[name] = row
        train = "  ".join(f"{s} {row[f'train_seq_per_s_{s}']:.1f}" for s in config.stages)
        print(f"{name:>10}: {row['parameters']:>9,} params  {row['gflops_per_60_frame_clip']:.3f} GFLOPs/clip  "
              f"infer {row['embed_seq_per_s_batch1']:.1f} seq/s (batch 1)  {row['embed_seq_per_s_batch64']:.1f} "
              f"seq/s (batch 64)  train seq/s: {train}  data {row['data_clips_per_s_per_core']:.0f} clips/s/core",
              flush=True)
    print(f"(inference: 100-frame sequences, chunks of {config.data.test_max_len} frames, flip TTA "
          f"{'on' if config.eval.flip else 'off'}; training: clips of {config.data.clip_len} frames; "
          f"torch threads {torch.get_num_threads()})")
    print(f"ESTIMATES for a full-Gait3D training = {args.epochs} epochs of every stage over "
          f"{GAIT3D_TRAIN_SEQUENCES:,} training sequences, plus embedding the {GAIT3D_TEST_SEQUENCES:,} test "
          f"sequences (not measured; extrapolated):")
    for name, row in rows.items():
        e = row["estimate"]
        print(f"{name:>10}: CPU (this machine, {torch.get_num_threads()} threads) ~{e['cpu_train_hours']:.0f} h "
              f"training + ~{e['cpu_eval_minutes']:.0f} min evaluation;  one GPU ~{e['gpu_train_hours']:.1f} h = "
              f"max(compute {e['train_pflops']:.2f} PFLOP at an assumed {e['gpu_tflops_assumed']:g} TFLOP/s: "
              f"{e['gpu_compute_minutes']:.1f} min, building the clips on {e['data_cores']} CPU core(s): "
              f"{e['data_minutes']:.0f} min)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"config": args.config, "threads": torch.get_num_threads(),
                                                   "variants": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
