"""Scaling to full Gait3D: the Gait3D-shaped synthetic preset, lazy normalisation, the P x K sampler
sharded over DDP ranks (and 2-process DDP against a single-process emulation), bf16 on CPU, and
chunked retrieval in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from bpmt.cli import main
from bpmt.config import DataConfig, load_config
from bpmt.data import transforms as tf
from bpmt.data.batches import PoseBatcher, Shard
from bpmt.data.corpus import PoseCorpus
from bpmt.data.gait3d import read_gait3d
from bpmt.data.sequence import Sequence
from bpmt.data.source import open_data
from bpmt.data.synth import (
    SynthPlan,
    gait3d_plan,
    iter_plan,
    write_plan,
    write_synthetic,
)
from bpmt.engine import trainer
from bpmt.engine.stages import STAGE_TABLE, build_stage_module
from bpmt.evaluation.metrics import evaluate_ranking, pairwise_distances, rank_in_chunks

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ["engine.log_every=1", "data.clip_len=16", "data.test_max_len=40", "model.dim=16",
        "model.reduce_dims=[16]", "model.embed_dim=16", "finetune.warmup_steps=1", "phase1.warmup_steps=1",
        "phase1.batch_size=4"]


# ---------------------------------------------------------------------------------------------
# The Gait3D-shaped synthetic preset


def test_gait3d_plan_has_gait3d_size_and_skew():
    plan = gait3d_plan(1.0, seed=0)
    counts, train = plan.sequences, plan.train_subjects
    assert (plan.subjects, plan.total, train) == (4000, 25309, 3000)
    assert (counts[:train].sum(), counts[train:].sum()) == (18940, 6369)
    assert plan.cameras == 39 and counts.min() >= 1 and counts[train:].min() >= 2
    # Skewed: most identities have 1-4 sequences, a long tail past 80, mean far above the median.
    assert (counts <= 4).mean() > 0.5 and counts.max() >= 80 and counts.mean() > 1.4 * np.median(counts)
    # Lengths: Gait3D's 3.3 million frames (before the detector's ~4% drops), the real subset's spread.
    lengths = plan.lengths
    assert len(lengths) == plan.total and lengths.min() >= 25 and lengths.max() <= 489
    assert 3.3e6 < lengths.sum() < 3.55e6
    assert 95 <= np.median(lengths) <= 115 and np.percentile(lengths, 90) > 2 * np.median(lengths)
    again, other = gait3d_plan(1.0, seed=0), gait3d_plan(1.0, seed=1)
    assert np.array_equal(again.sequences, counts) and np.array_equal(again.lengths, lengths)
    assert not np.array_equal(other.sequences, counts)


@pytest.mark.parametrize("scale", [0.005, 0.125, 2.0])
def test_gait3d_plan_scales(scale):
    plan = gait3d_plan(scale)
    train = plan.train_subjects
    assert plan.subjects == round(4000 * scale) and train == round(3000 * scale)
    assert plan.sequences[:train].sum() == round(18940 * scale)
    assert plan.sequences[train:].sum() == round(6369 * scale)


def test_gait3d_plan_rejects_tiny_or_bad_scales():
    for scale in (0.0001, 0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="scale"):
            gait3d_plan(scale)


def test_preset_bytes_do_not_depend_on_workers(tmp_path):
    plan = SynthPlan(np.array([1, 3, 2]), np.array([30, 26, 41, 28, 33, 27]), cameras=39, train_subjects=2)
    one = write_plan(tmp_path / "one", plan, seed=5, workers=1)
    two = write_plan(tmp_path / "two", plan, seed=5, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*.txt"))
    assert files == sorted(p.relative_to(two) for p in two.rglob("*.txt")) and len(files) > 100
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    split = json.loads((tmp_path / "one" / "split.json").read_text())
    assert split["TRAIN_SET"] == ["0000", "0001"] and split["TEST_SET"] == ["0002"]
    names = [s.name for s in iter_plan(plan, seed=5)]
    assert split["PROBE_SET"] == [next(n for n in names if n.startswith("0002-"))]
    assert split == json.loads((tmp_path / "two" / "split.json").read_text())


def test_plain_synth_is_unchanged_by_the_plan_machinery(tmp_path):
    """`write_synthetic` (uniform plan) writes exactly what `iter_synthetic` promises, in parallel too."""
    root = write_synthetic(tmp_path / "w", 3, 2, seed=2, workers=2)
    sequences, _ = read_gait3d(root)
    assert sorted(s.name for s in sequences) == sorted(s.name for s in iter_plan(SynthPlan(np.full(3, 2), None), 2))
    assert not (tmp_path / "w" / "split.json").exists()


def test_cli_synth_preset_reads_back_with_its_split(tmp_path, capsys):
    out = tmp_path / "g3d"
    assert main(["synth", str(out), "--preset", "gait3d", "--scale", "0.001", "--workers", "2", "--seed", "3"]) == 0
    assert "4 subjects, 25 sequences" in capsys.readouterr().out
    assert main(["stats", str(out / "2D_Poses"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["identities"], stats["sequences"]) == (4, 25)
    split = json.loads((out / "split.json").read_text())
    assert (len(split["TRAIN_SET"]), len(split["TEST_SET"]), len(split["PROBE_SET"])) == (3, 1, 1)
    corpus, _ = open_data(out / "2D_Poses", split["TEST_SET"])
    assert len(corpus) == 6 and split["PROBE_SET"][0] in corpus.names
    assert main(["synth", str(tmp_path / "x"), "--preset", "gait3d", "--subjects", "3"]) == 2
    assert main(["synth", str(tmp_path / "y"), "--scale", "0.5"]) == 2
    assert main(["synth", str(tmp_path / "z"), "--preset", "gait3d", "--scale", "0.00001"]) == 2
    assert "--scale" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Lazy normalisation: clips read from the corpus equal clips of the whole normalised sequence


def _corpus(identities: int = 4, per_identity: int = 3) -> PoseCorpus:
    rng = np.random.default_rng(0)
    sequences = []
    for i in range(identities):
        for k in range(per_identity):
            frames = [9, 37, 80][k % 3]                  # shorter than a clip, about one, longer
            kp = (rng.normal(size=(frames, 17, 3)) * 30 + 200).astype(np.float32)
            kp[..., 2] = rng.uniform(0.1, 1.0, (frames, 17))
            if k == 1:
                kp[3, [5, 6, 11, 12], :2] = 0.0          # a frame without a torso (fallback scale)
                kp[4, 7] = np.nan                        # a missing joint
            sequences.append(Sequence(f"{i:04d}-camid1_videoid1-seq{k}", f"{i:04d}", "1", "1",
                                      np.arange(frames), kp, np.ones((frames, 2), np.float32)))
    return PoseCorpus.from_sequences(sequences)


def _eager_clip(batcher: PoseBatcher, index: int, rng: np.random.Generator, part_mask: bool,
                length: int) -> np.ndarray:
    """The previous implementation: normalise the whole sequence, resample it, then crop."""
    cfg = batcher.cfg
    seq = tf.normalize(batcher.corpus.keypoints_of(index), rotate=cfg.rotate, scale=cfg.scale)
    if cfg.speed_low != 1.0 or cfg.speed_high != 1.0:
        seq = tf.temporal_resample(seq, rng, cfg.speed_low, cfg.speed_high)
    clip = seq[tf.temporal_crop(len(seq), length, rng)]
    clip = tf.random_flip(clip, rng, cfg.flip_p)
    clip = tf.random_rotation(clip, rng, cfg.rotation_deg)
    clip = tf.random_scale(clip, rng, cfg.scale_low, cfg.scale_high)
    clip = tf.joint_noise(clip, rng, cfg.noise_std)
    if part_mask:
        clip = tf.mask_part(clip, rng, batcher.partition, cfg.part_mask_p)
    return clip.astype(np.float32)


@pytest.mark.parametrize("settings", [
    {}, {"rotate": True}, {"scale": "frame"}, {"rotate": True, "scale": "frame", "speed_low": 0.5, "speed_high": 2.0},
    {"speed_low": 1.0, "speed_high": 1.0}, {"part_mask_p": 1.0}, {"test_max_len": 16},
])
def test_lazy_clips_equal_eager_normalisation(settings):
    corpus = _corpus()
    batcher = PoseBatcher(corpus, DataConfig(clip_len=24, clip_min=0, **settings), frames_per_token=4)
    assert not hasattr(batcher, "sequences")               # no normalised copy of the data is kept
    for index in range(len(corpus)):
        for seed in range(4):
            lazy = batcher.train_clip(index, np.random.default_rng(seed), part_mask=True, length=24)
            eager = _eager_clip(batcher, index, np.random.default_rng(seed), part_mask=True, length=24)
            np.testing.assert_array_equal(lazy, eager)
        whole = tf.normalize(corpus.keypoints_of(index), rotate=batcher.cfg.rotate, scale=batcher.cfg.scale)
        np.testing.assert_array_equal(np.concatenate(batcher.test_chunks(index)), whole)
        rows = np.array([5, 0, 5, 2]) % len(whole)
        np.testing.assert_array_equal(batcher.normalized(index, rows), whole[rows])
        for flip in (False, True):                           # test chunks read one at a time (embedding)
            one_by_one = [batcher.test_chunk(index, span, flip) for span in batcher.test_spans(index)]
            assert len(one_by_one) == len(batcher.test_chunks(index, flip))
            for lazy, eager in zip(one_by_one, batcher.test_chunks(index, flip)):
                np.testing.assert_array_equal(lazy, eager)


def test_batcher_reads_a_memory_mapped_cache_without_copying(tmp_path):
    from bpmt.data.cache import build_cache

    root = write_synthetic(tmp_path / "s", 3, 2, seed=0)
    corpus, _ = build_cache(root, tmp_path / "c")
    assert isinstance(corpus.keypoints, np.memmap)
    batcher = PoseBatcher(corpus, DataConfig(clip_len=16, clip_min=0), frames_per_token=4)
    batch = batcher.identity_batch(np.random.default_rng(0), 3, 2)
    assert batch.features.shape[:2] == (6, 16) and torch.isfinite(batch.features).all()
    assert batcher.corpus.keypoints is corpus.keypoints
    # Per-sequence state is one float, filled only for the sequences the batch read.
    assert batcher.torso_lengths.shape == (len(corpus),) and 1 <= np.isfinite(batcher.torso_lengths).sum() <= 6


# ---------------------------------------------------------------------------------------------
# The P x K sampler sharded over ranks


def test_shard_parts_cover_everything_once():
    for world in (1, 2, 3, 8):
        for count in (0, 1, 7, 16, 33):
            parts = [Shard(rank, world).part(count) for rank in range(world)]
            covered = np.concatenate([np.arange(count)[p] for p in parts])
            assert np.array_equal(covered, np.arange(count))
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1
    with pytest.raises(ValueError):
        Shard(2, 2)


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_identity_batches_are_disjoint_and_make_the_global_batch(world):
    corpus = _corpus(identities=8, per_identity=3)
    batcher = PoseBatcher(corpus, DataConfig(clip_len=16, clip_min=8), frames_per_token=4)
    P, K = 2, 3
    for step in range(3):
        shards = [batcher.identity_batch(np.random.default_rng([0, 2, step]), P, K, Shard(rank, world))
                  for rank in range(world)]
        label_sets = [set(b.labels.tolist()) for b in shards]
        assert all(len(s) == P for s in label_sets)                                # P identities per rank
        assert len(set().union(*label_sets)) == P * world                         # disjoint across ranks
        for b in shards:
            assert all((b.labels == label).sum() == K for label in set(b.labels.tolist()))   # K each
        single = batcher.identity_batch(np.random.default_rng([0, 2, step]), P * world, K)
        np.testing.assert_array_equal(torch.cat([b.features for b in shards]).numpy(), single.features.numpy())
        np.testing.assert_array_equal(torch.cat([b.labels for b in shards]).numpy(), single.labels.numpy())


def test_sharding_with_fewer_identities_than_the_global_batch():
    batcher = PoseBatcher(_corpus(identities=5), DataConfig(clip_len=16, clip_min=0), frames_per_token=4)
    shards = [batcher.identity_batch(np.random.default_rng(1), 4, 2, Shard(rank, 2)) for rank in range(2)]
    sets = [set(b.labels.tolist()) for b in shards]
    assert sorted(len(s) for s in sets) == [2, 3] and not sets[0] & sets[1]
    from bpmt.errors import DataError
    with pytest.raises(DataError, match="at least 2 identities for 3 ranks"):
        batcher.identity_batch(np.random.default_rng(1), 4, 2, Shard(0, 3))


def test_sharded_random_batches_make_the_global_batch():
    batcher = PoseBatcher(_corpus(), DataConfig(clip_len=16, clip_min=0), frames_per_token=4)
    shards = [batcher.random_batch(np.random.default_rng(7), 3, Shard(rank, 2)) for rank in range(2)]
    assert all(len(b.keypoints) == 3 and b.features is None for b in shards)
    single = batcher.random_batch(np.random.default_rng(7), 6)
    np.testing.assert_array_equal(torch.cat([b.keypoints for b in shards]).numpy(), single.keypoints.numpy())


# ---------------------------------------------------------------------------------------------
# DDP with two CPU processes against a single process that computes both ranks' losses


DDP_SCRIPT = '''
import json, os, sys
import numpy as np
from bpmt.config import load_config
from bpmt.data.batches import PoseBatcher
from bpmt.data.source import open_data
from bpmt.engine import trainer

config_path, data, out, *overrides = sys.argv[1:]
real = PoseBatcher.identity_batch
seen = []

def recording(self, rng, identities, per_identity, shard):
    batch = real(self, rng, identities, per_identity, shard)
    seen.append({"rank": shard.rank, "world": shard.world_size, "labels": batch.labels.tolist(),
                 "checksum": float(batch.features.double().sum())})
    return batch

PoseBatcher.identity_batch = recording
config = load_config(config_path, overrides)
corpus, _ = open_data(data)
trainer.train(config, corpus, out, show_progress=False, report=lambda m: None)
with open(os.path.join(out, f"batches-{os.getpid()}.json"), "w") as handle:
    json.dump(seen, handle)
'''


@pytest.mark.skipif(sys.platform != "linux", reason="DDP test uses Linux process launching")
def test_ddp_ranks_see_disjoint_batches_and_match_one_process(tmp_path):
    root = write_synthetic(tmp_path / "synth", subjects=6, sequences_per_subject=3, seed=0)
    steps, P, K = 3, 2, 2
    overrides = TINY + ["stages=[finetune]", f"finetune.steps={steps}", f"finetune.identities_per_batch={P}",
                        f"finetune.samples_per_identity={K}", "engine.devices=2", "engine.strategy=ddp",
                        "engine.accelerator=cpu"]
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, str(script), str(CONFIGS / "tiny.yaml"), str(root), str(out), *overrides],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    records = [json.loads(p.read_text()) for p in sorted(out.glob("batches-*.json"))]
    assert len(records) == 2 and all(len(r) == steps for r in records)
    by_rank = {r[0]["rank"]: r for r in records}
    assert sorted(by_rank) == [0, 1] and all(e["world"] == 2 for r in records for e in r)

    config = load_config(CONFIGS / "tiny.yaml", overrides)
    corpus, _ = open_data(root)
    batcher = PoseBatcher(corpus, config.data, config.model.frames_per_token,
                          {s: i for i, s in enumerate(corpus.identities)})
    for step in range(steps):
        ranks = [by_rank[rank][step] for rank in (0, 1)]
        labels = [set(e["labels"]) for e in ranks]
        assert len(labels[0]) == len(labels[1]) == P and not labels[0] & labels[1]
        assert all(e["labels"].count(label) == K for e in ranks for label in set(e["labels"]))
        # Together they are the global batch one process draws with twice the identities.
        single = batcher.identity_batch(trainer.step_generators(config, "finetune", step, 0)[0], 2 * P, K)
        assert single.labels.tolist() == ranks[0]["labels"] + ranks[1]["labels"]
        assert float(single.features.double().sum()) == pytest.approx(sum(e["checksum"] for e in ranks), rel=1e-12)

    # One process, same global batches: each rank's loss on its shard, gradients averaged as DDP does.
    # BatchNorm sees each shard alone (as on its rank); DDP keeps rank 0's running statistics.
    torch.manual_seed(config.seed * 1000 + trainer.STAGES.index("finetune"))
    module = build_stage_module("finetune", config, len(corpus.identities))
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.finetune.lr, weight_decay=config.finetune.weight_decay)
    module.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = trainer.lr_at(step, steps, config.finetune.warmup_steps, config.finetune.lr)
        buffers = {name: b.clone() for name, b in module.named_buffers()}
        for rank in (1, 0):                                    # rank 0 last: its BN statistics are kept
            if rank == 0:
                for name, b in module.named_buffers():
                    b.copy_(buffers[name])
            rng, seed = trainer.step_generators(config, "finetune", step, rank)
            torch.manual_seed(seed)
            spec = STAGE_TABLE["finetune"]
            loss, _ = spec.loss(module, spec.batch(batcher, config, rng, Shard(rank, 2)),
                                torch.Generator().manual_seed(seed))
            (loss / 2).backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    from safetensors.torch import load_file
    ddp = load_file(str(out / "finetune" / "weights.safetensors"))
    single = module.state_dict()
    assert ddp.keys() == single.keys()
    worst = max(float((ddp[k].float() - single[k].float()).abs().max()) for k in ddp)
    assert worst < 1e-5, worst
    # ... and not because training did nothing: the weights moved from their initial values.
    torch.manual_seed(config.seed * 1000 + trainer.STAGES.index("finetune"))
    initial = build_stage_module("finetune", config, len(corpus.identities)).state_dict()
    assert max(float((initial[k].float() - single[k].float()).abs().max()) for k in initial) > 1e-3


# ---------------------------------------------------------------------------------------------
# Mixed precision


def test_bf16_mixed_trains_on_cpu(tmp_path):
    root = write_synthetic(tmp_path / "synth", subjects=4, sequences_per_subject=3, seed=0)
    config = load_config(CONFIGS / "tiny.yaml", TINY + [
        "stages=[phase1,finetune]", "phase1.steps=2", "finetune.steps=3", "finetune.identities_per_batch=3",
        "finetune.samples_per_identity=2", "engine.precision=bf16-mixed"])
    corpus, _ = open_data(root)
    run = trainer.train(config, corpus, tmp_path / "run", show_progress=False, report=lambda m: None)
    for stage in ("phase1", "finetune"):
        rows = (run.root / stage / "log.csv").read_text().splitlines()[1:]
        losses = [float(row.split(",")[1]) for row in rows]
        assert len(losses) == getattr(config, stage).steps and all(np.isfinite(losses)) and min(losses) > 0
    assert run.model.is_file()


def test_unknown_precision_is_a_config_error(tmp_path):
    from bpmt.errors import ConfigError

    config = load_config(CONFIGS / "tiny.yaml", ["engine.precision=fp7"])
    with pytest.raises(ConfigError, match="precision"):
        trainer.make_fabric(config)


# ---------------------------------------------------------------------------------------------
# Retrieval at scale


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_chunked_retrieval_equals_unchunked(metric):
    rng = np.random.default_rng(0)
    probes = np.round(rng.normal(size=(37, 8)), 1)              # rounding makes distance ties
    gallery = np.round(rng.normal(size=(211, 8)), 1)
    probe_labels, gallery_labels = rng.integers(0, 30, 37), rng.integers(0, 30, 211)
    full = evaluate_ranking(pairwise_distances(probes, gallery, metric), probe_labels, gallery_labels,
                            ranks=(1, 5, 20))
    for chunk_size in (1, 5, 37, 1000):
        chunked = rank_in_chunks(probes, gallery, probe_labels, gallery_labels, metric=metric,
                                 chunk_size=chunk_size, ranks=(1, 5, 20))
        assert chunked == full


def test_chunked_retrieval_memory_does_not_grow_with_the_number_of_probes():
    """1,000 probes x 5,000 gallery in chunks of 50: the peak stays far below one (Q, G) float64 matrix,
    and quadrupling the probes leaves it where it was."""
    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(5000, 16)).astype(np.float32)
    gallery_labels = rng.integers(0, 500, 5000)

    def peak(num_probes: int) -> int:
        probes = rng.normal(size=(num_probes, 16)).astype(np.float32)
        probe_labels = rng.integers(0, 500, num_probes)
        tracemalloc.start()
        try:
            rank_in_chunks(probes, gallery, probe_labels, gallery_labels, chunk_size=50)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(250), peak(1000)
    assert large < 0.5 * 1000 * 5000 * 8                       # less than half of one full distance matrix
    assert large < 1.3 * small
