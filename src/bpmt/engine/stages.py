"""The training stages as one table: what each builds, which settings it reads, what it carries over.

| stage    | settings        | module                                  | carries (component -> path)                       |
|----------|-----------------|-----------------------------------------|---------------------------------------------------|
| phase1   | `cfg.phase1`    | Phase1Pretrainer(T1, decoder, head)     | encoders -> `encoders`                            |
| phase2   | `cfg.phase2`    | Phase2Pretrainer(T1, T2 fusion, head)   | encoders -> `encoders`, fusion -> `fusion`        |
| finetune | `cfg.finetune`  | Finetuner(recogniser)                   | encoders -> `recognizer.encoders`, fusion -> `recognizer.fusion` |

A stage starts from the latest earlier stage of the run's pipeline (`cfg.stages`): every component
both stages carry is loaded from that stage's saved weights, strictly (every tensor of the
component, no other); everything else is new (decoders, prediction heads, the embedding and
BNNeck; T2 when finetuning follows phase 1 directly). The pipeline's first stage starts from
random weights, or from another run's with `bpmt train --init` (engine/init.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import Config, FinetuneConfig, Phase1Config, Phase2Config
from ..data.batches import Batch, PoseBatcher, Shard
from ..data.channels import num_channels
from ..errors import BPMTError, CheckpointError
from ..finetune.step import Finetuner
from ..models.recognizer import build_encoders, build_fusion, build_recognizer
from ..pretrain.phase1 import Phase1Pretrainer
from ..pretrain.phase2 import Phase2Pretrainer
from ..skeleton import get_partition
from .init import InitCheckpoint, load_init
from .run import STAGES, RunFolder

StageSettings = Phase1Config | Phase2Config | FinetuneConfig


@dataclass(frozen=True)
class Stage:
    name: str
    settings: Callable[[Config], StageSettings]
    build: Callable[[Config, int], nn.Module]                 # (config, identities) -> fresh module
    carries: dict[str, str]                                   # component -> its path in the module
    batch: Callable[[PoseBatcher, Config, np.random.Generator, Shard], Batch]
    loss: Callable[[nn.Module, Batch, torch.Generator], tuple[torch.Tensor, dict[str, float]]]


def _build_phase1(cfg: Config, num_classes: int) -> nn.Module:
    m, s = cfg.model, cfg.phase1
    encoders = build_encoders(m, get_partition(cfg.data.partition), num_channels(cfg.data.channels))
    return Phase1Pretrainer(encoders, cfg.data.channels, layer=m.layer, heads=m.heads, decoder_depth=s.decoder_depth,
                            mask_ratio=s.mask_ratio, mask_type=s.mask_type)


def _build_phase2(cfg: Config, num_classes: int) -> nn.Module:
    m, s = cfg.model, cfg.phase2
    partition = get_partition(cfg.data.partition)
    encoders = build_encoders(m, partition, num_channels(cfg.data.channels))
    return Phase2Pretrainer(encoders, build_fusion(m, partition, encoders.out_dim), cfg.data.channels,
                            mask_ratio=s.mask_ratio, mask_type=s.mask_type, freeze_t1=s.freeze_t1)


def _build_finetune(cfg: Config, num_classes: int) -> nn.Module:
    network = build_recognizer(cfg.model, get_partition(cfg.data.partition), num_channels(cfg.data.channels),
                               num_classes)
    return Finetuner(network, cfg.finetune)


def _pretrain_batch(stage: str):
    def batch(batcher: PoseBatcher, cfg: Config, rng: np.random.Generator, shard: Shard) -> Batch:
        return batcher.random_batch(rng, getattr(cfg, stage).batch_size, shard)
    return batch


def _identity_batch(batcher: PoseBatcher, cfg: Config, rng: np.random.Generator, shard: Shard) -> Batch:
    f = cfg.finetune
    return batcher.identity_batch(rng, f.identities_per_batch, f.samples_per_identity, shard)


def _pretrain_loss(module: nn.Module, batch: Batch, generator: torch.Generator):
    return module(batch.keypoints, batch.padding_mask, generator)


def _finetune_loss(module: nn.Module, batch: Batch, generator: torch.Generator):
    return module(batch.features, batch.padding_mask, batch.labels)


STAGE_TABLE: dict[str, Stage] = {
    "phase1": Stage("phase1", lambda cfg: cfg.phase1, _build_phase1, {"encoders": "encoders"},
                    _pretrain_batch("phase1"), _pretrain_loss),
    "phase2": Stage("phase2", lambda cfg: cfg.phase2, _build_phase2, {"encoders": "encoders", "fusion": "fusion"},
                    _pretrain_batch("phase2"), _pretrain_loss),
    "finetune": Stage("finetune", lambda cfg: cfg.finetune, _build_finetune,
                      {"encoders": "recognizer.encoders", "fusion": "recognizer.fusion"},
                      _identity_batch, _finetune_loss),
}
assert tuple(STAGE_TABLE) == STAGES


def previous_stage(cfg: Config, stage: str) -> str | None:
    """The latest stage before `stage` in this config's pipeline (None = train from scratch)."""
    earlier = [s for s in cfg.stages if STAGES.index(s) < STAGES.index(stage)]
    return earlier[-1] if earlier else None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def carry_over(module: nn.Module, stage: str, source: str, state: dict[str, torch.Tensor],
               origin: Path) -> list[str]:
    """Load every component that `stage` and `source` both carry from `source`'s weights `state`
    into `module` (strict per component). -> the components loaded."""
    target, giver = STAGE_TABLE[stage].carries, STAGE_TABLE[source].carries
    loaded = []
    for component, path in target.items():
        if component not in giver:
            continue
        submodule = module.get_submodule(path)
        prefix = giver[component] + "."
        tensors = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            submodule.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise CheckpointError(f"{origin}: the {component} of {source} do not fit {stage}'s ({first})") from None
        loaded.append(component)
    return loaded


def build_stage_module(stage: str, cfg: Config, num_classes: int, run: RunFolder | None = None,
                       init: InitCheckpoint | None = None, report=None) -> nn.Module:
    """`stage`'s trainable module, started from the previous stage's weights in `run` (when the
    pipeline has one; it must be complete) or, for the pipeline's first stage, from `init`
    (`bpmt train --init`, engine/init.py)."""
    module = STAGE_TABLE[stage].build(cfg, num_classes)
    source = previous_stage(cfg, stage)
    if init is not None and source is None:
        loaded = load_init(module, stage, STAGE_TABLE[stage].carries, init)
        if report is not None:
            report(f"{stage}: starts from {init.path} ({', '.join(loaded)})")
    if run is not None and source is not None:
        if not run.is_complete(source):
            raise BPMTError(f"{run.root}: stage {stage} needs {source} to be complete first "
                            f"(run `bpmt train ... --stage {source}` or `--stage all`)")
        carry_over(module, stage, source, read_weights(run.weights(source)), run.weights(source))
    return module
