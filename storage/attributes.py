"""Writes on Optuna's tables that Optuna's API cannot make: study attributes replaced in one transaction, one
writer at a time, and a trial attribute deleted; on a journal, one writer at a time (a lock file) and one append.

optuna-dashboard stores a note or a figure as many 2 kB study system attributes; written one by one, a reader
can see them half-replaced. ``held_back_study_attrs`` gathers them and writes them together. Optuna has no call
that deletes an attribute, nor one that changes a finished trial: ``forget_trial_system_attr`` deletes a removed
artifact's record. Both are SQL on Optuna's RDB schema (stable since v1; the dashboard tests read the result back
through Optuna and optuna-dashboard, so a change of schema fails loudly there).
"""
from __future__ import annotations

import contextlib
import json
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from common.files import folder_lock
from storage.journal import is_journal, journal_lock
from storage.rdb import SCHEMA_LOCK_KEY
from storage.urls import sqlite_path

STUDY_LOCK_KEY = 0x5EA2C5  # PostgreSQL advisory lock of a study (kept models, recovery, the verdict)


@contextlib.contextmanager
def held_back_study_attrs(storage: RDBStorage, study_name: str):
    """Yield the study ``study_name`` loaded through a stand-in of ``storage`` that holds back every study system
    attribute written to it; when the block ends they are all written in one transaction, so a reader sees
    either all of them or none (optuna-dashboard's notes and figures are stored in 2 kB chunks, one attribute
    each, which a reader could otherwise see half-replaced). The block runs while no other process does the same
    for this study (a transaction-scoped advisory lock on PostgreSQL, a lock on the SQLite file's folder): one
    writer at a time, each reading the study as the previous one left it. Nothing is written if the block raises.
    """
    stand_in = _HoldBack(storage)
    study = optuna.load_study(study_name=study_name, storage=stand_in)
    study_id = storage.get_study_id_from_name(study_name)
    if is_journal(storage):  # one writer at a time (a lock file), all attributes in one append
        with journal_lock(storage.path, "publish"):
            yield study
            storage.set_study_system_attrs(study_id, stand_in.pending)
        return
    database = sqlite_path(storage.url)
    if database is not None:
        # a lock on the file's folder, not on the file: SQLite's own lock would stop the reads inside the block,
        # and opening and closing the database file itself would drop every POSIX lock SQLite holds on it in
        # this process (a search's own connections)
        with folder_lock(database.parent):
            yield study
            with storage.engine.begin() as connection:
                _write_study_system_attrs(connection, study_id, stand_in.pending)
        return
    with storage.engine.begin() as connection:
        if storage.engine.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY}, {int(study_id)})")
        yield study
        _write_study_system_attrs(connection, study_id, stand_in.pending)


class _HoldBack:
    """A storage that passes everything through except study system attribute writes, which it keeps."""

    def __init__(self, storage: RDBStorage):
        self._storage, self.pending = storage, {}

    def __getattr__(self, name):
        return getattr(self._storage, name)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.pending[key] = value

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return {**self._storage.get_study_system_attrs(study_id), **self.pending}


_STUDY_SYSTEM_ATTRS = sqlalchemy.table("study_system_attributes", sqlalchemy.column("study_id"),
                                       sqlalchemy.column("key"), sqlalchemy.column("value_json"))


def _write_study_system_attrs(connection, study_id: int, attrs: dict[str, Any]) -> None:
    table = _STUDY_SYSTEM_ATTRS
    existing = set(connection.execute(sqlalchemy.select(table.c.key).where(table.c.study_id == study_id)).scalars())
    for key, value in attrs.items():
        if key in existing:
            connection.execute(sqlalchemy.update(table).where(table.c.study_id == study_id, table.c.key == key)
                               .values(value_json=json.dumps(value)))
        else:
            connection.execute(sqlalchemy.insert(table).values(study_id=study_id, key=key,
                                                               value_json=json.dumps(value)))


_TRIAL_SYSTEM_ATTRS = sqlalchemy.table("trial_system_attributes", sqlalchemy.column("trial_id"),
                                       sqlalchemy.column("key"))


def can_forget(storage) -> bool:
    """Whether a finished trial's attribute can be deleted: on an RDB storage (SQL), not on a journal (its log
    only grows, and Optuna's replay ignores changes to finished trials)."""
    return not is_journal(storage)


def forget_trial_system_attr(storage: RDBStorage, trial_id: int, key: str) -> None:
    """Delete one system attribute of a trial, finished or not: how a removed artifact leaves a trial (Optuna has
    no API to delete an attribute, and refuses any change to a finished trial). RDB storages only
    (``can_forget``)."""
    table = _TRIAL_SYSTEM_ATTRS
    with storage.engine.begin() as connection:
        connection.execute(sqlalchemy.delete(table).where(table.c.trial_id == trial_id, table.c.key == key))


@contextlib.contextmanager
def study_lock(storage: RDBStorage, study_name: str):
    """While inside, no other process holds this lock for ``study_name``: a session advisory lock on PostgreSQL,
    the SQLite file's folder lock (the machine's processes) otherwise. For decisions that read, then write
    (which models a study keeps); on a journal, a lock file beside it."""
    if is_journal(storage):
        with journal_lock(storage.path, "keep"):
            yield
        return
    database = sqlite_path(storage.url)
    if database is not None:
        with folder_lock(database.parent):
            yield
        return
    study_id = int(storage.get_study_id_from_name(study_name))
    with storage.engine.connect() as connection:
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({STUDY_LOCK_KEY}, {study_id})")
        connection.commit()
        try:
            yield
        finally:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({STUDY_LOCK_KEY}, {study_id})")
            connection.commit()
