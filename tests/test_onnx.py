"""The ONNX export of the network and the ONNX Runtime backend (`engine.onnx_model`).

Every test works on a copy of the shared tiny model's files: an ONNX file beside the shared
`tiny_model` would switch the other serving tests to ONNX Runtime (`--backend auto`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from bpmt.cli import main  # noqa: E402
from bpmt.data.corpus import PoseCorpus  # noqa: E402
from bpmt.data.source import open_data  # noqa: E402
from bpmt.engine.export import export_recognizer, load_recognizer  # noqa: E402
from bpmt.engine.onnx_model import OnnxNetwork, inference_network, load_onnx_network  # noqa: E402
from bpmt.errors import CheckpointError  # noqa: E402
from bpmt.evaluation.evaluate import embed_corpus  # noqa: E402

TOLERANCE = 1e-4


def copy_model(run: Path, to: Path) -> Path:
    to.mkdir(parents=True)
    for name in ("model.safetensors", "model.json", "model.onnx", "model.onnx.json"):
        if (run / name).exists():
            shutil.copy2(run / name, to / name)
    return to


@pytest.fixture(scope="module")
def onnx_run(tiny_model, tmp_path_factory) -> Path:
    """A copy of the tiny model with `bpmt export --onnx` done (the CLI path under test)."""
    run = copy_model(tiny_model, tmp_path_factory.mktemp("onnx") / "run")
    assert main(["export", str(run), "--onnx"]) == 0
    return run


@pytest.fixture(scope="module")
def varied_corpus(serving_synth) -> PoseCorpus:
    """Sequences cut to lengths that exercise everything: one token, padding inside a token, one
    chunk, two and three chunks of `data.test_max_len=40` (chunks of unequal padded lengths)."""
    corpus, _ = open_data(serving_synth, workers=1)
    sequences = []
    for index, length in enumerate([4, 9, 33, 40, 41, 95, 100, 13]):
        seq = corpus.sequence(index % len(corpus))
        take = min(length, len(seq.frames))
        sequences.append(type(seq)(f"{seq.name}-cut{length}", seq.subject, seq.camera, seq.video,
                                   seq.frames[:take], seq.keypoints[:take], seq.crop_sizes[:take]))
    return PoseCorpus.from_sequences(sequences)


def test_export_writes_the_network_and_the_weights_fingerprint(onnx_run, capsys):
    description = json.loads((onnx_run / "model.onnx.json").read_text())
    _, _, _, fingerprint = load_recognizer(onnx_run)
    assert description["format"] == "bpmt-onnx" and description["weights_sha256"] == fingerprint
    assert description["max_abs_difference"] <= TOLERANCE
    names = [i.name for i in OnnxNetwork(onnx_run / "model.onnx").session.get_inputs()]
    assert names == ["features", "padding_mask"]


@pytest.mark.parametrize("flip,batch_size", [(True, 64), (True, 1), (False, 3)])
def test_onnx_embeddings_equal_torch(onnx_run, varied_corpus, flip, batch_size):
    model, config, _, fingerprint = load_recognizer(onnx_run)
    config.eval.flip, config.eval.batch_size = flip, batch_size
    network = inference_network(onnx_run, model, config, fingerprint, "auto", threads=1)
    assert isinstance(network, OnnxNetwork)
    shapes = []

    def spy(features: np.ndarray, padding_mask: np.ndarray) -> np.ndarray:       # proves ONNX Runtime ran
        shapes.append(features.shape)
        return network(features, padding_mask)

    torch_embeddings = embed_corpus(model, config, varied_corpus)
    onnx_embeddings = embed_corpus(model, config, varied_corpus, network=spy)
    chunks = sum(-(-int(n) // config.data.test_max_len) for n in varied_corpus.lengths) * (2 if flip else 1)
    assert sum(shape[0] for shape in shapes) == chunks
    assert onnx_embeddings.shape == torch_embeddings.shape == (len(varied_corpus), config.model.embed_dim)
    assert np.abs(onnx_embeddings - torch_embeddings).max() <= TOLERANCE


def test_ensemble_lda_member_is_applied_as_with_torch(onnx_run, varied_corpus):
    from bpmt.models.ensemble import Ensemble, HandcraftedLDA
    from bpmt.models.handcrafted import corpus_features

    network, config, _, fingerprint = load_recognizer(onnx_run)
    lda = HandcraftedLDA(num_classes=4)
    lda.fit(corpus_features(varied_corpus), [f"{i % 4}" for i in range(len(varied_corpus))])
    ensemble = Ensemble(network, lda).eval()
    onnx = inference_network(onnx_run, ensemble, config, fingerprint, "onnx", threads=1)
    expected = embed_corpus(ensemble, config, varied_corpus)
    got = embed_corpus(ensemble, config, varied_corpus, network=onnx)
    assert got.shape == expected.shape == (len(varied_corpus), config.model.embed_dim + lda.dims)
    assert np.abs(got - expected).max() <= TOLERANCE


def test_stale_onnx_is_refused_and_retraining_removes_it(onnx_run, varied_corpus, tmp_path, capsys):
    run = copy_model(onnx_run, tmp_path / "run")
    model, config, meta, _ = load_recognizer(run)
    saved = {name: (run / name).read_bytes() for name in ("model.onnx", "model.onnx.json")}
    with torch.no_grad():
        next(model.parameters()).add_(0.01)             # new weights, as a retraining would write
    export_recognizer(model, config, meta, run / "model.safetensors")
    assert not (run / "model.onnx").exists() and not (run / "model.onnx.json").exists()
    for name, content in saved.items():                 # the old ONNX file put back by hand
        (run / name).write_bytes(content)
    model, config, _, fingerprint = load_recognizer(run)
    with pytest.raises(CheckpointError, match="stale"):
        inference_network(run, model, config, fingerprint, "auto")
    assert main(["embed", str(run), "--data", str(tmp_path), "--out", str(tmp_path / "e.npz")]) == 2
    assert "stale" in capsys.readouterr().err
    assert isinstance(inference_network(run, model, config, fingerprint, "torch"), torch.nn.Module)


def test_changed_or_undescribed_onnx_is_refused(onnx_run, tmp_path):
    run = copy_model(onnx_run, tmp_path / "run")
    _, config, _, fingerprint = load_recognizer(run)
    onnx_file = run / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF                         # one byte of a weight or of the graph
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="changed since export"):
        load_onnx_network(onnx_file, fingerprint, channels=7)
    (run / "model.onnx.json").unlink()
    with pytest.raises(CheckpointError, match="not found"):
        load_onnx_network(onnx_file, fingerprint, channels=7)


def test_backend_choice(onnx_run, tiny_model, tmp_path, capsys):
    model, config, _, fingerprint = load_recognizer(tiny_model)
    # auto without an ONNX file: torch; onnx without one: an error saying how to make it
    assert isinstance(inference_network(tiny_model, model, config, fingerprint, "auto"), torch.nn.Module)
    plain = copy_model(tiny_model, tmp_path / "plain")
    for name in ("model.onnx", "model.onnx.json"):
        (plain / name).unlink(missing_ok=True)
    out = tmp_path / "e.npz"
    assert main(["embed", str(plain), "--data", str(tmp_path), "--out", str(out), "--backend", "onnx"]) == 2
    assert "bpmt export MODEL --onnx" in capsys.readouterr().err


def test_export_cli_errors(onnx_run, tmp_path, capsys, monkeypatch):
    assert main(["export", str(onnx_run)]) == 2
    assert "--onnx" in capsys.readouterr().err
    assert main(["export", str(onnx_run), "--onnx", "--out", str(tmp_path / "net.bin")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "--onnx"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    # a graph traced with a fixed time axis cannot run the check batches: refused, not a traceback
    import bpmt.engine.onnx_model as onnx_model

    real_export = torch.onnx.export

    def fixed_time(*args, dynamic_axes=None, **kwargs):
        return real_export(*args, dynamic_axes={"features": {0: "batch"}, "padding_mask": {0: "batch"}}, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.onnx, "export", fixed_time)
        assert main(["export", str(onnx_run), "--onnx", "--out", str(tmp_path / "fixed.onnx")]) == 2
    assert "disagrees" in capsys.readouterr().err and not (tmp_path / "fixed.onnx").exists()
    # a graph that disagrees with torch is not written (the export itself stubbed: a copy of the real one)

    monkeypatch.setattr(onnx_model, "_write_onnx", lambda network, example, path, *rest:
                        shutil.copy2(onnx_run / "model.onnx", path))
    out = tmp_path / "bad.onnx"
    monkeypatch.setattr(onnx_model, "_max_difference", lambda *args: (0.09, 1000.0))   # 1e-4 x 1000 allows 0.1
    assert main(["export", str(onnx_run), "--onnx", "--out", str(out)]) == 0
    capsys.readouterr()
    out.unlink()
    out.with_name("bad.onnx.json").unlink()
    monkeypatch.setattr(onnx_model, "_max_difference", lambda *args: (0.5, 2.0))      # allows 2e-4
    assert main(["export", str(onnx_run), "--onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "disagrees" in err and "0.5 > 0.0002" in err
    assert not out.exists() and not (tmp_path / "bad.onnx.json").exists() and not list(tmp_path.glob("*.tmp"))


def test_export_out_elsewhere_then_cli_embed_and_identify_agree(onnx_run, serving_synth, tmp_path, capsys):
    out = tmp_path / "elsewhere.onnx"
    assert main(["export", str(onnx_run), "--onnx", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "elsewhere.onnx.json").is_file()
    embeddings = {}
    for backend in ("torch", "onnx"):
        path = tmp_path / f"{backend}.npz"
        assert main(["embed", str(onnx_run), "--data", str(serving_synth), "--out", str(path), "--backend",
                     backend]) == 0
        embeddings[backend] = np.load(path)["embeddings"]
    assert np.abs(embeddings["onnx"] - embeddings["torch"]).max() <= TOLERANCE
    gallery = tmp_path / "gallery"
    assert main(["enroll", str(onnx_run), "--gallery", str(gallery), "--data", str(serving_synth),
                 "--workers", "1", "--json"]) == 0
    capsys.readouterr()
    answers = {}
    for backend in ("torch", "onnx"):
        assert main(["identify", str(onnx_run), "--gallery", str(gallery), "--data", str(serving_synth),
                     "--workers", "1", "--json", "--backend", backend]) == 0
        answers[backend] = json.loads(capsys.readouterr().out)["results"]
    assert [r["identity"] for r in answers["onnx"]] == [r["identity"] for r in answers["torch"]]
    for a, b in zip(answers["onnx"], answers["torch"]):
        assert a["distance"] == pytest.approx(b["distance"], abs=1e-3)


def test_http_service_embeds_with_either_backend(onnx_run, varied_corpus, tmp_path):
    from bpmt.serving.http_service import Service

    keypoints = np.asarray(varied_corpus.keypoints_of(6))                   # 100 frames
    vectors = {backend: Service(onnx_run, tmp_path / backend, create_gallery=True, backend=backend,
                                threads=1).embed(keypoints, "query") for backend in ("torch", "onnx")}
    assert np.abs(vectors["onnx"] - vectors["torch"]).max() <= TOLERANCE


def test_the_shipped_model_exports_and_embeds_real_walkers_like_torch(gait3d_cache, tmp_path):
    """A trained BNNeck's features are large (tens on the export's random probes): the export check
    scales its 1e-4 with them, and on real sequences the two backends agree to 1e-4 relative."""
    from bpmt.engine.pretrained import shipped_model

    run = tmp_path / "shipped"
    shutil.copytree(shipped_model("gait3d-38ids").weights.parent, run)
    assert main(["export", str(run), "--onnx"]) == 0
    model, config, _, fingerprint = load_recognizer(run)
    corpus, _ = open_data(gait3d_cache)
    some = corpus.select_ids(corpus.identities[:3])
    onnx = inference_network(run, model, config, fingerprint, "onnx", threads=1)
    expected = embed_corpus(model, config, some)
    got = embed_corpus(model, config, some, network=onnx)
    assert np.abs(got - expected).max() <= TOLERANCE * max(1.0, np.abs(expected).max())
