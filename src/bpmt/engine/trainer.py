"""The one adapter to the training engine (Lightning Fabric): devices, DDP, precision, checkpoints.

`train()` runs the configured stages in pipeline order - phase 1 (per-part masked pretraining),
phase 2 (part-pair masked pretraining), finetuning - each resumable from its `last.ckpt`. Each
stage hands its T1/T2 weights to the next through `weights.safetensors` (`stages.STAGE_TABLE`
says which; loaded strictly per component).

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

from ..config import Config, save_config
from ..data.batches import PoseBatcher, Shard
from ..data.corpus import PoseCorpus
from ..errors import BPMTError, CheckpointError, ConfigError
from ..models.ensemble import Ensemble, build_model
from ..models.handcrafted import corpus_features
from ..skeleton import get_partition
from .export import export_recognizer
from .init import InitCheckpoint, check_architecture, resolve_init
from .progress import progress
from .run import STAGES, CsvLog, RunFolder, write_json_atomic
from .stages import STAGE_TABLE, build_stage_module, read_weights
from .threads import configure_threads

Reporter = Callable[[str], None]


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to 1% of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


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


def step_generators(cfg: Config, stage: str, step: int, rank: int) -> tuple[np.random.Generator, int]:
    """(the global batch's generator, the same on every rank; this rank's seed for masks and dropout)."""
    stage_index = STAGES.index(stage)
    batch_rng = np.random.default_rng([cfg.seed, stage_index, step])
    rank_seed = int(np.random.default_rng([cfg.seed, stage_index, step, rank]).integers(2 ** 62))
    return batch_rng, rank_seed


def make_fabric(cfg: Config):
    from lightning.fabric import Fabric

    e = cfg.engine
    configure_threads(e.threads)
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
              report: Reporter, show_progress: bool, init: InitCheckpoint | None = None) -> StageResult:
    spec = STAGE_TABLE[stage]
    sc = spec.settings(cfg)
    stage_dir = run.stage_dir(stage)
    stage_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed * 1000 + STAGES.index(stage))       # same seed -> same initial weights
    module = build_stage_module(stage, cfg, batcher.num_classes, run, init,
                                report if fabric.is_global_zero else None)
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
        bar = progress(sc.steps, initial=state["step"], desc=stage, unit="step")
    start, loss_value, seconds_before = time.perf_counter(), float("nan"), float(state["seconds"])
    module.train()
    for step in range(state["step"], sc.steps):
        rng, seed = step_generators(cfg, stage, step, shard.rank)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # dropout
        lr = lr_at(step, sc.steps, sc.warmup_steps, sc.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = spec.batch(batcher, cfg, rng, shard).to(fabric.device)     # this rank's shard of the global batch
        loss, parts = spec.loss(module, batch, generator)
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
            bar.set_postfix(loss=loss_value)
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


def init_checkpoint(run: RunFolder, cfg: Config, init: str | os.PathLike | None,
                    resume: bool) -> InitCheckpoint | None:
    """The `--init` checkpoint (else the config's `init`), checked against the config; on --resume, the
    one the run started from. (`bpmt train` calls it before reading the data, so that a wrong checkpoint
    fails at once.)"""
    started = run.read_meta().get("init") if resume and run.meta.is_file() else None
    if init is None and cfg.init and started is None:
        init = cfg.init
    if resume and started is None and init is not None:
        raise BPMTError(f"{run.root}: --resume with --init, but the run did not start from a checkpoint")
    if started is not None and init is None:
        if run.is_complete(cfg.stages[0]):
            return None                         # the checkpoint was read when the run began; nothing left to load
        init = started["checkpoint"]
        if not Path(init).exists():
            raise CheckpointError(f"{run.root}: --resume: the run started from {init} (meta.json, init), which "
                                  "is gone; restore it or pass --init with the same file")
    if init is None:
        return None
    checkpoint = resolve_init(init)
    if started is not None and checkpoint.sha256 != started["sha256"]:
        raise CheckpointError(f"{checkpoint.path}: --resume: this run started from a checkpoint with SHA-256 "
                              f"{started['sha256'][:12]}… ({started['checkpoint']}); this file's is "
                              f"{checkpoint.sha256[:12]}…")
    check_architecture(checkpoint, cfg)
    return checkpoint


def train(cfg: Config, corpus: PoseCorpus, out: str | os.PathLike, *, stage: str = "all", resume: bool = False,
          report: Reporter = print, show_progress: bool = True, data_description: str = "",
          init: str | os.PathLike | InitCheckpoint | None = None) -> RunFolder:
    """Train the configured stages into run folder `out`; export the recogniser after finetuning.

    `init`: start the pipeline's first stage from this checkpoint (`bpmt train --init`, engine/init.py)."""
    run = RunFolder(out)
    if run.config.is_file() and not resume:
        raise BPMTError(f"{run.root}: run folder already exists; pass --resume to continue it "
                        "or choose another --out")
    if resume and not run.config.is_file():
        raise BPMTError(f"{run.root}: nothing to resume (no config.yaml)")
    if stage != "all" and stage not in cfg.stages:
        raise BPMTError(f"--stage {stage} is not among this config's stages {cfg.stages}")
    checkpoint = init if isinstance(init, InitCheckpoint) else init_checkpoint(run, cfg, init, resume)
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
    if checkpoint is not None:
        meta["init"] = checkpoint.record()
    elif resume and run.meta.is_file() and "init" in run.read_meta():
        meta["init"] = run.read_meta()["init"]      # read when the run began; the export keeps the record
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
        result = run_stage(fabric, name, cfg, batcher, run, report, show_progress, checkpoint)
        report(f"{name}: {result.steps} steps in {result.seconds:.0f}s, final loss {result.final_loss:.4f}")
    if run.is_complete("finetune") and fabric.is_global_zero:
        network = build_stage_module("finetune", cfg, len(identities)).recognizer
        network.load_state_dict({k.removeprefix("recognizer."): v
                                 for k, v in read_weights(run.weights("finetune")).items()})
        model = build_model(network, cfg.ensemble.lda, len(identities))
        if isinstance(model, Ensemble):
            model.lda.fit(corpus_features(corpus), corpus.subjects)
            report(f"ensemble: LDA member fitted on {len(corpus)} training sequences of {len(identities)} identities")
        export_recognizer(model, cfg, meta, run.model)
    fabric.barrier()
    return run

