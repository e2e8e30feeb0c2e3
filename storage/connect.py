"""A storage URL to an opened Optuna storage, whichever kind it names: SQLite or PostgreSQL (``storage.rdb``), or
a journal file on a shared file system (``storage.journal``); and a study in it by name."""
from __future__ import annotations

import optuna

from common.errors import UsageError
from storage.journal import open_journal
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
