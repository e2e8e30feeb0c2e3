"""The objective: one trial = one schedule trained on the study's budget, judged by validation accuracy."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import sqlite3
import tempfile
import time
from pathlib import Path

import optuna
import sqlalchemy

from common.errors import ENVIRONMENT_ERRNOS, UsageError
from models.schedules import LEARNED, Schedule, positions, preset
from search import records
from search.config import SearchConfig
from search.interrupts import raise_if_interrupted, remember
from search import run_folders
from search.keep import ModelKeeper
from search.liveness import TakenOver, beating, record_process
from search.records import INTERRUPTED, TrialKey
from search.records.keys import ENVIRONMENT, ENVIRONMENT_SIGNS
from search.samplers import seed_of
from search.space import suggest_schedule
from training.config import EpochHook, TrainConfig
from training.data import Dataset
from storage import HEARTBEAT_SECONDS
from training.loop import RunResult, run


SQLITE_ENVIRONMENT = frozenset({3, 5, 8, 10, 13, 14})  # SQLite's PERM, BUSY, READONLY, IOERR, FULL, CANTOPEN
# PostgreSQL's SQLSTATE classes of a lost or refused server (08 connection, 53 resources, 57 operator intervention,
# 58 system error) and a permission revoked under the run (42501); a wrong database name (3D) or password (28) is
# the user's input
POSTGRES_ENVIRONMENT = ("08", "53", "57", "58", "42501")
OUT_OF_MEMORY = ("MemoryError", "ResourceExhaustedError")  # the network's size never depends on the schedule


def failure(error: Exception) -> str:
    """A run's fail reason for ``error``: its type and message; ``ENVIRONMENT`` and the fault for an environment
    fault (``environment_fault``), which is retried as a trial cut short, never final."""
    if (fault := environment_fault(error)) is not None:
        return f"{ENVIRONMENT}: {fault}"
    cause = error.__cause__  # a wrapper's (Optuna's StorageInternalError says nothing of what failed): its cause too
    said = f" (from {type(cause).__name__}: {str(cause).strip()[:200]})" if cause is not None else ""
    return f"{type(error).__name__}: {error}{said}"[:500]


def environment_fault(error: BaseException) -> str | None:
    """The fault of the run's environment in ``error`` or in the errors it was raised from (the deepest: the
    cause, not Optuna's or SQLAlchemy's wrapper of it), as type and message; None for an error of the run itself
    (a shape error, NaN, a bug). By cause, not by where it was raised: an ``OSError`` with one of
    ``ENVIRONMENT_ERRNOS``; SQLite's full disk, I/O error or read-only file; a database connection lost (the
    driver's ``OperationalError`` or ``InterfaceError``, SQLAlchemy's invalidated connection); any error whose
    message says one of these (TensorFlow's file errors)."""
    found, seen = None, set()
    while error is not None and id(error) not in seen and not isinstance(error, UsageError):
        seen.add(id(error))  # (a usage error raised from a fault is the user's input: ``raise ... from None``)
        if _is_environment(error):
            found = error
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if found is None:
        return None
    text = str(found).strip().splitlines()[0] if str(found).strip() else ""
    return f"{type(found).__name__}: {text}"[:300]


def _is_environment(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno in ENVIRONMENT_ERRNOS
    if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) is not None:
        return error.sqlite_errorcode & 0xFF in SQLITE_ENVIRONMENT
    if isinstance(error, sqlalchemy.exc.DisconnectionError) or getattr(error, "connection_invalidated", False):
        return True
    if isinstance(error, sqlalchemy.exc.PendingRollbackError):  # a session whose connection was lost mid-transaction
        return True
    if any(kind.__module__.startswith("psycopg") for kind in type(error).__mro__):
        state = getattr(error, "sqlstate", None)
        if state is not None:
            return state.startswith(POSTGRES_ENVIRONMENT)
        return any(kind.__name__ in ("OperationalError", "InterfaceError") for kind in type(error).__mro__)
    if type(error).__name__ in OUT_OF_MEMORY:
        return True
    text = str(error).lower()
    return any(sign.lower() in text for sign in ENVIRONMENT_SIGNS)


def records_its_errors(call):
    """An objective's ``__call__``, with any error it raises recorded as the trial's fail reason (one the run
    wrote stays): a failed trial without a reason reads as cut short from outside (``records.cut_short``) and
    would be run again."""
    @functools.wraps(call)
    def recorded(self, trial: optuna.Trial) -> float:
        try:
            return call(self, trial)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            record_failure(trial, error)
            raise
    return recorded


def record_failure(trial: optuna.Trial, error: Exception) -> None:
    """``error`` as the trial's fail reason, unless one is recorded already (the run's own stays)."""
    try:
        if TrialKey.FAIL_REASON.of(trial) is None:
            TrialKey.FAIL_REASON.write(trial, failure(error))
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # failed by another process meanwhile
    except Exception as unwritten:  # the storage failed too: the trial's tell says what becomes of it
        if environment_fault(unwritten) is None:
            raise


class Objective:
    """Suggest a schedule, train it, report every epoch's validation accuracy, prune the hopeless.

    Every trial uses the study's seed, so schedules are compared on the same initial weights and data order
    (common random numbers: less noise between trials than independent seeds). The warm-start presets (the
    baseline and the paper's schedules) are never pruned: they are the references every study keeps on the full
    budget; so are the learned arms (``learned``, ``skipinit``), which have no search parameters and record the
    scalars they learned (``learned_values``). A diverged run is pruned with ``diverged`` recorded: it counts as
    finished, never as a good result.
    """

    def __init__(self, config: SearchConfig, data: Dataset, keeper: ModelKeeper | None = None):
        self.config, self.data, self.keeper = config, data, keeper

    @records_its_errors
    def __call__(self, trial: optuna.Trial) -> float:
        planned = self.plan(trial)
        result = train_trial(trial, planned.config, planned.schedule, self.data, epoch_reporter(trial, planned),
                             self.config.checkpoint_root(), planned.keeper, self.config.tensorboard,
                             self.config.heartbeat)
        return value_of(trial, result)

    def plan(self, trial: optuna.Trial) -> "Planned":
        """What ``trial`` trains, decided and recorded on it: its process, schedule (sampled, or its preset's),
        seed and sampler seed."""
        record_process(trial)
        arm = records.preset_of(trial)
        schedule = preset(arm) if arm in LEARNED else suggest_schedule(trial, self.config.family,
                                                                       self.config.scale_range)
        records.write_schedule(trial, schedule, positions(self.config.depth), schedule.values(self.config.depth))
        # the search's seed, except for the baseline's replicas, which carry their own (the noise floor)
        seed = records.seed_of(trial)
        seed = self.config.seed if seed is None else seed
        TrialKey.SEED.write(trial, seed)
        TrialKey.SAMPLER_SEED.write(trial, seed_of(trial.study.sampler))
        return Planned(schedule, dataclasses.replace(self.config.train, seed=seed), records.is_reference(trial),
                       self.keeper if records.is_candidate(trial) else None)


@dataclasses.dataclass(frozen=True)
class Planned:
    """What one trial trains (``Objective.plan``): its schedule, its recipe with its seed, whether its pruner may
    stop it (never a reference), and the keeper its model is offered to (candidates only)."""

    schedule: Schedule
    config: TrainConfig
    never_prune: bool
    keeper: ModelKeeper | None


def epoch_reporter(trial: optuna.Trial, planned: Planned) -> EpochHook:
    """A run's epoch hook: report the validation accuracy to ``trial``; True when its pruner stops it (never
    when ``planned.never_prune``)."""
    def report(epoch: int, accuracy: float) -> bool:
        raise_if_interrupted()
        trial.report(accuracy, epoch)
        return not planned.never_prune and trial.should_prune()
    return report


def value_of(trial: optuna.Trial, result: RunResult) -> float:
    """The trial's value from its recorded run: its final validation accuracy; a run its pruner stopped raises
    ``TrialPruned`` with the epoch recorded."""
    if result.stopped_early:
        TrialKey.PRUNED_AT_EPOCH.write(trial, result.epochs_run)
        raise optuna.TrialPruned(f"pruned at epoch {result.epochs_run}")
    return result.final_val_accuracy


def record_run(trial: optuna.Trial, result: RunResult, wall_seconds: float) -> None:
    """A run's record on its trial (``records.write_run``); a diverged run is pruned with its reason."""
    records.write_run(trial, result, wall_seconds)
    if result.diverged:
        TrialKey.DIVERGED.write(trial, result.diverged_reason)
        raise optuna.TrialPruned(f"diverged: {result.diverged_reason}")


def train_trial(trial: optuna.Trial, config: TrainConfig, schedule: Schedule, data: Dataset,
                on_epoch: EpochHook, checkpoints: Path | None = None, keeper: ModelKeeper | None = None,
                tensorboard: str | None = None, heartbeat: float = HEARTBEAT_SECONDS) -> RunResult:
    """One training run for ``trial``, recorded on it: epochs run, wall seconds, images/s, the epoch it resumed
    from; ``interrupted`` for Ctrl-C or SIGTERM before it propagates (an error's reason is recorded by the
    objective, ``records_its_errors``); a diverged run
    pruned with its reason. The run's per-epoch training loss and accuracy are kept on the trial (``train_loss``,
    ``train_accuracy``) beside the validation accuracy its intermediate values hold; a run that trained to its end
    offers its model to ``keeper``.

    The run's folder under ``checkpoints`` (and under ``tensorboard``) is the trial's own (``search.run_folders``);
    a retry takes over the folder of the trial it re-runs and resumes from its checkpoint. The checkpoint stays
    when the run ends: ``AfterTrial`` removes it once the trial is recorded. A trial that another process failed
    meanwhile (its heartbeat looked stale) raises ``TakenOver``."""
    started = time.perf_counter()
    name = trial.study.study_name
    board = run_folders.run_folder(Path(tensorboard), name, trial.number) if tensorboard else None
    try:
        try:
            folder = run_folders.inherit(checkpoints, trial.study, trial) if checkpoints is not None else None
            with tempfile.TemporaryDirectory() as scratch, beating(trial, heartbeat):
                model_file = Path(scratch) / f"trial-{trial.number:04d}.keras" if keeper is not None else None
                result = run(config, schedule, data, on_epoch=on_epoch, checkpoint_dir=folder,
                             save_model=model_file, tensorboard=board)
                if model_file is not None and model_file.is_file():  # saved only by a run that trained to its end
                    keeper.offer(trial, result.final_val_accuracy, model_file)
        except KeyboardInterrupt as interrupt:
            remember(interrupt)  # the interrupt stops this worker whoever failed the trial
            # failed by another meanwhile, or the storage fails too: the interrupt goes on, never replaced
            with contextlib.suppress(Exception):
                TrialKey.FAIL_REASON.write(trial, INTERRUPTED)
            raise
        record_run(trial, result, time.perf_counter() - started)
    except optuna.exceptions.UpdateFinishedTrialError:
        raise TakenOver(trial.number) from None
    return result


class AfterTrial:
    """Optuna callback, once a trial is recorded: a finished run's checkpoint goes (a failed one's stays for its
    retry), and the keeper prunes the study's models."""

    def __init__(self, checkpoints: Path | None, keeper: ModelKeeper | None):
        self.checkpoints, self.keeper = checkpoints, keeper

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.checkpoints is not None and trial.state in records.FINISHED:
            run_folders.remove(run_folders.run_folder(self.checkpoints, study.study_name, trial.number))
        if self.keeper is not None:
            self.keeper.prune(study)
