"""Video input: people walking in a video -> COCO-17 pose sequences in Gait3D's native layout.

    reader (OpenCV) -> detect (HOG) -> track (IoU) -> pose (MediaPipe, per crop) -> write

Needs the optional `video` extra plus MediaPipe 0.10.21 (see `libs.py`), imported only when a
video is processed, so importing this package is cheap. Typical use (what `bpmt poses` does):

    info = probe_video(path)
    with progress(extraction_steps(info), desc="poses", unit="frame") as bar:    # bpmt.engine.progress
        sequences = extract_sequences(path, subject="0001", progress=bar.update)
    write_sequences(sequences, out_dir)
"""

from .errors import VideoDependencyError, VideoError
from .extract import ExtractOptions, VideoReport, extract_sequences, extraction_steps
from .libs import native_stderr_silenced
from .reader import VideoInfo, probe_video
from .write import write_sequences

__all__ = ["ExtractOptions", "VideoDependencyError", "VideoError", "VideoInfo", "VideoReport", "extract_sequences",
           "extraction_steps", "native_stderr_silenced", "probe_video", "write_sequences"]
