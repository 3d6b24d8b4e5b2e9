"""The project's error types: every expected failure is one of these, with a message that names
the file (or key) and the problem, so the CLI can print it without a traceback."""


class BPMTError(Exception):
    """Base class of every error the project raises on purpose."""


class DataError(BPMTError):
    """Input data is missing, malformed or inconsistent."""


class ConfigError(BPMTError):
    """A configuration file or override is invalid."""


class CheckpointError(BPMTError):
    """A checkpoint or exported model cannot be used."""


class ProtocolError(BPMTError):
    """An evaluation protocol cannot be applied to the sequences given (e.g. no probe among them)."""
