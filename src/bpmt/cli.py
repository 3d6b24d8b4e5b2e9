"""The `bpmt` command line: parse arguments, call the library, print results.

Every expected failure is a `BPMTError`; it is printed as one `error: ...` line (exit status 2),
never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import BPMTError, ProtocolError
from .text import plural


# ---------------------------------------------------------------------------------------------
# Shared argument groups


def add_data_args(parser: argparse.ArgumentParser, data_flag: bool = False, data_required: bool = True) -> None:
    """DATA (positional, or `--data` when `data_flag`) plus the identity-subset options."""
    if data_flag:
        parser.add_argument("--data", required=data_required, help="Gait3D 2D_Poses folder, pose-pickle folder or prepared cache")
    else:
        parser.add_argument("data", metavar="DATA", help="Gait3D 2D_Poses folder, pose-pickle folder or prepared cache")
    parser.add_argument("--ids", help="identities to use: comma-separated list or a file with one per line")
    parser.add_argument("--split", help="official-style split file (e.g. Gait3D.json)")
    parser.add_argument("--subset", choices=["train", "test"], help="which identities of --split to use")
    parser.add_argument("--seqs", help="sequences to use (after --ids): comma-separated names "
                                       "(<ID>-<camid_videoid>-<seqK>) or a file with one per line")
    parser.add_argument("--exclude-seqs", help="sequences to leave out: comma-separated names or a file")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="parallel parser processes for raw folders (default: %(default)s)")
    parser.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                        help="bad frame files: stop with an error (default) or skip and count them")
    parser.add_argument("--format", dest="pose_format", choices=["auto", "gait3d", "pkl"], default="auto",
                        help="input layout; 'pkl' reads OpenGait pose pickles (needs --allow-pickle)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow reading pose pickles (unpickling executes code from the files)")


def add_backend_arg(parser: argparse.ArgumentParser) -> None:
    """`--backend`: what runs the network (`engine.onnx_model.inference_network`)."""
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                        help="what runs the network: ONNX Runtime on the model.onnx beside the weights "
                             "(`bpmt export MODEL --onnx`), torch, or auto = ONNX Runtime when that file and "
                             "onnxruntime are there, else torch (default: %(default)s)")


def choose_network(args: argparse.Namespace, model_arg, model, config, fingerprint: str):
    """The network `--backend` asks for (ONNX Runtime with `engine.threads` threads, as torch gets);
    says on stderr when it is the ONNX file."""
    from .engine.onnx_model import inference_network

    network = inference_network(model_arg, model, config, fingerprint, getattr(args, "backend", "auto"),
                                config.engine.threads)
    announce_backend(network)
    return network


def announce_backend(network) -> None:
    """Say on stderr when the network runs in ONNX Runtime."""
    from .engine.onnx_model import backend_name

    if backend_name(network) == "onnx":
        print(f"network: ONNX Runtime ({network.path})", file=sys.stderr)


def load_data(args: argparse.Namespace, quiet: bool = False, report_skips: bool = True):
    """Open DATA as described by `add_data_args`; prints the one-line skip summary of raw reads
    (`--on-error skip`) unless `quiet` or the caller prints the report itself (`report_skips=False`)."""
    from .data.gait3d import list_sequence_dirs
    from .data.source import open_data, resolve_ids

    ids = resolve_ids(args.ids, args.split, args.subset)
    bar = None
    from .data.cache import is_cache
    if not quiet and args.pose_format != "pkl" and not is_cache(args.data) and os.path.isdir(args.data):
        from .engine.progress import progress
        bar = progress(len(list_sequence_dirs(args.data, ids)), unit="seq", desc="reading", leave=False)
    try:
        corpus, report = open_data(args.data, ids, workers=args.workers, on_error=args.on_error,
                                   pose_format=args.pose_format, allow_pickle=args.allow_pickle,
                                   progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    if report is not None and report.skipped and report_skips and not quiet:
        print(f"warning: {report.summary()}", file=sys.stderr)
    corpus = select_sequences(corpus, getattr(args, "seqs", None), getattr(args, "exclude_seqs", None))
    return corpus, report


def select_sequences(corpus, keep: str | None, drop: str | None):
    """Apply `--seqs` / `--exclude-seqs` (names or files of names); unknown names are errors."""
    from .data.source import parse_ids

    if keep is None and drop is None:
        return corpus
    known = {name: i for i, name in enumerate(corpus.names)}
    wanted, unwanted = parse_ids(keep) or [], parse_ids(drop) or []
    for option, names in (("--seqs", wanted), ("--exclude-seqs", unwanted)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise BPMTError(f"{option}: {plural(len(unknown), 'sequence')} not in {corpus.source or 'DATA'} "
                            f"(after --ids), e.g. {unknown[:3]}")
    chosen = [known[n] for n in wanted] if keep is not None else list(range(len(corpus)))
    dropped = {known[n] for n in unwanted}
    chosen = [i for i in dict.fromkeys(chosen) if i not in dropped]
    if not chosen:
        raise BPMTError("--seqs/--exclude-seqs leave no sequence")
    return corpus.select(chosen)


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_prepare(args: argparse.Namespace) -> int:
    from .data.cache import build_cache
    from .data.gait3d import list_sequence_dirs
    from .data.source import resolve_ids
    from .engine.progress import progress

    if args.dataset != "gait3d":
        raise BPMTError(f"unknown dataset kind {args.dataset!r} (supported: gait3d)")
    ids = resolve_ids(args.ids, args.split, args.subset)
    start = time.perf_counter()
    total = len(list_sequence_dirs(args.src, ids))
    with progress(total, unit="seq", desc="prepare") as bar:
        corpus, report = build_cache(args.src, args.out, ids=ids, workers=args.workers,
                                     on_error=args.on_error, progress=bar.update)
    elapsed = time.perf_counter() - start
    print(f"wrote {args.out}: {report.summary()} in {elapsed:.1f}s "
          f"({report.files / max(elapsed, 1e-9):,.0f} files/s)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .serving.importers import ImportReport, check_import_arguments, default_subject, import_poses
    from .serving.video.write import output_folder, refuse_existing, write_sequences

    subject = args.id if args.id is not None else default_subject(args.src)
    camera, video = check_import_arguments(subject, args.camera, args.min_frames, args.min_score, args.max_gap)
    if not args.overwrite:  # fail before reading a large file, not after
        refuse_existing(output_folder(args.out, subject, camera, video),
                        "choose another --out, --id or --camera, or --overwrite to replace them")
    report = ImportReport()
    sequences = import_poses(args.format, args.src, subject=subject, camera_video=args.camera,
                             min_frames=args.min_frames, min_score=args.min_score, max_gap=args.max_gap, report=report)
    if not sequences:
        raise BPMTError(f"{args.src}: no person tracked on at least {plural(args.min_frames, 'frame')} "
                        f"({report.summary()}); try a smaller --min-frames")
    root = write_sequences(sequences, args.out, overwrite=args.overwrite)
    print(f"{args.src} ({args.format}): {report.summary()}")
    for s in sequences:
        print(f"  {s.name}: {plural(len(s), 'frame')} ({s.frames[0]}-{s.frames[-1]}, "
              f"mean crop {s.crop_sizes[:, 0].mean():.0f} x {s.crop_sizes[:, 1].mean():.0f} px)")
    print(f"wrote {plural(len(sequences), 'sequence')} to {root}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    corpus, report = load_data(args, quiet=args.json, report_skips=False)     # `checked:` says it
    stats = corpus.stats()
    if report is not None:
        stats["parse"] = report.to_dict()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    fps = stats["frames_per_sequence"]
    spi = stats["sequences_per_identity"]
    print(f"data:        {corpus.source}")
    print(f"identities:  {stats['identities']}")
    print(f"sequences:   {stats['sequences']}  (per identity min/median/max {spi['min']}/{spi['median']:g}/{spi['max']})")
    print(f"frames:      {stats['frames']}  (per sequence min/median/max {fps['min']}/{fps['median']:g}/{fps['max']})")
    print(f"cameras:     {stats['cameras']}")
    if report is not None:
        print(f"checked:     {report.summary()}")
    return 0


# --- synthetic data and drawings


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synth import gait3d_plan, uniform_plan, write_plan
    from .engine.progress import progress

    if args.seed < 0:
        raise BPMTError(f"--seed must be >= 0, got {args.seed}")
    if args.preset is None:
        if args.scale is not None:
            raise BPMTError("--scale needs --preset gait3d")
        plan = uniform_plan(args.subjects or 20, args.sequences_per_subject or 6, detector=args.detector)
        shape = f"{plural(plan.subjects, 'subject')} x {plural(int(plan.sequences[0]), 'sequence')}"
    else:
        if args.subjects or args.sequences_per_subject:
            raise BPMTError(f"--preset {args.preset} sets the subjects and sequences; "
                            "drop --subjects/--sequences-per-subject (use --scale to resize)")
        scale = 1.0 if args.scale is None else args.scale
        try:
            plan = gait3d_plan(scale, seed=args.seed, detector=args.detector)
        except ValueError as exc:
            raise BPMTError(f"--scale {scale}: {exc}") from None
        shape = (f"preset {args.preset} x {scale:g}, detector {args.detector}: {plural(plan.subjects, 'subject')}, "
                 f"{plural(plan.total, 'sequence')}, "
                 f"~{int(plan.lengths.sum()):,} frames before drops")
    start = time.perf_counter()
    with progress(plan.total, unit="seq", desc="synth") as bar:
        root = write_plan(args.out, plan, seed=args.seed, workers=args.workers, progress=bar.update)
    print(f"wrote {root}: {shape} (seed {args.seed}) in {time.perf_counter() - start:.1f}s")
    if plan.train_subjects is not None:
        print(f"split file: {Path(args.out) / 'split.json'} ({plan.train_subjects} training, "
              f"{plan.subjects - plan.train_subjects} test identities)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import difflib

    from .errors import DataError
    from .render import render_sequence

    corpus, _ = load_data(args)
    try:
        index = corpus.index_of(args.sequence)
    except DataError:
        close = difflib.get_close_matches(args.sequence, corpus.names, n=5, cutoff=0.5)
        examples = close or corpus.names[:5]
        raise DataError(f"{corpus.source}: no sequence named {args.sequence!r} among {len(corpus)}; "
                        f"{'did you mean' if close else 'e.g.'} {', '.join(examples)}") from None
    sequence = corpus.sequence(index)
    out = render_sequence(sequence, args.out, frames=args.frames, partition=args.partition)
    print(f"wrote {out}: {sequence.name}, {plural(len(sequence), 'frame')}")
    return 0


# --- scoring


def _warn_official_skipped(source: str, split: str, exc: BPMTError) -> None:
    """`--protocol both` (and `evaluate --split`) go on with leave-one-out when the split's probes
    cannot be scored among the sequences given; say so and why instead of failing."""
    print(f"warning: {source}: official protocol with {split} not scored: {exc}; "
          "printing leave-one-out only", file=sys.stderr)


def cmd_score(args: argparse.Namespace) -> int:
    from .data.source import load_split
    from .evaluation.protocols import label_of, leave_one_out, load_embeddings, official_protocol
    from .evaluation.report import format_results

    protocol = args.protocol or ("both" if args.split else "loo")
    if protocol in ("official", "both") and not args.split:
        raise BPMTError(f"--protocol {protocol} needs --split FILE (the PROBE_SET lives there)")
    embeddings, names = load_embeddings(args.embeddings)
    results = {}
    if protocol in ("official", "both"):
        probes = load_split(args.split)["PROBE_SET"]
        try:
            results["official"] = official_protocol(embeddings, names, probes, metric=args.metric)
        except ProtocolError as exc:
            if protocol == "official":
                raise ProtocolError(f"{args.embeddings}: official protocol with {args.split}: {exc}") from None
            _warn_official_skipped(args.embeddings, args.split, exc)
    if protocol in ("loo", "both"):
        results["loo"] = leave_one_out(embeddings, [label_of(n) for n in names], metric=args.metric)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{args.embeddings}: {plural(len(names), 'sequence')}, "
              f"{plural(len(set(map(label_of, names))), 'identity')}, "
              f"metric {args.metric}")
        print(format_results(results))
    return 0


# --- training, evaluation, the demo


def _overrides_from_flags(args: argparse.Namespace) -> list[str]:
    flags = {"devices": "engine.devices", "strategy": "engine.strategy", "accelerator": "engine.accelerator",
             "precision": "engine.precision", "num_nodes": "engine.num_nodes"}
    extra = [f"{key}={getattr(args, flag)}" for flag, key in flags.items() if getattr(args, flag, None) is not None]
    return list(args.overrides) + extra


def cmd_train(args: argparse.Namespace) -> int:
    from .config import DEFAULT_CONFIG, load_config
    from .engine.run import RunFolder
    from .engine.trainer import init_checkpoint, train

    config = load_config(args.config or DEFAULT_CONFIG, _overrides_from_flags(args))
    out = args.out or os.path.join("runs", f"{os.path.splitext(os.path.basename(args.config or 'default'))[0]}-"
                                   f"{time.strftime('%Y%m%d-%H%M%S')}")
    init = init_checkpoint(RunFolder(out), config, args.init, args.resume)     # before the (long) data reading
    corpus, _ = load_data(args)
    print(f"training {plural(corpus.stats()['identities'], 'identity')}, {plural(len(corpus), 'sequence')} -> {out}",
          file=sys.stderr)
    run = train(config, corpus, out, stage=args.stage, resume=args.resume,
                report=lambda m: print(m, file=sys.stderr), data_description=args.data, init=init)
    print(f"run folder: {run.root}")
    if run.model.is_file():
        print(f"exported model: {run.model}")
    return 0


TEST_TIME_KEYS = ("data.test_max_len", "eval.")


def _test_time_config(config, overrides: list[str]):
    """Apply test-time overrides (`data.test_max_len`, `eval.*`) to a trained model's config."""
    from .config import apply_overrides, config_from_dict, config_to_dict

    for item in overrides:
        if not item.split("=", 1)[0].strip().startswith(TEST_TIME_KEYS):
            raise BPMTError(f"override {item!r}: only test-time settings can change after training "
                            "(data.test_max_len, eval.flip, eval.metric, eval.batch_size, eval.ensemble)")
    return config_from_dict(apply_overrides(config_to_dict(config), overrides))


def _embed_with_progress(model, config, corpus, network=None):
    from .engine.progress import progress
    from .engine.threads import configure_threads
    from .evaluation.evaluate import embed_corpus, num_test_items
    from .models.ensemble import Ensemble

    configure_threads(config.engine.threads)
    if isinstance(model, Ensemble):
        print("embedding with the ensemble: network + LDA of hand-crafted features "
              + ("(eval.ensemble=false: the network alone)" if not config.eval.ensemble else "(1:1 late fusion)"),
              file=sys.stderr)

    with progress(num_test_items(config, corpus), desc="embedding", unit="chunk", leave=False) as bar:
        return embed_corpus(model, config, corpus, progress=bar.update, network=network)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data.source import load_split, resolve_ids
    from .engine.export import load_recognizer
    from .evaluation.evaluate import score_embeddings
    from .evaluation.report import format_results

    model, config, _, fingerprint = load_recognizer(args.run)
    config = _test_time_config(config, args.overrides)
    network = choose_network(args, args.run, model, config, fingerprint)
    ids = resolve_ids(args.ids, args.split if args.subset else None, args.subset)
    args.ids, args.subset, split_file, args.split = ids, None, args.split, None
    corpus, _ = load_data(args, quiet=args.json)
    embeddings = _embed_with_progress(model, config, corpus, network)
    protocols = ("official", "loo") if split_file else ("loo",)
    probes = load_split(split_file)["PROBE_SET"] if split_file else None
    results = {}
    for protocol in protocols:
        try:
            results.update(score_embeddings(embeddings, corpus.names, corpus.subjects,
                                            args.metric or config.eval.metric, probes, (protocol,)))
        except ProtocolError as exc:
            _warn_official_skipped(args.data, split_file, exc)
    if args.plot:
        from .engine.plots import plot_cmc
        for protocol, metrics in results.items():
            path = args.plot if len(results) == 1 else args.plot.replace(".png", f"-{protocol}.png")
            plot_cmc(metrics["cmc"], Path(path), title=f"{protocol}: {Path(args.run).name} on {Path(args.data).name}")
            print(f"CMC curve: {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_results(results))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from .engine.export import load_recognizer

    model, config, _, fingerprint = load_recognizer(args.run)
    config = _test_time_config(config, args.overrides)
    network = choose_network(args, args.run, model, config, fingerprint)
    corpus, _ = load_data(args)
    embeddings = _embed_with_progress(model, config, corpus, network)
    out = args.out if args.out.endswith(".npz") else args.out + ".npz"
    tmp = out + ".tmp.npz"
    np.savez(tmp, embeddings=embeddings, seqs=np.array(corpus.names), model_sha256=fingerprint)
    os.replace(tmp, out)
    print(f"wrote {out}: {plural(embeddings.shape[0], 'sequence')} x {plural(embeddings.shape[1], 'dimension')}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .engine.onnx_model import export_onnx

    if not args.onnx:
        raise BPMTError("bpmt export: say what to export (--onnx); training already exported model.safetensors")
    from .engine.export import resolve_model_path
    from .engine.onnx_model import onnx_path_of

    target = Path(args.out) if args.out else onnx_path_of(resolve_model_path(args.run))
    if not os.access(target.parent if target.parent.exists() else ".", os.W_OK):
        raise BPMTError(f"{target.parent}: not writable (an installed package's shipped model?); "
                        "choose where to write with --out FILE.onnx")
    path, error = export_onnx(args.run, args.out, opset=args.opset, exporter=args.exporter)
    print(f"wrote {path} (+ {path.name}.json): the network ({args.exporter} exporter); "
          f"max |ONNX - torch| on the check batches {error:.2g}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .evaluation.report import format_results

    start = time.perf_counter()
    result = run_demo(args.out, subjects=args.subjects, sequences_per_subject=args.sequences_per_subject,
                      test_subjects=args.test_subjects, seed=args.seed, overrides=args.overrides,
                      report=lambda m: print(m, file=sys.stderr), keep=args.keep)
    print(f"BPMT demo: trained on {len(result.train_ids)} synthetic identities, "
          f"leave-one-out retrieval on {len(result.test_ids)} held-out identities "
          f"({time.perf_counter() - start:.0f}s)")
    print("the network alone:")
    print(format_results(result.metrics))
    if result.ensemble_metrics is not None:
        print("ensemble: network + LDA of hand-crafted features (ensemble.lda, 1:1 late fusion):")
        print(format_results(result.ensemble_metrics))
    if result.removed:
        print(f"removed the temporary folder {result.root} (--keep keeps the run and the data)", file=sys.stderr)
    else:
        print(f"run folder: {result.run}")
        print(f"synthetic data: {result.data}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .engine.export import load_recognizer
    from .engine.pretrained import DEFAULT_MODEL, shipped_models

    rows = []
    for shipped in shipped_models():
        _, config, meta, fingerprint = load_recognizer(shipped.weights)     # verifies the files
        rows.append({"name": shipped.name, "default": shipped.name == DEFAULT_MODEL, "path": str(shipped.folder),
                     "identities": meta["num_classes"], "data": meta.get("data", ""),
                     "ensemble_lda": config.ensemble.lda, "sha256": fingerprint, "summary": shipped.summary(),
                     "card": str(shipped.card)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no models are shipped with this installation")
    for row in rows:
        print(f"{row['name']}{'  (default)' if row['default'] else ''}\n  {row['summary']}\n"
              f"  trained on {plural(row['identities'], 'identity')}; weights sha256 {row['sha256'][:16]}…\n"
              f"  model card: {row['card']}")
    return 0

# ---------------------------------------------------------------------------------------------


EXTRA_COMMANDS = (".serving.gallery_cli", ".serving.video_cli", ".serving.http_cli")


def package_version() -> str:
    """The installed distribution's version; `bpmt.__version__` when run from a source tree."""
    from importlib import metadata

    try:
        return metadata.version("bpmt")
    except metadata.PackageNotFoundError:
        from . import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bpmt", description="BPMT: Body Part as Modality Transformer for gait recognition")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="parse a raw dataset into a packed, memory-mapped cache")
    p.add_argument("dataset", choices=["gait3d"], help="dataset layout")
    p.add_argument("src", metavar="SRC", help="Gait3D 2D_Poses folder (or its parent)")
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument("--ids", help="identities to include: comma-separated list or a file")
    p.add_argument("--split", help="official-style split file")
    p.add_argument("--subset", choices=["train", "test"])
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("import", help="convert pose-estimator output (AlphaPose, OpenPose, MMPose) to Gait3D's layout",
                       description="Track the people in pose-estimator output and write one pose sequence per "
                                   "track in Gait3D's native layout: OUT/2D_Poses/<ID>/camid<C>_videoid<V>/seq<K>/.")
    p.add_argument("format", metavar="FORMAT", choices=["alphapose", "openpose", "mmpose"],
                   help="alphapose (results JSON), openpose (folder of *_keypoints.json), mmpose (predictions JSON)")
    p.add_argument("src", metavar="SRC", help="the file (alphapose, mmpose) or folder (openpose) to convert")
    p.add_argument("--out", required=True, help="output folder (the sequences go to OUT/2D_Poses/)")
    p.add_argument("--id", help="identity folder name (letters, digits, '_'; default: SRC's name, other characters as '_')")
    p.add_argument("--camera", default="camid0_videoid0", help="camera folder name (default: %(default)s)")
    p.add_argument("--min-frames", type=int, default=20,
                   help="keep tracks with at least this many frames (default: %(default)s)")
    p.add_argument("--min-score", type=float,
                   help="drop detections scored below this (AlphaPose score, MMPose bbox_score, else the mean "
                        "joint confidence; default: keep all)")
    p.add_argument("--max-gap", type=int, help="a track ends after this many frames without its person (default: 10)")
    p.add_argument("--overwrite", action="store_true", help="replace the sequences already in OUT/2D_Poses/<ID>/<camera>/")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("stats", help="read and validate every frame; print dataset statistics")
    add_data_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_stats)


    p = sub.add_parser("synth", help="write a synthetic walker dataset in Gait3D's native layout")
    p.add_argument("out", metavar="OUT", help="folder to create; the data goes to OUT/2D_Poses")
    p.add_argument("--subjects", type=positive_int, help="identities (default: 20)")
    p.add_argument("--sequences-per-subject", type=positive_int, help="sequences per identity (default: 6)")
    p.add_argument("--preset", choices=["gait3d"],
                   help="a dataset of Gait3D's size and shape (4,000 identities, 25,309 sequences with Gait3D's "
                        "skewed sequences per identity and lengths, 39 cameras) plus OUT/split.json")
    p.add_argument("--scale", type=float, help="with --preset: multiply its size, e.g. 0.125 (default: 1)")
    p.add_argument("--detector", choices=["plain", "gait3d"], default="plain",
                   help="the pose detector's errors: 'plain' (the original generator) or 'gait3d' (fitted to "
                        "real Gait3D sequences: less jitter, more and longer gaps, whole-body left/right swaps, "
                        "fewer back views; docs/results.md) (default: %(default)s)")
    p.add_argument("--workers", type=positive_int, default=1, help="parallel writer processes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same bytes (default: %(default)s)")
    p.set_defaults(func=cmd_synth)

    from .skeleton import PARTITIONS

    p = sub.add_parser("show", help="draw a sequence, each body part in its own colour (PNG grid or GIF)")
    add_data_args(p)
    p.add_argument("--sequence", required=True, metavar="NAME", help="sequence name, e.g. 0000-camid3_videoid1-seq0")
    p.add_argument("--out", required=True, metavar="FILE", help="image to write: .png for a grid of frames, .gif to animate")
    p.add_argument("--frames", type=positive_int, default=None,
                   help="frames to draw, evenly spaced (default: 8 for a grid, every frame for a GIF)")
    p.add_argument("--partition", default="default", choices=sorted(PARTITIONS),
                   help="body-part partition that decides the colours (default: %(default)s)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("score", help="retrieval metrics (Rank-k, mAP, mINP) of saved embeddings")
    p.add_argument("embeddings", metavar="EMB.npz", help="file with 'embeddings' (N, D) and 'seqs' (N names)")
    p.add_argument("--split", help="official-style split file; its PROBE_SET defines the probes")
    p.add_argument("--protocol", choices=["official", "loo", "both"],
                   help="official probe/gallery, leave-one-out, or both (default: both with --split, else loo)")
    p.add_argument("--metric", choices=["euc", "cos"], default="euc", help="distance (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("train", help="train BPMT (phase 1, phase 2, finetune) into a run folder")
    p.add_argument("--config", help="YAML config (default: the package's copy of configs/gait3d.yaml; see configs/)")
    add_data_args(p, data_flag=True)
    p.add_argument("--out", help="run folder (default: runs/<config>-<time>)")
    p.add_argument("--stage", choices=["phase1", "phase2", "finetune", "all"], default="all",
                   help="which stage to train: phase1 = masked pretraining of each body part alone (T1 "
                        "encoders); phase2 = masked pretraining of pairs of parts (T2 fusion across parts), "
                        "starting from phase1; finetune = the recogniser with triplet + cross-entropy losses, "
                        "starting from the latest earlier stage, then exports model.safetensors; all = every "
                        "stage of the config's `stages`, in order, skipping completed ones (default: "
                        "%(default)s). A single stage must be in `stages` and the stage before it complete in "
                        "--out (with --resume)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start the config's first stage from these weights: a run folder, a stage's "
                        "weights.safetensors, an exported model or a shipped model's name (T1 encoders and T2 "
                        "fusion it holds, strictly; same architecture required)")
    p.add_argument("--devices", type=int, help="devices per node (engine.devices)")
    p.add_argument("--strategy", help="e.g. ddp (engine.strategy)")
    p.add_argument("--accelerator", help="cpu, gpu, auto (engine.accelerator)")
    p.add_argument("--precision", help="32-true, bf16-mixed, ... (engine.precision)")
    p.add_argument("--num-nodes", dest="num_nodes", type=int, help="nodes (engine.num_nodes)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seed=1 finetune.steps=500")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="embed DATA with a trained model and print Gait3D metrics")
    p.add_argument("run", metavar="RUN", help="run folder, exported model.safetensors, or a shipped model's name "
                                              "(`bpmt models`)")
    add_data_args(p, data_flag=True)
    p.add_argument("--metric", choices=["euc", "cos"])
    p.add_argument("--plot", help="save the CMC curve (ranks 1-20) to this PNG")
    p.add_argument("--json", action="store_true")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="test-time setting, repeatable: --set data.test_max_len=32 --set eval.flip=false")
    add_backend_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("embed", help="write embeddings of DATA as EMB.npz (embeddings + seqs)")
    p.add_argument("run", metavar="RUN", help="run folder, exported model.safetensors, or a shipped model's name "
                                              "(`bpmt models`)")
    add_data_args(p, data_flag=True)
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="test-time setting (as for evaluate)")
    add_backend_arg(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("export", help="export a trained model's network to ONNX (for ONNX Runtime: --backend onnx)")
    p.add_argument("run", metavar="RUN", help="run folder, exported model.safetensors, or a shipped model's name")
    p.add_argument("--onnx", action="store_true", help="write the network as ONNX (dynamic batch and time axes) "
                                                       "with model.onnx.json, the SHA-256 of the weights it came from")
    p.add_argument("--out", help="ONNX file to write (default: model.onnx beside model.safetensors, where "
                                 "--backend auto|onnx looks for it)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default: %(default)s)")
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                   help="torch's exporter: torchscript (seconds) or dynamo (torch.export; minutes) "
                        "(default: %(default)s)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="the main job: synthesise walkers, train all phases, evaluate")
    p.add_argument("--out", help="folder for the synthetic data and the run, kept (default: a temporary folder, "
                                 "removed at the end)")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary folder (~180 MB: synthetic data and run) and print where it is")
    p.add_argument("--subjects", type=int, default=60)
    p.add_argument("--sequences-per-subject", type=int, default=8)
    p.add_argument("--test-subjects", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="list the models shipped in the package (usable by name as MODEL)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_models)

    # Commands that live with their feature: each module's `register(sub)` adds its subparsers.
    import importlib
    for module in EXTRA_COMMANDS:
        importlib.import_module(module, __package__).register(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BPMTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                        # `bpmt stats ... | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())      # keep Python's exit-time flush from raising again
        return 0


if __name__ == "__main__":
    sys.exit(main())
