"""Open an Optuna RDB storage from a SQLite or PostgreSQL URL, with heartbeat and crash recovery, tuned for each.

- SQLite (the default, ``sqlite:///search.db``): one file beside the user; WAL journal so readers (the
  dashboard) never block the writers, and a long busy timeout so several worker processes on one machine wait
  for the write lock instead of failing with "database is locked". Every transaction of a worker starts with
  ``BEGIN IMMEDIATE``: SQLite ignores Optuna's ``SELECT ... FOR UPDATE``, so without it two workers can both
  pop the same enqueued trial (optuna/optuna#4002) and one of them crashes telling it. Readers (export, the
  report, the dashboard: ``reader=True``) begin their transactions as SQLite does by default and never take
  the write lock for reading, so a dashboard left open never makes a worker wait.
- PostgreSQL (``postgresql+psycopg://user:pass@host/db``): for workers on several machines.
- Heartbeat: every running trial writes a heartbeat; a trial whose worker died (kill -9, power loss) is failed
  once its heartbeat is ``grace`` seconds old (``search.liveness.recover`` fails it and queues it again).
"""
from __future__ import annotations

import contextlib
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from common.errors import UsageError
from common.files import folder_lock
from storage.urls import DEFAULT_URL, engine_url, redacted, scrub, sqlite_path

SQLITE_BUSY_SECONDS = 120
SCHEMA_LOCK_KEY = 0x5EA2C4  # PostgreSQL advisory lock taken while Optuna's tables are created


def open_rdb(url: str = DEFAULT_URL, heartbeat_seconds: int | None = None, create: bool = True,
             reader: bool = False, busy_seconds: float = SQLITE_BUSY_SECONDS) -> RDBStorage:
    """Connect to the SQLite or PostgreSQL study storage at ``url``.

    Args:
        url: a SQLite or PostgreSQL URL (``storage.urls``: the password may be in its user part or query string).
        heartbeat_seconds: how often a running trial proves it is alive; None turns heartbeats off (for readers
            such as export and the report, which run no trials).
        create: False refuses a SQLite file that does not exist yet instead of creating an empty one.
        reader: True for commands that read a study and claim no trials (export, report, dashboard): they take no
            lock, never change the database (no journal mode, no tables: a database without Optuna's tables is
            refused) and their SQLite transactions take no write lock at BEGIN.
        busy_seconds: how long a SQLite write waits for another process's write lock before it fails.

    Raises:
        UsageError: the URL is malformed or unsupported, its driver is missing, or the database cannot be reached
            or read; the message shows the URL without its password.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    address = engine_url(url)
    engine_kwargs: dict[str, Any] = {}
    database = sqlite_path(url)
    if database is not None:
        if (reader or not create) and not database.is_file():
            raise UsageError(f"storage: {database} does not exist; check --storage (a search creates it)")
        if create and not database.parent.is_dir():
            raise UsageError(f"storage: folder {database.parent} does not exist; create it or fix --storage")
        if database.is_file():
            _check_sqlite_file(database, holds_study=reader)
        engine_kwargs["connect_args"] = {"timeout": busy_seconds}
    else:
        # at most 2 connections a worker (the trial loop and the heartbeat thread): N workers need 2N
        engine_kwargs.update(pool_pre_ping=True, pool_size=2, max_overflow=0)
    heartbeat: dict[str, Any] = {}
    if heartbeat_seconds:
        heartbeat = dict(heartbeat_interval=heartbeat_seconds, grace_period=2 * heartbeat_seconds)
    try:
        if reader and database is None:
            _require_study_tables(address, url)
        with contextlib.nullcontext() if reader else _schema_lock(address, database):
            storage = RDBStorage(address, engine_kwargs=engine_kwargs, **heartbeat)
    except UsageError:
        raise
    except ImportError as error:
        raise UsageError(f"storage: the database driver for {redacted(url)} is not installed ({error.name}); "
                         f"for PostgreSQL run pip install 'psycopg[binary]'") from None
    except Exception as error:  # SQLAlchemy's ArgumentError/OperationalError, Optuna's version errors, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"storage: cannot open {redacted(url)}: {scrub(reason, url)[:300]}") from None
    if database is not None and not reader:
        with storage.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")  # stored in the file: set once, outside BEGIN
        _serialise_sqlite_transactions(storage.engine)
    return storage


def _require_study_tables(address: str, url: str) -> None:
    """A reader's PostgreSQL database must hold Optuna's tables: it never creates them."""
    engine = sqlalchemy.create_engine(address, poolclass=sqlalchemy.pool.NullPool)
    try:
        if not sqlalchemy.inspect(engine).has_table("studies"):
            raise UsageError(f"storage: {redacted(url)} holds no study; check --storage (a search creates them)")
    finally:
        engine.dispose()


@contextlib.contextmanager
def _schema_lock(url: str, database: Path | None):
    """Hold a lock while Optuna creates or checks its tables: an advisory lock on PostgreSQL, a lock on the
    folder of a SQLite file.

    Several processes opening a new database at once would otherwise all create the tables, and all but one fail:
    PostgreSQL with a UniqueViolation on ``pg_type_typname_nsp_index``, SQLite with a UNIQUE constraint on
    ``alembic_version``. With the lock, the first creates them and the others then find them.
    """
    if database is not None:
        with folder_lock(database.parent):  # the folder: the file may not exist yet
            yield
        return
    if not url.startswith("postgresql"):
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})")
            try:
                yield
            finally:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({SCHEMA_LOCK_KEY})")
    finally:
        engine.dispose()


def _serialise_sqlite_transactions(engine: sqlalchemy.engine.Engine) -> None:
    """Make every transaction take SQLite's write lock when it begins (SQLAlchemy's pysqlite recipe).

    Optuna claims an enqueued trial by reading it as WAITING and then setting it RUNNING, inside one
    transaction that PostgreSQL locks with ``FOR UPDATE``. pysqlite opens the transaction only at the UPDATE,
    so two processes can read the same WAITING trial and both run it. ``BEGIN IMMEDIATE`` makes the read and
    the write one step; the busy timeout makes the others wait their turn (milliseconds next to a trial).
    """
    def autocommit_driver(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # pysqlite stops issuing its own late BEGIN

    def begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sqlalchemy.event.listen(engine, "connect", autocommit_driver)
    sqlalchemy.event.listen(engine, "begin", begin_immediate)
    engine.dispose()  # connections pooled while Optuna set the storage up predate the listeners


def _check_sqlite_file(path: Path, holds_study: bool = False) -> None:
    """Refuse a file that is not a readable SQLite database (with ``holds_study``: one holding Optuna's tables)
    before SQLAlchemy tries to write to it."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise UsageError(f"storage: {path} is not a readable SQLite database ({error})") from None
    if holds_study and "studies" not in tables:
        raise UsageError(f"storage: {path} holds no study (no Optuna tables); check --storage")
