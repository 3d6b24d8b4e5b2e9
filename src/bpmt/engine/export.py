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


def checked_sha256(path: Path, what: str) -> str:
    """`file_sha256(path)`, an unreadable file being a CheckpointError naming it."""
    try:
        return file_sha256(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


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
    # An ONNX export of earlier weights beside it is stale now (`engine.onnx_model` would refuse it).
    for stale in (path.with_suffix(".onnx"), path.with_suffix(".onnx.json")):
        stale.unlink(missing_ok=True)
    return path


def resolve_model_path(model: str | os.PathLike) -> Path:
    """MODEL may be a run folder, the exported `.safetensors` file itself, or the name of a model
    shipped in the package (`bpmt models`; a folder of that name in the working directory wins)."""
    from .pretrained import shipped_model

    path = Path(model)
    shipped = shipped_model(str(model)) if not path.exists() else None
    if shipped is not None:
        return shipped.weights
    if path.is_dir():
        path = path / "model.safetensors"
        if not path.is_file():
            raise CheckpointError(f"{model}: no exported model.safetensors (has training finished?)")
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    return path


def load_recognizer(model: str | os.PathLike, device: str | torch.device = "cpu"):
    """-> (model in eval mode, Config, meta dict, fingerprint). The model is the network, or an
    `models.ensemble.Ensemble` of it when the config says `ensemble.lda`.

    Nothing is unpickled. In order: the sidecar must be a BPMT model description; the weights must
    hash to its fingerprint (an integrity check against truncation and mix-ups, not a signature:
    whoever can edit the files can re-sign them); the described model is built and every tensor of
    the file must match it in name, shape and dtype and be finite. Any failure is a CheckpointError
    naming the file. (The model is built before the comparison, so a description of a giant model
    costs its memory; building it on the `meta` device first would avoid that, but its first use
    imports sympy, about a second on every load.)
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolve_model_path(model)
    sidecar = path.with_suffix(".json")
    info = read_json(sidecar, f"model description of {path.name}", CheckpointError)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar}: not a BPMT model description")
    fingerprint = checked_sha256(path, "weights")
    if fingerprint != info.get("sha256"):
        raise CheckpointError(f"{path}: weights do not match the fingerprint in {sidecar.name} "
                              "(file changed, truncated or from another model)")
    config, meta = _described(info, sidecar)
    net = _build(config, meta, sidecar)
    expected = net.state_dict()
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot read weights ({exc})") from None
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    wrong_type = [k for k in expected if k in state and state[k].dtype != expected[k].dtype]
    if missing or unexpected or wrong or wrong_type:
        raise CheckpointError(f"{path}: weights do not fit the described model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}, wrong dtype {wrong_type[:3]})")
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{path}: weights contain NaN or infinite values (in {broken[:3]})")
    net.load_state_dict(state, strict=True)
    return net.to(device).eval(), config, meta, fingerprint


def _described(info: dict, sidecar: Path) -> tuple[Config, dict]:
    """The config and meta of a model description, checked (CheckpointError naming the sidecar)."""
    try:
        config = config_from_dict(info["config"])
    except (BPMTError, KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
        raise CheckpointError(f"{sidecar}: invalid model description ({type(exc).__name__}: {exc})") from None
    meta = info.get("meta")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{sidecar}: invalid model description (meta must be an object)")
    classes = meta.get("num_classes")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise CheckpointError(f"{sidecar}: invalid model description (meta.num_classes must be a positive "
                              f"integer, found {classes!r})")
    identities = meta.get("identities")
    # One name per class also bounds the classifier a description can ask for by its own size.
    if (not isinstance(identities, list) or len(identities) != classes
            or not all(isinstance(i, str) for i in identities)):
        raise CheckpointError(f"{sidecar}: invalid model description (meta.identities must list "
                              f"{classes} identity names)")
    return config, meta


def _build(config: Config, meta: dict, sidecar: Path) -> nn.Module:
    from ..data.channels import num_channels
    from ..models.ensemble import build_model
    from ..models.recognizer import build_recognizer

    try:
        network = build_recognizer(config.model, get_partition(config.data.partition),
                                   num_channels(config.data.channels), meta["num_classes"])
        return build_model(network, config.ensemble.lda, meta["num_classes"])
    except (BPMTError, KeyError, TypeError, ValueError, ArithmeticError, RuntimeError) as exc:
        raise CheckpointError(f"{sidecar}: invalid model description ({type(exc).__name__}: {exc})") from None
