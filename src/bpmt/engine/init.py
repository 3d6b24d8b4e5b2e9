"""`bpmt train --init CHECKPOINT`: start a run's first stage from weights trained elsewhere.

The use: a pretraining that never sees the run's data (e.g. masked pretraining on thousands of
synthetic walkers, `bpmt synth`) is trained once, and every fold or user dataset starts from it.

CHECKPOINT is any of
* a run folder: its latest complete stage's `weights.safetensors` (finetune > phase2 > phase1),
* one stage's `RUN/<stage>/weights.safetensors`,
* an exported model (`RUN/model.safetensors`, or a shipped model's name, `bpmt models`).

What is loaded: every component the run's *first* stage carries (`stages.STAGE_TABLE`: T1
`encoders`, T2 `fusion`) that the checkpoint holds, each strictly (every tensor, right shapes);
when that stage is finetuning and the checkpoint is a finetuned recogniser, its embedding layer
too. Never the BNNeck classifier (other identities) nor pretraining decoders. Later stages start
from the previous stage as always.

Checks: the checkpoint's architecture (`model` keys that shape the network, body-part partition,
input channels) must equal the run's, read from the checkpoint's own config (its run folder's
`config.yaml` or the exported model's sidecar) — some differences, e.g. `model.heads`, change no
tensor shape; with no config beside it the strict per-component load is the check. The file's
absolute path and SHA-256 go into the run's `meta.json` (and so into the exported model):
`--resume` before the first stage is complete reloads the same file and refuses one whose bytes
changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import Config, config_from_dict, load_config
from ..errors import BPMTError, CheckpointError
from ..files import read_json
from .export import checked_sha256, resolve_model_path
from .run import STAGES, RunFolder

# The settings that decide the network's structure; a checkpoint trained with others does not fit.
ARCHITECTURE_KEYS = ("model.arch", "model.layer", "model.dim", "model.heads", "model.t1_depth", "model.t2_depth",
                     "model.frames_per_token", "model.t1_shared", "model.reduce_dims", "model.ffn_ratio",
                     "data.partition", "data.channels")

# Where each component's tensors sit in the files a checkpoint can be (stage weights, exported model).
COMPONENT_PREFIXES = {
    "encoders": ("encoders.", "recognizer.encoders.", "network.encoders."),
    "fusion": ("fusion.", "recognizer.fusion.", "network.fusion."),
    "embed": ("embed.", "recognizer.embed.", "network.embed."),    # a finetuned recogniser only
}


@dataclass
class InitCheckpoint:
    path: Path                         # the weights file
    sha256: str
    state: dict[str, torch.Tensor]
    config: Config | None              # what it was trained with, when known

    def record(self) -> dict:
        return {"checkpoint": str(self.path), "sha256": self.sha256}


def _value(cfg: Config, dotted: str):
    section, key = dotted.split(".")
    value = getattr(getattr(cfg, section), key)
    return list(value) if isinstance(value, (list, tuple)) else value


def _config_of(path: Path) -> Config | None:
    """The config a weights file was trained with: an exported model's sidecar, else its run's config.yaml."""
    sidecar = path.with_suffix(".json")
    if path.name != "weights.safetensors" and sidecar.is_file():
        info = read_json(sidecar, f"model description of {path.name}", CheckpointError)
        if not isinstance(info, dict):
            raise CheckpointError(f"{sidecar}: not a BPMT model description")
        try:
            return config_from_dict(info["config"])
        except (BPMTError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{sidecar}: invalid model description ({type(exc).__name__}: {exc})") from None
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.yaml").is_file() and (folder / "meta.json").is_file():
            try:
                return load_config(folder / "config.yaml")
            except BPMTError as exc:
                raise CheckpointError(f"{folder / 'config.yaml'}: the --init checkpoint's config: {exc}") from None
    return None


def resolve_init(source: str | os.PathLike) -> InitCheckpoint:
    """Read CHECKPOINT (run folder, stage weights or exported model; see the module doc)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(source)
    if path.is_dir():
        run = RunFolder(path)
        complete = [s for s in reversed(STAGES) if run.is_complete(s)]
        if complete:
            path = run.weights(complete[0])
        elif run.model.is_file():
            path = run.model
        else:
            raise CheckpointError(f"{source}: --init: no complete stage (<stage>/weights.safetensors) and no "
                                  "exported model.safetensors in this folder")
    elif not path.exists():
        path = resolve_model_path(source)           # a shipped model's name, or a clear "not found"
    path = path.resolve()                           # recorded in meta.json: --resume may run elsewhere
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: --init takes a .safetensors file (a stage's weights or an exported "
                              "model) or a run folder")
    sha = checked_sha256(path, "the --init checkpoint")
    config = _config_of(path)
    sidecar = path.with_suffix(".json")
    if path.name != "weights.safetensors" and sidecar.is_file():
        recorded = read_json(sidecar, f"model description of {path.name}", CheckpointError).get("sha256")
        if recorded is not None and recorded != sha:
            raise CheckpointError(f"{path}: --init: the weights changed since export (SHA-256 {sha[:12]}…, "
                                  f"{sidecar.name} says {str(recorded)[:12]}…)")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: --init: not a readable safetensors file ({exc})") from None
    return InitCheckpoint(path, sha, state, config)


def check_architecture(init: InitCheckpoint, cfg: Config) -> None:
    if cfg.model.arch != "bpmt":
        raise CheckpointError(f"{init.path}: --init starts BPMT networks (model.arch=bpmt); this config "
                              f"trains model.arch={cfg.model.arch}")
    if init.config is None:
        return
    differ = [f"{key}: {_value(init.config, key)!r} there, {_value(cfg, key)!r} here"
              for key in ARCHITECTURE_KEYS if _value(init.config, key) != _value(cfg, key)]
    if differ:
        raise CheckpointError(f"{init.path}: --init: trained with another architecture than this config "
                              f"({'; '.join(differ)})")


def load_init(module: nn.Module, stage: str, carries: dict[str, str], init: InitCheckpoint) -> list[str]:
    """Load into `module` (stage `stage`, carried components `carries` = component -> path) every
    component the checkpoint holds, strictly. -> the components loaded; raises when none fits."""
    wanted = dict(carries)
    if stage == "finetune" and "encoders" in carries:
        wanted["embed"] = carries["encoders"].replace("encoders", "embed")
    loaded = []
    for component, target in wanted.items():
        if component == "embed" and "encoders" not in loaded:
            continue                                 # an embedding only on top of the T1 it was trained on
        prefixes = [p for p in COMPONENT_PREFIXES[component] if any(k.startswith(p) for k in init.state)]
        if not prefixes:
            continue
        if len(prefixes) > 1:
            raise CheckpointError(f"{init.path}: --init: ambiguous, holds {component} under {prefixes}")
        prefix = prefixes[0]
        tensors = {k[len(prefix):]: v for k, v in init.state.items() if k.startswith(prefix)}
        try:
            module.get_submodule(target).load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise CheckpointError(f"{init.path}: --init: its {component} do not fit this config's {stage} "
                                  f"(another architecture? {first})") from None
        loaded.append(component)
    if not loaded:
        raise CheckpointError(f"{init.path}: --init: holds none of the components {stage} starts from "
                              f"({', '.join(carries)})")
    return loaded
