"""The README's ablation table from `benchmarks/protocol.py --json` files: one markdown row each.

    python benchmarks/ablation_table.py runs/gait3d.json runs/no-pretrain.json ... [--plot ablation.png]

Each row: name, config file and overrides, number of runs (seeds x folds), Rank-1 / Rank-5 / mAP / mINP as
mean ± std, mean training seconds per run, and Rank-1 / mAP of the ensemble of the network with the LDA
baseline (files written before the protocol scored the fusion show "—"); a last row gives the
training-free floor of the first file (all files of one table must use the same folds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLUMNS = ("rank1", "rank5", "mAP", "mINP")


def cell(summary: dict, key: str) -> str:
    return f"{summary[key]['mean']:.1f} ± {summary[key]['std']:.1f}"


def fused(result: dict) -> str:
    summary = result.get("fused_with_lda", {}).get("summary")
    return f"{cell(summary, 'rank1')} / {cell(summary, 'mAP')}" if summary else "—"


def table(results: list[dict]) -> str:
    lines = ["| variant | config, overrides | runs | Rank-1 | Rank-5 | mAP | mINP | train s/run | + LDA ensemble: Rank-1 / mAP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        seconds = [run["train_seconds"] for run in r["runs"] if "train_seconds" in run]
        mean_s = f"{sum(seconds) / len(seconds):.0f}" if seconds else "—"
        overrides = " ".join([f"`{Path(r['config']).name}`", *(f"`{o}`" for o in r["overrides"])])
        lines.append(f"| {r['name']} | {overrides} | {len(r['runs'])} | "
                     + " | ".join(cell(r["summary"], c) for c in COLUMNS) + f" | {mean_s} | {fused(r)} |")
    floor = results[0]["floor"]
    lines.append(f"| training-free floor | — | {len(floor['runs'])} | "
                 + " | ".join(cell(floor["summary"], c) for c in COLUMNS) + " | 0 | — |")
    return "\n".join(lines)


def plot(results: list[dict], out: Path) -> None:
    """Rank-1 and mAP per variant (mean, std as error bars) with the floor as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(names) + 1.5), sharey=True)
    for ax, key, label in zip(axes, ("rank1", "mAP"), ("Rank-1 (%)", "mAP (%)")):
        means = [r["summary"][key]["mean"] for r in results]
        stds = [r["summary"][key]["std"] for r in results]
        ax.barh(range(len(names)), means, xerr=stds, color="tab:blue", alpha=0.7, capsize=3)
        ax.axvline(results[0]["floor"]["summary"][key]["mean"], color="k", linestyle="--", label="training-free floor")
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="JSON files written by benchmarks/protocol.py --json")
    parser.add_argument("--plot", type=Path, help="also draw Rank-1 and mAP per variant to this PNG")
    args = parser.parse_args(argv)
    results = []
    for path in args.results:
        try:
            data = json.loads(Path(path).read_text())
            if not all(k in data for k in ("name", "config", "overrides", "runs", "summary", "floor", "folds")):
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
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
