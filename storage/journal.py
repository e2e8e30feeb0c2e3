"""Open Optuna's JournalStorage from a ``journal:///PATH`` URL: one append-only log file on a shared file system,
for clusters without a database server (Slurm job arrays on NFS or Lustre).

The log is Optuna's ``JournalFileBackend`` with ``JournalFileOpenLock`` (an exclusive ``O_CREAT | O_EXCL`` lock
file, which Optuna recommends on NFS v3 and later; a lock left by a killed process is broken after its grace
period). Writers append under the lock; readers replay the file without it, so a dashboard or an export never
waits for a worker. Optuna's heartbeat exists only for its RDB storages: on a journal every running trial keeps a
heartbeat of this tool's (``search.liveness``).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from common.errors import UsageError


LOCK_GRACE_SECONDS = 30  # a lock file older than this is a killed writer's, and is broken


def open_journal(path: Path, create: bool = True, reader: bool = False) -> JournalStorage:
    """The journal storage in ``path``. A reader (or ``create`` False) refuses a missing file and never creates
    one; a writer needs the file's folder."""
    if (reader or not create) and not path.is_file():
        raise UsageError(f"storage: {path} does not exist; check --storage (a search creates it)")
    if not path.parent.is_dir():
        raise UsageError(f"storage: folder {path.parent} does not exist; create it or fix --storage")
    try:
        return Journal(path)
    except (OSError, ValueError) as error:
        raise UsageError(f"storage: cannot open the journal {path}: {error}") from None


class Journal(JournalStorage):
    """Optuna's journal storage on a log file, which it names (``path``)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        super().__init__(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path), LOCK_GRACE_SECONDS)))


@contextlib.contextmanager
def journal_lock(path: Path, purpose: str):
    """An exclusive lock of this tool's beside the journal (``PATH.PURPOSE.lock``), NFS-safe as the journal's own:
    one writer at a time of the dashboard's figure and note, or of a study's kept models."""
    lock = JournalFileOpenLock(f"{path}.{purpose}", LOCK_GRACE_SECONDS)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def is_journal(storage) -> bool:
    return isinstance(storage, Journal)
