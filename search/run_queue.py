"""What a worker runs next: the retries of interrupted work first, then Optuna's queue.

Optuna pops the lowest-numbered waiting trial, and a retry is queued behind everything already waiting (the warm
start's references, a search's queued runs): the interrupted trial, the one with hours of progress in its
checkpoint, would wait longest. So a worker claims waiting retries explicitly before it asks Optuna for a trial:
the claim is the storage's own atomic WAITING -> RUNNING step (the one Optuna's queue uses), so every retry runs
once, in whichever process gets it first, on any storage. A claimed trial runs as ``study.optimize`` would run
it: its heartbeat, the objective, ``study.tell``, the callbacks; so does every trial a worker asks Optuna for
(``run_next``), not ``study.optimize``: when the storage fails as a trial is told (a full disk, a connection
lost), Optuna's ``optimize`` hides the fault behind its own ``AssertionError: Should not reach.`` and leaves the
trial running; here the fault itself goes up, and the trial is left to ``liveness.recover`` (``abandon``).
"""
from __future__ import annotations

import gc
import warnings
from pathlib import Path
from typing import Callable

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search import records, run_folders
from search.liveness import abandon, go_on_after_take_over, heartbeat
from search.objective import environment_fault, failure
from search.records import INTERRUPTED


Objective = Callable[[optuna.Trial], float]  # what a trial runs: its value, or it raises (pruned, failed)


def waiting_retries(study: optuna.Study) -> list[FrozenTrial]:
    """Waiting trials that re-run an interrupted or failed one, oldest first."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if records.retry_of(t) is not None]


def has_checkpoint(root: Path | None, study: optuna.Study, trial: FrozenTrial) -> bool:
    """Whether a waiting retry has work paid for: a checkpoint of the trial it re-runs."""
    if root is None or (predecessor := records.retry_of(trial)) is None:
        return False
    return (run_folders.run_folder(root, study.study_name, predecessor) / "state.npz").is_file()


def run_retries(storage: BaseStorage, study: optuna.Study, objective: Objective, callbacks: list,
                catch: tuple = (Exception,), only=None) -> int:
    """Claim and run every waiting retry (those ``only`` accepts, when given), oldest first; the count run."""
    study_id, ran = storage.get_study_id_from_name(study.study_name), 0
    for waiting in waiting_retries(study):
        if only is not None and not only(waiting):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, waiting.number)
        try:
            if not storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                continue  # another worker claimed it
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        run_claimed(storage, study, trial_id, objective, callbacks, catch)
        ran += 1
    return ran


def run_next(storage: BaseStorage, study: optuna.Study, objective: Objective, callbacks: list,
             catch: tuple = (Exception,)) -> None:
    """Ask Optuna for the next trial (the oldest queued, else the sampler's) and run it as ``run_claimed`` does;
    then collect garbage (a trial's graph is large)."""
    trial = ask(study)
    try:
        run_asked(storage, study, trial, objective, callbacks, catch)
    finally:
        gc.collect()


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``: the oldest queued trial, else the sampler's next."""
    with warnings.catch_warnings():  # Optuna's "Heartbeat of storage is supposed to be used with Study.optimize":
        warnings.filterwarnings("ignore", message="Heartbeat of storage")  # _run writes the heartbeat as it does
        return study.ask()


def run_claimed(storage: BaseStorage, study: optuna.Study, trial_id: int, objective: Objective, callbacks: list,
                catch: tuple = (Exception,)) -> None:
    """Run a trial this process has set RUNNING, as ``study.optimize`` runs one."""
    run_asked(storage, study, optuna.Trial(study, trial_id), objective, callbacks, catch)


def run_asked(storage: BaseStorage, study: optuna.Study, trial: optuna.Trial, objective: Objective, callbacks: list,
              catch: tuple = (Exception,)) -> None:
    """The objective on ``trial``, told, then the callbacks. An error the storage raises as the trial is told
    (a fault of the environment) goes up, the trial left to ``recover`` (``abandon``), so nothing is left
    running by a live process that no longer runs it."""
    value, state, error = None, None, None
    with heartbeat(storage, trial._trial_id):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except Exception as raised:
            state, error = TrialState.FAIL, raised
            if not isinstance(raised, catch):
                tell(study, trial, None, state, error)
                raise
        except KeyboardInterrupt:
            fail_interrupted(study, trial)
            raise
    told(study, trial, value, state, error, callbacks)


def fail_interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    """Tell ``trial`` failed as Ctrl-C or SIGTERM cut it short. Another process failed it meanwhile (ValueError),
    or the storage fails too: the interrupt goes on either way, the trial left to recover (abandon) when it could
    not be told."""
    try:
        study.tell(trial, state=TrialState.FAIL)
    except ValueError:
        pass
    except Exception:
        abandon(study, trial.number, INTERRUPTED)


def told(study: optuna.Study, trial: optuna.Trial, value, state, error: Exception | None, callbacks: list) -> None:
    """Tell ``trial`` its outcome (``tell``), then run the callbacks; a trial another process failed meanwhile
    (its heartbeat looked stale) is logged and left to its retry."""
    try:
        frozen = tell(study, trial, value, state, error)
    except ValueError as taken_over:
        go_on_after_take_over(taken_over, trial.number)
        return
    for callback in callbacks:
        callback(study, frozen)


def tell(study: optuna.Study, trial: optuna.Trial, value, state, error: Exception | None):
    """``study.tell``; when the storage fails meanwhile, the trial is abandoned to ``recover`` with the fail reason
    of its own error (else of the storage's fault) and the storage's error goes up."""
    try:
        return study.tell(trial, value, state=state) if state else study.tell(trial, value)
    except ValueError:
        raise
    except Exception as told:
        if environment_fault(told) is None:
            raise
        abandon(study, trial.number, failure(error if error is not None else told))
        raise
