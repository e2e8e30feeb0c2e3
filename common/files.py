"""Files: results written so that a crash or Ctrl-C never leaves half of one behind, folders checked before a
command writes anything, and a lock that processes on one machine share."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from common.errors import UsageError


def write_json_atomic(path: str | os.PathLike, document: Any) -> Path:
    """Write ``document`` as indented JSON, atomically."""
    return write_text_atomic(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name[:40]}.", delete=False) as handle:
        handle.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(handle.name, 0o666 & ~umask)  # a temporary file is private; the result is an ordinary file
    os.replace(handle.name, path)
    return path


def check_writable(folder: Path | None, flag: str, fix: str) -> None:
    """UsageError now, rather than a failure after hours of work, when ``folder`` (None: nothing to check) cannot
    be created: a folder is made and removed in its nearest existing parent, so nothing is left behind.
    ``flag`` names the option, ``fix`` says what to do instead."""
    if folder is None:
        return
    check_name_lengths(folder, flag)
    existing = next(parent for parent in (folder.absolute(), *folder.absolute().parents) if parent.exists())
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=existing))
    except OSError as error:
        raise UsageError(f"{flag}: cannot create {folder} ({error.strerror} in {existing}); {fix}") from None


NAME_MAX = 255  # bytes of one file or folder name on Linux's, macOS's and Windows's usual file systems


def check_name_lengths(path: Path, flag: str, spare: int = 0) -> None:
    """UsageError for a path whose file or folder names the file system cannot hold (the last with ``spare``
    bytes more, for a temporary file named after it)."""
    parts = Path(path).parts
    for index, part in enumerate(parts):
        limit = NAME_MAX - (spare if index == len(parts) - 1 else 0)
        if len(os.fsencode(part)) > limit:
            raise UsageError(f"{flag}: the name {part[:40]}... is {len(os.fsencode(part))} bytes long; a file "
                             f"system holds at most {limit} here: choose a shorter one")


def check_output(path: str | os.PathLike, flag: str) -> None:
    """UsageError now, rather than after the work, when a file cannot be written at ``path``: its folder cannot
    be created, or the path is a folder."""
    path = Path(path)
    check_name_lengths(path, flag)  # (a temporary file beside it is named after 40 characters of it at most)
    if path.is_dir():
        raise UsageError(f"{flag}: {path} is a folder; name a file")
    check_writable(path.parent if str(path.parent) else Path("."), flag, "choose another path")


@contextlib.contextmanager
def folder_lock(path: Path):
    """An exclusive flock on the folder ``path``, shared by the processes of one machine (none on Windows)."""
    if fcntl is None:
        yield
        return
    handle = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # and with it the lock
