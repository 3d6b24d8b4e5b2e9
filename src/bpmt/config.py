"""Typed, strict configuration: YAML file -> dataclasses, `key=value` overrides, save.

An unknown key or a value of the wrong type is an error naming the key, never silently dropped.
The resolved config is saved in every run folder and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError


@dataclass
class DataConfig:
    partition: str = "default"                    # body-part partition name (skeleton.PARTITIONS)
    channels: list[str] = field(default_factory=lambda: ["xy", "conf", "vel1", "bone"])
    rotate: bool = False                          # spine-upright rotation per frame (GPGait HOT)
    scale: Literal["sequence", "frame"] = "sequence"
    center: Literal["frame", "clip"] = "frame"      # origin: each frame's neck, or the clip's mean neck
    origin: Literal["neck", "hip"] = "neck"         # the point that `center` puts at 0: neck or mid-hip
    clip_len: int = 60                            # training clip length in frames (the longest)
    clip_min: int = 32                            # > 0: each batch's clip length is drawn from [clip_min, clip_len]
    test_max_len: int = 60                        # test sequences are embedded in chunks of at most this many frames
    flip_p: float = 0.5                           # left/right mirror probability
    rotation_deg: float = 10.0                    # in-plane rotation range (+/-)
    scale_low: float = 0.9
    scale_high: float = 1.1
    noise_std: float = 0.01                       # joint jitter, in torso lengths
    part_mask_p: float = 0.1                      # IIP-Transformer's Part-Mask probability
    speed_low: float = 0.8                        # temporal resampling factor range
    speed_high: float = 1.25


@dataclass
class ModelConfig:
    arch: Literal["bpmt", "frame"] = "bpmt"       # BPMT, or the plain whole-body frame-token transformer floor
    layer: Literal["iip", "vanilla"] = "iip"      # IIP-Transformer layers or the vanilla baseline
    dim: int = 64                                 # token width of T1 and T2
    heads: int = 4
    t1_depth: int = 1
    t2_depth: int = 1
    ffn_ratio: float = 2.0
    dropout: float = 0.0
    frames_per_token: int = 4                     # temporal patch size of the tokenizer
    t1_shared: bool = False                       # one T1 for all parts (OmniVec2) or one per part
    reduce_dims: list[int] = field(default_factory=lambda: [64])   # FC layers after T1 (dims)
    embed_dim: int = 128


@dataclass
class MaskedPretrainConfig:
    """What both masked-pretraining phases read."""
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    mask_ratio: float = 0.6
    mask_type: Literal["random", "tube"] = "tube"


@dataclass
class Phase1Config(MaskedPretrainConfig):
    """Phase 1: each body part alone, masked reconstruction through T1 and a light decoder."""
    decoder_depth: int = 1                        # layers of the reconstruction decoder (discarded)


@dataclass
class Phase2Config(MaskedPretrainConfig):
    """Phase 2: pairs of body parts, masked reconstruction through T1, cross-attention and T2."""
    freeze_t1: bool = False                       # keep T1 fixed (train cross-attention and T2 only)


@dataclass
class FinetuneConfig:
    steps: int = 800
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    identities_per_batch: int = 16                # P of the P x K sampler
    samples_per_identity: int = 4                 # K
    triplet_margin: float = 0.2
    triplet_mining: Literal["hard", "all"] = "hard"
    ce_weight: float = 1.0
    label_smoothing: float = 0.1


@dataclass
class EngineConfig:
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    log_every: int = 10
    checkpoint_every: int = 100
    threads: int = 0                              # torch CPU threads; 0 = half the cores, at least 1 (engine/threads.py)


@dataclass
class EvalConfig:
    flip: bool = True                             # test-time augmentation: average with the mirror
    metric: Literal["euc", "cos"] = "euc"
    batch_size: int = 64
    ensemble: bool = True                         # embed with the whole ensemble when the model is one (ensemble.lda)


@dataclass
class EnsembleConfig:
    """Late fusion of the network with members that are not trained by gradient (a labelled ensemble)."""
    lda: bool = True                              # add Fisher's LDA of hand-crafted features, fitted at export


@dataclass
class Config:
    seed: int = 0
    stages: list[str] = field(default_factory=lambda: ["phase1", "phase2", "finetune"])
    # The checkpoint the first stage starts from (as `bpmt train --init`, which overrides it): a run folder,
    # a weights file or a shipped model's name (`bpmt models`); "" = none, the network starts at random.
    init: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    phase1: Phase1Config = field(default_factory=Phase1Config)
    phase2: Phase2Config = field(default_factory=Phase2Config)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)

    def validate(self) -> "Config":
        from .skeleton import get_partition

        stages = ["phase1", "phase2", "finetune"]
        if not self.stages or any(s not in stages for s in self.stages) or "finetune" not in self.stages:
            raise ConfigError(f"stages: must be an ordered subset of {stages} that includes finetune, got {self.stages}")
        if self.stages != [s for s in stages if s in self.stages]:
            raise ConfigError(f"stages: must be in pipeline order {stages}, got {self.stages}")
        try:
            get_partition(self.data.partition)
        except ValueError as exc:
            raise ConfigError(f"data.partition: {exc}") from None
        from .data.channels import check_channels
        try:
            check_channels(self.data.channels)
        except ValueError as exc:
            raise ConfigError(f"data.channels: {exc}") from None
        if self.data.center == "clip" and self.data.rotate:
            raise ConfigError("data.center=clip cannot be combined with data.rotate=true (rotation is about "
                              "each frame's neck)")
        if self.model.arch == "frame" and self.stages != ["finetune"]:
            raise ConfigError(f"model.arch=frame (the plain transformer floor) has no pretraining: "
                              f"stages must be [finetune], got {self.stages}")
        if self.model.dim % self.model.heads:
            raise ConfigError(f"model.dim ({self.model.dim}) must be divisible by model.heads ({self.model.heads})")
        for name in ("phase1", "phase2"):
            ratio = getattr(self, name).mask_ratio
            if not 0.0 < ratio < 1.0:
                raise ConfigError(f"{name}.mask_ratio must lie in (0, 1), got {ratio}")
        if self.finetune.samples_per_identity < 2:
            raise ConfigError("finetune.samples_per_identity must be at least 2 (triplets need positives)")
        if self.data.clip_len < 2 * self.model.frames_per_token:
            raise ConfigError("data.clip_len must cover at least two tokens (2 x model.frames_per_token)")
        if self.data.clip_min and not 2 * self.model.frames_per_token <= self.data.clip_min <= self.data.clip_len:
            raise ConfigError(f"data.clip_min ({self.data.clip_min}; default 32) must be 0 or lie in "
                              f"[2 x model.frames_per_token, data.clip_len ({self.data.clip_len})]: with a "
                              "shorter data.clip_len set data.clip_min=0 (every clip clip_len frames long)")
        return self


# ---------------------------------------------------------------------------------------------
# Strict conversion between dicts and dataclasses


def _check_value(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{key}: must be one of {list(typing.get_args(annotation))}, got {value!r}")
        return value
    if origin in (list, typing.List):
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_check_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if value is None and key == "init":         # `init=` on the command line: no checkpoint
            return ""
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        return _from_dict(annotation, value, key)
    raise ConfigError(f"{key}: unsupported type {annotation}")  # pragma: no cover - programming error


def _from_dict(cls, data: Any, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown config key {where!r} (known keys here: {', '.join(sorted(names))})")
    kwargs = {k: _check_value(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict) -> Config:
    return _from_dict(Config, data).validate()


def config_to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` strings (values parsed as YAML) to a nested dict, returning a new dict."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value ({exc})") from None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


# What `bpmt train` trains without --config: the package's copy of configs/gait3d.yaml (tested equal).
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "gait3d.yaml"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when `path` is None) and apply overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    data = apply_overrides(data, overrides or [])
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
