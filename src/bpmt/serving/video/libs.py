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
import re
import sys
import threading
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


# MediaPipe's C++ side (absl / glog format, e.g. `W0000 00:00:1796222912.585543  3340 file.cc:114] ...`)
# and TFLite print these straight to file descriptor 2; no environment variable (GLOG_minloglevel,
# TF_CPP_MIN_LOG_LEVEL) turns them off in MediaPipe 0.10.21.
NATIVE_LOG_LINE = re.compile(r"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] "
                             r"|INFO: Created TensorFlow Lite "
                             r"|WARNING: All log messages before absl::InitializeLog\(\) is called)")

# fd 2 is one per process: redirections are nested, never interleaved between threads.
_REDIRECTING = threading.RLock()


@contextlib.contextmanager
def native_stderr_silenced(keep_other_lines: bool = False) -> Iterator[IO[str]]:
    """Silence what native code (MediaPipe, TFLite, FFmpeg) writes to file descriptor 2 while
    inside; yields a stream to the real stderr, e.g. for a progress bar.

    By default fd 2 goes to /dev/null (the command line: everything there is noise, and errors are
    raised, not printed). `keep_other_lines=True` (a server, whose own log must go on while a
    video is processed): fd 2 goes to a pipe whose lines are copied to the real stderr, all but
    MediaPipe's and TFLite's log lines (`NATIVE_LOG_LINE`). Process-wide either way; uses by other
    threads wait for this one to end."""
    with _REDIRECTING:
        sys.stderr.flush()
        saved = os.dup(2)
        real_stderr = os.fdopen(os.dup(saved), "w", buffering=1)
        copier = None
        try:
            if keep_other_lines:
                read_end, write_end = os.pipe()
                os.dup2(write_end, 2)
                os.close(write_end)
                copier = threading.Thread(target=_copy_lines, args=(read_end, os.dup(saved)), daemon=True,
                                          name="bpmt-stderr-filter")
                copier.start()
            else:
                with open(os.devnull, "w") as devnull:
                    os.dup2(devnull.fileno(), 2)
            yield real_stderr
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)            # closes the pipe's last write end: the copier reads EOF and ends
            os.close(saved)
            real_stderr.close()
            if copier is not None:
                copier.join(timeout=5)   # a child process still holding the pipe may delay EOF; don't hang


def _copy_lines(read_end: int, target: int) -> None:
    """Copy lines from `read_end` to `target` until EOF, dropping native log lines; closes both."""
    with open(read_end, "rb") as source, open(target, "wb", buffering=0) as sink:
        for line in source:
            if not NATIVE_LOG_LINE.match(line.decode("utf-8", "replace")):
                sink.write(line)
