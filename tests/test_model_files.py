"""Safe model files. An exported recogniser (`model.safetensors` + `model.json`) loads without
unpickling anything; a tampered, truncated or mismatched file - even one whose fingerprint was
recomputed to match - is refused with a CheckpointError naming the file, and through the CLI with
one `error:` line. Training checkpoints are pickles, read only from the run folder and with
`weights_only=True`: code hidden in one never runs."""

from __future__ import annotations

import hashlib
import json
import os
import random
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load, save_file

from bpmt.cli import main
from bpmt.engine.export import load_recognizer
from bpmt.errors import CheckpointError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def model_dir(tiny_model, tmp_path) -> Path:
    """A private copy of the tiny exported model (the two files only)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model.safetensors", "model.json"):
        shutil.copy(tiny_model / name, folder / name)
    return folder


def resign(folder: Path) -> None:
    """Recompute the sidecar's fingerprint, as a careful forger would."""
    info = json.loads((folder / "model.json").read_text())
    info["sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(info))


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    """The weights, copied into memory (`load_file` would map the file that the damage rewrites)."""
    return load((folder / "model.safetensors").read_bytes())


def edit_state(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        state = read_state(folder)
        change(state)
        save_file(state, str(folder / "model.safetensors"))
        resign(folder)
    return damage


def edit_sidecar(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        info = json.loads((folder / "model.json").read_text())
        change(info)
        (folder / "model.json").write_text(json.dumps(info))
    return damage


def write_weights(content: bytes, sign: bool = True) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(content)
        if sign:
            resign(folder)
    return damage


def flip_data_byte(folder: Path) -> None:
    data = bytearray((folder / "model.safetensors").read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    data[8 + header + 100] ^= 0x01                                     # inside a tensor, not the header
    (folder / "model.safetensors").write_bytes(bytes(data))


def truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-16])


def truncate_and_resign(folder: Path) -> None:
    truncate(folder)
    resign(folder)


def torch_pickle(folder: Path) -> None:
    """A torch.save pickle of the right weights, renamed to .safetensors and signed."""
    torch.save(read_state(folder), folder / "model.safetensors")
    resign(folder)


def bad_offsets(folder: Path) -> None:
    data = bytearray((folder / "model.safetensors").read_bytes())
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"][1] += 10 ** 9
    raw = json.dumps(header).encode().ljust(size)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(data[8 + size:]))
    resign(folder)


def first_float(state: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 2)


def set_model(key: str, value) -> Callable[[Path], None]:
    return edit_sidecar(lambda info: info["config"]["model"].__setitem__(key, value))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    # integrity: the fingerprint
    "one flipped bit": (flip_data_byte, "weights do not match the fingerprint in model.json"),
    "truncated": (truncate, "weights do not match the fingerprint"),
    "other model's fingerprint": (edit_sidecar(lambda i: i.__setitem__("sha256", "0" * 64)),
                                  "do not match the fingerprint"),
    # re-signed, so only the content can tell
    "truncated, re-signed": (truncate_and_resign, "cannot read weights"),
    "empty, re-signed": (write_weights(b""), "cannot read weights"),
    "random bytes, re-signed": (write_weights(os.urandom(4096)), "cannot read weights"),
    "torch pickle renamed, re-signed": (torch_pickle, "cannot read weights"),
    "header pointing past the end, re-signed": (bad_offsets, "cannot read weights"),
    "wrong shape, re-signed": (edit_state(lambda s: s.__setitem__(first_float(s), torch.cat([s[first_float(s)]] * 2))),
                               r"weights do not fit the described model .*wrong shape \['"),
    "missing tensor, re-signed": (edit_state(lambda s: s.pop(first_float(s))), r"missing \['"),
    "extra tensor, re-signed": (edit_state(lambda s: s.__setitem__("backdoor.weight", torch.zeros(2))),
                                r"unexpected \['backdoor.weight'\]"),
    "float64 tensor, re-signed": (edit_state(lambda s: s.__setitem__(first_float(s), s[first_float(s)].double())),
                                  r"wrong dtype \['"),
    "NaN weight, re-signed": (edit_state(lambda s: s[first_float(s)].view(-1).__setitem__(0, float("nan"))),
                              "weights contain NaN or infinite values"),
    # the description
    "config for a wider model": (set_model("dim", 32), "weights do not fit the described model"),
    "config for a deeper model": (set_model("t1_depth", 2), r"weights do not fit the described model .*missing"),
    "config with an unknown key": (set_model("secret", 1),
                                   "invalid model description .*unknown config key 'model.secret'"),
    "config with zero heads": (set_model("heads", 0), "invalid model description"),
    "config with a negative width": (set_model("dim", -16), "invalid model description"),
    "config of the wrong type": (edit_sidecar(lambda i: i.__setitem__("config", [1, 2])), "invalid model description"),
    "no config": (edit_sidecar(lambda i: i.pop("config")), "invalid model description"),
    "num_classes as text": (edit_sidecar(lambda i: i["meta"].__setitem__("num_classes", "5")),
                            "meta.num_classes must be a positive integer"),
    "num_classes and identities disagree": (edit_sidecar(lambda i: i["meta"].__setitem__("num_classes", 10 ** 9)),
                                            "meta.identities must list 1000000000 identity names"),
    "no meta": (edit_sidecar(lambda i: i.pop("meta")), "meta must be an object"),
    "another format": (edit_sidecar(lambda i: i.__setitem__("format", "pytorch")), "not a BPMT model description"),
    "sidecar not JSON": (lambda f: (f / "model.json").write_text("{garbage"),
                         "model.json: model description of model.safetensors is not valid JSON"),
    "sidecar not an object": (lambda f: (f / "model.json").write_text("[]"), "not a BPMT model description"),
    "sidecar binary": (lambda f: (f / "model.json").write_bytes(b"\xff\xfe\x00"), "is not valid JSON"),
    "sidecar missing": (lambda f: (f / "model.json").unlink(), "model description of model.safetensors not found"),
    "sidecar is a folder": (lambda f: ((f / "model.json").unlink(), (f / "model.json").mkdir()), "cannot read"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_model_is_refused(model_dir, case):
    damage, message = DAMAGE[case]
    load_recognizer(model_dir)                                        # fine before
    damage(model_dir)
    with pytest.raises(CheckpointError, match=message) as info:
        load_recognizer(model_dir / "model.safetensors")
    assert str(info.value).startswith(str(model_dir)), str(info.value)


@pytest.mark.parametrize("case", ["one flipped bit", "wrong shape, re-signed", "config for a wider model",
                                  "sidecar missing", "torch pickle renamed, re-signed"])
@pytest.mark.parametrize("command", ["evaluate", "embed"])
def test_cli_refuses_damaged_model_in_one_line(model_dir, serving_synth, tmp_path, capsys, case, command):
    DAMAGE[case][0](model_dir)
    extra = ["--out", str(tmp_path / "emb.npz")] if command == "embed" else []
    assert main([command, str(model_dir), "--data", str(serving_synth), "--workers", "1", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {model_dir}") and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "emb.npz").exists()


def test_model_paths(tmp_path):
    with pytest.raises(CheckpointError, match="no exported model.safetensors"):
        load_recognizer(tmp_path)
    with pytest.raises(CheckpointError, match="model file not found"):
        load_recognizer(tmp_path / "nothing.safetensors")


def test_loading_never_unpickles(model_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    model, _, meta, fingerprint = load_recognizer(model_dir)
    assert not model.training and meta["num_classes"] == 5 and len(fingerprint) == 64


class _Payload:
    """Unpickling this object runs code: it creates the file named in `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_code_as_model_file_is_refused_without_running(model_dir, tmp_path):
    marker = tmp_path / "code-ran"
    with open(model_dir / "model.safetensors", "wb") as handle:
        pickle.dump({"weights": _Payload(marker)}, handle)
    resign(model_dir)
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_recognizer(model_dir)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Fuzzing the description: with the right fingerprint, any JSON is a model or a CheckpointError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 64) | st.floats(-1, 64) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
MODEL_KEYS = ["dim", "heads", "t1_depth", "t2_depth", "frames_per_token", "reduce_dims", "embed_dim", "layer",
              "t1_shared", "nonexistent"]


@st.composite
def descriptions(draw, base: dict) -> dict:
    info = json.loads(json.dumps(base))
    places = sorted(draw(st.lists(st.sampled_from(["model", "data", "meta", "top"]), min_size=1, max_size=3)),
                    key=lambda where: where == "top")             # whole sections last
    for where in places:
        value = draw(json_values)
        if where == "model":
            info["config"]["model"][draw(st.sampled_from(MODEL_KEYS))] = value
        elif where == "data":
            info["config"]["data"][draw(st.sampled_from(["partition", "channels", "test_max_len"]))] = value
        elif where == "meta":
            info["meta"][draw(st.sampled_from(["num_classes", "identities"]))] = value
        else:
            info[draw(st.sampled_from(["config", "meta", "format"]))] = value
    return info


def test_fuzzed_descriptions(model_dir):
    base = json.loads((model_dir / "model.json").read_text())

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
    @given(info=descriptions(base))
    def check(info):
        (model_dir / "model.json").write_text(json.dumps(info))
        try:
            _, _, meta, _ = load_recognizer(model_dir)
        except CheckpointError as exc:
            assert str(exc).startswith(str(model_dir))
            return
        assert meta["num_classes"] == len(meta["identities"])          # loaded: it really fits

    check()


# ---------------------------------------------------------------------------------------------
# Training checkpoints (pickles): only from the run folder, weights_only, code never runs

PHASE1_ONLY = ["phase1.steps=2", "phase2.steps=2", "finetune.steps=2", "phase1.batch_size=4", "phase2.batch_size=4",
               "finetune.identities_per_batch=4", "finetune.samples_per_identity=2", "data.clip_len=16",
               "model.dim=16", "model.reduce_dims=[16]", "model.embed_dim=16"]


@pytest.fixture
def run_after_phase1(serving_synth, tmp_path) -> Path:
    out = tmp_path / "run"
    assert main(["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(serving_synth), "--out", str(out),
                 "--workers", "1", "--stage", "phase1", *PHASE1_ONLY]) == 0
    (out / "phase2").mkdir()
    return out


def resume(run: Path, data: Path) -> int:
    return main(["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(data), "--out", str(run),
                 "--workers", "1", "--resume", *PHASE1_ONLY])


def test_code_in_a_training_checkpoint_never_runs(run_after_phase1, serving_synth, tmp_path):
    marker = tmp_path / "code-ran"
    checkpoint = run_after_phase1 / "phase2" / "last.ckpt"
    with open(checkpoint, "wb") as handle:          # protocol 2: torch's weights-only reader parses it
        pickle.dump({"step": 1, "module": _Payload(marker)}, handle, protocol=2)
    code = resume(run_after_phase1, serving_synth)
    assert code == 2 and not marker.exists()       # torch's weights-only reader refused the payload
    assert not (run_after_phase1 / "phase2" / "weights.safetensors").exists()
    with open(checkpoint, "rb") as handle:          # the trap is real: plain unpickling springs it
        pickle.load(handle)
    assert marker.exists()


@pytest.mark.parametrize("content", ["code", "garbage", "more garbage", "yet more garbage"])
def test_bad_training_checkpoint_is_one_clear_error(run_after_phase1, serving_synth, tmp_path, capsys, content):
    checkpoint = run_after_phase1 / "phase2" / "last.ckpt"
    if content == "code":
        with open(checkpoint, "wb") as handle:
            pickle.dump({"step": 1, "module": _Payload(tmp_path / "code-ran")}, handle, protocol=2)
    else:
        # fixed garbage (the same failure every run); random bytes fail anywhere inside the unpickler
        checkpoint.write_bytes(random.Random(content).randbytes(3000))
    capsys.readouterr()
    assert resume(run_after_phase1, serving_synth) == 2
    err = capsys.readouterr().err
    assert f"error: {checkpoint}" in err and "Traceback" not in err


def test_trainer_loads_checkpoints_with_weights_only():
    """The resume path reads `last.ckpt` of the run's own stage folder through Fabric with
    `weights_only=True` (a static check of the one call that loads a checkpoint)."""
    import inspect

    from bpmt.engine import trainer

    source = inspect.getsource(trainer)
    loads = [line.strip() for line in source.splitlines() if "fabric.load(" in line or "torch.load(" in line]
    assert loads and all("weights_only=True" in line for line in loads), loads
    assert "run.checkpoint(stage)" in source
