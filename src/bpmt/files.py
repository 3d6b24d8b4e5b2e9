"""Reading files and folders with errors that name them: small JSON files (splits, folds, model
descriptions) and sub-folder listings."""

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


def subfolders(path: Path) -> list[str]:
    """Sorted visible sub-folder names. A symbolic link that cannot be followed (dangling, or a
    loop of links) or that points back to a folder containing it is an error, never a silent skip."""
    try:
        with os.scandir(path) as entries:
            visible = [e for e in entries if not e.name.startswith(".")]
    except OSError as exc:
        raise DataError(f"{path}: cannot list folder ({exc.strerror or exc})") from None
    names = []
    for entry in visible:
        if entry.is_symlink():
            try:
                os.stat(entry.path)
            except OSError as exc:
                raise DataError(f"{entry.path}: symbolic link cannot be followed ({exc.strerror or exc})") from None
            if os.path.isdir(entry.path):
                real, here = os.path.realpath(entry.path), os.path.realpath(path)
                if os.path.commonpath([real, here]) == real:
                    raise DataError(f"{entry.path}: symbolic link loop (points to {real}, which contains it)")
        try:
            if entry.is_dir():
                names.append(entry.name)
        except OSError as exc:
            raise DataError(f"{entry.path}: cannot inspect ({exc.strerror or exc})") from None
    return sorted(names)
