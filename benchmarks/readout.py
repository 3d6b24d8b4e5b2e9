"""Test-time read-out of trained networks on the development protocol, one difference at a time.

Issue 16 asks why the network alone does not beat the 90-line plain transformer of
`../shared/reference/plain_transformer.py`. Two of the recipes' differences need no training to
measure, so this script measures them on models `benchmarks/protocol.py` already trained (each run
folder `seed<S>-fold<K>` under `--runs`, held-out fold K of `--folds`):

* `chunked (default)` — BPMT's default: sequences cut into chunks of `data.test_max_len` (60) frames, chunk
  embeddings averaged by frame count, each with its mirror image (flip TTA), the post-BN feature;
* `whole` — the whole sequence in one pass (`data.test_max_len` = 10,000), as the reference does
  (it keeps the first 400 frames);
* `pre-BN` — the embedding before the BNNeck (the reference reads its pre-BN mean-pooled vector);
* `whole, pre-BN` — both;
* `no flip` — chunked, post-BN, without the mirror image.

(Every variant but `no flip` keeps the run's `eval.flip`.)

Leave-one-out retrieval (the run's `eval.metric`, Euclidean by default), the network alone; mean ± std over the runs found.

    python benchmarks/readout.py --runs runs/protocol/gait3d --data CACHE --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import nn

from bpmt.data.source import open_data
from bpmt.engine.export import load_recognizer
from bpmt.engine.threads import configure_threads
from bpmt.evaluation.evaluate import embed_corpus, score_embeddings
from bpmt.evaluation.protocols import fold_split, load_folds, mean_std
from bpmt.evaluation.report import format_folds
from bpmt.models.ensemble import network_of

FOLDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gait3d-38ids-folds.json"
COLUMNS = ("rank1", "rank5", "mAP", "mINP")
VARIANTS = {                     # name -> (test_max_len or None = the config's, pre-BN?, flip or None = the config's)
    "chunked (default)": (None, False, None),
    "whole": (10000, False, None),
    "pre-BN": (None, True, None),
    "whole, pre-BN": (10000, True, None),
    "no flip": (None, False, False),
}


class PreBN(nn.Module):
    """The network's embedding before its BNNeck (`forward_features`)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, features, padding_mask):
        return self.network.forward_features(features, padding_mask)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="a protocol.py variant folder holding seed<S>-fold<K> runs")
    parser.add_argument("--data", required=True, help="Gait3D 2D_Poses folder or prepared cache (the shipped subset)")
    parser.add_argument("--folds", default=str(FOLDS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = engine default)")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args(argv)

    configure_threads(args.threads)
    corpus, _ = open_data(Path(args.data))
    folds = load_folds(args.folds)
    runs = sorted(p for p in Path(args.runs).glob("seed*-fold*") if (p / "model.safetensors").is_file())
    if not runs:
        raise SystemExit(f"{args.runs}: no finished seed<S>-fold<K> runs (model.safetensors) in this folder")
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    labels = []
    for run in runs:
        k = int(run.name.split("fold")[1])
        _, test_ids = fold_split(folds, k)
        test = corpus.select_ids(test_ids)
        model, cfg, _, _ = load_recognizer(run)
        network = network_of(model)
        labels.append(run.name)
        for name, (max_len, pre_bn, flip) in VARIANTS.items():
            c = replace(cfg, data=replace(cfg.data, test_max_len=max_len or cfg.data.test_max_len),
                        eval=replace(cfg.eval, flip=cfg.eval.flip if flip is None else flip))
            embeddings = embed_corpus(model, c, test, ensemble=False, network=PreBN(network) if pre_bn else None)
            result = score_embeddings(embeddings, test.names, test.subjects, metric=cfg.eval.metric)["loo"]
            results[name].append({col: result[col] for col in COLUMNS})
            print(f"{run.name} {name:18s} rank1 {result['rank1']:.2f}  mAP {result['mAP']:.2f}", file=sys.stderr)
    summary = {}
    for name, rows in results.items():
        summary[name] = mean_std(rows)
        print(f"\n{args.runs} — {name} (network alone):")
        print(format_folds(rows, summary[name], COLUMNS, labels))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"runs": args.runs, "labels": labels, "variants": {
            name: {"runs": rows, "summary": summary[name]} for name, rows in results.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
