"""The thread policy (`engine.threads`) and the concurrency benchmark."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from bpmt.engine import threads
from conftest import TINY_TRAIN

ROOT = Path(__file__).resolve().parents[1]


def test_default_takes_half_the_cores_at_least_one(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(16)))
        assert threads.auto_threads() == 8 and threads.configure_threads(0) == 8 == torch.get_num_threads()
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0})
        assert threads.auto_threads() == 1
        assert threads.configure_threads(3) == 3 == torch.get_num_threads()       # an explicit value wins
        with pytest.raises(ValueError, match="threads must be >= 0"):
            threads.configure_threads(-1)
    finally:
        torch.set_num_threads(before)


def test_training_uses_the_policy(serving_synth, tmp_path, monkeypatch):
    from bpmt.cli import main

    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr(threads, "auto_threads", lambda: seen.append(1) or 1)
    try:
        assert main(["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--data", str(serving_synth),
                     "--ids", "0000,0001", "--out", str(tmp_path / "run"), "--stage", "phase1",
                     *TINY_TRAIN]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen, "engine.threads=0 did not go through the policy"


def test_concurrency_benchmark_prints_the_slowdown(serving_synth, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("concurrency", ROOT / "benchmarks" / "concurrency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--config", str(ROOT / "configs" / "tiny.yaml"), "--data", str(serving_synth),
                       "--steps", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "two at once s" in out and out.strip().splitlines()[-1].strip().startswith("1 ")
