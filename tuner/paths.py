"""Checks that an output folder or file can be written, before any work is done, with one line saying what to fix.

Each check tries the real thing (create the folder, create and remove a probe file), so read-only mounts and
paths under a file are caught as well as permissions. Nothing else lives here.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from tuner.errors import OutputPathError

__all__ = ["describe_os_error", "writable_file", "writable_folder"]


def describe_os_error(exc: OSError) -> str:
    """The reason of an OSError in words ('Permission denied', 'a part of the path is a file, not a folder')."""
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a part of the path is a file, not a folder"
    return exc.strerror or str(exc)


def writable_folder(path: str | Path, flag: str) -> Path:
    """Create `path` (with its parents) if missing and check that files can be created in it.

    Raises OutputPathError naming `flag` (e.g. '--log-dir') when it is a file, lies under a file, or is not
    writable.
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{flag} {folder} is a file, not a folder: choose a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tuner-write-check-"):
            pass
    except OSError as exc:
        raise OutputPathError(
            f"cannot write into {flag} {folder}: {describe_os_error(exc)}; choose a folder you can write to"
        ) from None
    return folder


def writable_file(path: str | Path, flag: str) -> Path:
    """Check that the file `path` can be written (its folder is created if missing); it is left as it was."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise OutputPathError(f"{flag} {target} is a folder; give a file path such as {target / 'result.json'}")
    try:
        writable_folder(target.parent, f"{flag}'s folder")
    except OutputPathError as exc:
        raise OutputPathError(f"cannot write {flag} {target}: {exc}") from None
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputPathError(f"cannot write {flag} {target}: permission denied; choose another file")
    return target
