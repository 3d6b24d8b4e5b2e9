"""The one adapter to the training engine (Lightning Fabric): devices, DDP, precision, checkpoints.

`train()` runs the configured stages in pipeline order - phase 1 (per-part masked pretraining),
phase 2 (part-pair masked pretraining), finetuning - each resumable from its `last.ckpt`. Each
stage hands its T1/T2 weights to the next through `weights.safetensors`, loaded non-strictly
but with the missing keys asserted to be exactly the new modules'.

Every step's global batch comes from a generator seeded with (seed, stage, step) - the same on every
DDP rank, and each rank builds its own `Shard` of it (its own identities, K samples each; world_size
x P identities x K = one global batch); random masks and dropout come from (seed, stage, step, rank).
So an interrupted and resumed run replays the same steps, and ranks never train on the same identities.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import Config, FinetuneConfig, PretrainConfig, save_config
from ..data.batches import SINGLE_PROCESS, PoseBatcher, Shard
from ..data.corpus import PoseCorpus
from ..data.transforms import num_channels
from ..errors import BPMTError, CheckpointError, ConfigError
from ..evaluation.handcrafted import corpus_features
from ..finetune.step import Finetuner
from ..models.recognizer import build_encoders, build_fusion, build_recognizer
from ..pretrain.phase1 import Phase1Pretrainer
from ..pretrain.phase2 import Phase2Pretrainer
from ..skeleton import get_partition
from .export import export_recognizer
from .run import STAGES, CsvLog, RunFolder, write_json_atomic

Reporter = Callable[[str], None]


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to 1% of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def load_pretrained(module: nn.Module, state: dict[str, torch.Tensor], keep: tuple[str, ...],
                    new: tuple[str, ...], source: Path) -> None:
    """Load the `keep`-prefixed weights of an earlier stage into `module`, asserting that every
    loaded key is used and that the missing keys are exactly those under the `new` prefixes."""
    state = {k: v for k, v in state.items() if k.startswith(keep)}
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: weights do not fit this model ({exc})") from None
    bad_missing = [k for k in missing if not k.startswith(new)]
    if unexpected or bad_missing:
        raise CheckpointError(f"{source}: unexpected keys {unexpected[:5]}, missing keys {bad_missing[:5]}")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def _save_weights(module: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


@dataclass
class StageResult:
    stage: str
    steps: int
    seconds: float
    final_loss: float


def _previous_weights(run: RunFolder, stage: str, cfg: Config) -> Path | None:
    """Weights of the latest earlier stage in this run's pipeline (None = train from scratch)."""
    earlier = [s for s in cfg.stages if STAGES.index(s) < STAGES.index(stage)]
    if not earlier:
        return None
    last = earlier[-1]
    if not run.is_complete(last):
        raise BPMTError(f"{run.root}: stage {stage} needs {last} to be complete first "
                        f"(run `bpmt train ... --stage {last}` or `--stage all`)")
    return run.weights(last)


def build_stage_module(stage: str, cfg: Config, num_classes: int, previous: Path | None) -> nn.Module:
    """The trainable module of a stage, initialised from the previous stage's weights."""
    partition = get_partition(cfg.data.partition)
    channels = num_channels(cfg.data.channels)
    m = cfg.model
    if stage == "phase1":
        encoders = build_encoders(m, partition, channels)
        return Phase1Pretrainer(encoders, layer=m.layer, heads=m.heads, decoder_depth=cfg.phase1.decoder_depth,
                                mask_ratio=cfg.phase1.mask_ratio, mask_type=cfg.phase1.mask_type)
    if stage == "phase2":
        encoders = build_encoders(m, partition, channels)
        if previous is not None:
            holder = nn.Module()
            holder.encoders = encoders
            load_pretrained(holder, _read_weights(previous), ("encoders.",), (), previous)
        module = Phase2Pretrainer(encoders, build_fusion(m, partition, encoders.out_dim),
                                  mask_ratio=cfg.phase2.mask_ratio, mask_type=cfg.phase2.mask_type,
                                  freeze_t1=cfg.phase2.freeze_t1)
        return module
    recognizer = build_recognizer(m, partition, channels, num_classes)
    if previous is not None:
        after_phase2 = previous.parent.name == "phase2"
        keep = ("encoders.", "fusion.") if after_phase2 else ("encoders.",)
        new = ("embed.", "head.", "handcrafted.") + (() if after_phase2 else ("fusion.",))
        load_pretrained(recognizer, _read_weights(previous), keep, new, previous)
    return Finetuner(recognizer, cfg.finetune)


def _stage_step(stage: str, module: nn.Module, batcher: PoseBatcher, cfg: Config, rng: np.random.Generator,
                generator: torch.Generator, device, shard: Shard = SINGLE_PROCESS) -> tuple[torch.Tensor, dict[str, float]]:
    """This rank's loss on its shard of the global batch drawn from `rng`."""
    if stage == "finetune":
        f = cfg.finetune
        batch = batcher.identity_batch(rng, f.identities_per_batch, f.samples_per_identity, shard).to(device)
        return module(batch.features, batch.padding_mask, batch.labels)
    sc: PretrainConfig = getattr(cfg, stage)
    batch = batcher.random_batch(rng, sc.batch_size, shard).to(device)
    return module(batch.features, batch.coords, batch.padding_mask, generator)


def step_generators(cfg: Config, stage: str, step: int, rank: int) -> tuple[np.random.Generator, int]:
    """(the global batch's generator, the same on every rank; this rank's seed for masks and dropout)."""
    stage_index = STAGES.index(stage)
    batch_rng = np.random.default_rng([cfg.seed, stage_index, step])
    rank_seed = int(np.random.default_rng([cfg.seed, stage_index, step, rank]).integers(2 ** 62))
    return batch_rng, rank_seed


def make_fabric(cfg: Config):
    from lightning.fabric import Fabric

    e = cfg.engine
    if e.threads > 0:
        torch.set_num_threads(e.threads)
    strategy = e.strategy
    if strategy == "ddp":
        # Phase 2 trains one part pair per step and finetuning never uses the mask tokens, so some
        # parameters get no gradient in a step; DDP must be told to expect that.
        from lightning.fabric.strategies import DDPStrategy
        strategy = DDPStrategy(find_unused_parameters=True)
    try:
        return Fabric(accelerator=e.accelerator, devices=e.devices, num_nodes=e.num_nodes, strategy=strategy,
                      precision=e.precision)
    except (ValueError, RuntimeError) as exc:   # Lightning's MisconfigurationException is a ValueError
        raise ConfigError(f"engine (accelerator={e.accelerator}, devices={e.devices}, strategy={e.strategy}, "
                          f"precision={e.precision}): {exc}") from None


def run_stage(fabric, stage: str, cfg: Config, batcher: PoseBatcher, run: RunFolder,
              report: Reporter, show_progress: bool) -> StageResult:
    sc: PretrainConfig | FinetuneConfig = getattr(cfg, stage)
    stage_dir = run.stage_dir(stage)
    stage_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed * 1000 + STAGES.index(stage))       # same seed -> same initial weights
    module = build_stage_module(stage, cfg, batcher.num_classes, _previous_weights(run, stage, cfg))
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=sc.lr, weight_decay=sc.weight_decay)
    module, optimizer = fabric.setup(module, optimizer)
    state = {"module": module, "optimizer": optimizer, "step": 0, "seconds": 0.0}
    checkpoint = run.checkpoint(stage)
    if checkpoint.is_file():
        try:
            fabric.load(checkpoint, state, weights_only=True)
        except Exception as exc:       # noqa: BLE001 - damaged bytes raise anything from inside the unpickler
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise CheckpointError(f"{checkpoint}: cannot resume ({type(exc).__name__}: {first}); delete it to "
                                  f"restart {stage} from step 0") from None
        report(f"{stage}: resuming at step {state['step']}/{sc.steps} from {checkpoint}")
    log = CsvLog(run.log(stage), state["step"]) if fabric.is_global_zero else None
    shard = Shard(fabric.global_rank, fabric.world_size)
    bar = None
    if show_progress and fabric.is_global_zero:
        from tqdm import tqdm
        bar = tqdm(total=sc.steps, initial=state["step"], desc=stage, unit="step", dynamic_ncols=True)
    start, loss_value, seconds_before = time.perf_counter(), float("nan"), float(state["seconds"])
    module.train()
    for step in range(state["step"], sc.steps):
        rng, seed = step_generators(cfg, stage, step, shard.rank)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # dropout
        lr = lr_at(step, sc.steps, sc.warmup_steps, sc.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, parts = _stage_step(stage, module, batcher, cfg, rng, generator, fabric.device, shard)
        # The global batch's loss (mean over ranks), so that every rank stops together on a bad step.
        global_loss = loss.detach().float()
        if shard.world_size > 1:
            global_loss = fabric.all_reduce(global_loss, reduce_op="mean")
        if not torch.isfinite(global_loss):
            raise BPMTError(f"{stage}: loss became {float(global_loss)} at step {step}; lower the learning rate "
                            f"({stage}.lr={sc.lr}) and resume with --resume")
        fabric.backward(loss)
        fabric.clip_gradients(module, optimizer, max_norm=5.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(global_loss)
        if log is not None and (step % cfg.engine.log_every == 0 or step == sc.steps - 1):
            log.append({"step": step, "loss": loss_value, "lr": lr, **parts})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
        done = step + 1
        if done % cfg.engine.checkpoint_every == 0 and done < sc.steps:
            state["step"] = done
            state["seconds"] = seconds_before + time.perf_counter() - start
            _save_checkpoint(fabric, checkpoint, state)
    if bar is not None:
        bar.close()
    seconds = seconds_before + time.perf_counter() - start
    if fabric.is_global_zero:
        write_json_atomic(stage_dir / "time.json", {"seconds": seconds, "steps": sc.steps})
        _save_weights(module.module if hasattr(module, "module") else module, run.weights(stage))
        checkpoint.unlink(missing_ok=True)
        from .plots import plot_losses
        plot_losses(run.log(stage), stage_dir / "loss.png", title=stage)
    fabric.barrier()
    return StageResult(stage, sc.steps, seconds, loss_value)


def _save_checkpoint(fabric, path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fabric.save(tmp, state)
    fabric.barrier()
    if fabric.is_global_zero:
        os.replace(tmp, path)


def train(cfg: Config, corpus: PoseCorpus, out: str | os.PathLike, *, stage: str = "all", resume: bool = False,
          report: Reporter = print, show_progress: bool = True, data_description: str = "") -> RunFolder:
    """Train the configured stages into run folder `out`; export the recogniser after finetuning."""
    run = RunFolder(out)
    if run.config.is_file() and not resume:
        raise BPMTError(f"{run.root}: run folder already exists; pass --resume to continue it "
                        "or choose another --out")
    if resume and not run.config.is_file():
        raise BPMTError(f"{run.root}: nothing to resume (no config.yaml)")
    if stage != "all" and stage not in cfg.stages:
        raise BPMTError(f"--stage {stage} is not among this config's stages {cfg.stages}")
    fabric = make_fabric(cfg)
    fabric.launch()
    identities = corpus.identities
    meta = {
        "data": data_description or corpus.source,
        "identities": identities,
        "num_classes": len(identities),
        "sequences": len(corpus),
        "channels": list(cfg.data.channels),
        "partition": {k: list(v) for k, v in get_partition(cfg.data.partition).items()},
    }
    if fabric.is_global_zero:
        run.root.mkdir(parents=True, exist_ok=True)
        if resume:
            saved = run.read_meta()
            if saved["identities"] != identities:
                raise BPMTError(f"{run.root}: --resume with different training identities than the run started with")
        else:
            save_config(cfg, run.config)
            write_json_atomic(run.meta, meta)
    fabric.barrier()
    label_of = {s: i for i, s in enumerate(identities)}
    batcher = PoseBatcher(corpus, cfg.data, cfg.model.frames_per_token, label_of)
    stages = [s for s in cfg.stages if stage in ("all", s)]
    if "phase2" in stages and len(get_partition(cfg.data.partition)) < 2:
        raise BPMTError(f"phase2 needs at least two body parts; partition {cfg.data.partition!r} has one "
                        "(set stages=[phase1,finetune])")
    for name in stages:
        if run.is_complete(name):
            report(f"{name}: already complete, skipped")
            continue
        result = run_stage(fabric, name, cfg, batcher, run, report, show_progress)
        report(f"{name}: {result.steps} steps in {result.seconds:.0f}s, final loss {result.final_loss:.4f}")
    if run.is_complete("finetune") and fabric.is_global_zero:
        recognizer = build_stage_module("finetune", cfg, len(identities), None).recognizer
        recognizer.load_state_dict({k.removeprefix("recognizer."): v
                                    for k, v in _read_weights(run.weights("finetune")).items()})
        if cfg.model.fuse_lda:
            recognizer.handcrafted.fit(corpus_features(corpus), corpus.subjects)
            report(f"LDA branch fitted on {len(corpus)} training sequences of {len(identities)} identities")
        export_recognizer(recognizer, cfg, meta, run.model)
    fabric.barrier()
    return run

