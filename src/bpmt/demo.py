"""`bpmt demo`: the main job on the built-in synthetic dataset, end to end.

Synthesise walkers -> train all three phases on some identities -> evaluate leave-one-out
retrieval on held-out identities -> return the metrics.

Without `out`, data and run go to a temporary folder (~180 MB with the default settings), removed
at the end, also when the demo fails, unless `keep`.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import load_config
from .data.source import open_data
from .data.synth import write_synthetic
from .text import plural

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"


@dataclass
class DemoResult:
    root: Path          # the folder holding data/ and run/
    run: Path
    data: Path
    train_ids: list[str]
    test_ids: list[str]
    metrics: dict               # the network alone (BPMT's result)
    ensemble_metrics: dict | None   # the labelled ensemble with the LDA member, when the config has one
    removed: bool       # True: `root` was a temporary folder and is gone


def run_demo(out: str | Path | None = None, subjects: int = 60, sequences_per_subject: int = 8,
             test_subjects: int = 20, seed: int = 0, overrides: list[str] | None = None,
             report: Callable[[str], None] = print, show_progress: bool = True, keep: bool = False) -> DemoResult:
    """Run the demo in folder `out`, or in a temporary folder that is removed unless `keep`."""
    temporary = out is None
    root = Path(tempfile.mkdtemp(prefix="bpmt-demo-")) if temporary else Path(out)
    try:
        result = _run_demo(root, subjects, sequences_per_subject, test_subjects, seed, overrides, report,
                           show_progress)
    finally:
        if temporary and not keep:
            shutil.rmtree(root, ignore_errors=True)
    result.removed = temporary and not keep
    return result


def _run_demo(root: Path, subjects: int, sequences_per_subject: int, test_subjects: int, seed: int,
              overrides: list[str] | None, report: Callable[[str], None], show_progress: bool) -> DemoResult:
    from .engine.export import load_recognizer
    from .engine.trainer import train
    from .evaluation.evaluate import embed_corpus, score_embeddings
    from .models.ensemble import Ensemble
    from .models.handcrafted import corpus_features

    root.mkdir(parents=True, exist_ok=True)
    report(f"synthesising {plural(subjects, 'walker')} x {plural(sequences_per_subject, 'sequence')} "
           f"into {root / 'data'}")
    data = write_synthetic(root / "data", subjects, sequences_per_subject, seed=seed)
    corpus, _ = open_data(data)
    ids = corpus.identities
    train_ids, test_ids = ids[:-test_subjects], ids[-test_subjects:]
    config = load_config(DEMO_CONFIG, [f"seed={seed}", *(overrides or [])])
    report(f"training on {plural(len(train_ids), 'identity')}; held out for testing: {len(test_ids)}")
    run = train(config, corpus.select_ids(train_ids), root / "run", report=report, show_progress=show_progress,
                data_description=f"synthetic ({subjects}x{sequences_per_subject}, seed {seed})")
    model, config, _, _ = load_recognizer(run.root)
    test = corpus.select_ids(test_ids)
    network = embed_corpus(model, config, test, ensemble=False)
    metrics = score_embeddings(network, test.names, test.subjects, config.eval.metric)
    ensemble = None
    if isinstance(model, Ensemble):                 # the same network embeddings, fused with the LDA member
        ensemble = score_embeddings(model(network, corpus_features(test)), test.names, test.subjects,
                                    config.eval.metric)
    return DemoResult(root, run.root, data, train_ids, test_ids, metrics, ensemble, removed=False)
