"""The labelled ensemble (`ensemble.lda`): network + LDA of hand-crafted features, fitted at export."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from bpmt.cli import main
from bpmt.data.source import open_data
from bpmt.engine.export import load_recognizer
from bpmt.errors import BPMTError, CheckpointError
from bpmt.evaluation.evaluate import embed_corpus, score_embeddings
from bpmt.models.handcrafted import FEATURE_DIM, corpus_features, fuse_embeddings, lda_embeddings
from bpmt.models.ensemble import Ensemble, HandcraftedLDA, build_model, network_of
from bpmt.models.recognizer import BPMTRecognizer, build_recognizer
from bpmt.skeleton import get_partition

from conftest import TINY_TRAIN
from test_models import tiny_model_config

ROOT = Path(__file__).resolve().parents[1]
TRAIN_IDS = [f"{i:04d}" for i in range(5)]
TEST_IDS = [f"{i:04d}" for i in range(5, 8)]


def split(corpus):
    train, test = corpus.select_ids(TRAIN_IDS), corpus.select_ids(TEST_IDS)
    return train, test, (corpus_features(train), corpus_features(test))



def test_lda_member_embeds_exactly_like_the_lda_baseline(serving_synth):
    corpus, _ = open_data(serving_synth)
    train, _, (train_feats, test_feats) = split(corpus)
    member = HandcraftedLDA(len(TRAIN_IDS))
    assert member.projection.shape == (FEATURE_DIM, len(TRAIN_IDS) - 1) and not member.is_fitted
    with pytest.raises(BPMTError, match="never fitted"):
        member(test_feats)
    member.fit(train_feats, train.subjects)
    assert member.is_fitted
    own = member(test_feats)
    expected = lda_embeddings(train_feats, train.subjects, test_feats)
    assert own.shape == (len(test_feats), len(TRAIN_IDS) - 1)
    assert np.allclose(np.abs(own), np.abs(expected), atol=1e-8)        # eigenvector signs are arbitrary
    with pytest.raises(BPMTError, match="has 3 dimensions, which does not fit a training set of 5 identities"):
        HandcraftedLDA(4).fit(train_feats, train.subjects)
    with pytest.raises(BPMTError, match="needs at least two"):
        HandcraftedLDA(2).fit(train_feats[:3], train.subjects[:3])
    assert HandcraftedLDA(3000).projection.shape == (FEATURE_DIM, FEATURE_DIM)     # rank <= feature count


def test_the_ensemble_is_a_composition_only_when_configured():
    network = build_recognizer(tiny_model_config(), get_partition("default"), 5, 3)
    assert build_model(network, False, 3) is network and network_of(network) is network
    ensemble = build_model(network, True, 3)
    assert isinstance(ensemble, Ensemble) and network_of(ensemble) is network
    assert isinstance(network, BPMTRecognizer) and not any("lda" in k for k in network.state_dict())
    extra = {k for k in ensemble.state_dict() if not k.startswith("network.")}
    assert extra == {"lda.mean", "lda.std", "lda.projection", "lda.fitted"}
    assert sum(p.numel() for p in ensemble.parameters()) == sum(p.numel() for p in network.parameters())   # not trained


def test_ensemble_forward_is_unit_length_late_fusion(serving_synth):
    corpus, _ = open_data(serving_synth)
    train, _, (train_feats, test_feats) = split(corpus)
    ensemble = build_model(build_recognizer(tiny_model_config(), get_partition("default"), 5, 5), True, 5)
    ensemble.lda.fit(train_feats, train.subjects)
    network = np.random.default_rng(0).normal(size=(len(test_feats), 8)) * 7
    fused = ensemble(network, test_feats)
    assert fused.shape == (len(test_feats), 8 + 4)
    assert np.allclose(np.linalg.norm(fused[:, :8], axis=1), 1) and np.allclose(np.linalg.norm(fused[:, 8:], axis=1), 1)
    assert np.allclose(fused, fuse_embeddings(network, ensemble.lda(test_feats)))


def test_train_export_and_evaluate_the_ensemble(serving_synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--data", str(serving_synth),
                 "--ids", ",".join(TRAIN_IDS), "--out", str(out), *TINY_TRAIN, "stages=[phase1,finetune]",
                 "ensemble.lda=true"]) == 0
    assert "ensemble: LDA member fitted on 15 training sequences of 5 identities" in capsys.readouterr().err
    model, config, _, _ = load_recognizer(out)
    assert config.ensemble.lda and isinstance(model, Ensemble) and model.lda.is_fitted

    corpus, _ = open_data(serving_synth)
    train, test, (train_feats, test_feats) = split(corpus)
    network = embed_corpus(model, config, test, ensemble=False)
    fused = embed_corpus(model, config, test)
    assert network.shape == (9, 16) and fused.shape == (9, 16 + len(TRAIN_IDS) - 1)
    expected = fuse_embeddings(network, lda_embeddings(train_feats, train.subjects, test_feats))
    distances = [((e[:, None] - e[None]) ** 2).sum(-1) for e in (fused, expected)]
    assert np.allclose(*distances, atol=1e-5)

    # `bpmt evaluate` scores the ensemble; `--set eval.ensemble=false` the network alone.
    data = ["--data", str(serving_synth), "--ids", ",".join(TEST_IDS), "--json"]
    for setting, embeddings in (([], fused), (["--set", "eval.ensemble=false"], network)):
        capsys.readouterr()
        assert main(["evaluate", str(out), *data, *setting]) == 0
        printed = json.loads(capsys.readouterr().out)
        wanted = score_embeddings(embeddings, test.names, test.subjects)["loo"]
        assert printed["loo"]["mAP"] == pytest.approx(wanted["mAP"], abs=1e-3), setting

    # The benchmark's consistency check passes for this model and catches a branch fitted elsewhere.
    spec = importlib.util.spec_from_file_location("protocol", ROOT / "benchmarks" / "protocol.py")
    protocol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocol)
    lda = lda_embeddings(train_feats, train.subjects, test_feats)
    protocol.check_lda_member(model, test_feats, lda, out)
    with pytest.raises(SystemExit, match="LDA member disagrees"):
        protocol.check_lda_member(model, test_feats, lda[:, ::-1] * 2.0, out)

    # The gallery stores and searches the fused vectors: every enrolled sequence finds itself.
    gallery = tmp_path / "gallery"
    assert main(["enroll", str(out), "--gallery", str(gallery), *data[:4], "--workers", "1"]) == 0
    assert json.loads((gallery / "gallery.json").read_text())["dim"] == 16 + len(TRAIN_IDS) - 1
    capsys.readouterr()
    assert main(["identify", str(out), "--gallery", str(gallery), *data, "--workers", "1"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["identity"] for r in results] == test.subjects
    assert all(r["matches"][0]["distance"] == pytest.approx(0.0, abs=1e-5) for r in results)

    # A description without the LDA member does not fit the weights: refused, not silently dropped.
    sidecar = out / "model.json"
    info = json.loads(sidecar.read_text())
    info["config"]["ensemble"]["lda"] = False
    sidecar.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="unexpected"):
        load_recognizer(out)


def test_floor_benchmark_reports_the_lda_member_cost(serving_synth, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("protocol_floor", ROOT / "benchmarks" / "protocol_floor.py")
    floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor)
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps([TRAIN_IDS[:4], [TRAIN_IDS[4], *TEST_IDS]]))
    result = tmp_path / "floor.json"
    assert floor.main(["--data", str(serving_synth), "--folds", str(folds), "--lda", "--chance-draws", "0",
                       "--workers", "1", "--json", str(result)]) == 0
    assert "as an ensemble's LDA member (ensemble.lda): fitting on all 24 sequences" in capsys.readouterr().out
    cost = json.loads(result.read_text())["lda"]["cost"]
    assert cost["sequences"] == 24 and cost["fit_seconds"] > 0 and cost["embed_ms_per_sequence"] > 0
