"""The optional libraries of video input, imported only when a video is processed.

OpenCV (`opencv-python-headless`, from the `video` extra) reads videos and detects people;
MediaPipe 0.10.21 estimates poses. MediaPipe is installed on its own, without its declared
dependencies (they would pull numpy < 2, jax and a second, GUI build of OpenCV); the `video`
extra lists the few it needs at run time (MediaPipe's results with numpy 2 and opencv-python-headless
were checked identical to those with its own dependencies). Newer MediaPipe releases need a model
download and must not be used.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import IO, Iterator

from .errors import VideoDependencyError

INSTALL_HINT = "pip install 'bpmt[video]' && pip install --no-deps mediapipe==0.10.21"
MEDIAPIPE_VERSION = "0.10.21"


def import_cv2():
    """The `cv2` module, or a `VideoDependencyError` saying how to install it."""
    try:
        import cv2
    except ImportError as exc:
        raise VideoDependencyError(f"video input needs OpenCV, which cannot be imported ({exc}); "
                                   f"install it with: {INSTALL_HINT}") from None
    return cv2


def import_mediapipe_pose():
    """MediaPipe's legacy pose solution (`mediapipe.solutions.pose`), checked for the one release
    that ships its models offline."""
    import_cv2()  # MediaPipe's solutions import cv2: name the missing piece precisely
    try:
        import mediapipe
        from mediapipe.python.solutions import pose
    except ImportError as exc:
        raise VideoDependencyError(f"video input needs MediaPipe {MEDIAPIPE_VERSION}, which cannot be imported "
                                   f"({exc}); install it with: {INSTALL_HINT}") from None
    version = getattr(mediapipe, "__version__", "?")
    if version != MEDIAPIPE_VERSION:
        raise VideoDependencyError(f"video input needs MediaPipe {MEDIAPIPE_VERSION} (it ships its pose models; "
                                   f"newer releases download them), found {version}; install it with: "
                                   f"pip install --no-deps mediapipe=={MEDIAPIPE_VERSION}")
    return pose


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[IO[str]]:
    """Send file descriptor 2 to /dev/null while inside (MediaPipe's C++ side prints several log
    lines per pose graph, which no setting turns off); yields a stream to the real stderr, e.g.
    for a progress bar. Process-wide: for command-line use, not inside servers."""
    sys.stderr.flush()
    saved = os.dup(2)
    real_stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield real_stderr
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        real_stderr.close()
