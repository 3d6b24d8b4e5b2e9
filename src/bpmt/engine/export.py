"""Exported recognisers: `model.safetensors` (weights, never unpickled) + `model.json` (config,
identity labels, input description and the weights' SHA-256 fingerprint).

Loading checks the fingerprint, then builds the model from the config and loads the weights
strictly: a tampered, truncated or mismatched file is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..config import Config, config_from_dict, config_to_dict
from ..errors import BPMTError, CheckpointError
from ..files import read_json
from ..skeleton import get_partition

FORMAT = "bpmt-recognizer"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_recognizer(model: nn.Module, config: Config, meta: dict, path: str | os.PathLike) -> Path:
    """Write `path` (.safetensors) and its `.json` sidecar atomically; returns the weights path."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp))
    info = {"format": FORMAT, "config": config_to_dict(config), "meta": meta, "sha256": file_sha256(tmp)}
    sidecar = path.with_suffix(".json")
    sidecar_tmp = sidecar.with_name(sidecar.name + ".tmp")
    sidecar_tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, path)
    os.replace(sidecar_tmp, sidecar)
    return path


def resolve_model_path(model: str | os.PathLike) -> Path:
    """MODEL may be a run folder or the exported `.safetensors` file itself."""
    path = Path(model)
    if path.is_dir():
        path = path / "model.safetensors"
        if not path.is_file():
            raise CheckpointError(f"{model}: no exported model.safetensors (has training finished?)")
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    return path


def load_recognizer(model: str | os.PathLike, device: str | torch.device = "cpu"):
    """-> (model in eval mode, Config, meta dict, fingerprint)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..data.transforms import num_channels
    from ..models.recognizer import BPMTRecognizer

    path = resolve_model_path(model)
    sidecar = path.with_suffix(".json")
    info = read_json(sidecar, f"model description of {path.name}", CheckpointError)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar}: not a BPMT model description")
    fingerprint = file_sha256(path)
    if fingerprint != info.get("sha256"):
        raise CheckpointError(f"{path}: weights do not match the fingerprint in {sidecar.name} "
                              "(file changed, truncated or from another model)")
    try:
        config = config_from_dict(info["config"])
        meta = info["meta"]
        net = BPMTRecognizer(config.model, get_partition(config.data.partition),
                             num_channels(config.data.channels), int(meta["num_classes"]))
    except (BPMTError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{sidecar}: invalid model description ({exc})") from None
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read weights ({exc})") from None
    expected = net.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: weights do not fit the described model "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})")
    net.load_state_dict(state, strict=True)
    return net.to(device).eval(), config, meta, fingerprint
