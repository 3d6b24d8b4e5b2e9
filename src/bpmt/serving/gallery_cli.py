"""CLI commands of the gallery feature (registered by bpmt.cli.build_parser):

    bpmt enroll MODEL --gallery DIR --data DATA [--ids ...]
    bpmt identify MODEL --gallery DIR --data DATA | --video FILE [--top-k K] [--threshold D] [--json]
    bpmt gallery DIR list | remove ID [ID ...] | stats
    bpmt calibrate MODEL --data DATA [--target-far 0.01] [--plot FILE.png] [--save-threshold DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..cli import positive_int as _positive
from ..errors import BPMTError
from ..text import plural


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a distance, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite distance >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a rate between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate between 0 and 1 (0.01 = 1%), got {text}")
    return value


def _distance(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


# ---------------------------------------------------------------------------------------------
# enroll


def _search_settings(args: argparse.Namespace):
    """Settings asked for on the command line, completed from the gallery (None: nothing asked)."""
    from .gallery import MANIFEST, SearchSettings, read_manifest

    if args.exact_limit is None and args.index is None:
        return None
    root = Path(args.gallery)
    base = read_manifest(root).settings if (root / MANIFEST).exists() else SearchSettings()
    return SearchSettings(args.exact_limit or base.exact_limit, args.index or base.approximate)


def cmd_enroll(args: argparse.Namespace) -> int:
    from ..cli import _embed_with_progress, choose_network, load_data
    from ..engine.export import load_recognizer
    from .gallery import MANIFEST, check_model, enroll, read_manifest

    model, config, _, fingerprint = load_recognizer(args.model)
    network = choose_network(args, args.model, model, config, fingerprint)
    root = Path(args.gallery)
    if (root / MANIFEST).exists():     # fail before the slow part; enroll checks again under the lock
        check_model(read_manifest(root), fingerprint, config.eval.metric)
    settings = _search_settings(args)
    corpus, _ = load_data(args, quiet=args.json)
    embeddings = _embed_with_progress(model, config, corpus, network)
    subjects = corpus.subjects
    if args.identity is not None:
        if not args.identity.strip() or "/" in args.identity:
            raise BPMTError(f"--identity {args.identity!r}: expected a non-empty name without '/'")
        subjects = [args.identity] * len(corpus)
    change = enroll(root, fingerprint, config.eval.metric, embeddings, subjects, corpus.names,
                    source=str(Path(args.data).resolve()), settings=settings)
    manifest = change.manifest
    result = {"gallery": str(root), "generation": manifest.generation, "added": change.added,
              "replaced": change.replaced, "enrolled_identities": len(set(subjects)),
              "sequences": len(manifest.entries), "identities": len(manifest.identities),
              "index": manifest.index_tag}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"enrolled {plural(len(corpus), 'sequence')} of {plural(result['enrolled_identities'], 'identity')} "
              f"into {root} ({change.added} new, {change.replaced} replaced); gallery generation "
              f"{manifest.generation}: {plural(result['sequences'], 'sequence')}, "
              f"{plural(result['identities'], 'identity')}, index {manifest.index_tag}")
    return 0


# ---------------------------------------------------------------------------------------------
# identify


def format_identifications(identifications, header: str) -> str:
    lines = [header]
    for ident in identifications:
        best = ident.best
        if ident.identity is not None:
            reason = f"distance {best.distance:.4f}" + (f" <= threshold {ident.threshold:.6g}"
                                                        if ident.threshold is not None else "")
            lines.append(f"{ident.query}: {ident.identity}  ({reason})")
        else:
            lines.append(f"{ident.query}: unknown  (best {best.identity} at {best.distance:.4f} "
                         f"> threshold {ident.threshold:.6g})")
        for rank, match in enumerate(ident.matches, 1):
            lines.append(f"  {rank:>3}. {match.identity:<12} {_distance(match.distance):>10}   {match.sequence}")
    return "\n".join(lines)


def extract_video(args: argparse.Namespace) -> list:
    """`--video` -> one pose `Sequence` per tracked walker, with a progress bar over the frames."""
    import sys

    from ..engine.progress import progress
    from .video import extract_sequences, extraction_steps
    from .video.libs import import_mediapipe_pose, native_stderr_silenced
    from .video.reader import probe_video

    with native_stderr_silenced():
        info = probe_video(args.video)
    import_mediapipe_pose()                     # a missing library fails here, before any work
    with native_stderr_silenced() as stderr, \
            progress(extraction_steps(info, args.max_frames, args.start_frame), unit="frame", desc="poses",
                     stream=stderr, leave=False, disable=args.json) as bar:
        sequences = extract_sequences(args.video, min_frames=args.min_frames, max_frames=args.max_frames,
                                      start_frame=args.start_frame, single_person=args.single_person,
                                      progress=bar.update)
    if not args.json:
        print(f"{args.video}: {plural(len(sequences), 'tracked walker')}", file=sys.stderr)
    return sequences


def _identify_video(identifier, args: argparse.Namespace, threshold):
    sequences = extract_video(args)
    if not sequences:
        raise BPMTError(f"{args.video}: no walking person found (no track with a pose on at least "
                        f"{plural(args.min_frames, 'frame')}); try --min-frames or --single-person")
    return identifier.identify_sequences(sequences, args.top_k, threshold, source=str(args.video))


def cmd_identify(args: argparse.Namespace) -> int:
    from ..cli import announce_backend
    from .identify import Identifier

    if (args.data is None) == (args.video is None):
        raise BPMTError("identify needs exactly one of --data DATA or --video FILE")
    if args.no_threshold and args.threshold is not None:
        raise BPMTError("--threshold and --no-threshold exclude each other")
    threshold = None if args.no_threshold else ("gallery" if args.threshold is None else args.threshold)
    identifier = Identifier(args.model, args.gallery, nprobe=args.nprobe, ef_search=args.ef_search,
                            backend=args.backend)
    announce_backend(identifier.network)
    if args.video is not None:
        results = _identify_video(identifier, args, threshold)
        source = args.video
    else:
        from ..cli import _embed_with_progress, load_data
        from .identify import identify_embeddings

        corpus, _ = load_data(args, quiet=args.json)
        embeddings = _embed_with_progress(identifier.model, identifier.config, corpus, identifier.network)
        results = identify_embeddings(identifier.gallery, embeddings, corpus.names, args.top_k, threshold,
                                      args.nprobe, args.ef_search)
        source = args.data
    manifest = identifier.gallery.manifest
    if args.json:
        print(json.dumps({"gallery": str(manifest.root), "generation": manifest.generation,
                          "model": manifest.fingerprint, "metric": manifest.metric, "source": str(source),
                          "top_k": args.top_k, "results": [r.to_dict() for r in results]}, indent=2))
    else:
        limit = results[0].threshold if results else None
        header = (f"{plural(len(results), 'query')} from {source} against {manifest.root} "
                  f"({plural(len(manifest.entries), 'sequence')}, {plural(len(manifest.identities), 'identity')}, "
                  f"index {manifest.index_tag}, metric {manifest.metric}, "
                  f"threshold {'none' if limit is None else f'{limit:.6g}'})")
        print(format_identifications(results, header))
    return 0


# ---------------------------------------------------------------------------------------------
# gallery DIR list | remove | stats


def cmd_gallery(args: argparse.Namespace) -> int:
    from .gallery import load_gallery, read_manifest, remove_identities, summary

    if args.action == "remove":
        change = remove_identities(args.dir, args.identities)
        print(f"removed {plural(change.removed, 'sequence')} of {plural(len(args.identities), 'identity')} "
              f"from {args.dir}; generation {change.manifest.generation}: "
              f"{plural(len(change.manifest.entries), 'sequence')}, "
              f"{plural(len(change.manifest.identities), 'identity')} left")
        return 0
    if args.action == "list":
        manifest = read_manifest(args.dir)
        rows: dict[str, dict] = {}
        for entry in manifest.entries:
            row = rows.setdefault(entry.identity, {"identity": entry.identity, "sequences": [], "enrolled": ""})
            row["sequences"].append(entry.sequence)
            row["enrolled"] = max(row["enrolled"], entry.enrolled)
        listing = [rows[k] for k in sorted(rows)]
        if args.json:
            print(json.dumps({"gallery": str(manifest.root), "identities": listing}, indent=2))
        else:
            print(f"{'identity':<14}{'sequences':>10}  last enrolled")
            for row in listing:
                print(f"{row['identity']:<14}{len(row['sequences']):>10}  {row['enrolled']}")
            print(f"{plural(len(listing), 'identity')}, {plural(len(manifest.entries), 'sequence')}")
        return 0
    gallery = load_gallery(args.dir)                    # stats: also verifies every file
    stats = summary(gallery.manifest)
    stats["verified"] = True
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    spi = stats["sequences_per_identity"]
    threshold = "none" if stats["threshold"] is None else f"{stats['threshold']:.6g}"
    if stats["calibration"]:
        cal = stats["calibration"]
        threshold += f" (calibrated for FAR <= {100 * cal.get('target_far', float('nan')):.2f}%)"
    print(f"gallery:     {stats['gallery']} (generation {stats['generation']}, updated {stats['updated']})")
    print(f"model:       {stats['model']} (metric {stats['metric']}, {stats['dim']} dimensions)")
    print(f"identities:  {stats['identities']}")
    print(f"sequences:   {stats['sequences']} "
          f"(per identity min/median/max {spi['min']}/{spi['median']:g}/{spi['max']})")
    print(f"index:       {stats['index']} "
          f"(exact below {plural(stats['exact_limit'], 'sequence', grouped=True)}, then {stats['approximate']})")
    print(f"threshold:   {threshold}")
    print(f"size:        {stats['bytes'] / 2**20:.2f} MB, checksums verified")
    return 0


# ---------------------------------------------------------------------------------------------
# calibrate


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..cli import _embed_with_progress, choose_network, load_data
    from ..engine.export import load_recognizer
    from .calibrate import calibrate, open_set_scores, plot_tradeoff, threshold_decimals
    from .gallery import check_model, now_utc, read_manifest, set_threshold

    model, config, _, fingerprint = load_recognizer(args.model)
    network = choose_network(args, args.model, model, config, fingerprint)
    metric = config.eval.metric
    if args.save_threshold:
        check_model(read_manifest(args.save_threshold), fingerprint, metric)
    corpus, _ = load_data(args, quiet=args.json)
    embeddings = _embed_with_progress(model, config, corpus, network)
    genuine, impostor = open_set_scores(embeddings, corpus.subjects, metric)
    result = calibrate(genuine, impostor, args.target_far)
    output = {"data": args.data, "sequences": len(corpus), "identities": len(set(corpus.subjects)),
              "metric": metric, **result.to_dict()}
    if args.plot:
        output["plot"] = str(plot_tradeoff(genuine, impostor, result, args.plot,
                                           title=f"{Path(args.model).name} on {Path(args.data).name}: "
                                                 f"EER {100 * result.eer:.2f}%"))
    if args.save_threshold:
        record = {"target_far": result.target_far, "far": result.far, "frr": result.frr, "eer": result.eer,
                  "genuine": result.genuine, "impostor": result.impostor, "data": str(Path(args.data).resolve()),
                  "calibrated": now_utc()}
        output["saved_to"] = str(set_threshold(args.save_threshold, fingerprint, result.threshold, record).root)
    if args.json:
        print(json.dumps(output, indent=2))
        return 0
    print(f"calibration on {args.data}: {plural(len(corpus), 'sequence')}, {plural(output['identities'], 'identity')}, "
          f"metric {metric}")
    print(f"genuine scores {result.genuine} (nearest other sequence of the same identity), impostor scores "
          f"{result.impostor} (nearest sequence of another identity); FAR steps of {100 / result.impostor:.2f}%")
    # One format per quantity: rates as percentages with 2 decimals, every threshold (a distance)
    # with the same decimals, enough to print each one that is used exactly.
    decimals = threshold_decimals([row[1] for row in result.table] + [result.threshold, result.eer_threshold])
    print(f"{'target FAR':>10}  {'threshold':>10}  {'FAR':>7}  {'FRR':>7}")
    for target, threshold, far, frr in result.table:
        print(f"{100 * target:>9.2f}%  {threshold:>10.{decimals}f}  {100 * far:>6.2f}%  {100 * frr:>6.2f}%")
    print(f"EER {100 * result.eer:.2f}% at threshold {result.eer_threshold:.{decimals}f}")
    print(f"threshold for FAR <= {100 * result.target_far:.2f}%: {result.threshold:.{decimals}f} "
          f"(FAR {100 * result.far:.2f}%, FRR {100 * result.frr:.2f}% on this set)")
    if args.plot:
        print(f"plot: {output['plot']}")
    if args.save_threshold:
        print(f"saved threshold to gallery {args.save_threshold}")
    return 0


# ---------------------------------------------------------------------------------------------


def register(sub) -> None:
    """Add this feature's subcommands to the `bpmt` parser."""
    from ..cli import add_backend_arg, add_data_args
    from ..engine.pretrained import DEFAULT_MODEL
    from .search import APPROXIMATE_KINDS, DEFAULT_EF_SEARCH, DEFAULT_EXACT_LIMIT, DEFAULT_NPROBE

    model_help = ("run folder of `bpmt train`, its exported model.safetensors, or a shipped model's name "
                  f"(`bpmt models`; default: {DEFAULT_MODEL})")

    p = sub.add_parser("enroll", help="embed sequences and store them in a gallery under their identity")
    p.add_argument("model", metavar="MODEL", nargs="?", default=DEFAULT_MODEL, help=model_help)
    p.add_argument("--gallery", required=True, metavar="DIR", help="gallery folder (created if needed)")
    add_data_args(p, data_flag=True)
    p.add_argument("--exact-limit", type=_positive, metavar="N",
                   help=f"exact search below N sequences, approximate from there on "
                        f"(stored in the gallery; default {DEFAULT_EXACT_LIMIT:,})")
    p.add_argument("--index", choices=APPROXIMATE_KINDS, help="approximate index kind (stored; default hnsw)")
    p.add_argument("--identity", metavar="NAME",
                   help="enrol every selected sequence under NAME instead of its identity folder "
                        "(e.g. a track of `bpmt poses`, chosen with --seqs)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    add_backend_arg(p)
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("identify", help="rank the gallery's identities for each query sequence")
    p.add_argument("model", metavar="MODEL", nargs="?", default=DEFAULT_MODEL, help=model_help)
    p.add_argument("--gallery", required=True, metavar="DIR", help="gallery folder made by `bpmt enroll`")
    add_data_args(p, data_flag=True, data_required=False)     # --data or --video, checked in cmd_identify
    p.add_argument("--video", metavar="FILE", help="video: every tracked walker is identified (needs the video extra)")
    p.add_argument("--start-frame", type=int, default=0, help="--video: first frame to read (default: %(default)s)")
    p.add_argument("--max-frames", type=_positive, help="--video: read at most this many frames (default: all)")
    p.add_argument("--min-frames", type=_positive, default=20,
                   help="--video: keep walkers tracked with a pose on at least this many frames (default: %(default)s)")
    p.add_argument("--single-person", action="store_true",
                   help="--video: one person fills the frame (no detection or tracking)")
    p.add_argument("--top-k", type=_positive, default=5, help="identities listed per query (default: %(default)s)")
    p.add_argument("--threshold", type=_non_negative, metavar="D",
                   help="unknown when the best distance is above D (default: the gallery's calibrated one)")
    p.add_argument("--no-threshold", action="store_true", help="ignore the gallery's threshold")
    p.add_argument("--nprobe", type=_positive, default=DEFAULT_NPROBE, help="IVF cells scanned (default: %(default)s)")
    p.add_argument("--ef-search", type=_positive, default=DEFAULT_EF_SEARCH,
                   help="HNSW candidates explored (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    add_backend_arg(p)
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("gallery", help="inspect or edit a gallery: list | remove ID | stats")
    p.add_argument("dir", metavar="DIR", help="gallery folder")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="enrolled identities and their sequence counts")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("remove", help="remove every sequence of the given identities")
    a.add_argument("identities", nargs="+", metavar="ID")
    a = actions.add_parser("stats", help="counts, model, index, threshold; verifies every file")
    a.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gallery)

    p = sub.add_parser("calibrate", help="FAR/FRR trade-off on a labelled set; pick a threshold for a target FAR")
    p.add_argument("model", metavar="MODEL", nargs="?", default=DEFAULT_MODEL, help=model_help)
    add_data_args(p, data_flag=True)
    p.add_argument("--target-far", type=_fraction, default=0.01,
                   help="false accept rate to meet (default: %(default)s)")
    p.add_argument("--plot", metavar="FILE.png", help="save score histograms and FAR/FRR curves")
    p.add_argument("--save-threshold", metavar="DIR", help="store the threshold in this gallery (same model)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    add_backend_arg(p)
    p.set_defaults(func=cmd_calibrate)
