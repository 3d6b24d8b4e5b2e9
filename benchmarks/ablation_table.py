"""The README's ablation table from `benchmarks/protocol.py --json` files: one markdown row each.

    python benchmarks/ablation_table.py runs/gait3d.json runs/no-pretrain.json ...

Each row: name, overrides, number of runs (seeds x folds), Rank-1 / Rank-5 / mAP / mINP as
mean ± std, mean training seconds per run; a last row gives the training-free floor of the first
file (all files of one table must use the same folds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLUMNS = ("rank1", "rank5", "mAP", "mINP")


def cell(summary: dict, key: str) -> str:
    return f"{summary[key]['mean']:.1f} ± {summary[key]['std']:.1f}"


def table(results: list[dict]) -> str:
    lines = ["| variant | overrides | runs | Rank-1 | Rank-5 | mAP | mINP | train s/run |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        seconds = [run["train_seconds"] for run in r["runs"] if "train_seconds" in run]
        mean_s = f"{sum(seconds) / len(seconds):.0f}" if seconds else "—"
        overrides = " ".join(f"`{o}`" for o in r["overrides"]) or "—"
        lines.append(f"| {r['name']} | {overrides} | {len(r['runs'])} | "
                     + " | ".join(cell(r["summary"], c) for c in COLUMNS) + f" | {mean_s} |")
    floor = results[0]["floor"]
    lines.append(f"| training-free floor | — | {len(floor['runs'])} | "
                 + " | ".join(cell(floor["summary"], c) for c in COLUMNS) + " | 0 |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="JSON files written by benchmarks/protocol.py --json")
    args = parser.parse_args(argv)
    results = []
    for path in args.results:
        try:
            data = json.loads(Path(path).read_text())
            if not all(k in data for k in ("name", "overrides", "runs", "summary", "floor", "folds")):
                raise ValueError("not a benchmarks/protocol.py result (missing keys)")
        except (OSError, ValueError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        results.append(data)
    folds = {tuple(r["folds"]) for r in results}
    if len(folds) > 1:
        print(f"error: the files cover different folds ({sorted(folds)}); rows would not be comparable",
              file=sys.stderr)
        return 2
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
