"""BPMT on the development protocol (DESIGN.md §3): the numbers in the README come from here.

For every seed and each of the four identity-disjoint folds of the shipped 38-identity Gait3D
subset: train the config's stages on the other folds' identities, embed the held-out fold's
sequences, leave-one-out retrieval (Euclidean). Prints per-run and mean ± std (over folds and
seeds) Rank-1, Rank-5, mAP, mINP next to the training-free floor, and writes JSON. It also scores
the ensemble of each network with the LDA baseline (`benchmarks/protocol_floor.py --lda`): both
embeddings scaled to unit length and concatenated (`models.handcrafted.fuse_embeddings`), the
LDA fitted on the same training identities as the network. The first table is always the network
alone (BPMT's result); the second is the labelled ensemble. For a config with `ensemble.lda`
(the default `configs/gait3d.yaml`) that is what `bpmt evaluate` reports for the exported models,
and the benchmark checks that each model's own LDA member embeds exactly like the LDA fitted here.
Every run
folder holds its plots: `<stage>/loss.png` (loss curves per phase) and `cmc.png` (the CMC curve
of its evaluation).

Runs are kept under --out; rerunning resumes unfinished runs and reuses finished ones, so the
benchmark survives interruption.

    python benchmarks/protocol.py --config configs/gait3d.yaml --out runs/protocol --json gait3d.json
    python benchmarks/protocol.py --config configs/gait3d.yaml --name vanilla model.layer=vanilla
    python benchmarks/protocol.py --init runs/synth-pretrain --name from-synthetic stages=[finetune]
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from bpmt.config import load_config
from bpmt.data.cache import build_cache, is_cache
from bpmt.data.source import open_data
from bpmt.engine.export import load_recognizer
from bpmt.engine.trainer import train
from bpmt.engine.plots import plot_cmc
from bpmt.evaluation.evaluate import embed_corpus, score_embeddings
from bpmt.models.ensemble import Ensemble
from bpmt.models.handcrafted import corpus_features, fuse_embeddings, lda_embeddings, standardize
from bpmt.evaluation.metrics import pairwise_distances
from bpmt.evaluation.protocols import fold_split, leave_one_out, load_folds, mean_std
from bpmt.evaluation.report import format_folds

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TARBALL = SHARED / "gait3d-2d-poses-38ids.tar.gz"
FOLDS = SHARED / "gait3d-38ids-folds.json"
COLUMNS = ("rank1", "rank5", "mAP", "mINP")


def extract_shipped(dest: Path) -> Path:
    """Extract the shipped tarball under `dest` -> its Gait3D `2D_Poses` folder."""
    if not TARBALL.is_file():
        sys.exit(f"the shipped tarball {TARBALL} is missing (give --data)")
    with tarfile.open(TARBALL) as tar:
        tar.extractall(dest, filter="data")
    return Path(dest) / "Gait3D" / "2D_Poses"


def shipped_cache(out: Path) -> Path:
    """Prepared cache of the shipped tarball under `out` (built once)."""
    cache = out / "gait3d-38ids.cache"
    if is_cache(cache):
        return cache
    with tempfile.TemporaryDirectory() as tmp:
        build_cache(extract_shipped(Path(tmp)), cache, workers=2)
    # The extracted source is gone; the cache records that and loads without a staleness check.
    return cache


def floor(corpus, folds, features: np.ndarray) -> list[dict]:
    subjects = np.array(corpus.subjects)
    results = []
    for k in range(len(folds)):
        train_ids, test_ids = fold_split(folds, k)
        tr, te = np.isin(subjects, train_ids), np.isin(subjects, test_ids)
        results.append(leave_one_out(standardize(features[tr], features[te]), subjects[te]))
    return results


def check_lda_member(model, test_features: np.ndarray, lda: np.ndarray, run_dir: Path) -> None:
    """An exported `Ensemble` (`ensemble.lda`) must embed the test sequences' features with its LDA
    member exactly like the benchmark's LDA (up to the signs of its axes: compared by distances),
    so that the ensemble table is what `bpmt evaluate` reports for it."""
    if not isinstance(model, Ensemble):
        return
    own = model.lda(test_features)
    if not np.allclose(pairwise_distances(own, own), pairwise_distances(lda, lda), rtol=1e-6, atol=1e-6):
        raise SystemExit(f"{run_dir}: the model's LDA member disagrees with the benchmark's LDA "
                         "(was it fitted on other training identities?)")


def train_or_reuse(config, corpus, run_dir: Path, description: str, show_progress: bool = False,
                   init: str | None = None) -> None:
    """Train `config` on `corpus` into `run_dir`: nothing when it is finished, resumed when begun."""
    if (run_dir / "model.safetensors").is_file():
        return
    train(config, corpus, run_dir, resume=(run_dir / "config.yaml").is_file(), show_progress=show_progress,
          report=lambda m: print(f"  {m}", file=sys.stderr), data_description=description, init=init)


def run_one(config, corpus, folds, k: int, run_dir: Path, show_progress: bool, features: np.ndarray,
            init: str | None = None) -> dict:
    """Train (or reuse) one fold's run and score it, the network alone and as an ensemble with the
    LDA baseline (`result["fused"]`); `features` are `corpus_features(corpus)`."""
    train_ids, test_ids = fold_split(folds, k)
    train_or_reuse(config, corpus.select_ids(train_ids), run_dir, f"fold {k} train", show_progress, init)
    model, cfg, _, _ = load_recognizer(run_dir)
    test = corpus.select_ids(test_ids)
    embeddings = embed_corpus(model, cfg, test, ensemble=False)   # the network alone; the ensemble below
    result = score_embeddings(embeddings, test.names, test.subjects, metric=cfg.eval.metric)["loo"]
    plot_cmc(result["cmc"], run_dir / "cmc.png", title=f"{run_dir.parent.name} {run_dir.name}: leave-one-out CMC")
    subjects = np.array(corpus.subjects)
    train_rows, test_rows = np.isin(subjects, train_ids), np.isin(subjects, test_ids)
    lda = lda_embeddings(features[train_rows], subjects[train_rows], features[test_rows])
    check_lda_member(model, features[test_rows], lda, run_dir)
    fused = leave_one_out(fuse_embeddings(embeddings, lda), test.subjects, metric=cfg.eval.metric)
    times = {s: json.loads((run_dir / s / "time.json").read_text())["seconds"] for s in cfg.stages}
    return {**result, "fused": {c: fused[c] for c in COLUMNS}, "train_seconds": sum(times.values()),
            "stage_seconds": times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/gait3d.yaml")
    parser.add_argument("--name", help="name of this variant (default: the config's stem)")
    parser.add_argument("--data", help="Gait3D 2D_Poses folder or cache (default: the shipped tarball)")
    parser.add_argument("--folds", default=str(FOLDS))
    parser.add_argument("--only-folds", help="comma-separated fold indices (default: all)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--out", default="runs/protocol", help="folder for runs and the data cache")
    parser.add_argument("--json", dest="json_out", help="write results here")
    parser.add_argument("--progress", action="store_true", help="show per-step progress bars")
    parser.add_argument("--init", metavar="CHECKPOINT",
                        help="start every run's first stage from this checkpoint (`bpmt train --init`), e.g. a "
                             "pretraining on synthetic walkers that no fold's identities are part of")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else shipped_cache(out)
    corpus, _ = open_data(data)
    folds = load_folds(args.folds)
    fold_ids = [int(k) for k in args.only_folds.split(",")] if args.only_folds else list(range(len(folds)))
    seeds = [int(s) for s in args.seeds.split(",")]
    name = args.name or Path(args.config).stem
    features = corpus_features(corpus)
    per_run, labels = [], []
    for seed in seeds:
        config = load_config(args.config, [*args.overrides, f"seed={seed}"])
        for k in fold_ids:
            print(f"[{name}] seed {seed} fold {k}", file=sys.stderr)
            result = run_one(config, corpus, folds, k, out / name / f"seed{seed}-fold{k}", args.progress,
                             features, args.init)
            print(f"  network alone: rank1 {result['rank1']:.2f}  mAP {result['mAP']:.2f}  (ensemble with LDA: rank1 "
                  f"{result['fused']['rank1']:.2f}  mAP {result['fused']['mAP']:.2f})", file=sys.stderr)
            per_run.append(result)
            labels.append(f"s{seed} f{k}")
    floor_runs = floor(corpus, folds, features)
    floor_runs = [floor_runs[k] for k in fold_ids]
    summary = mean_std([{c: r[c] for c in COLUMNS} for r in per_run])
    fused_runs = [r["fused"] for r in per_run]
    fused_summary = mean_std(fused_runs)
    floor_summary = mean_std([{c: r[c] for c in COLUMNS} for r in floor_runs])
    own_member = config.ensemble.lda
    print(f"\n{name}: {args.config} {' '.join(args.overrides)} (seeds {seeds}, folds {fold_ids}) — the network alone")
    print(format_folds(per_run, summary, COLUMNS, labels))
    print(f"\n{name} + LDA ensemble (unit-length embeddings concatenated, 1:1)"
          + (" — what `bpmt evaluate` reports for these models (ensemble.lda):" if own_member else ":"))
    print(format_folds(fused_runs, fused_summary, COLUMNS, labels))
    print("\ntraining-free floor (same folds):")
    print(format_folds(floor_runs, floor_summary, COLUMNS, [f"fold {k}" for k in fold_ids]))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({
            "name": name, "config": args.config, "overrides": args.overrides, "init": args.init or config.init or None,
            "seeds": seeds, "folds": fold_ids,
            "runs": [{"label": label, **r} for label, r in zip(labels, per_run)], "summary": summary,
            "fused_with_lda": {"summary": fused_summary}, "floor": {"runs": floor_runs, "summary": floor_summary}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
