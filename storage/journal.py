"""Open Optuna's JournalStorage from a ``journal:///PATH`` URL: one append-only log file on a shared file system,
for clusters without a database server (Slurm job arrays on NFS or Lustre).

The log is Optuna's ``JournalFileBackend`` with ``JournalFileOpenLock`` (an exclusive ``O_CREAT | O_EXCL`` lock
file, which Optuna recommends on NFS v3 and later; a lock whose file has not changed for ``LOCK_GRACE_SECONDS`` is
a killed writer's, and is broken). Writers append under the lock; readers replay the file without it, so a
dashboard or an export never waits for a worker. Optuna's heartbeat exists only for its RDB storages: on a journal
every running trial keeps a heartbeat of this tool's (``search.liveness``), which has to know when this process
itself was held up by a stale lock (``Journal.stalled_within``).

An append is all or nothing (``WholeAppends``): one the file system refuses half-way (a full disk, an I/O error)
is cut back off under the lock and its error goes up, so no torn line is left for the next append to be glued to
(Optuna's replay would refuse the file from there on); a writer killed half-way leaves one, which the next writer
cuts (``Journal.cut_torn_tail``).
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.storages.journal._storage import JournalOperation  # the log's op codes (Optuna has no public name)

from common.errors import UsageError
from common.log import log

LOCK_GRACE_SECONDS = 30  # a lock file unchanged this long is a killed writer's, and is broken
STALL_SECONDS = 1.0  # a wait for the lock this long is a stall (an append takes milliseconds)
SQLITE_HEADER = b"SQLite format 3\x00"


def open_journal(path: Path, create: bool = True, reader: bool = False) -> JournalStorage:
    """The journal storage in ``path``. A reader (or ``create`` False) refuses a missing file and never creates
    one or changes it; a writer needs a folder it may write, and cuts a torn last line (a writer killed in the
    middle of an append, a full disk) before it appends. Anything that is not an Optuna journal is refused."""
    check_journal_path(path, create, reader)
    try:
        storage = Journal(path)
        if not reader:
            storage.cut_torn_tail()
        return storage
    except UsageError:
        raise
    except Exception as error:  # a line Optuna cannot replay: not a journal it wrote
        raise UsageError(f"storage: {path} is not an Optuna journal this tool can read ({type(error).__name__}: "
                         f"{error}); check --storage") from None


def check_journal_path(path: Path, create: bool = True, reader: bool = False) -> None:
    """UsageError, before anything is opened or written, for a journal ``path`` that ``open_journal`` would
    refuse: a folder, a missing file for a reader, a missing or read-only folder for a writer, a file that is
    not an Optuna journal."""
    hint = "" if path.is_absolute() else f" (a relative path: journal:////{path.absolute()} names it absolutely)"
    if path.is_dir():
        raise UsageError(f"storage: {path} is a folder; name the journal file in it, e.g. {path / 'search.journal'}")
    if (reader or not create) and not path.is_file():
        raise UsageError(f"storage: {path} does not exist{hint}; check --storage (a search creates it)")
    if not path.parent.is_dir():
        raise UsageError(f"storage: folder {path.parent} does not exist{hint}; create it or fix --storage")
    if not reader and not (os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))):
        raise UsageError(f"storage: cannot write the journal {path} or its lock file beside it (read-only); "
                         f"check --storage and the folder's permissions")
    _check_journal_file(path)


def _check_journal_file(path: Path) -> None:
    """UsageError unless ``path`` is missing, empty, or starts with a line of Optuna's journal."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb") as file:
        first = file.readline(1 << 20)
    if first.startswith(SQLITE_HEADER):
        raise UsageError(f"storage: {path} is a SQLite database, not a journal; use sqlite:///{path}")
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise UsageError(f"storage: {path} is not an Optuna journal (its first line is no journal record); check "
                         f"--storage")


class WatchedLock(JournalFileOpenLock):
    """Optuna's NFS-safe lock file, which remembers how long this process last waited for it."""

    def __init__(self, path: str, grace_seconds: int = LOCK_GRACE_SECONDS):
        super().__init__(path, grace_seconds)
        self.lock_file = self._lock_file
        self.waiting_since: float | None = None  # monotonic
        self.last_stall_end = -float("inf")  # monotonic end of the last wait of STALL_SECONDS or more

    def acquire(self) -> bool:
        started = time.monotonic()
        self.waiting_since = started
        try:
            return super().acquire()
        finally:
            self.waiting_since = None
            if time.monotonic() - started >= STALL_SECONDS:
                self.last_stall_end = time.monotonic()

    def stalled_within(self, seconds: float) -> bool:
        now, since = time.monotonic(), self.waiting_since
        return (since is not None and now - since >= STALL_SECONDS) or now - self.last_stall_end <= seconds


class WholeAppends(JournalFileBackend):
    """Optuna's log file, whose appends are whole or nothing: a write or flush that fails (``OSError``: no space,
    an I/O error, a stale file handle) cuts the file back to where the append began, under the lock, and raises."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs).encode("utf-8")
        self._lock.acquire()
        try:
            start = os.path.getsize(self._file_path)
            handle = os.open(self._file_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = 0
                while written < len(text):
                    written += os.write(handle, text[written:])
                os.fsync(handle)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(handle, start)
                raise
            finally:
                os.close(handle)
        finally:
            self._lock.release()


class Journal(JournalStorage):
    """Optuna's journal storage on a log file, which it names (``path``)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = WatchedLock(str(path))
        super().__init__(WholeAppends(str(path), lock_obj=self.lock))

    def stalled_within(self, seconds: float) -> bool:
        """Whether this process waited for the journal's lock (a stale lock, a slow file server) within the last
        ``seconds``, or waits now: its judgement of other processes' heartbeats is then behind the facts."""
        return self.lock.stalled_within(seconds)

    def set_study_system_attrs(self, study_id: int, attrs: dict[str, Any]) -> None:
        """Write several study system attributes in one append (one write of the file): a reader replays all of
        them or none. Unchanged ones are left out, so a republished figure does not grow the log."""
        current = self.get_study_system_attrs(study_id)
        changed = {key: value for key, value in attrs.items() if key not in current or current[key] != value}
        if not changed:
            return
        with self._thread_lock:
            worker = self._replay_result.worker_id
            self._backend.append_logs([{"op_code": JournalOperation.SET_STUDY_SYSTEM_ATTR, "worker_id": worker,
                                        "study_id": study_id, "system_attr": {key: value}}
                                       for key, value in changed.items()])
            self._sync_with_backend()

    def cut_torn_tail(self) -> None:
        """Under the lock, cut a last line without its newline (an append cut short by a kill or a full disk):
        no reader has applied it, and the next append would be glued to it."""
        with _held(self.lock):
            size = self.path.stat().st_size
            if size == 0:
                return
            with self.path.open("rb+") as file:
                file.seek(size - 1)
                if file.read(1) == b"\n":
                    return
                keep = _last_newline_end(file, size)
                file.truncate(keep)
                file.flush()
                os.fsync(file.fileno())
        log.warning(f"warning: {self.path}: cut a torn last record of {size - keep} bytes (a writer stopped in the "
                    f"middle of an append)")


def _last_newline_end(file, size: int) -> int:
    """The offset just past the last newline before ``size`` (0 when there is none)."""
    position = size
    while position > 0:
        start = max(0, position - 65536)
        file.seek(start)
        chunk = file.read(position - start)
        if (index := chunk.rfind(b"\n")) >= 0:
            return start + index + 1
        position = start
    return 0


@contextlib.contextmanager
def _held(lock: WatchedLock):
    """Hold ``lock``, keeping its file's time fresh (so that nobody breaks it as stale while this process works
    under it) and saying so if another process broke it anyway."""
    lock.acquire()
    stop = threading.Event()

    def refresh():
        while not stop.wait(LOCK_GRACE_SECONDS / 3):
            with contextlib.suppress(OSError):
                os.utime(lock.lock_file)

    keeper = threading.Thread(target=refresh, daemon=True, name="journal-lock")
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        try:
            lock.release()
        except RuntimeError:
            log.warning(f"warning: another process broke the lock {lock.lock_file} while this one held it")


@contextlib.contextmanager
def journal_lock(path: Path, purpose: str):
    """An exclusive lock of this tool's beside the journal (``PATH.PURPOSE.lock``), NFS-safe as the journal's own:
    one writer at a time of the dashboard's figure and note, or of a study's kept models."""
    with _held(WatchedLock(f"{path}.{purpose}")):
        yield


def is_journal(storage) -> bool:
    return isinstance(storage, Journal)
