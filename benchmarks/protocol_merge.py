"""Merge `benchmarks/protocol.py --json` results of the same variant measured in separate invocations
(e.g. seed 0 one day, seed 1 the next) into one table: the runs side by side, mean ± std over all of
them, the network alone and the LDA ensemble.

The inputs must agree on config, overrides (`engine.threads` aside: it changes speed, not the
model) and `--init`, and must not repeat a (seed, fold) run; they may cover different folds (the
training-free floor, the same for every seed, is then joined per fold).

    python benchmarks/protocol_merge.py docs/results/leakfree-1-full-BPMT.json seed1.json --json both.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bpmt.evaluation.protocols import mean_std
from bpmt.evaluation.report import format_folds

COLUMNS = ("rank1", "rank5", "mAP", "mINP")


def _model_overrides(result: dict) -> list[str]:
    return sorted(o for o in result["overrides"] if not o.startswith("engine.threads="))


def merge(results: list[dict], name: str | None = None) -> dict:
    first = results[0]
    for other in results[1:]:
        if (other["config"] != first["config"] or _model_overrides(other) != _model_overrides(first)
                or other.get("init") != first.get("init")):
            raise SystemExit(f"cannot merge {first['name']} ({first['config']} {first['overrides']}) with "
                             f"{other['name']} ({other['config']} {other['overrides']}): another variant")
    runs = [run for result in results for run in result["runs"]]
    labels = [run["label"] for run in runs]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"a (seed, fold) run appears twice: {sorted(labels)}")
    floor_of = {}                                    # fold -> its training-free floor (no seed: the same everywhere)
    for result in results:
        floor_of.update(zip(result["folds"], result["floor"]["runs"]))
    folds = sorted(floor_of)
    floor_runs = [floor_of[k] for k in folds]
    return {
        "name": name or first["name"], "config": first["config"], "overrides": first["overrides"],
        "init": first.get("init"),
        "seeds": sorted({s for result in results for s in result["seeds"]}),
        "folds": folds, "runs": runs,
        "summary": mean_std([{c: run[c] for c in COLUMNS} for run in runs]),
        "fused_with_lda": {"summary": mean_std([run["fused"] for run in runs])},
        "floor": {"runs": floor_runs, "summary": mean_std([{c: r[c] for c in COLUMNS} for r in floor_runs])},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="protocol.py --json files of one variant")
    parser.add_argument("--name", help="the merged variant's name (default: the first input's)")
    parser.add_argument("--json", dest="json_out", help="write the merged result here")
    args = parser.parse_args(argv)
    merged = merge([json.loads(Path(p).read_text()) for p in args.inputs], args.name)
    labels = [run["label"] for run in merged["runs"]]
    print(f"{merged['name']}: {merged['config']} {' '.join(merged['overrides'])} "
          f"(seeds {merged['seeds']}) — the network alone")
    print(format_folds(merged["runs"], merged["summary"], COLUMNS, labels))
    print(f"\n{merged['name']} + LDA ensemble (unit-length embeddings concatenated, 1:1):")
    print(format_folds([run["fused"] for run in merged["runs"]], merged["fused_with_lda"]["summary"], COLUMNS, labels))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(merged, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
