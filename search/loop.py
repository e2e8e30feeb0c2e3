"""The search loop: open the study, run trials in this process until the study has its target of finished ones,
then the confirm stage. No signal handling and no exits: what the command, its worker processes and the notebook
API share (``search.workers`` adds the signals and exit codes of a worker process).

A fault of the environment (no space, an I/O error, the storage's connection lost, a permission changed) is an
interruption, not an error of the run: the trial it hit is failed as cut short and queued again first
(``liveness.recover``), and a fault outside any trial (recovering, asking, telling, a callback) costs no trial;
``--max-failures`` of them in a row stop the search with one line and ``EXIT_TEMPFAIL``, the study intact."""
from __future__ import annotations

import contextlib
import os
import time
from typing import Callable

import optuna
from optuna.trial import TrialState

from common.log import log, quiet_optuna
from search import records
from search.config import SearchConfig
from search.confirm_loop import EnvironmentStopped, run_confirm
from search.keep import ModelKeeper
from search.interrupts import raise_if_interrupted
from search.liveness import recover
from search.objective import AfterTrial, Objective, environment_fault
from search.progress import FailureGuard, TrialReporter, next_commands
from search.run_queue import has_checkpoint, run_next, run_retries, waiting_retries
from search.fused_batch import fuse_width, run_batch
from search.study import open_study
from storage import open_storage
from training.data import Dataset, load_dataset

# called after every finished trial and after the confirm stage with (storage, study name): refreshes what a
# dashboard shows (the command passes dashboards.live.publish); the search knows nothing of dashboards
Publisher = Callable[[object, str], None]
EXIT_TEMPFAIL = 75  # sysexits' EX_TEMPFAIL: the environment failed; the same command, run again later, goes on
FAULT_PAUSE_SECONDS = 1.0  # between an environment fault outside a trial and the next try
BUSY_POLL_SECONDS = 2.0  # a fusing worker's wait while other workers' running trials reach the target


class Stopped(str):
    """Why a search stopped short (the line a worker prints after ``stopped:``), and the exit code it means."""

    exit_code: int

    def __new__(cls, line: str, exit_code: int = 1) -> "Stopped":
        stopped = super().__new__(cls, line)
        stopped.exit_code = exit_code
        return stopped


def environment_stop(error: Exception, during: str = "as the study was opened") -> Stopped | None:
    """The stop that ``error`` means when the environment caused it (``objective.environment_fault``, or the confirm
    stage's ``EnvironmentStopped``), outside the search loop's own guard (``during``: as the study was opened, the
    confirm stage): its line and ``EXIT_TEMPFAIL``; None for any other error. For a command: ``stopped: LINE``."""
    if isinstance(error, EnvironmentStopped):
        return Stopped(f"confirm stage: {error}", EXIT_TEMPFAIL)
    if (fault := environment_fault(error)) is None:
        return None
    return Stopped(f"the environment failed {during} ({fault}); the study is intact: free the space (or bring back "
                   f"the storage, the permissions) and run the same command again", EXIT_TEMPFAIL)


class _AfterEachTrial:
    """Optuna callback: the publisher, after every finished trial."""

    def __init__(self, publisher: Publisher, storage):
        self.publisher, self.storage = publisher, storage

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state in records.FINISHED:
            self.publisher(self.storage, study.study_name)


def run_search(config: SearchConfig, epochs: int, rank: int = 0, data: Dataset | None = None,
               study: optuna.Study | None = None, storage=None, publisher: Publisher | None = None,
               invoked_at: float | None = None):
    """Run trials in this process until the study has ``config.trials`` finished ones, then the confirm stage;
    the study, and why the search stopped short (``--max-failures`` trials failed in a row, or faults of the
    environment in a row: a ``Stopped`` with ``EXIT_TEMPFAIL``) or None.

    ``data``, ``study`` and ``storage`` are what the caller already opened (one worker, in-process); a worker
    process opens its own. ``publisher`` refreshes the dashboard after every finished trial. ``invoked_at``: when
    the command started (``time.time()``; default now), for the confirm stage's verdict.
    """
    quiet_optuna()
    data = data if data is not None else load_dataset(config.dataset, config.data_dir, config.subset)
    if study is None:
        storage = open_storage(config.storage, config.heartbeat)
        study = open_study(storage, config, epochs, worker=rank)
    keeper = ModelKeeper.for_search(config, storage)
    reporter = TrialReporter(config, show_bar=config.workers == 1, initial=records.finished_count(study))
    guard = FailureGuard(config.max_failures)
    after = [AfterTrial(config.checkpoint_root(), keeper), reporter, guard,
             *([_AfterEachTrial(publisher, storage)] if publisher else [])]
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    objective = Objective(config, data, keeper)
    width = fuse_width(config, data)
    if width > 1:
        log.info(f"training {width} trials at once as one fused network (--fuse {width})")
    root = config.checkpoint_root()

    def paid_for(trial) -> bool:
        return has_checkpoint(root, study, trial)

    said = []

    def step() -> bool:
        """One trial (a retry first), or False when the study has its target."""
        recover(storage, study, config.heartbeat)  # what died or was cut short since, queued again first
        remaining = config.trials - records.finished_count(study)
        if remaining <= 0 and not said and any(paid_for(t) for t in waiting_retries(study)):
            log.info("target reached; finishing the interrupted trials whose checkpoints hold work already "
                     "done first")
            said.append(True)
        # interrupted work first, claimed before Optuna's queue; past the target only what a checkpoint holds
        if run_retries(storage, study, objective, after, only=None if remaining > 0 else paid_for):
            return True
        # a study is not done before its baseline has finished: an interrupted baseline's re-run may sit in
        # the queue behind trials that already reach the target
        if remaining <= 0 and not records.baseline_pending(study):
            return False
        if width > 1:
            # a batch no wider than the trials still wanted beside those other workers run; retries (above)
            # resume alone from their own checkpoints
            wanted = remaining - len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            if wanted > 1:
                run_batch(storage, study, objective, after, min(width, wanted))
                return True
            if wanted <= 0 and remaining > 0:
                # other workers' batches reach the target: wait for them (a trial of theirs cut short comes back
                # as a retry) rather than overshoot it by a batch
                time.sleep(BUSY_POLL_SECONDS)
                return True
        run_next(storage, study, objective, after)
        return True

    try:
        while not guard.tripped:
            if deadline is not None and deadline - time.monotonic() <= 0:
                break
            try:
                if not step():
                    break
            except Exception as error:
                raise_if_interrupted()  # Ctrl-C or SIGTERM came meanwhile: it stops the worker, whatever failed
                if (fault := environment_fault(error)) is None:
                    raise
                guard.fault(fault)  # outside a trial's record (recovering, asking, telling, a callback)
                if not guard.tripped:
                    log.warning(f"warning: the environment failed ({fault}); trying again")
                    time.sleep(FAULT_PAUSE_SECONDS)
    finally:
        reporter.close()
    if guard.tripped:
        if guard.from_environment:
            with contextlib.suppress(Exception):  # the storage may answer though the disk is full: leave it tidy
                recover(storage, study, config.heartbeat)
        return study, Stopped(guard.message(), EXIT_TEMPFAIL if guard.from_environment else 1)
    reporter.summary(study)
    last = os.environ.get("SLURM_ARRAY_TASK_ID", "0") == "0"  # without a confirm stage: one task of an array says
    if config.confirm_top and records.finished_count(study) >= config.trials:
        # the worker that writes the verdict says what to do next; the others leave it to it
        try:
            last = run_confirm(config, study, storage, data, invoked_at) is not None
        except Exception as error:
            if (stop := environment_stop(error, "the confirm stage")) is None:
                raise
            return study, stop
        if publisher:
            publisher(storage, study.study_name)
    if last:
        export, evaluate = next_commands(study, config.storage)
        log.info(f"next: {export}\n      {evaluate}")
    return study, None
