"""Checks of input that only a command's whole set of flags tells: made before any work, so that a run is never
lost to input found bad at its end (the flags' own checks are in their parsers and config objects)."""
from __future__ import annotations

import re

from common.errors import UsageError
from storage.urls import journal_path, redacted, sqlite_path

# the forms sbatch --time takes: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (and no limit)
_SLURM_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d+(:\d{1,2}){0,2}|(?i:unlimited|infinite)")


def check_slurm_time(text: str | None) -> None:
    """UsageError for a ``--time`` sbatch would refuse only once the script is written (and --no-submit never)."""
    if text is not None and not _SLURM_TIME.fullmatch(text):
        raise UsageError(f"time: {text!r} is not a Slurm time limit; write MINUTES, HOURS:MINUTES:SECONDS or "
                         f"DAYS-HOURS[:MINUTES[:SECONDS]] (e.g. 24:00:00 or 1-12)")


def check_shared_journal(url: str) -> None:
    """UsageError for a journal file named relative to the working folder: a Slurm task on another node, or
    started elsewhere, would open another file; the tasks share one only by its absolute path."""
    path = journal_path(url)
    if path is not None and not path.is_absolute():
        raise UsageError(f"storage: {redacted(url)} is relative to each task's working folder; name the shared "
                         f"file by its absolute path: journal:///{path.absolute()}")


def check_database_file(url: str) -> None:
    """UsageError for a zero-length file named as a SQLite study: SQLite would take it for an empty database and
    write Optuna's tables into whatever file was meant (a file made by ``touch``, an interrupted copy)."""
    path = sqlite_path(url)
    if path is not None and path.is_file() and path.stat().st_size == 0:
        raise UsageError(f"storage: {path} is an empty file (0 bytes), not a study; remove it and the search "
                         f"creates the database, or fix --storage")
