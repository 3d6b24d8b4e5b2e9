"""The plain reference transformer on the development protocol, on the same folds and seeds as BPMT.

`../shared/reference/plain_transformer.py` is the yardstick BPMT's network must beat; it is not part
of the project and is run here as it is, in a subprocess: for every seed and fold it trains on the
other folds' identities and embeds the held-out fold's sequences (its own test read-out), then this
script scores the embeddings with the project's leave-one-out metrics (Euclidean, as
`protocol.py`) and prints per-run figures and mean ± std over folds and seeds.

The reference fixes its torch threads at 2; `--threads` (default 1, so that two benchmarks can
share the 2-core machine) sets the thread count before the script runs and keeps it. Each
run's embeddings are kept under --out; rerunning reuses finished runs.

    python benchmarks/reference.py --data /tmp/g3d/Gait3D/2D_Poses --seeds 0,1 --json reference.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bpmt.evaluation.protocols import fold_split, leave_one_out, load_folds, mean_std
from bpmt.evaluation.report import format_folds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import extract_shipped  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SCRIPT = SHARED / "reference" / "plain_transformer.py"
FOLDS = SHARED / "data" / "gait3d-38ids-folds.json"
COLUMNS = ("rank1", "rank5", "mAP", "mINP")

# Runs the reference unchanged except for its thread count: argv = threads, script, script's args.
LAUNCHER = """
import runpy, sys, torch
torch.set_num_threads(int(sys.argv[1]))
torch.set_num_threads = lambda n: None
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def poses_folder(data: Path | None, scratch: Path) -> Path:
    """A Gait3D `2D_Poses` folder: --data, or the shipped tarball extracted under `scratch`."""
    if data is not None:
        if not data.is_dir():
            sys.exit(f"reference.py: --data {data}: not a folder (give a Gait3D 2D_Poses folder; "
                     f"the reference reads the raw per-frame files, not a cache)")
        return data
    return extract_shipped(scratch)


def run_one(script: Path, poses: Path, train_ids: list[str], test_ids: list[str], seed: int,
            threads: int, steps: int | None, run_dir: Path) -> dict:
    """Train + embed one fold with the reference (skipped when its embeddings exist), then score."""
    out = run_dir / "embeddings.npz"
    if not out.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_ids.txt").write_text("\n".join(train_ids) + "\n")
        (run_dir / "test_ids.txt").write_text("\n".join(test_ids) + "\n")
        partial = run_dir / "partial.npz"
        command = [sys.executable, "-c", LAUNCHER, str(threads), str(script), str(poses), str(poses),
                   str(partial), "--train-ids", str(run_dir / "train_ids.txt"),
                   "--test-ids", str(run_dir / "test_ids.txt"), "--seed", str(seed)]
        if steps is not None:
            command += ["--steps", str(steps)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        started = time.time()
        with open(run_dir / "log.txt", "w") as log:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        if done.returncode != 0:
            sys.exit(f"reference.py: the reference failed on {run_dir} (exit {done.returncode}); "
                     f"see {run_dir / 'log.txt'}")
        (run_dir / "seconds.txt").write_text(f"{time.time() - started:.1f}\n")
        os.replace(partial, out)
    with np.load(out) as stored:
        embeddings, names = stored["embeddings"], [str(n) for n in stored["seqs"]]
    identities = [name.split("-")[0] for name in names]
    unknown = sorted(set(identities) - set(test_ids))
    if unknown or not names:
        sys.exit(f"reference.py: {out}: embeddings of identities outside the fold ({unknown[:3]}) or none")
    result = {c: float(v) for c, v in leave_one_out(embeddings, identities).items() if c in COLUMNS}
    seconds = run_dir / "seconds.txt"
    result["seconds"] = float(seconds.read_text()) if seconds.is_file() else float("nan")
    result["sequences"] = len(names)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--script", type=Path, default=SCRIPT, help="the reference script")
    parser.add_argument("--data", type=Path, help="Gait3D 2D_Poses folder (default: the shipped tarball)")
    parser.add_argument("--folds", type=Path, default=FOLDS)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1)")
    parser.add_argument("--steps", type=int, help="training steps (default: the script's own)")
    parser.add_argument("--out", type=Path, default=Path("runs/reference"), help="runs are kept here")
    parser.add_argument("--json", dest="json_out", type=Path, help="write results here")
    args = parser.parse_args(argv)
    if not args.script.is_file():
        sys.exit(f"reference.py: the reference script {args.script} does not exist (--script)")
    if args.threads < 1:
        sys.exit(f"reference.py: --threads must be at least 1, got {args.threads}")
    seeds = [int(s) for s in args.seeds.split(",")]
    folds = load_folds(args.folds)
    with tempfile.TemporaryDirectory() as scratch:
        poses = poses_folder(args.data, Path(scratch))
        runs, labels = [], []
        for seed in seeds:
            for k in range(len(folds)):
                train_ids, test_ids = fold_split(folds, k)
                run_dir = args.out / f"seed{seed}-fold{k}"
                print(f"seed {seed} fold {k}: training on {len(train_ids)} identities ...", flush=True)
                result = run_one(args.script, poses, train_ids, test_ids, seed, args.threads, args.steps,
                                 run_dir)
                print(f"  Rank-1 {result['rank1']:.1f}  mAP {result['mAP']:.1f}  "
                      f"({result['seconds']:.0f} s, {result['sequences']} sequences)", flush=True)
                runs.append(dict(seed=seed, fold=k, **result))
                labels.append(f"seed {seed} fold {k}")
    scores = [{c: r[c] for c in COLUMNS} for r in runs]
    summary = mean_std(scores)
    print(f"\nthe reference ({args.script.name}), {len(seeds)} seed(s) x {len(folds)} folds, "
          f"leave-one-out, Euclidean:")
    print(format_folds(scores, summary, COLUMNS, labels))
    if args.json_out:
        args.json_out.write_text(json.dumps(dict(script=str(args.script), seeds=seeds, threads=args.threads,
                                                 steps=args.steps, runs=runs, summary=summary), indent=1))
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
