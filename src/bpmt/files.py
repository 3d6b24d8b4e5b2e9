"""Reading small JSON files (splits, folds, model descriptions) with errors that name the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import BPMTError, DataError


def read_json(path: str | os.PathLike, what: str, error: type[BPMTError] = DataError):
    """Parsed content of `path`; `error` naming the file and `what` it should be otherwise."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: {what} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
