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

from .errors import BPMTError


# ---------------------------------------------------------------------------------------------
# Shared argument groups


def add_data_args(parser: argparse.ArgumentParser, data_flag: bool = False) -> None:
    """DATA (positional, or `--data` when `data_flag`) plus the identity-subset options."""
    if data_flag:
        parser.add_argument("--data", required=True, help="Gait3D 2D_Poses folder, pose-pickle folder or prepared cache")
    else:
        parser.add_argument("data", metavar="DATA", help="Gait3D 2D_Poses folder, pose-pickle folder or prepared cache")
    parser.add_argument("--ids", help="identities to use: comma-separated list or a file with one per line")
    parser.add_argument("--split", help="official-style split file (e.g. Gait3D.json)")
    parser.add_argument("--subset", choices=["train", "test"], help="which identities of --split to use")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="parallel parser processes for raw folders (default: %(default)s)")
    parser.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                        help="bad frame files: stop with an error (default) or skip and count them")
    parser.add_argument("--format", dest="pose_format", choices=["auto", "gait3d", "pkl"], default="auto",
                        help="input layout; 'pkl' reads OpenGait pose pickles (needs --allow-pickle)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow reading pose pickles (unpickling executes code from the files)")


def load_data(args: argparse.Namespace, quiet: bool = False):
    """Open DATA as described by `add_data_args`; prints the skip summary of raw reads."""
    from .data.io import list_sequence_dirs
    from .data.source import open_data, resolve_ids

    ids = resolve_ids(args.ids, args.split, args.subset)
    bar = None
    from .data.cache import is_cache
    if not quiet and args.pose_format != "pkl" and not is_cache(args.data) and os.path.isdir(args.data):
        from tqdm import tqdm
        bar = tqdm(total=len(list_sequence_dirs(args.data, ids)), unit="seq", desc="reading", file=sys.stderr,
                   leave=False)
    try:
        corpus, report = open_data(args.data, ids, workers=args.workers, on_error=args.on_error,
                                   pose_format=args.pose_format, allow_pickle=args.allow_pickle,
                                   progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    if report is not None and report.skipped and not quiet:
        print(f"warning: {report.summary()}", file=sys.stderr)
    return corpus, report


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_prepare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .data.cache import build_cache
    from .data.io import list_sequence_dirs
    from .data.source import resolve_ids

    if args.dataset != "gait3d":
        raise BPMTError(f"unknown dataset kind {args.dataset!r} (supported: gait3d)")
    ids = resolve_ids(args.ids, args.split, args.subset)
    start = time.perf_counter()
    total = len(list_sequence_dirs(args.src, ids))
    with tqdm(total=total, unit="seq", desc="prepare", file=sys.stderr) as bar:
        corpus, report = build_cache(args.src, args.out, ids=ids, workers=args.workers,
                                     on_error=args.on_error, progress=bar.update)
    elapsed = time.perf_counter() - start
    print(f"wrote {args.out}: {report.summary()} in {elapsed:.1f}s "
          f"({report.files / max(elapsed, 1e-9):,.0f} files/s)")
    for example in report.examples:
        print(f"  skipped {example}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    corpus, report = load_data(args, quiet=args.json)
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


# [cmd-functions: synth, show]

# [cmd-functions: score]

# [cmd-functions: train, evaluate, embed, demo]

# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bpmt", description="BPMT: Body Part as Modality Transformer for gait recognition")
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

    p = sub.add_parser("stats", help="read and validate every frame; print dataset statistics")
    add_data_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_stats)

    # [parsers: synth, show]

    # [parsers: score]

    # [parsers: train, evaluate, embed, demo]

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


if __name__ == "__main__":
    sys.exit(main())
