"""The video feature's error types (both are `BPMTError`s: the CLI prints them as `error: ...`)."""

from ...errors import BPMTError, DataError


class VideoError(DataError):
    """A video file is missing, cannot be opened or decoded."""


class VideoDependencyError(BPMTError):
    """OpenCV or MediaPipe (the optional `video` extra) is not installed or cannot be imported."""
