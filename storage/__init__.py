"""Study storage: a URL to an opened Optuna storage, whichever kind it names (SQLite or PostgreSQL through
``storage.rdb``, a journal file on a shared file system through ``storage.journal``), and a study in it by name.

- ``urls``: what a URL says and how it is shown (password hidden);
- ``rdb``: SQLite (WAL, busy timeout) and PostgreSQL (pool, heartbeat);
- ``journal``: a journal file with an NFS-safe lock;
- ``attributes``: study attributes written in one transaction, and the study's lock;
- ``artifacts``: the artifact store (models, exports, reports).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import optuna

from common.errors import UsageError
from storage.journal import is_journal, open_journal
from storage.rdb import SQLITE_BUSY_SECONDS, open_rdb
from storage.urls import DEFAULT_URL, journal_path

HEARTBEAT_SECONDS = 60
MAX_RETRY = 3  # a trial killed with its worker is re-run at most this many times


def open_storage(url: str = DEFAULT_URL, heartbeat_seconds: int | None = None, create: bool = True,
                 reader: bool = False, busy_seconds: float = SQLITE_BUSY_SECONDS):
    """The storage at ``url``: ``storage.rdb.open_rdb`` for SQLite and PostgreSQL (its arguments), or a journal
    (``journal:///FILE``), whose running trials keep the tool's own heartbeat (``heartbeat_seconds`` applies
    there through ``search.liveness``). UsageError for anything that cannot be opened."""
    if (path := journal_path(url)) is not None:
        return open_journal(path, create, reader)
    return open_rdb(url, heartbeat_seconds, create, reader, busy_seconds)


def load_existing_study(storage, name: str) -> optuna.Study:
    """An existing study by name, or a UsageError listing the studies the storage holds."""
    names = optuna.get_all_study_names(storage)
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise UsageError(f"study: no study named {name!r} in this storage (studies there: {known}); check --study")
    return optuna.load_study(study_name=name, storage=storage)


__all__ = ["HEARTBEAT_SECONDS", "MAX_RETRY", "open_storage", "load_existing_study", "HeartbeatStorage", "optuna_heartbeat", "stalled_within",
           "urls", "rdb", "journal", "attributes", "artifacts"]


# --- what the tool asks of a storage beyond Optuna's BaseStorage API, whichever kind it is ---------------------------
# (asked here, once, so the layers above never probe a storage's capabilities themselves)

@runtime_checkable
class HeartbeatStorage(Protocol):
    """A storage that keeps Optuna's own heartbeat of running trials: its RDB storage (and the cache Optuna wraps
    it in, which answers the same)."""

    def get_heartbeat_interval(self) -> int | None: ...

    def record_heartbeat(self, trial_id: int) -> None: ...


def optuna_heartbeat(storage: optuna.storages.BaseStorage) -> int | None:
    """Seconds between Optuna's own heartbeats of a running trial: an RDB storage opened with ``heartbeat_seconds``;
    None without one, and on a journal, where the tool writes a heartbeat of its own (``search.liveness``)."""
    return storage.get_heartbeat_interval() if isinstance(storage, HeartbeatStorage) else None


def stalled_within(storage: optuna.storages.BaseStorage, seconds: float) -> bool:
    """Whether this process waited on the storage's lock within the last ``seconds`` (a journal's stale lock or
    slow file server), so its judgement of other processes' heartbeats is behind the facts; False elsewhere."""
    return is_journal(storage) and storage.stalled_within(seconds)
