"""Two bpmt jobs on one machine: how much does each slow the other, per thread setting?

For each `engine.threads` value: time `bpmt train --stage phase1` (N steps of the config on the
shipped data) alone, then two identical trainings started together; prints the training seconds
(the stage's own timer, without start-up) and the slowdown of each concurrent job against the
solo run. The issue's target: two concurrent trainings each at most 2.5x slower than alone.
Run it on an otherwise idle machine.

    python benchmarks/concurrency.py                       # threads 0 (the default: half the cores) and all cores
    python benchmarks/concurrency.py --threads 0,1,2 --steps 40
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from protocol import shipped_cache  # noqa: E402


def train_seconds(run: Path) -> float:
    return json.loads((run / "phase1" / "time.json").read_text())["seconds"]


def launch(config: str, data: Path, out: Path, steps: int, threads: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.Popen([sys.executable, "-m", "bpmt.cli", "train", "--config", config, "--data", str(data),
                             "--out", str(out), "--stage", "phase1", f"phase1.steps={steps}",
                             f"engine.threads={threads}", "engine.checkpoint_every=100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def run_jobs(config: str, data: Path, root: Path, steps: int, threads: int, count: int) -> list[float]:
    runs = [root / f"t{threads}-x{count}-{i}" for i in range(count)]
    procs = [launch(config, data, run, steps, threads) for run in runs]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"training failed:\n{err[-2000:]}")
    return [train_seconds(run) for run in runs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "gait3d.yaml"))
    parser.add_argument("--data", help="prepared cache or 2D_Poses folder (default: the shipped tarball)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", default=f"0,{os.cpu_count() or 1}",
                        help="engine.threads values to compare (default: %(default)s; 0 = the default policy)")
    args = parser.parse_args(argv)

    from bpmt.engine.threads import auto_threads

    with tempfile.TemporaryDirectory(prefix="bpmt-concurrency-") as tmp:
        root = Path(tmp)
        data = Path(args.data) if args.data else shipped_cache(root)
        print(f"{os.cpu_count()} cores; engine.threads=0 means {auto_threads()} thread(s); "
              f"phase 1 of {Path(args.config).name}, {args.steps} steps")
        print(f"{'engine.threads':>14}  {'alone s':>8}  {'two at once s':>14}  {'slowdown':>9}")
        for threads in (int(t) for t in args.threads.split(",")):
            (alone,) = run_jobs(args.config, data, root, args.steps, threads, 1)
            pair = run_jobs(args.config, data, root, args.steps, threads, 2)
            print(f"{threads:>14}  {alone:>8.1f}  {pair[0]:>6.1f} {pair[1]:>6.1f}  "
                  f"{max(pair) / alone:>8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
