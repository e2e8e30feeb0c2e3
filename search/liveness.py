"""Which running trials are alive: each records the process that runs it, and a trial whose process is gone is
failed and queued again at once."""
from __future__ import annotations

import os
import socket

import optuna
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import TrialState

from search import records
from search.records import TrialKey
from storage.rdb import MAX_RETRY


def record_process(trial: optuna.Trial) -> None:
    """Record on a running trial the host and process running it, so that a dead one is recognised at once."""
    records.write(trial, TrialKey.HOST, socket.gethostname())
    records.write(trial, TrialKey.PID, os.getpid())


def clear_zombies(storage, study: optuna.Study) -> list[int]:
    """Fail and re-queue, at once, every RUNNING trial whose process ran on this host and no longer exists
    (``kill -9``, a crash); the numbers of those trials.

    The heartbeat would leave such a trial RUNNING for two intervals (2 minutes by default), long enough for a
    re-run to reach its target past it. On the same host the tool can know better; other hosts' trials keep the
    heartbeat rule. The retry is Optuna's ``RetryFailedTrialCallback``, as for a stale heartbeat.
    """
    host, cleared = socket.gethostname(), []
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = records.attr(trial, TrialKey.PID)
        if records.attr(trial, TrialKey.HOST) != host or pid is None or pid == os.getpid() or _process_exists(pid):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            records.write_fail_reason(storage, study.study_name, trial.number,
                                      f"its worker died (pid {pid} on {host})")
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another process on this host cleared it first
            continue
        RetryFailedTrialCallback(max_retry=MAX_RETRY)(study, storage.get_trial(trial_id))
        cleared.append(trial.number)
    return cleared


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
