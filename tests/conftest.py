import hashlib
import os
import sqlite3
import time

import optuna

from common.machine import prepare_tensorflow

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
prepare_tensorflow()  # as every command does: oneDNN on x86, quiet start-up; the tests' children inherit it

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """No test reads or writes the user's Keras cache or the working directory's search.db."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.chdir(tmp_path)


# a tiny search: ResNet-8 on 200 digits images, one epoch a trial, no confirm stage
TINY = ["--depth", "8", "--dataset", "digits", "--subset", "200", "--epochs", "1", "--batch-size", "64",
        "--precision", "float32", "--heartbeat", "5", "--confirm-top", "0"]


@pytest.fixture(scope="session")
def one_trial_study(tmp_path_factory):
    """A study file after a real one-trial search (the baseline), copied by each test that needs an existing
    study."""
    from commands import run as search_run

    db = tmp_path_factory.mktemp("existing") / "search.db"
    assert search_run.main([*TINY, "--trials", "1", "--storage", f"sqlite:///{db}"]) == 0
    with sqlite3.connect(db) as connection:  # fold the WAL journal into the file, so one file is the study
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


def fingerprint(path):
    """A file and its WAL journal, byte for byte (None when absent)."""
    if not path.exists():
        return None
    wal = path.with_name(path.name + "-wal")
    return hashlib.sha256(path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")).hexdigest()


@pytest.fixture
def postgres_url():
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("TEST_POSTGRES_URL is not set: .ci/services should have started PostgreSQL")
        pytest.skip("no PostgreSQL server (run the suite through .ci/run)")
    yield url
    for name in optuna.get_all_study_names(url):
        optuna.delete_study(study_name=name, storage=url)


@pytest.fixture
def secret_role(postgres_url):
    """A database owned by a role whose password holds '@', ':', '/' and '%', and the three pieces of its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_url)
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    password, database = f"p@ss:w/rd%{os.urandom(4).hex()}", f"forms_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute("DO $$ BEGIN CREATE ROLE search_secret LOGIN; EXCEPTION WHEN duplicate_object THEN "
                           "NULL; END $$")
        connection.execute(f"ALTER ROLE search_secret PASSWORD '{password}'")
        connection.execute(f"CREATE DATABASE {database} OWNER search_secret")
    try:
        yield password, f"{server.host}:{server.port}", database
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


# The README's test command runs two workers (pytest-xdist, ``-n 2 --dist loadgroup``): a tiny network's training
# step is mostly one thread's Python, so two of them at once nearly halve the suite on a 2-core machine. Tests that
# share a server run one after another on one worker: PostgreSQL's one test database (its fixture deletes every
# study), the one-node Slurm (and its file's journal tests). A module with a module-scoped fixture stays on one
# worker, which builds it once. xdist hands the groups out first (the most tests first), then single tests in the
# order below: the modules that run real searches before the quick ones, so that no long test starts last.
SHARED = ("postgres", "test_cluster", "test_dashboards", "test_training")
ORDER = (*SHARED, "test_faults", "test_search", "test_reliability")


def _group(item) -> str | None:
    if {"postgres_url", "secret_role"} & set(item.fixturenames):
        return "postgres"
    module = item.module.__name__
    return module if module in SHARED else None


def _rank(item) -> int:
    name = _group(item) or item.module.__name__
    return ORDER.index(name) if name in ORDER else len(ORDER)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if (group := _group(item)) is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=_rank)  # stable: each module's own order kept
