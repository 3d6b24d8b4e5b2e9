"""The network of an exported recogniser as an ONNX file, run by ONNX Runtime (`bpmt[onnx]`).

`bpmt export MODEL --onnx` writes `model.onnx` beside `model.safetensors` and `model.onnx.json`:
the SHA-256 of the weights it was exported from and of the ONNX file itself. Loading refuses an
ONNX file exported from other weights (stale: the model was retrained or replaced) or changed since
(edited, truncated), so an ONNX embedding is always the embedding of the model it sits beside.

Only the network is exported: features `(B, T, 17, C)` float32 and padding_mask `(B, T)` bool in,
embedding `(B, E)` out, batch and time dynamic (T a multiple of `model.frames_per_token`, as
`collate` pads). Input channels, chunking, flip TTA and an ensemble's LDA member stay in
`evaluation.embed` / `models.ensemble`, shared with the torch path, so both backends differ only
by the network's floating-point arithmetic (checked at export: at most `TOLERANCE` times
max(1, the largest |embedding| value)).

Exporter: torch's TorchScript-based `torch.onnx.export(..., dynamo=False)` by default - seconds,
where the torch.export-based one (`exporter="dynamo"`, needs onnxscript) took minutes on the
tiny test model and gave the same embeddings within 1e-6. The tracer records the model's Python
branches for the traced shapes (`T % frames_per_token`, the part count), which is why export runs
the graph on a second, differently shaped batch and compares it with torch before writing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..errors import BPMTError, CheckpointError
from ..files import read_json
from .export import checked_sha256, file_sha256, resolve_model_path

FORMAT = "bpmt-onnx"
OPSET = 18                         # what both exporters write natively (the dynamo one converts down badly)
TOLERANCE = 1e-4                   # max |ONNX - torch| / max(1, max |embedding|), checked at export
INPUTS = ("features", "padding_mask")
OUTPUT = "embedding"
Backend = Literal["auto", "torch", "onnx"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
INSTALL_HINT = "install the onnx extra: pip install -e '.[onnx]'"


class OnnxUnavailable(BPMTError):
    """The ONNX backend was asked for but cannot be used (no file, or onnxruntime not installed)."""


def onnx_path_of(weights: Path) -> Path:
    """Where `bpmt export --onnx` puts the network of `weights` (model.safetensors -> model.onnx)."""
    return weights.with_suffix(".onnx")


def sidecar_of(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".json")


# ---------------------------------------------------------------------------------------------
# Export


def probe_inputs(channels: int, multiple: int, batch: int, frames: int,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features `(batch, T, 17, C)` and a padding mask `(batch, T)` (T = `frames` rounded up to
    `multiple`) whose rows keep T, about half and `multiple` real frames: padding on every scale."""
    T = -(-frames // multiple) * multiple
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, T, 17, channels, generator=generator)
    real = [T, max(multiple, T // 2 // multiple * multiple), multiple]
    padding = torch.zeros(batch, T, dtype=torch.bool)
    for row in range(batch):
        padding[row, real[row % len(real)]:] = True
    features[padding] = 0.0                               # as `collate` leaves padded frames
    return features, padding


def export_onnx(model: str | os.PathLike, out: str | os.PathLike | None = None, *, opset: int = OPSET,
                exporter: Literal["torchscript", "dynamo"] = "torchscript") -> tuple[Path, float]:
    """Export the network of recogniser `model` (run folder or .safetensors) to ONNX at `out`
    (default: beside the weights, `model.onnx`) with its `.onnx.json` description.
    -> (ONNX path, max |ONNX - torch| on the check batches). Nothing is written when the exported
    graph disagrees with torch by more than `TOLERANCE` x max(1, max |embedding|)."""
    from ..data.channels import num_channels
    from ..models.ensemble import network_of
    from .export import load_recognizer

    if exporter not in ("torchscript", "dynamo"):
        raise BPMTError(f"unknown ONNX exporter {exporter!r}; choose torchscript or dynamo")
    weights = resolve_model_path(model)
    loaded, config, _, fingerprint = load_recognizer(weights)
    network = network_of(loaded).eval()
    channels, multiple = num_channels(config.data.channels), config.model.frames_per_token
    path = Path(out) if out is not None else onnx_path_of(weights)
    if path.suffix != ".onnx":
        raise CheckpointError(f"--out {path}: the ONNX file's name must end in .onnx")
    if not path.parent.is_dir():
        raise CheckpointError(f"--out {path}: folder {path.parent} does not exist")
    tmp = path.with_name(path.name + ".tmp")
    sidecar = sidecar_of(path)
    sidecar_tmp = sidecar.with_name(sidecar.name + ".tmp")
    example = probe_inputs(channels, multiple, batch=2, frames=3 * multiple, seed=1)
    try:
        _write_onnx(network, example, tmp, opset, exporter)
        # Check on shapes other than the traced one: dynamic axes that were baked in would fail here.
        checks = [_max_difference(network, tmp, probe_inputs(channels, multiple, batch, frames, seed))
                  for seed, (batch, frames) in enumerate([(3, config.data.test_max_len), (1, 2 * multiple)])]
        error = max(difference for difference, _ in checks)
        # float32 rounding grows with the embedding's size (a trained BNNeck's features reach ~10-100
        # on the random probe inputs): 1e-4 absolute up to |embedding| 1, relative beyond.
        allowed = TOLERANCE * max(1.0, max(scale for _, scale in checks))
        if not error <= allowed:
            raise CheckpointError(f"{weights}: the exported ONNX graph disagrees with the network "
                                  f"(max |difference| {error:.3g} > {allowed:.3g} = {TOLERANCE:g} x "
                                  f"max(1, max |embedding|)); nothing written")
        info = {"format": FORMAT, "weights": weights.name, "weights_sha256": fingerprint,
                "onnx_sha256": file_sha256(tmp), "opset": _opset_of(tmp), "exporter": exporter,
                "torch": torch.__version__, "inputs": {"features": ["batch", "time", 17, channels],
                                                       "padding_mask": ["batch", "time"]},
                "output": {OUTPUT: ["batch", "embedding"]}, "time_multiple": multiple, "max_abs_difference": error}
        sidecar_tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, path)
        os.replace(sidecar_tmp, sidecar)              # last: a crash before it leaves a refused pair
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write the ONNX file ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
        sidecar_tmp.unlink(missing_ok=True)
    return path, error


def _write_onnx(network: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path, opset: int,
                exporter: str) -> None:
    import warnings

    names = {"input_names": list(INPUTS), "output_names": [OUTPUT]}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The tracer's notes on Python branches and the legacy exporter's deprecation notice are
            # expected; the comparison after export is what decides.
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                from torch.export import Dim

                batch, time = Dim("batch"), Dim("time")
                # One self-contained file (no external weights file), so its SHA-256 covers everything.
                torch.onnx.export(network, example, str(path), dynamo=True, opset_version=opset, verbose=False,
                                  external_data=False, **names,
                                  dynamic_shapes={"features": {0: batch, 1: time},
                                                  "padding_mask": {0: batch, 1: time}})
            else:
                torch.onnx.export(network, example, str(path), dynamo=False, opset_version=opset, **names,
                                  dynamic_axes={"features": {0: "batch", 1: "time"},
                                                "padding_mask": {0: "batch", 1: "time"}, OUTPUT: {0: "batch"}})
    except ImportError as exc:
        raise OnnxUnavailable(f"ONNX export needs {exc.name or 'onnx'}; {INSTALL_HINT}") from None


def _opset_of(path: Path) -> int | None:
    """The default-domain opset the ONNX file declares (an exporter may not write the one asked for)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _max_difference(network: nn.Module, path: Path, inputs: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """(max |ONNX - torch|, max |torch|) on `inputs`; the difference is inf when the graph cannot run
    them (e.g. a traced fixed shape)."""
    with torch.no_grad():
        expected = network(*inputs).float().numpy()
    scale = float(np.abs(expected).max())
    onnx_network = OnnxNetwork(path, threads=1)
    try:
        got = onnx_network(inputs[0].numpy(), inputs[1].numpy())
    except Exception:                                    # onnxruntime's own error types
        return float("inf"), scale
    return (float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")), scale


# ---------------------------------------------------------------------------------------------
# Running


class OnnxNetwork:
    """The exported network in an ONNX Runtime session: `(features (B, T, 17, C) float32,
    padding_mask (B, T) bool) -> (B, E) float32`, like the torch network's forward. Thread-safe
    (ONNX Runtime sessions may run concurrently, as `bpmt serve --concurrency` does)."""

    def __init__(self, path: str | os.PathLike, threads: int = 0, time_multiple: int = 1):
        try:
            import onnxruntime as ort
        except ImportError:
            raise OnnxUnavailable(f"the ONNX backend needs onnxruntime; {INSTALL_HINT}") from None
        from .threads import auto_threads

        self.path = Path(path)
        self.time_multiple = time_multiple                 # T must be a multiple of it (frames_per_token)
        self.threads = threads or auto_threads()        # the same policy as torch's (`engine.threads`)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3                   # errors only: no notes on stderr
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:                         # onnxruntime's own error types (Fail, InvalidGraph, ...)
            raise CheckpointError(f"{self.path}: ONNX Runtime cannot load it ({type(exc).__name__}: "
                                  f"{str(exc)[:300]})") from None
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUTS:
            raise CheckpointError(f"{self.path}: not a BPMT network (inputs {list(names)}, expected {list(INPUTS)})")

    @property
    def channels(self) -> int | str:
        return self.session.get_inputs()[0].shape[-1]

    def __call__(self, features: np.ndarray, padding_mask: np.ndarray) -> np.ndarray:
        """features `(B, T, 17, C)`, padding_mask `(B, T)` True = padded -> embedding `(B, E)` float32."""
        if features.shape[1] % self.time_multiple:
            raise ValueError(f"sequence length {features.shape[1]} is not a multiple of frames_per_token="
                             f"{self.time_multiple}")
        return self.session.run(None, {"features": np.ascontiguousarray(features, dtype=np.float32),
                                       "padding_mask": np.ascontiguousarray(padding_mask, dtype=np.bool_)})[0]


def load_onnx_network(path: str | os.PathLike, fingerprint: str, channels: int, threads: int = 0) -> OnnxNetwork:
    """The ONNX network at `path`, checked against its `.onnx.json` description: exported from the
    weights with SHA-256 `fingerprint` (else stale), unchanged since, taking `channels` input channels.
    CheckpointError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise OnnxUnavailable(f"{path}: no ONNX file (write it with `bpmt export MODEL --onnx`)")
    sidecar = sidecar_of(path)
    info = read_json(sidecar, f"description of {path.name}", CheckpointError)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar}: not a BPMT ONNX description")
    if info.get("weights_sha256") != fingerprint:
        recorded = str(info.get("weights_sha256"))[:12]
        raise CheckpointError(f"{path}: stale - exported from other weights (SHA-256 {recorded}..., the model "
                              f"now has {fingerprint[:12]}...); re-export it with `bpmt export MODEL --onnx` "
                              "or use --backend torch")
    if checked_sha256(path, "it") != info.get("onnx_sha256"):
        raise CheckpointError(f"{path}: changed since export (its SHA-256 does not match {sidecar.name}: "
                              "edited, truncated or replaced); re-export it with `bpmt export MODEL --onnx`")
    multiple = info.get("time_multiple", 1)
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise CheckpointError(f"{sidecar}: time_multiple must be a positive integer, found {multiple!r}")
    network = OnnxNetwork(path, threads, multiple)
    if network.channels != channels:
        raise CheckpointError(f"{path}: takes {network.channels} input channels, the model's config {channels}")
    return network


def inference_network(model: str | os.PathLike, loaded: nn.Module, config, fingerprint: str,
                      backend: Backend = "auto", threads: int = 0) -> nn.Module | OnnxNetwork:
    """What runs the network of recogniser `model` (as loaded by `load_recognizer`: `loaded`,
    `config`, `fingerprint`): its torch network, or the ONNX file beside its weights in ONNX Runtime.

    backend="torch": torch. "onnx": ONNX Runtime, or an error saying why not. "auto": ONNX Runtime
    when `model.onnx` exists and onnxruntime is installed, else torch; a stale or changed ONNX file
    is an error, not a silent fallback. `threads`: ONNX Runtime's intra-op threads (0 = auto)."""
    from ..data.channels import num_channels
    from ..models.ensemble import network_of

    if backend not in BACKENDS:
        raise BPMTError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    path = onnx_path_of(resolve_model_path(model))
    if backend == "torch" or (backend == "auto" and not (path.is_file() and onnxruntime_available())):
        return network_of(loaded)
    return load_onnx_network(path, fingerprint, num_channels(config.data.channels), threads)


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def backend_name(network: nn.Module | OnnxNetwork) -> str:
    return "onnx" if isinstance(network, OnnxNetwork) else "torch"
