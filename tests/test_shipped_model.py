"""The model shipped in the package (`bpmt models`, MODEL left out = the default)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpmt.cli import main
from bpmt.config import config_to_dict, load_config
from bpmt.engine.export import load_recognizer, resolve_model_path
from bpmt.engine.pretrained import DEFAULT_MODEL, shipped_model, shipped_models
from bpmt.models.ensemble import Ensemble
from bpmt.models.recognizer import BPMTRecognizer

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_model_is_shipped_and_loads_by_name():
    shipped = shipped_model(DEFAULT_MODEL)
    assert shipped is not None and shipped in shipped_models()
    assert resolve_model_path(DEFAULT_MODEL) == shipped.weights
    model, config, meta, fingerprint = load_recognizer(DEFAULT_MODEL)     # fingerprint and strict load
    assert isinstance(model, BPMTRecognizer) and not isinstance(model, Ensemble)   # the network alone
    assert meta["num_classes"] == 38
    assert meta["init"]["sha256"] == load_recognizer("synthetic-walkers-750")[3]      # started from row H's start
    card = shipped.card.read_text()
    assert "non-commercial" in card and "bpmt train" in card and fingerprint in card


def test_the_shipped_model_is_what_its_documented_command_trains():
    """Its config is configs/gait3d.yaml (engine settings aside), so the card's command reproduces it."""
    _, config, _, _ = load_recognizer(DEFAULT_MODEL)
    shipped, default = config_to_dict(config), config_to_dict(load_config(ROOT / "configs" / "gait3d.yaml"))
    shipped.pop("engine"), default.pop("engine")
    assert shipped == default


def test_models_command_lists_it(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    (row,) = [r for r in rows if r["name"] == DEFAULT_MODEL]
    assert row["default"] and row["identities"] == 38 and not row["ensemble_lda"] and len(row["sha256"]) == 64
    assert main(["models"]) == 0
    assert f"{DEFAULT_MODEL}  (default)" in capsys.readouterr().out


def test_enroll_and_identify_without_a_model_argument(gait3d_cache, tmp_path, capsys):
    from bpmt.data.source import open_data

    corpus, _ = open_data(gait3d_cache)
    ids = ",".join(corpus.identities[:5])
    corpus = corpus.select_ids(ids.split(","))
    enrol = [n for i, n in enumerate(corpus.names) if i % 2 == 0]
    query = [n for i, n in enumerate(corpus.names) if i % 2 == 1]
    gallery = tmp_path / "gallery"
    assert main(["enroll", "--gallery", str(gallery), "--data", str(gait3d_cache), "--ids", ids,
                 "--seqs", ",".join(enrol), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["identities"] == 5
    assert main(["identify", "--gallery", str(gallery), "--data", str(gait3d_cache), "--ids", ids,
                 "--seqs", ",".join(query), "--no-threshold", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    truth = {n: n.split("-")[0] for n in query}
    hits = sum(r["matches"][0]["identity"] == truth[r["query"]] for r in results)
    assert len(results) == len(query) and hits / len(results) > 0.8      # identities it was trained on


def test_a_model_name_that_is_neither_shipped_nor_a_file_is_a_clear_error(capsys):
    assert main(["evaluate", "no-such-model", "--data", "."]) == 2
    assert "no-such-model: model file not found" in capsys.readouterr().err


def test_the_synthetic_pretraining_is_shipped_with_its_card():
    """`synthetic-walkers`: 375 synthetic walkers only (row C's start, the default's until row H)."""
    shipped = shipped_model("synthetic-walkers")
    assert shipped is not None
    model, config, meta, fingerprint = load_recognizer("synthetic-walkers")
    assert meta["num_classes"] == 375 and meta["data"].startswith("synthetic walkers")
    assert config.data.scale == "frame" and config.stages == ["phase1", "phase2", "finetune"]
    card = shipped.card.read_text()
    assert fingerprint in card and "bpmt synth" in card and "--detector gait3d" in card


def test_the_larger_synthetic_pretraining_is_shipped_with_its_card():
    """`synthetic-walkers-750`: the start of configs/gait3d.yaml (row H: 750 synthetic identities)."""
    shipped = shipped_model("synthetic-walkers-750")
    assert shipped is not None
    model, config, meta, fingerprint = load_recognizer("synthetic-walkers-750")
    assert meta["num_classes"] == 750 and meta["data"].startswith("synthetic walkers") and "--scale 0.25" in meta["data"]
    assert config.stages == ["phase1", "phase2", "finetune"] and config.finetune.steps == 4000
    _, default_start, _, _ = load_recognizer("synthetic-walkers")
    assert config_to_dict(config)["model"] == config_to_dict(default_start)["model"]     # a drop-in `init`
    card = shipped.card.read_text()
    assert fingerprint in card and "--scale 0.25" in card and "finetune.steps=4000" in card
    assert load_config(ROOT / "configs" / "gait3d.yaml").init == "synthetic-walkers-750"
