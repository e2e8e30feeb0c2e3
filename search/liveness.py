"""Which running trials are alive, and what happens to those that are not.

Every running trial records the process that runs it: host, boot id, PID namespace, pid and the process's start
time. A trial is failed and queued again at once only when all of them say "this machine, this boot, this PID
namespace, and that process is gone (or its pid now belongs to a later process)". Any doubt (another host, a
container with another PID namespace, a /proc that does not show this namespace, an old record without them)
falls back to the heartbeat: a trial silent for two ``--heartbeat`` intervals is failed by the next worker that
opens the study or takes a trial (Optuna's ``fail_stale_trials`` on the RDB storages; ``fail_silent_trials`` on a
journal, where Optuna keeps no heartbeat and ``beating`` writes the tool's own).

Failing and queueing again are two steps, and a kill may fall between them; so the retries are not queued by the
step that fails a trial (nor by Optuna's stale-trial callback) but by ``recover``, which every worker runs under
the study's lock when it opens the study and before each trial it takes: every trial cut short that no trial
re-runs yet is queued once, whoever failed it and whenever. The retry is this tool's, not Optuna's
``RetryHeartbeatStaleTrialCallback``: that one copies every user and system attribute of the failed trial, so a
retry would carry the dead worker's host, pid and fail reason (and be "cleared" again the moment it is claimed)
and its model's artifact record. Ours keeps only what defines the run.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from common.log import log, without_experimental_warnings
from search import records
from search.interrupts import raise_if_interrupted
from search.records import DIED, INTERRUPTED, SILENT, TrialKey, cut_short
from search.records.keys import ENVIRONMENT
from search.records.trials import from_environment
from storage import MAX_RETRY, optuna_heartbeat, stalled_within
from storage.attributes import study_lock

# trials this process stopped running but could not record as failed (the storage failed as it told them):
# (study name, trial number) -> the fail reason ``recover`` writes once the storage answers again
_abandoned: dict[tuple[str, int], str] = {}


class TakenOver(Exception):
    """This process's trial was failed by another one meanwhile (its heartbeat looked stale: this process was
    stopped, or its machine slept) and queued again; the retry resumes from the checkpoint."""

    def __init__(self, number: int):
        super().__init__(f"trial {number} was failed by another process (its heartbeat looked stale)")
        self.number = number


def go_on_after_take_over(error: ValueError, number: int) -> None:
    """Log that trial ``number`` was failed by another process while this one trained it, when ``error`` is the
    ``tell`` that says so ("Cannot tell a FAIL trial"); re-raise anything else, and an interrupt that came
    meanwhile (it still stops this worker)."""
    if not str(error).startswith("Cannot tell a"):
        raise error
    raise_if_interrupted()
    log.warning(f"warning: trial {number} was failed by another process while this one trained it (its "
                f"heartbeat looked stale: was this process stopped?); its retry resumes from its checkpoint; "
                f"going on")


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as a trial records it. ``start_ticks``: clock ticks from boot to the process's start (field 22 of
    /proc/PID/stat), so a pid reused by a later process is told apart."""

    host: str
    pid: int
    boot_id: str | None = None
    pid_namespace: str | None = None
    start_ticks: int | None = None

    @classmethod
    def current(cls) -> "ProcessIdentity":
        return cls(socket.gethostname(), os.getpid(), _read("/proc/sys/kernel/random/boot_id"),
                   _namespace(), _start_ticks("self"))

    @classmethod
    def of(cls, trial: FrozenTrial) -> "ProcessIdentity | None":
        """The identity a trial recorded (one of schema 1, host and pid only, was migrated to it), or None."""
        recorded = TrialKey.PROCESS.of(trial)
        try:
            return cls(**recorded) if isinstance(recorded, dict) else None
        except TypeError:
            return None

    def shares_namespace_with(self, other: "ProcessIdentity") -> bool:
        """True only when both say: same host, same boot, same PID namespace, all known."""
        return (self.host == other.host and None not in (self.boot_id, self.pid_namespace)
                and self.boot_id == other.boot_id and self.pid_namespace == other.pid_namespace)

    def is_gone(self) -> bool | None:
        """True: this process no longer runs (its pid is free, or taken by a process started later); False: it
        runs; None: this process cannot tell (no /proc, or a /proc that shows another PID namespace)."""
        if self.start_ticks is None or not _proc_shows_own_namespace():
            return None
        started = _start_ticks(str(self.pid))
        return started is None or started != self.start_ticks


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _start_ticks(pid: str) -> int | None:
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name, in parentheses, may hold spaces
    return int(fields[19])  # field 22 of the line; the 20th after the name


def _proc_shows_own_namespace() -> bool:
    """/proc shows this process's PID namespace (inside ``unshare --pid`` without a /proc of its own, it does
    not, and a pid read there is another process's)."""
    try:
        return int(os.readlink("/proc/self")) == os.getpid()
    except (OSError, ValueError):
        return False


def record_process(trial: optuna.Trial) -> None:
    """Record on a running trial the process running it, so that a dead one is recognised at once."""
    identity = ProcessIdentity.current()
    TrialKey.PROCESS.write(trial, asdict(identity))
    TrialKey.HOST.write(trial, identity.host)
    TrialKey.PID.write(trial, identity.pid)


def clear_zombies(storage, study: optuna.Study) -> list[int]:
    """Fail at once every RUNNING trial whose process ran in this PID namespace of this machine
    and no longer exists (``kill -9``, a crash); the numbers of those trials. Anything less certain is left to
    the heartbeat."""
    here, cleared = ProcessIdentity.current(), []
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        there = ProcessIdentity.of(trial)
        if there is None or there.pid == here.pid or not here.shares_namespace_with(there) \
                or there.is_gone() is not True:
            continue
        if _fail(storage, study, study_id, trial.number, f"{DIED} (pid {there.pid} on {there.host})"):
            cleared.append(trial.number)
    return cleared


@contextlib.contextmanager
def beating(trial: optuna.Trial, interval: float):
    """While inside, the running ``trial``'s heartbeat is written every ``interval`` seconds as its ``heartbeat``
    record (the time in seconds), which ``fail_silent_trials`` reads: on a storage without Optuna's heartbeat (a
    journal). On the RDB storages Optuna's heartbeat (``heartbeat`` below, for a trial this process claimed itself) does it."""
    if optuna_heartbeat(trial.storage):
        yield
        return
    TrialKey.HEARTBEAT_SECONDS.write(trial, interval)  # the judges go by the writer's interval
    with _beats(lambda: TrialKey.HEARTBEAT.write(trial, round(time.time(), 1)), interval,
                f"trial {trial.number}'s heartbeat", f"heartbeat-{trial.number}"):
        yield


@contextlib.contextmanager
def heartbeat(storage, trial_id: int):
    """While inside, Optuna's heartbeat of a trial this process claimed itself (``search.run_queue``) is written every
    interval of the storage's (none without one), as ``study.optimize`` does for the trials it asks for."""
    interval = optuna_heartbeat(storage)
    if not interval:
        yield
        return
    with _beats(lambda: storage.record_heartbeat(trial_id), interval, "a heartbeat", f"heartbeat-{trial_id}"):
        yield


@contextlib.contextmanager
def _beats(write, interval: float, what: str, name: str):
    """While inside, ``write()`` every ``interval`` seconds on a thread of its own, which a failed write never
    kills: a trial failed by another process meanwhile is left to learn it at its next epoch, and a file
    server's hiccup or a lost connection (a stale handle, a full disk) is warned of once and tried again next
    time."""
    warned = []

    def beat():
        try:
            write()
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
        except Exception as error:
            if not warned:
                warned.append(error)
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                log.warning(f"warning: {what} could not be written ({type(error).__name__}: {first}); retrying "
                            f"every {interval:g} s")

    with _every(interval, beat, name):
        yield


@contextlib.contextmanager
def _every(interval: float, action, name: str):
    """While inside, ``action()`` runs now and every ``interval`` seconds on a thread of its own."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            action()
            stop.wait(interval)

    thread = threading.Thread(target=loop, daemon=True, name=name)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_silent_trials(storage, study: optuna.Study, interval: float) -> list[int]:
    """On a storage without Optuna's heartbeat (a journal): fail every RUNNING trial whose
    heartbeat (else its start) is older than two of its writer's intervals (``interval`` for a trial that has not
    said); the numbers of those trials. Nothing is judged while this process was itself held up by the journal's
    lock within the last two intervals (a stale lock holds every writer up alike). The hosts' clocks must agree
    to well within the interval (NTP)."""
    if optuna_heartbeat(storage):
        return []  # Optuna's own heartbeat covers it
    if stalled_within(storage, 2 * interval):
        return []
    now, failed = time.time(), []
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = TrialKey.HEARTBEAT.of(trial)
        if last is None and trial.datetime_start is not None:
            last = trial.datetime_start.timestamp()  # naive local time, as Optuna replays it; or aware
        every = TrialKey.HEARTBEAT_SECONDS.of(trial) or interval
        if last is None or now - last <= 2 * every:
            continue
        if _fail(storage, study, study_id, trial.number, f"{SILENT} ({now - last:.0f} s ago)"):
            failed.append(trial.number)
    return failed


def _fail_unstarted(storage, study: optuna.Study, interval: float) -> None:
    """On an RDB storage: fail every running trial that recorded neither its process nor (so) a heartbeat two
    intervals after it started: the storage failed as its worker began it (a full disk, a connection lost), and
    Optuna's stale-trial check never judges a trial without a heartbeat."""
    now, study_id = time.time(), None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if ProcessIdentity.of(trial) is not None or trial.datetime_start is None \
                or now - trial.datetime_start.timestamp() <= 2 * interval:
            continue
        study_id = storage.get_study_id_from_name(study.study_name) if study_id is None else study_id
        _fail(storage, study, study_id, trial.number, f"{SILENT} (it never recorded its process)")


def _fail(storage, study: optuna.Study, study_id: int, number: int, reason: str) -> bool:
    """Fail the running trial ``number`` with ``reason`` (``recover`` queues its retry); False when another process
    failed it first."""
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    try:
        records.write_fail_reason(storage, study.study_name, number, reason)
        return storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def fail_dead(storage, study: optuna.Study, interval: float | None) -> None:
    """Fail every running trial whose worker is gone: this machine's dead processes at once, the others once their
    heartbeat is stale (Optuna's on the RDB storages, the tool's own on a journal, ``interval`` its default); and
    the trials this process abandoned (``abandon``)."""
    _fail_abandoned(storage, study)
    clear_zombies(storage, study)
    if every := optuna_heartbeat(storage):
        with without_experimental_warnings():  # "experimental" since Optuna 2.9
            optuna.storages.fail_stale_trials(study)
        _fail_unstarted(storage, study, every)
    if interval:
        fail_silent_trials(storage, study, interval)


def abandon(study: optuna.Study, number: int, reason: str) -> None:
    """This process stopped running trial ``number`` but could not record it (the storage failed): ``recover``
    fails it with ``reason`` once the storage answers (other processes take this live process's trial for
    alive until its heartbeat is stale; a later run, once this process is gone, for dead)."""
    _abandoned[(study.study_name, number)] = reason


def _fail_abandoned(storage, study: optuna.Study) -> None:
    """Fail the trials this process abandoned (``abandon``) that are still running."""
    for (name, number), reason in list(_abandoned.items()):
        if name == study.study_name:
            _fail(storage, study, storage.get_study_id_from_name(name), number, reason)
            del _abandoned[(name, number)]


def recover(storage, study: optuna.Study, interval: float | None) -> list[int]:
    """What a worker does when it opens the study and before each trial it takes, under the study's lock (so that
    processes doing it at once queue each retry once): fail the trials of dead workers (``fail_dead``), then queue
    once every trial cut short that no trial re-runs yet, oldest first. An interrupt does not count towards
    ``MAX_RETRY`` retries, nor does a fault of the environment (``cut_short``: a reference whose every attempt
    failed from the environment is queued again, and said, by every run until it runs; a stage of them in a row
    stops the search, ``search.progress.FailureGuard``); a death does (a run that kills its worker every time
    stops being retried). The numbers of the trials queued again."""
    queued = []
    with study_lock(storage, study.study_name):
        fail_dead(storage, study, interval)
        trials = study.get_trials(deepcopy=False)
        rerun = {records.retry_of(t) for t in trials}
        rerun.update(number for t in trials for number in records.retry_history(t))  # a chain's middle too
        for trial in trials:
            if trial.number in rerun or not cut_short(trial):
                continue
            history, reason = records.retry_history(trial), records.fail_reason(trial)
            if from_environment(reason):  # never the run's fault: retried whatever its history, and said
                named = f" ({records.preset_of(trial)})" if records.is_reference(trial) else ""
                log.info(f"trial {trial.number}{named} failed from its environment "
                         f"({reason.removeprefix(ENVIRONMENT + ': ')}): queued again")
            elif reason != INTERRUPTED:
                if len(history) >= MAX_RETRY:
                    continue  # said once, when its last retry was queued
                history = [*history, trial.number]
                if len(history) == MAX_RETRY:
                    log.warning(f"warning: trial {trial.number} was cut short {len(history)} times; queued a last "
                                f"time")
            records.add_retry(study, trial, history)
            queued.append(trial.number)
    return queued
