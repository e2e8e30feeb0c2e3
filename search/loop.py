"""The search loop: open the study, run trials in this process until the study has its target of finished ones,
then the confirm stage. No signal handling and no exits: what the command, its worker processes and the notebook
API share (``search.workers`` adds the signals and exit codes of a worker process)."""
from __future__ import annotations

import os
import time
from typing import Callable

import optuna

from common.log import log, quiet_optuna
from search import records
from search.config import SearchConfig
from search.confirm_loop import run_confirm
from search.keep import ModelKeeper
from search.liveness import optimize, recover
from search.progress import next_commands
from search.objective import AfterTrial, Objective
from search.progress import FailureGuard, TrialReporter
from search.run_queue import has_checkpoint, run_retries, waiting_retries
from search.study import open_study
from storage import open_storage
from training.data import Dataset, load_dataset

# called after every finished trial and after the confirm stage with (storage, study name): refreshes what a
# dashboard shows (the command passes dashboards.live.publish); the search knows nothing of dashboards
Publisher = Callable[[object, str], None]


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
    the study, and why the search stopped short (``--max-failures`` trials failed in a row) or None.

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
    root = config.checkpoint_root()

    def paid_for(trial) -> bool:
        return has_checkpoint(root, study, trial)

    said = False
    try:
        while not guard.tripped:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            recover(storage, study, config.heartbeat)  # what died or was cut short since, queued again first
            remaining = config.trials - records.finished_count(study)
            if remaining <= 0 and not said and any(paid_for(t) for t in waiting_retries(study)):
                log.info("target reached; finishing the interrupted trials whose checkpoints hold work already "
                         "done first")
                said = True
            # interrupted work first, claimed before Optuna's queue; past the target only what a checkpoint holds
            if run_retries(storage, study, objective, after, only=None if remaining > 0 else paid_for):
                continue
            # a study is not done before its baseline has finished: an interrupted baseline's re-run may sit in
            # the queue behind trials that already reach the target
            if remaining <= 0 and not records.baseline_pending(study):
                break
            optimize(study, objective, n_trials=1, timeout=left, callbacks=after, catch=(Exception,),
                     gc_after_trial=True)
    finally:
        reporter.close()
    if guard.tripped:
        return study, guard.message()
    reporter.summary(study)
    last = os.environ.get("SLURM_ARRAY_TASK_ID", "0") == "0"  # without a confirm stage: one task of an array says
    if config.confirm_top and records.finished_count(study) >= config.trials:
        # the worker that writes the verdict says what to do next; the others leave it to it
        last = run_confirm(config, study, storage, data, invoked_at) is not None
        if publisher:
            publisher(storage, study.study_name)
    if last:
        export, evaluate = next_commands(study, config.storage)
        log.info(f"next: {export}\n      {evaluate}")
    return study, None
