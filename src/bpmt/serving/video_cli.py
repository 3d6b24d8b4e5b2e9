"""CLI commands of the video feature (registered by bpmt.cli.build_parser): `bpmt poses`."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..text import plural


def register(sub) -> None:
    """Add `bpmt poses` to the `bpmt` parser."""
    p = sub.add_parser("poses", help="extract COCO-17 pose sequences from a video (needs the video extra)",
                       description="Detect and track the people in a video, estimate each one's pose per frame "
                                   "(MediaPipe, offline) and write one pose sequence per tracked person in "
                                   "Gait3D's native layout: OUT/2D_Poses/<ID>/camid<C>_videoid<V>/seq<K>/.")
    p.add_argument("video", metavar="VIDEO", help="video file (anything OpenCV reads: mp4, avi, ...)")
    p.add_argument("--out", required=True, help="output folder (the sequences go to OUT/2D_Poses/)")
    p.add_argument("--subject", default="unknown", help="identity folder name of the sequences (default: %(default)s)")
    p.add_argument("--camera", default="0", help="camera number C in camid<C>_videoid<V> (default: %(default)s)")
    p.add_argument("--video-id", default="0", help="video number V in camid<C>_videoid<V> (default: %(default)s)")
    p.add_argument("--min-frames", type=int, default=20,
                   help="keep tracks with at least this many frames with a pose (default: %(default)s)")
    p.add_argument("--start-frame", type=int, default=0, help="first video frame to read (default: %(default)s)")
    p.add_argument("--max-frames", type=int, help="read at most this many frames (default: all)")
    p.add_argument("--single-person", action="store_true",
                   help="one person fills the frame: no detection or tracking, the whole frame is the crop")
    p.add_argument("--detect-every", type=int, default=1,
                   help="run the person detector on every k-th frame only (faster; default: %(default)s)")
    p.add_argument("--detect-scale", type=float,
                   help="resize frames by this before detection: > 1 finds people under ~90 px tall (slower); "
                        "default: 1, or smaller for frames over 960 px")
    p.add_argument("--overwrite", action="store_true", help="replace the sequences of an earlier run in OUT/2D_Poses/<ID>/camid<C>_videoid<V>/")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_poses)


def cmd_poses(args: argparse.Namespace) -> int:
    from ..engine.progress import progress
    from ..errors import BPMTError
    from .video import ExtractOptions, VideoReport, extract_sequences, extraction_steps, write_sequences
    from .video.extract import check_arguments
    from .video.libs import import_mediapipe_pose, native_stderr_silenced
    from .video.reader import probe_video
    from .video.write import output_folder, refuse_existing

    options = ExtractOptions(detect_every=args.detect_every, detect_scale=args.detect_scale)
    camera, video = check_arguments(args.subject, args.camera, args.video_id, args.min_frames, args.max_frames,
                                    args.start_frame, options)
    if not args.overwrite:  # fail before minutes of work, not after
        refuse_existing(output_folder(args.out, args.subject, camera, video))
    with native_stderr_silenced():  # FFmpeg's own complaints about a bad file; the error below names it
        info = probe_video(args.video)
    import_mediapipe_pose()  # a missing library fails here, before any work
    report = VideoReport()
    start = time.perf_counter()
    with native_stderr_silenced() as stderr, \
            progress(extraction_steps(info, args.max_frames, args.start_frame), unit="frame", desc="poses",
                     stream=stderr, leave=False) as bar:
        sequences = extract_sequences(args.video, subject=args.subject, camera=args.camera, video=args.video_id,
                                      min_frames=args.min_frames, max_frames=args.max_frames,
                                      start_frame=args.start_frame, single_person=args.single_person,
                                      options=options, progress=bar.update, report=report)
    seconds = time.perf_counter() - start
    if not sequences:
        raise BPMTError(f"{args.video}: no person tracked with at least {plural(args.min_frames, 'frame')} with a pose "
                        f"({report.summary()}); try --min-frames, --detect-scale 1.5, or --single-person")
    root = write_sequences(sequences, args.out, overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"video": args.video, "out": str(root), "seconds": round(seconds, 2), **report.to_dict(),
                          "sequences": [{"name": s.name, "frames": len(s), "first": int(s.frames[0]),
                                         "last": int(s.frames[-1])} for s in sequences]}, indent=2))
        return 0
    print(f"{args.video}: {report.summary()} in {seconds:.1f}s ({report.frames / max(seconds, 1e-9):.1f} frames/s)")
    for s in sequences:
        print(f"  {s.name}: {plural(len(s), 'frame')} with a pose (video frames {s.frames[0]}-{s.frames[-1]}, "
              f"mean crop {s.crop_sizes[:, 0].mean():.0f} x {s.crop_sizes[:, 1].mean():.0f} px)")
    print(f"wrote {plural(len(sequences), 'sequence')} to {root}", file=sys.stderr)
    return 0
