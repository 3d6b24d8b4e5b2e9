"""How accuracy grows with the number of training identities (issue 16 §1): the learning curve.

For every seed and fold of the development protocol, the fold's training identities are shuffled
(by seed and fold) and the first n of them train — nested subsets, so a larger n only adds
identities — for each n of --sizes (`all` = every training identity of the fold). Each subset
trains the config's network (skipped with --lda-only) and fits the LDA baseline of hand-crafted
features; both are scored leave-one-out on the held-out fold, as in `protocol.py`. Prints mean ±
std over folds and seeds per size, fits a power law to the error, `100 - metric = c · identities^b`
(least squares in log-log over the per-run points), and states, labelled as an extrapolation, what
it gives at --extrapolate identities (Gait3D's training set has 3,000). Writes JSON and a plot (log axis).

Runs are kept under --out/<n>ids/seed<S>-fold<K>; rerunning reuses finished runs and resumes
unfinished ones.

    python benchmarks/learning_curve.py --data CACHE --seeds 0,1 --json lc.json --plot lc.png engine.threads=1
    python benchmarks/learning_curve.py --data CACHE --lda-only --seeds 0,1,2,3,4     # seconds: the LDA alone
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bpmt.config import load_config
from bpmt.data.source import open_data
from bpmt.engine.export import load_recognizer
from bpmt.evaluation.evaluate import embed_corpus
from bpmt.evaluation.protocols import fold_split, leave_one_out, load_folds, mean_std
from bpmt.models.handcrafted import corpus_features, lda_embeddings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import train_or_reuse  # noqa: E402

FOLDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gait3d-38ids-folds.json"
METRICS = ("rank1", "mAP")


def parse_sizes(text: str) -> list[int | str]:
    sizes: list[int | str] = []
    for item in text.split(","):
        item = item.strip()
        if item == "all":
            sizes.append("all")
        elif item.isdigit() and int(item) >= 2:
            sizes.append(int(item))
        else:
            sys.exit(f"learning_curve.py: --sizes: {item!r} is neither an identity count >= 2 nor 'all'")
    return sizes


def subset(train_ids: list[str], size: int | str, seed: int, fold: int) -> list[str]:
    """The first `size` of the fold's training identities in an order fixed by (seed, fold)."""
    ordered = sorted(train_ids)
    shuffled = [ordered[i] for i in np.random.default_rng([seed, fold]).permutation(len(ordered))]
    n = len(shuffled) if size == "all" else size
    if n > len(shuffled):
        sys.exit(f"learning_curve.py: --sizes asks for {n} identities but fold {fold} trains on {len(shuffled)}")
    return shuffled[:n]


def network_scores(config, corpus, ids: list[str], test, run_dir: Path, fold: int) -> dict:
    """Train (or reuse) the network on `ids`, score it leave-one-out on `test`."""
    train_or_reuse(config, corpus.select_ids(ids), run_dir, f"fold {fold}: {len(ids)} ids")
    model, cfg, _, _ = load_recognizer(run_dir)
    embeddings = embed_corpus(model, cfg, test, ensemble=False)
    result = leave_one_out(embeddings, test.subjects, metric=cfg.eval.metric)
    return {m: float(result[m]) for m in METRICS}


def power_fit(points: list[tuple[int, float]], at: float) -> dict:
    """A power law on the error, `100 - y = c · n^b` (least squares on ln(100 - y) = ln c + b ln n),
    fitted through (identities n, metric y in %) points, and its value at n = `at` (stays below 100)."""
    n = np.array([p[0] for p in points], dtype=float)
    error = np.clip(100.0 - np.array([p[1] for p in points], dtype=float), 1e-3, None)
    b, log_c = np.polyfit(np.log(n), np.log(error), 1)
    return {"c": float(np.exp(log_c)), "b": float(b), "at": float(at),
            "value_at": float(100.0 - np.exp(log_c) * at ** b)}


def fitted(fit: dict, n: np.ndarray) -> np.ndarray:
    return 100.0 - fit["c"] * n ** fit["b"]


def plot(path: Path, table: dict, fits: dict, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4))
    for ax, metric in zip(axes, METRICS):
        for model, style in (("network", "o-"), ("lda", "s--")):
            rows = [r for r in table[model] if r["summary"]]
            if not rows:
                continue
            x = [r["identities"] for r in rows]
            ax.errorbar(x, [r["summary"][metric]["mean"] for r in rows],
                        yerr=[r["summary"][metric]["std"] for r in rows], fmt=style, capsize=3,
                        label=f"{'BPMT network' if model == 'network' else 'LDA of hand-crafted features'}")
            if model not in fits:
                continue
            fit = fits[model][metric]
            grid = np.geomspace(min(x), max(x), 20)
            ax.plot(grid, fitted(fit, grid), ":", color="grey")
        ax.set_xscale("log")
        ticks = sorted({round(r["identities"]) for rows in table.values() for r in rows})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training identities (log)")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/gait3d.yaml")
    parser.add_argument("--data", required=True, help="Gait3D 2D_Poses folder or prepared cache")
    parser.add_argument("--folds", default=str(FOLDS))
    parser.add_argument("--sizes", default="7,14,21,all", help="training identities per run (default: 7,14,21,all)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default: 0,1)")
    parser.add_argument("--lda-only", action="store_true", help="skip the networks (the LDA curve only)")
    parser.add_argument("--extrapolate", type=float, default=3000.0,
                        help="identities at which to evaluate the fitted trend (default: 3000, Gait3D's training set)")
    parser.add_argument("--out", default="runs/learning-curve", help="folder for the runs")
    parser.add_argument("--json", dest="json_out", help="write results here")
    parser.add_argument("--plot", help="write the plot here (PNG)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)

    sizes = parse_sizes(args.sizes)
    seeds = [int(s) for s in args.seeds.split(",")]
    corpus, _ = open_data(Path(args.data))
    folds = load_folds(args.folds)
    features = corpus_features(corpus)
    subjects = np.array(corpus.subjects)
    out = Path(args.out)
    runs = []
    for seed in seeds:
        config = None if args.lda_only else load_config(args.config, [*args.overrides, f"seed={seed}"])
        for k in range(len(folds)):
            train_ids, test_ids = fold_split(folds, k)
            test = corpus.select_ids(test_ids)
            test_rows = np.isin(subjects, test_ids)
            for size in sizes:
                ids = subset(train_ids, size, seed, k)
                rows = np.isin(subjects, ids)
                lda = lda_embeddings(features[rows], subjects[rows], features[test_rows])
                scores = leave_one_out(lda, subjects[test_rows])
                run = {"seed": seed, "fold": k, "size": str(size), "identities": len(ids), "ids": ids,
                       "lda": {m: float(scores[m]) for m in METRICS}}
                if config is not None:
                    print(f"[learning curve] seed {seed} fold {k}: {len(ids)} identities", file=sys.stderr)
                    run["network"] = network_scores(config, corpus, ids, test,
                                                    out / f"{size}ids" / f"seed{seed}-fold{k}", k)
                runs.append(run)
                shown = "  ".join(f"{name} {run[name]['rank1']:.1f} / {run[name]['mAP']:.1f}"
                                  for name in ("network", "lda") if name in run)
                print(f"seed {seed} fold {k} {len(ids):3d} identities: {shown}", flush=True)

    models = ["lda"] if args.lda_only else ["network", "lda"]
    table = {model: [] for model in ("network", "lda")}
    fits = {}
    for model in models:
        for size in sizes:
            chosen = [r for r in runs if r["size"] == str(size)]
            table[model].append({"size": str(size), "identities": float(np.mean([r["identities"] for r in chosen])),
                                 "summary": mean_std([r[model] for r in chosen])})
        if len(sizes) < 2:                                # one size: nothing to fit a trend through
            continue
        fits[model] = {m: power_fit([(r["identities"], r[model][m]) for r in runs], args.extrapolate) for m in METRICS}

    print(f"\nlearning curve: {len(seeds)} seed(s) x {len(folds)} folds, leave-one-out on the held-out fold, "
          "Rank-1 / mAP, mean ± std")
    print(f"{'identities':>10}  " + "  ".join(f"{m:>25}" for m in models))
    for i, size in enumerate(sizes):
        cells = []
        for model in models:
            s = table[model][i]["summary"]
            cells.append(f"{s['rank1']['mean']:5.1f} ± {s['rank1']['std']:4.1f} / {s['mAP']['mean']:5.1f} ± "
                         f"{s['mAP']['std']:4.1f}")
        print(f"{table[models[0]][i]['identities']:>10.1f}  " + "  ".join(f"{c:>25}" for c in cells))
    for model in fits:
        f = fits[model]
        print(f"{model}: fitted error 100 - y = c n^b: Rank-1 {f['rank1']['c']:.1f} n^{f['rank1']['b']:.3f}, "
              f"mAP {f['mAP']['c']:.1f} n^{f['mAP']['b']:.3f}; EXTRAPOLATED to {args.extrapolate:,.0f} identities "
              f"(beyond the data, not a measurement): Rank-1 {f['rank1']['value_at']:.1f}, mAP {f['mAP']['value_at']:.1f}")
    title = (f"{Path(args.config).name if not args.lda_only else 'LDA only'}: {len(seeds)} seed(s) x {len(folds)} "
             "folds, leave-one-out; dotted: fitted 100 - c n^b")
    if args.plot:
        plot(Path(args.plot), table, fits, title)
        print(f"wrote {args.plot}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({
            "config": None if args.lda_only else args.config, "overrides": args.overrides, "seeds": seeds,
            "sizes": [str(s) for s in sizes], "runs": runs, "table": table, "fits": fits,
            "extrapolation_note": "values at fits.*.*.at are the fitted line evaluated beyond the measured range"},
            indent=1))
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
