"""How cost grows with the data: synth -> prepare -> one training epoch -> evaluation, at fractions
of a Gait3D-sized synthetic set (`bpmt synth --preset gait3d --scale F`), plus retrieval of
1,000 probes x 25,000 gallery in bounded memory.

    python benchmarks/scale.py --workdir /tmp/bpmt-scale [--fractions 0.125,0.25,0.5,1] [--workers 2]
                               [--max-steps 60] [--json RESULTS.json] [--plot docs/scale.png] [--keep-data]

For each fraction, each stage runs in its own child process, which reports its wall time, its
peak resident memory (VmHWM: heap plus the pages of memory-mapped files it touched), its peak
anonymous memory (sampled every 50 ms: the heap alone) and the peak RSS of its own worker processes:
* synth    (timed separately) writes the raw `2D_Poses` tree and `split.json`;
* prepare  raw frame files -> cache (`build_cache`, `--workers` processes), frame files/s;
* train    one epoch of `--config` (default configs/gait3d.yaml) on the TRAIN_SET identities: every
           stage runs ceil(training sequences / batch size) steps. With `--max-steps N` a stage runs
           at most N steps and its epoch time is extrapolated linearly (marked "extrapolated");
* evaluate embed the TEST_SET sequences with the trained model, then the official protocol
           (PROBE_SET probes vs the rest) through the chunked retrieval.
Results are saved after every stage to the JSON file; a rerun skips what is already there (per
fraction and stage), so a partial run is useful and an interrupted one resumes. The data of a
fraction is deleted once its stages are done, unless `--keep-data`.

On a shared machine the timings are only indicative: say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

STAGES = ("synth", "prepare", "train", "evaluate")
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Memory of the current process (Linux /proc)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class MemoryWatch:
    """Samples this process's anonymous memory in a thread; `.report()` adds the kernel's peaks."""

    def __init__(self, interval: float = 0.05):
        self.peak_anon_kb = _status_kb("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak_anon_kb = max(self.peak_anon_kb, _status_kb("RssAnon"))

    def report(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.peak_anon_kb = max(self.peak_anon_kb, _status_kb("RssAnon"))
        return {"peak_rss_mb": _status_kb("VmHWM") / 1024, "peak_anon_mb": self.peak_anon_kb / 1024,
                "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


# ---------------------------------------------------------------------------------------------
# Stages (each runs in a child process: `scale.py --child STAGE PARAMS_JSON`)


def stage_synth(p: dict) -> dict:
    from tqdm import tqdm

    from bpmt.data.synth import gait3d_plan, write_plan

    plan = gait3d_plan(p["fraction"], seed=0)
    with tqdm(total=plan.total, unit="seq", desc=f"synth x{p['fraction']:g}", file=sys.stderr) as bar:
        write_plan(p["data"], plan, seed=0, workers=p["workers"], progress=bar.update)
    return {"identities": plan.subjects, "sequences": plan.total}


def stage_prepare(p: dict) -> dict:
    from tqdm import tqdm

    from bpmt.data.cache import build_cache
    from bpmt.data.gait3d import list_sequence_dirs

    root = Path(p["data"]) / "2D_Poses"
    start = time.perf_counter()
    with tqdm(total=len(list_sequence_dirs(root)), unit="seq", desc="prepare", file=sys.stderr) as bar:
        corpus, report = build_cache(root, p["cache"], workers=p["workers"], progress=bar.update)
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in Path(p["cache"]).iterdir())
    return {"files": report.files, "frames": corpus.num_frames, "sequences": len(corpus),
            "files_per_s": report.files / seconds, "cache_mb": size / 2 ** 20}


def stage_train(p: dict) -> dict:
    from bpmt.config import load_config
    from bpmt.data.source import load_split, open_data
    from bpmt.engine import trainer

    base = load_config(p["config"])
    split = load_split(Path(p["data"]) / "split.json")
    corpus, _ = open_data(p["cache"], split["TRAIN_SET"])
    f = base.finetune
    batch = {s: f.identities_per_batch * f.samples_per_identity if s == "finetune" else getattr(base, s).batch_size
             for s in base.stages}
    epoch_steps = {s: math.ceil(len(corpus) / batch[s]) for s in base.stages}
    run_steps = {s: min(n, p["max_steps"]) if p["max_steps"] else n for s, n in epoch_steps.items()}
    config = load_config(p["config"], [f"{s}.steps={n}" for s, n in run_steps.items()]
                         + [f"engine.threads={p['threads']}"])
    start = time.perf_counter()
    trainer.train(config, corpus, p["run"], show_progress=True, report=lambda m: print(m, file=sys.stderr))
    total = time.perf_counter() - start
    stages = {}
    for s in base.stages:
        seconds = json.loads((Path(p["run"]) / s / "time.json").read_text())["seconds"]
        stages[s] = {"steps_run": run_steps[s], "epoch_steps": epoch_steps[s], "batch": batch[s],
                     "seconds_run": seconds, "epoch_seconds": seconds * epoch_steps[s] / run_steps[s]}
    return {"train_sequences": len(corpus), "train_identities": len(corpus.identities), "stages": stages,
            "epoch_seconds": sum(v["epoch_seconds"] for v in stages.values()),
            "extrapolated": any(run_steps[s] < epoch_steps[s] for s in base.stages),
            "wall_seconds_run": total, "threads": __import__("torch").get_num_threads()}


def stage_evaluate(p: dict) -> dict:
    import torch

    from bpmt.data.source import load_split, open_data
    from bpmt.engine.export import load_recognizer
    from bpmt.evaluation.evaluate import embed_corpus
    from bpmt.evaluation.protocols import official_protocol

    if p["threads"]:
        torch.set_num_threads(p["threads"])
    split = load_split(Path(p["data"]) / "split.json")
    model, config, _, _ = load_recognizer(p["run"])
    corpus, _ = open_data(p["cache"], split["TEST_SET"])
    start = time.perf_counter()
    embeddings = embed_corpus(model, config, corpus)
    embed_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = official_protocol(embeddings, corpus.names, split["PROBE_SET"], metric=config.eval.metric)
    return {"test_sequences": len(corpus), "embed_seconds": embed_seconds,
            "retrieval_seconds": time.perf_counter() - start, "probes": metrics["queries"],
            "rank1": metrics["rank1"], "mAP": metrics["mAP"]}


def stage_retrieval(p: dict) -> dict:
    """1,000 probes x 25,000 gallery, dimension 128: chunked retrieval's peak memory and time against
    the unchunked path (one full distance matrix, then ranking), and their metrics compared."""
    import tracemalloc

    import numpy as np

    from bpmt.evaluation.metrics import (
        evaluate_ranking,
        pairwise_distances,
        rank_in_chunks,
    )

    rng = np.random.default_rng(0)
    q, g, d = p["probes"], p["gallery"], p["dim"]
    probes, gallery = rng.normal(size=(q, d)).astype(np.float32), rng.normal(size=(g, d)).astype(np.float32)
    probe_labels, gallery_labels = rng.integers(0, g // 6, q), rng.integers(0, g // 6, g)

    def measure(fn) -> tuple[dict, float, float]:
        tracemalloc.start()
        start = time.perf_counter()
        metrics = fn()
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return metrics, seconds, peak / 2 ** 20

    chunked, seconds, peak = measure(lambda: rank_in_chunks(probes, gallery, probe_labels, gallery_labels,
                                                            chunk_size=p["chunk"]))
    full, full_seconds, full_peak = measure(lambda: evaluate_ranking(pairwise_distances(probes, gallery),
                                                                     probe_labels, gallery_labels))
    return {"probes": q, "gallery": g, "dim": d, "chunk": p["chunk"], "seconds": seconds, "numpy_peak_mb": peak,
            "unchunked_seconds": full_seconds, "unchunked_numpy_peak_mb": full_peak,
            "identical_metrics": chunked == full,
            "loo_25000_unchunked_gb_estimate": full_peak / (q * g) * g * g / 1024}


CHILD_STAGES = {"synth": stage_synth, "prepare": stage_prepare, "train": stage_train,
                "evaluate": stage_evaluate, "retrieval": stage_retrieval}


def child(stage: str, params: str) -> int:
    watch = MemoryWatch()
    start = time.perf_counter()
    result = CHILD_STAGES[stage](json.loads(params))
    result["seconds"] = result.get("seconds", time.perf_counter() - start)
    result["wall_seconds"] = time.perf_counter() - start
    result.update(watch.report())
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def run_child(stage: str, params: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", stage, json.dumps(params)], stdout=subprocess.PIPE,
                          text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"error: stage {stage} failed (exit status {proc.returncode}); see its output above")
    return json.loads(lines[-1][len("RESULT "):])


# ---------------------------------------------------------------------------------------------
# Driver


def run_fraction(fraction: float, args, results: dict, save) -> None:
    key = f"{fraction:g}"
    done = results["fractions"].setdefault(key, {})
    folder = args.workdir / f"gait3d-x{key}"
    params = {"fraction": fraction, "data": str(folder / "data"), "cache": str(folder / "cache"),
              "run": str(folder / "run"), "workers": args.workers, "config": str(args.config),
              "max_steps": args.max_steps, "threads": args.threads}
    if "synth" not in done and folder.exists():
        remove(folder)                              # a half-written set from an interrupted run
    for stage in STAGES:
        if stage in done:
            print(f"x{key} {stage}: done before, skipped", file=sys.stderr)
            continue
        if stage == "train":
            shutil.rmtree(params["run"], ignore_errors=True)
        done[stage] = run_child(stage, params)
        save()
        print(f"x{key} {stage}: {summary(stage, done[stage])}", flush=True)
    if not args.keep_data:
        remove(folder)


def remove(folder: Path) -> None:
    """Delete a fraction's folder (millions of small files: `rm -rf` is faster than shutil.rmtree)."""
    if shutil.which("rm"):
        subprocess.run(["rm", "-rf", "--", str(folder)], check=False)
    shutil.rmtree(folder, ignore_errors=True)


def summary(stage: str, r: dict) -> str:
    memory = f"peak RSS {r['peak_rss_mb']:.0f} MB (anon {r['peak_anon_mb']:.0f} MB, workers {r['workers_peak_rss_mb']:.0f} MB)"
    if stage == "synth":
        return f"{r['identities']} ids, {r['sequences']} sequences in {r['seconds']:.0f}s; {memory}"
    if stage == "prepare":
        return (f"{r['files']:,} files -> {r['cache_mb']:.0f} MB cache in {r['seconds']:.0f}s "
                f"({r['files_per_s']:,.0f} files/s); {memory}")
    if stage == "train":
        parts = ", ".join(f"{s} {v['epoch_seconds']:.0f}s ({v['steps_run']}/{v['epoch_steps']} steps)"
                          for s, v in r["stages"].items())
        tag = " EXTRAPOLATED from the steps run" if r["extrapolated"] else ""
        return f"one epoch {r['epoch_seconds']:.0f}s{tag} [{parts}]; {memory}"
    if stage == "evaluate":
        return (f"{r['test_sequences']} test sequences embedded in {r['embed_seconds']:.0f}s, "
                f"{r['probes']} probes ranked in {r['retrieval_seconds']:.1f}s; {memory}")
    return (f"{r['probes']:,} x {r['gallery']:,} (dim {r['dim']}) in chunks of {r['chunk']} probes: {r['seconds']:.1f}s, "
            f"numpy peak {r['numpy_peak_mb']:.0f} MB (independent of the number of probes); unchunked: "
            f"{r['unchunked_seconds']:.1f}s, {r['unchunked_numpy_peak_mb']:.0f} MB (grows with probes x gallery: "
            f"~{r['loo_25000_unchunked_gb_estimate']:.0f} GB for 25,000 x 25,000); metrics identical: "
            f"{r['identical_metrics']}")


def print_table(results: dict) -> None:
    print(f"\n{'fraction':>8} {'seqs':>6} {'frames':>10} | {'synth s':>7} | {'prep s':>6} {'files/s':>8} {'RSS MB':>7} "
          f"| {'epoch s':>8} {'s/step':>6} {'RSS MB':>7} {'anon MB':>7} | {'eval s':>6} {'RSS MB':>7} {'anon MB':>7}")
    for key, r in sorted(results["fractions"].items(), key=lambda kv: float(kv[0])):
        if not all(s in r for s in STAGES):
            print(f"{key:>8} (incomplete: {', '.join(s for s in STAGES if s in r)})")
            continue
        p, t, e = r["prepare"], r["train"], r["evaluate"]
        mark = "*" if t["extrapolated"] else " "
        print(f"{key:>8} {p['sequences']:>6} {p['frames']:>10,} | {r['synth']['seconds']:>7.0f} | {p['seconds']:>6.0f} "
              f"{p['files_per_s']:>8,.0f} {max(p['peak_rss_mb'], p['workers_peak_rss_mb']):>7.0f} | "
              f"{t['epoch_seconds']:>7.0f}{mark} {seconds_per_step(t):>6.2f} {t['peak_rss_mb']:>7.0f} "
              f"{t['peak_anon_mb']:>7.0f} | {e['wall_seconds']:>6.0f} {e['peak_rss_mb']:>7.0f} {e['peak_anon_mb']:>7.0f}")
    print("(* epoch time extrapolated linearly from the steps run; s/step: mean over the three stages' steps; "
          f"RSS includes memory-mapped cache pages touched, anon is the heap alone; {results['machine']})")


def seconds_per_step(train: dict) -> float:
    stages = train["stages"].values()
    return sum(v["seconds_run"] for v in stages) / sum(v["steps_run"] for v in stages)


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(((float(k), r) for k, r in results["fractions"].items() if all(s in r for s in STAGES)),
                  key=lambda kv: kv[0])
    if not rows:
        return
    sequences = [r["prepare"]["sequences"] for _, r in rows]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    series = {"synth (raw files)": [r["synth"]["seconds"] for _, r in rows],
              "prepare (raw -> cache)": [r["prepare"]["seconds"] for _, r in rows],
              "one training epoch": [r["train"]["epoch_seconds"] for _, r in rows],
              "evaluation (test ids)": [r["evaluate"]["wall_seconds"] for _, r in rows]}
    for label, values in series.items():
        left.plot(sequences, values, "o-", label=label)
    left.set(xlabel="sequences", ylabel="seconds", title="time per stage")
    for stage in rows[0][1]["train"]["stages"]:
        middle.plot(sequences, [r["train"]["stages"][stage]["seconds_run"] / r["train"]["stages"][stage]["steps_run"]
                                for _, r in rows], "o-", label=stage)
    middle.set(xlabel="sequences", ylabel="seconds", title="training: time per step")
    memory = {"prepare: main + largest worker": [r["prepare"]["peak_rss_mb"] + r["prepare"]["workers_peak_rss_mb"]
                                                 for _, r in rows],
              "train: RSS (incl. mapped cache)": [r["train"]["peak_rss_mb"] for _, r in rows],
              "train: heap (anon)": [r["train"]["peak_anon_mb"] for _, r in rows],
              "evaluate: RSS": [r["evaluate"]["peak_rss_mb"] for _, r in rows],
              "evaluate: heap (anon)": [r["evaluate"]["peak_anon_mb"] for _, r in rows]}
    for label, values in memory.items():
        right.plot(sequences, values, "o-", label=label)
    right.set(xlabel="sequences", ylabel="peak MB", title="memory")
    for axis in (left, middle, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        axis.set_xlim(left=0)
        axis.set_ylim(bottom=0)
    fig.suptitle(f"Gait3D-shaped synthetic data at fractions {', '.join(f'{k:g}' for k, _ in rows)} "
                 f"({results['machine']})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bpmt-scale"))
    parser.add_argument("--fractions", default="0.125,0.25,0.5,1", help="comma-separated (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="processes for synth and prepare (default: %(default)s)")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "gait3d.yaml")
    parser.add_argument("--max-steps", type=int, default=0,
                        help="run at most this many steps per training stage and extrapolate the epoch (0 = all)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for training and evaluation (0 = torch's default; 1 on a shared machine)")
    parser.add_argument("--no-retrieval", action="store_true", help="skip the 1,000 x 25,000 retrieval line")
    parser.add_argument("--json", type=Path, help="results file (default: WORKDIR/scale.json)")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "scale.png")
    parser.add_argument("--machine", default=f"{os.cpu_count()} CPU cores, shared CPU",
                        help="how to describe the machine in the table and plot (default: %(default)s)")
    parser.add_argument("--keep-data", action="store_true", help="keep each fraction's raw data, cache and run")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.json or args.workdir / "scale.json"
    results = json.loads(path.read_text()) if path.is_file() else {"fractions": {}}
    results["machine"] = args.machine

    def save() -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, path)

    if not args.no_retrieval and "retrieval" not in results:
        results["retrieval"] = run_child("retrieval", {"probes": 1000, "gallery": 25000, "dim": 128, "chunk": 256})
        save()
    if "retrieval" in results:
        print(f"retrieval: {summary('retrieval', results['retrieval'])}", flush=True)
    for fraction in (float(f) for f in args.fractions.split(",")):
        run_fraction(fraction, args, results, save)
    print_table(results)
    plot(results, args.plot)
    print(f"results: {path}; plot: {args.plot}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2], sys.argv[3]))
    sys.exit(main())
