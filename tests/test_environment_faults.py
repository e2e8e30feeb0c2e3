"""Faults from outside the code (issue 27): a full disk, a storage connection cut. Nothing is lost: the trials they
cut short are retried like killed ones, a stage of them stops the search with one line and exit code 75, and the
next run finishes every reference, on SQLite, a journal and PostgreSQL. Real file systems and real processes."""
import datetime
import errno
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from commands import run as search_run
from common.errors import UsageError
from conftest import TINY
from search.liveness import DIED, SILENT, recover
from search.loop import EXIT_TEMPFAIL, environment_stop
from search.objective import environment_fault, failure
from search.progress import FailureGuard
from search.run_queue import run_next
from storage import MAX_RETRY, open_storage
from storage.journal import open_journal

ROOT = Path(__file__).resolve().parents[1]
ARGV = [*TINY, "--subset", "100", "--batch-size", "50", "--baseline-seeds", "0", "--trials", "7"]  # 7 references
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STOP_LINE = "stopped: the environment failed"


def test_errors_are_told_apart_by_cause_not_by_where_they_were_raised():
    full = OSError(errno.ENOSPC, "No space left on device")
    assert environment_fault(full) == "OSError: [Errno 28] No space left on device"
    assert failure(full).startswith("environment fault: OSError: [Errno 28]")
    for errno_ in (errno.EIO, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ESTALE):
        assert environment_fault(OSError(errno_, os.strerror(errno_))) is not None
    sqlite_full = sqlite3.connect(":memory:")  # SQLite's own "database or disk is full", wrapped as Optuna does
    try:
        sqlite_full.execute("PRAGMA max_page_count = 1")
        sqlite_full.execute("CREATE TABLE t (x)")
        sqlite_full.execute("INSERT INTO t VALUES (zeroblob(100000))")
    except sqlite3.OperationalError as error:
        try:
            raise optuna.exceptions.StorageInternalError("commit failed") from sqlalchemy.exc.OperationalError(
                "INSERT", {}, error)
        except optuna.exceptions.StorageInternalError as wrapped:
            assert environment_fault(wrapped).endswith("database or disk is full")
    import psycopg

    assert environment_fault(psycopg.OperationalError("server closed the connection unexpectedly")) is not None
    # errors of the run, or of the schedule, stay final
    assert environment_fault(RuntimeError("disk full")) is None
    assert environment_fault(ValueError("Incompatible shapes: [64,10] vs. [64,100]")) is None
    assert environment_fault(FloatingPointError("loss became nan")) is None
    assert environment_fault(OSError(errno.ENOENT, "No such file or directory")) is None
    # outside the loop's guard (a worker opening its study on a full disk): one line and exit 75, or not ours
    assert environment_stop(full).exit_code == EXIT_TEMPFAIL and environment_stop(RuntimeError("x")) is None
    # a usage error raised while a fault was handled is the user's input (exit 2), never a fault of the environment
    try:
        try:
            raise OSError(errno.EACCES, "Permission denied")
        except OSError:
            raise UsageError("checkpoint-dir: cannot create /ro/x; choose another") from None
    except UsageError as usage:
        assert environment_fault(usage) is None and environment_stop(usage) is None
    # PostgreSQL by SQLSTATE: a wrong database name or password is input, a permission revoked under the run and
    # a server shutting down are the environment; so is memory running out
    assert environment_fault(psycopg.errors.InvalidCatalogName("database \"nope\" does not exist")) is None
    assert environment_fault(psycopg.errors.InvalidPassword("password authentication failed")) is None
    assert environment_fault(psycopg.errors.InsufficientPrivilege("permission denied for table trials")) is not None
    assert environment_fault(psycopg.errors.AdminShutdown("terminating connection")) is not None
    assert environment_fault(MemoryError()) is not None


def test_a_reference_every_attempt_of_which_the_environment_failed_is_queued_again_and_said(tmp_path, capsys):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    # an older version's record (no prefix), past the retry limit, and this version's
    worn_out = {"retry_history": list(range(90, 90 + MAX_RETRY))}
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, system_attrs=worn_out, user_attrs={
        "preset": "baseline", "fail_reason": "OSError: [Errno 28] No space left on device"}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
        "preset": "paper-c10-r32", "fail_reason": "environment fault: OperationalError: database or disk is full"}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
        "preset": "learned", "fail_reason": "ValueError: Incompatible shapes"}))  # final
    assert recover(storage, study, 60) == [0, 1]
    assert "trial 0 (baseline) failed from its environment (OSError: [Errno 28] No space left on device): queued " \
           "again" in capsys.readouterr().err
    assert recover(storage, study, 60) == []  # once


def test_five_faults_of_the_environment_in_a_row_stop_with_their_own_line():
    guard = FailureGuard(3)
    guard.fault("OSError: [Errno 28] No space left on device")
    trial = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "ValueError: shapes"})
    guard(optuna.create_study(), trial)
    guard.fault("OperationalError: database or disk is full")
    assert guard.tripped and not guard.from_environment and "3 trials in a row failed" in guard.message()
    guard.fault("OperationalError: database or disk is full")
    guard.fault("OperationalError: database or disk is full")
    assert guard.from_environment
    assert guard.message().startswith("the environment failed 3 times in a row (OperationalError: database or disk "
                                      "is full); the study is intact")


def test_a_confirm_run_cut_short_from_outside_is_never_counted_as_an_attempt():
    from search.evidence.confirm_plan import outcome
    from search.records import RunState

    confirm = optuna.create_study()
    for reason in ("environment fault: OSError: [Errno 28] No space left on device",
                   "OSError: [Errno 5] Input/output error", f"{DIED} (pid 7 on vm)", f"{SILENT} for 600 s", None,
                   "interrupted", "ValueError: shapes", "ValueError: shapes"):
        confirm.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
            "arm": "a", "seed": 1, **({"fail_reason": reason} if reason else {})}))
    # six cut short from outside (the environment, a dead or silent worker, Optuna's stale check, Ctrl-C), two
    # errors of the run: with three attempts allowed it is queued again
    assert outcome(confirm.trials, 3)[0] == RunState.MISSING
    assert outcome(confirm.trials, 2)[0] == RunState.FAILED
    for _ in range(2):  # deaths past MAX_RETRY (3) count: a run that kills its worker each time is not retried forever
        confirm.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
            "arm": "a", "seed": 1, "fail_reason": f"{DIED} (pid 8 on vm)"}))
    assert outcome(confirm.trials, 3)[0] == RunState.FAILED


def test_a_storage_that_fails_as_a_trial_is_told_leaves_nothing_running_and_no_optuna_assertion(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", 60)
    study = optuna.create_study(study_name="s", storage=storage)
    told = storage.set_trial_state_values

    def full_once(trial_id, state, values=None):
        if state != TrialState.RUNNING and not full.is_set():
            full.set()
            raise optuna.exceptions.StorageInternalError("commit") from OSError(errno.ENOSPC, "No space left")
        return told(trial_id, state, values)

    class Objective:
        current = None

        def __call__(self, trial):
            self.current = trial.number
            return 1.0

    full = threading.Event()
    storage.set_trial_state_values = full_once
    with pytest.raises(optuna.exceptions.StorageInternalError):  # the fault itself, not "Should not reach"
        run_next(storage, study, Objective(), [])
    assert study.trials[0].state == TrialState.RUNNING  # this process abandoned it
    assert recover(storage, study, 60) == [0]  # failed with the fault's reason, and queued again
    assert study.trials[0].user_attrs["fail_reason"].startswith("environment fault: OSError: [Errno 28]")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_that_never_recorded_its_process_is_failed_once_two_heartbeats_old(tmp_path):
    """The storage failed as a worker began a trial (no process, no heartbeat recorded): Optuna's stale-trial check
    never judges it; ours does, by its start."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", 1)
    study = optuna.create_study(study_name="s", storage=storage)
    started = datetime.datetime.now() - datetime.timedelta(seconds=10)
    study.add_trial(optuna.trial.FrozenTrial(
        number=0, state=TrialState.RUNNING, value=None, datetime_start=started, datetime_complete=None, params={},
        distributions={}, user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=0))
    study.ask()  # a trial just begun: left alone
    assert recover(storage, study, 1) == [0]
    assert [t.state for t in study.trials[:2]] == [TrialState.FAIL, TrialState.RUNNING]


def test_a_journal_append_the_disk_refuses_half_way_is_cut_back_off(tmp_path, monkeypatch):
    path = tmp_path / "s.journal"
    storage = open_journal(path)
    study = optuna.create_study(study_name="s", storage=storage)
    size = path.stat().st_size
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError):
        study.set_user_attr("x", "y" * 1000)
    monkeypatch.setattr(os, "write", real_write)
    assert path.stat().st_size == size and path.read_bytes().endswith(b"\n")
    study.set_user_attr("x", 1)
    assert optuna.load_study(study_name="s", storage=open_journal(path, reader=True)).user_attrs == {"x": 1}


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs, and how to give it room again (``grow()``)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({mounted.stderr.strip() or mounted.returncode}): "
                    f"the full-disk tests need root (CI runs them as root)")
    try:
        yield folder, lambda: subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def trials(url):
    storage = open_journal(Path(url.removeprefix("journal:///")), reader=True) if url.startswith("journal") else url
    return optuna.load_study(study_name="digits-resnet8", storage=storage).get_trials(deepcopy=False)


def every_reference_finished(url):
    """Every reference finished, nothing running or waiting, and every trial cut short re-run once by a trial that
    finished."""
    held = trials(url)
    presets = {t.user_attrs["preset"] for t in held if "preset" in t.user_attrs}
    done = {t.user_attrs["preset"] for t in held if t.state in FINISHED and "preset" in t.user_attrs}
    assert len(presets) == 7 and done == presets, [(t.number, t.state, t.user_attrs.get("fail_reason"))
                                                    for t in held]
    assert not [t for t in held if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for failed in [t for t in held if t.state == TrialState.FAIL]:
        assert failed.user_attrs["fail_reason"].startswith(("environment fault", DIED, SILENT)), failed.user_attrs
        assert len([t for t in held if t.user_attrs.get("retry_of") == failed.number]) == 1


def first_run(argv):
    done = subprocess.run([sys.executable, "-m", "commands", "run", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert "Traceback" not in done.stderr and "Should not reach" not in done.stderr, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_full_disk_stops_the_search_with_exit_75_and_the_next_run_finishes_every_reference(kind, small_disk,
                                                                                              capsys):
    """Study, checkpoints and artifacts on a 2 MB tmpfs: the search stops with one line and exit code 75, a
    journal's last line whole; given room, the same command finishes every reference, nothing left running."""
    disk, grow = small_disk
    url = f"sqlite:///{disk / 'search.db'}" if kind == "sqlite" else f"journal:///{disk / 'search.journal'}"
    argv = [*ARGV, "--storage", url, "--checkpoint-dir", str(disk / "c"), "--artifact-dir", str(disk / "a")]
    stopped = first_run([*argv, "--max-failures", "2"])
    last = stopped.stderr.strip().splitlines()[-1]
    assert stopped.returncode == EXIT_TEMPFAIL and last.startswith(STOP_LINE), stopped.stderr[-3000:]
    assert "No space left on device" in last or "database or disk is full" in last
    if kind == "journal":
        assert (disk / "search.journal").read_bytes().endswith(b"\n")
    grow()
    assert search_run.main(argv) == 0, capsys.readouterr().err[-3000:]
    every_reference_finished(url)
    assert [t for t in trials(url) if t.state == TrialState.FAIL]  # the fault did cut trials short


@pytest.fixture
def own_database(postgres_url):
    """A PostgreSQL database of this test's own (its connections are cut without touching other tests'), and an
    admin URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_url)
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = f"faults_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False), admin, name
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_postgresql_connections_cut_mid_trial_lose_nothing(own_database, tmp_path, capsys):
    """Every connection of the search to its database terminated, again and again, while a trial trains: the
    trial it cuts short is retried (or the search stops with exit 75); the next run finishes every reference."""
    import psycopg

    url, admin, name = own_database
    argv = [*ARGV, "--epochs", "2", "--storage", url, "--checkpoint-dir", str(tmp_path / "c"), "--artifact-dir",
            str(tmp_path / "a")]
    search = subprocess.Popen([sys.executable, "-m", "commands", "run", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    cuts = 0
    with psycopg.connect(admin, autocommit=True) as connection:
        while search.poll() is None and cuts < 40:
            if cuts or _mid_trial(url):  # from a trial past its first epoch on: inside a training run
                connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                                   (name,))
                cuts += 1
                time.sleep(0.05)
            else:
                time.sleep(0.3)
    _, err = search.communicate(timeout=600)
    assert cuts and search.returncode in (0, EXIT_TEMPFAIL), err[-3000:]
    assert "Traceback" not in err and "Should not reach" not in err, err[-3000:]
    assert search_run.main(argv) == 0, capsys.readouterr().err[-3000:]
    every_reference_finished(url)


def _mid_trial(url):
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            return bool(connection.exec_driver_sql(
                "SELECT count(*) FROM trials t JOIN trial_intermediate_values v ON v.trial_id = t.trial_id "
                "WHERE t.state = 'RUNNING'").scalar())
    except sqlalchemy.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()
