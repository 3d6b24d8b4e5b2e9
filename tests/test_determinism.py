"""Determinism on CPU: the same seed and data give bit-identical weights, losses and metrics; another
seed gives a different model. Embedding is a pure function of the model, the data and the test-time
settings (its last bits depend on batch size and thread count, which is why those are pinned)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from bpmt.cli import main
from bpmt.data.source import open_data
from bpmt.data.synth import write_synthetic
from bpmt.engine.export import load_recognizer
from bpmt.evaluation.evaluate import embed_corpus, score_embeddings

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STAGES = ("phase1", "phase2", "finetune")
TINY = ["phase1.steps=3", "phase2.steps=3", "finetune.steps=4", "engine.log_every=1", "engine.threads=1",
        "finetune.identities_per_batch=4", "finetune.samples_per_identity=2", "phase1.batch_size=4",
        "phase2.batch_size=4", "phase1.warmup_steps=1", "phase2.warmup_steps=1", "finetune.warmup_steps=1",
        "data.clip_len=16", "data.test_max_len=40", "model.dim=16", "model.reduce_dims=[16]", "model.embed_dim=16",
        "eval.batch_size=16"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("determinism-synth"), subjects=5, sequences_per_subject=3, seed=3)


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, Path]:
    """Two runs with seed 0 and one with seed 1, same data and config."""
    base = tmp_path_factory.mktemp("determinism-runs")
    out = {}
    for name, seed in (("a", 0), ("b", 0), ("other", 1)):
        out[name] = base / name
        assert main(["train", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(data), "--out", str(out[name]),
                     "--workers", "1", *TINY, f"seed={seed}"]) == 0
    return out


def weights(run: Path, stage: str) -> bytes:
    return (run / stage / "weights.safetensors").read_bytes()


def losses(run: Path, stage: str) -> list[float]:
    rows = (run / stage / "log.csv").read_text().splitlines()[1:]
    return [float(row.split(",")[1]) for row in rows]


def evaluation(run: Path, data: Path) -> tuple[np.ndarray, dict]:
    model, config, _, _ = load_recognizer(run)
    corpus, _ = open_data(data)
    embeddings = embed_corpus(model, config, corpus)
    return embeddings, score_embeddings(embeddings, corpus.names, corpus.subjects)


def test_same_seed_same_everything(runs, data):
    a, b = runs["a"], runs["b"]
    for stage in STAGES:
        assert weights(a, stage) == weights(b, stage), f"{stage} weights differ"
        assert (a / stage / "log.csv").read_text() == (b / stage / "log.csv").read_text()
    assert json.loads((a / "model.json").read_text())["sha256"] == json.loads((b / "model.json").read_text())["sha256"]
    (emb_a, metrics_a), (emb_b, metrics_b) = evaluation(a, data), evaluation(b, data)
    assert np.array_equal(emb_a, emb_b) and metrics_a == metrics_b


def test_other_seed_other_model(runs, data):
    a, other = runs["a"], runs["other"]
    for stage in STAGES:
        assert weights(a, stage) != weights(other, stage)
        assert losses(a, stage) != losses(other, stage)
    emb_a, _ = evaluation(a, data)
    emb_other, _ = evaluation(other, data)
    assert not np.allclose(emb_a, emb_other, atol=1e-3)


def test_embedding_is_repeatable_and_batch_size_only_touches_the_last_bits(runs, data):
    """Bit-identical when repeated; another batch size pads and groups chunks differently, which
    moves only the last bits (seen: 3.6e-7). The thread count does the same (seen: 1.5e-7 with 2
    threads instead of 1; not tested here: two threads on a busy 2-core machine crawl)."""
    model, config, _, _ = load_recognizer(runs["a"])
    corpus, _ = open_data(data)
    corpus = corpus.select(range(4))
    first = embed_corpus(model, config, corpus)
    assert np.array_equal(first, embed_corpus(model, config, corpus))
    single = dataclasses.replace(config, eval=dataclasses.replace(config.eval, batch_size=1))
    np.testing.assert_allclose(embed_corpus(model, single, corpus), first, atol=1e-5, rtol=0)
