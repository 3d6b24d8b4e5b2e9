"""Ensembles of independently seeded networks on the development protocol (issue 16 §4).

For a `benchmarks/protocol.py` variant folder holding runs `seed<S>-fold<K>` of several seeds, each
held-out fold is embedded by every seed's network (the network alone, the config's test-time
read-out) and scored leave-one-out:

* `K=1` — each seed's network on its own (the protocol's own figures), mean over seeds;
* `K=n` — n networks' embeddings averaged (each scaled to unit length first, so no member
  dominates), for n = 2 .. all seeds: the mean over every n-subset of the seeds (at most
  `--draws` of them, in order), so that K = 2 of 5 seeds is not one lucky pair.

That is still "the network": K copies of BPMT's network trained with different seeds, no other
model. When the runs' models are LDA ensembles (`ensemble.lda`), each row is also scored as the
labelled ensemble `K=n + LDA`: the averaged network embedding fused with the LDA member exactly as
`models.ensemble.Ensemble` fuses one network's (the LDA member is fitted on the fold's training
identities without randomness, so every seed's is the same; the first seed's is used). Mean ± std over folds.

    python benchmarks/seed_ensemble.py --runs runs/protocol/gait3d --data CACHE --json out.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from itertools import combinations, islice
from pathlib import Path

import numpy as np

from bpmt.data.source import open_data
from bpmt.engine.export import load_recognizer
from bpmt.engine.threads import configure_threads
from bpmt.models.ensemble import Ensemble
from bpmt.models.handcrafted import corpus_features
from bpmt.evaluation.evaluate import embed_corpus, score_embeddings
from bpmt.evaluation.protocols import fold_split, load_folds, mean_std
from bpmt.evaluation.report import format_folds

FOLDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gait3d-38ids-folds.json"
COLUMNS = ("rank1", "rank5", "mAP", "mINP")


def unit(embeddings: np.ndarray) -> np.ndarray:
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="a protocol.py variant folder holding seed<S>-fold<K> runs")
    parser.add_argument("--data", required=True, help="Gait3D 2D_Poses folder or prepared cache (the shipped subset)")
    parser.add_argument("--folds", default=str(FOLDS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = engine default)")
    parser.add_argument("--draws", type=int, default=10, help="most n-subsets of the seeds scored per K (default: %(default)s)")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args(argv)

    configure_threads(args.threads)
    runs: dict[int, dict[int, Path]] = {}                # fold -> seed -> run folder
    for path in Path(args.runs).glob("seed*-fold*"):
        match = re.fullmatch(r"seed(\d+)-fold(\d+)", path.name)
        if match and (path / "model.safetensors").is_file():
            runs.setdefault(int(match[2]), {})[int(match[1])] = path
    folds_with = {k: sorted(seeds) for k, seeds in runs.items() if len(seeds) >= 2}
    if not folds_with:
        raise SystemExit(f"{args.runs}: no fold has finished runs of two or more seeds (seed<S>-fold<K>/model.safetensors)")
    seed_sets = {tuple(s) for s in folds_with.values()}
    if len(seed_sets) != 1:
        raise SystemExit(f"{args.runs}: the folds have different seeds finished ({sorted(seed_sets)}); finish them first")
    seeds = list(seed_sets.pop())
    corpus, _ = open_data(Path(args.data))
    folds = load_folds(args.folds)
    rows: dict[str, list[dict]] = {}
    labels = []
    for k in sorted(folds_with):
        _, test_ids = fold_split(folds, k)
        test = corpus.select_ids(test_ids)
        embeddings, lda_model = [], None
        for seed in seeds:
            model, cfg, _, _ = load_recognizer(runs[k][seed])
            embeddings.append(embed_corpus(model, cfg, test, ensemble=False))
            if lda_model is None and isinstance(model, Ensemble):
                lda_model = model
        metric = cfg.eval.metric
        features = corpus_features(test) if lda_model is not None else None

        def score(e: np.ndarray) -> dict:
            result = score_embeddings(e, test.names, test.subjects, metric=metric)["loo"]
            return {c: result[c] for c in COLUMNS}

        def mean_of(scores: list[dict]) -> dict:
            return {c: float(np.mean([s[c] for s in scores])) for c in COLUMNS}

        for n in range(1, len(seeds) + 1):
            draws = list(islice(combinations(range(len(seeds)), n), args.draws))
            # K=1 scores each network's own embeddings, as protocol.py does; K>1 averages unit-length ones
            fused = [embeddings[d[0]] if n == 1 else np.mean([unit(embeddings[i]) for i in d], axis=0) for d in draws]
            rows.setdefault(f"K={n}", []).append(mean_of([score(e) for e in fused]))
            if lda_model is not None:
                rows.setdefault(f"K={n} + LDA", []).append(mean_of([score(lda_model(e, features)) for e in fused]))
        labels.append(f"fold {k}")
        last = f"K={len(seeds)}"
        print(f"fold {k}: K=1 {rows['K=1'][-1]['rank1']:.2f} / {rows['K=1'][-1]['mAP']:.2f}  "
              f"{last} {rows[last][-1]['rank1']:.2f} / {rows[last][-1]['mAP']:.2f}", file=sys.stderr)
    summary = {name: mean_std(values) for name, values in rows.items()}
    for name, values in rows.items():
        what = "labelled ensemble with the LDA" if "LDA" in name else "the network alone"
        print(f"\n{args.runs} — {name} (seeds {seeds}; {what}):")
        print(format_folds(values, summary[name], COLUMNS, labels))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"runs": args.runs, "seeds": seeds, "folds": sorted(folds_with),
                                                   "rows": {n: {"folds": v, "summary": summary[n]}
                                                            for n, v in rows.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
