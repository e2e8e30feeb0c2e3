"""K trials of the search trained at once as one fused network (``--fuse K``; ``training.fused``).

A batch is K trials asked of Optuna in a row (the queued references first, then the sampler's proposals; TPE's
constant liar and GP's running-trial acquisition keep the K apart), each planned and recorded exactly as a trial
trained alone (``search.objective``: schedule, seed, epoch reports, pruning, the run's record, the keeper), and
told one by one. Only the training is shared: ``training.fused.run_fused`` trains the K networks as one, and each
arm's numbers are those of its run alone. A pruned or diverged arm is masked and the others go on.

Nothing is lost to a kill: every arm saves its state after every epoch in its own trial's folder, in a single
run's format (``run_fused(arm_checkpoints=...)``), so the K trials, failed as cut short, are retried one by one
(``search.run_queue.run_retries``) and each resumes alone where the batch stopped. A trial another process failed
meanwhile (its heartbeat looked stale) leaves the batch at once and goes to its retry; the others go on.
"""
from __future__ import annotations

import contextlib
import gc
import tempfile
import time
from pathlib import Path
from typing import Protocol

import optuna
from optuna.trial import TrialState

from common.log import log
from search import records, run_folders
from search.interrupts import raise_if_interrupted, remember
from search.liveness import TakenOver, beating, heartbeat, record_process
from search.objective import Planned, epoch_reporter, record_failure, record_run, value_of
from search.records import INTERRUPTED, TrialKey
from search.run_queue import ask, fail_interrupted, run_asked, tell, told
from training.data import Dataset
from training.fuse_probe import measured_width
from training.fused import run_fused
from training.loop import resolve_precision, gpu_compute_capability

__all__ = ["Planner", "fuse_width", "run_batch"]


class Planner(Protocol):
    """What a batch needs of an objective (``search.objective.Objective``, the confirm stage's): its
    configuration, its data, ``plan(trial)``, which decides and records what the trial trains, and the objective
    itself, for a trial trained alone."""

    config: object
    data: Dataset

    def plan(self, trial: optuna.Trial) -> Planned: ...

    def __call__(self, trial: optuna.Trial) -> float: ...  # one trial alone: a retry resumes so


def fuse_width(config, data: Dataset, measure=None) -> int:
    """How many trials this worker trains at once: ``config.fuse`` when given; else (auto) 1 on a CPU or under
    mixed_float16 (its loss scale would couple the arms), and on a GPU the width
    ``training.fuse_probe.measured_width`` finds worth it. ``measure``: that probe (tests)."""
    policy = resolve_precision(config.precision)[0]
    if config.fuse is not None:
        if config.fuse > 1 and policy == "mixed_float16":  # --precision auto chose it on this GPU
            log.warning(f"warning: --fuse {config.fuse} trains one trial at a time here: --precision auto chose "
                        f"mixed_float16 on this GPU, whose loss scale would couple the arms; pass --precision "
                        f"mixed_bfloat16 or float32 to fuse")
            return 1
        return config.fuse
    if policy == "mixed_float16" or (measure is None and gpu_compute_capability() is None):
        return 1  # on this project's CPUs fusion measured 1.0-1.3x (benchmarks/README.md): not worth a masked arm
    width, ratios = (measure or measured_width)(config.train, data)
    shown = ", ".join(f"K={k}: {ratio:.2f}x" for k, ratio in sorted(ratios.items()))
    log.info(f"fused trials: measured images/s over one trial at a time {shown}; training {width} at once "
             f"(--fuse auto; --fuse K to choose)")
    return width


def run_batch(storage, study: optuna.Study, objective: Planner, callbacks: list, count: int,
              catch: tuple = (Exception,)) -> None:
    """Ask Optuna for ``count`` trials, train them as one fused network and tell each its own outcome (as
    ``search.run_queue.run_next`` tells one), then run the callbacks for each. An error outside ``catch`` is
    raised once every trial is told. A retry among them (queued by another worker since this one claimed the
    retries) runs alone afterwards, from its checkpoint."""
    asked = []
    try:
        for _ in range(count):
            asked.append(ask(study))
            record_process(asked[-1])  # from here a kill of this worker is seen at once (liveness.recover)
    except BaseException as error:
        _give_back(study, asked, error)
        raise
    alone = [trial for trial in asked if records.retry_of(trial) is not None]
    trials = [trial for trial in asked if trial not in alone]
    if len(trials) == 1:  # nothing to fuse it with
        alone, trials = trials + alone, []
    outcomes = []
    try:
        with contextlib.ExitStack() as beats:
            try:
                for trial in asked:  # the retries' too: alive while they wait for the batch
                    beats.enter_context(heartbeat(storage, trial._trial_id))
                    beats.enter_context(beating(trial, objective.config.heartbeat))
            except Exception as error:  # the storage failed as the heartbeats began: no trial ran
                outcomes = [_failed(trial, error) for trial in trials]
            else:
                outcomes = _outcomes(objective, trials) if trials else []
    except KeyboardInterrupt as interrupt:
        _give_back(study, asked, interrupt)
        raise
    finally:
        gc.collect()
    raised, untold = None, [*trials, *alone]
    try:
        for trial, (value, state, error) in zip(trials, outcomes):
            if error is not None and not isinstance(error, catch):
                tell(study, trial, None, state, error)
                raised = raised or error
            else:
                told(study, trial, value, state, error, callbacks)
            untold.remove(trial)
        for trial in alone:
            if raised is not None:  # the batch's error stops the worker: the retry goes back to the queue
                break
            untold.remove(trial)
            run_asked(storage, study, trial, objective, callbacks, catch)
    except KeyboardInterrupt as interrupt:  # (Ctrl-C as the batch is told: the trials left are cut short too)
        _give_back(study, untold, interrupt)
        raise
    if raised is not None:
        _give_back(study, untold, raised)
        raise raised


def _give_back(study: optuna.Study, trials: list[optuna.Trial], error: BaseException) -> None:
    """Fail ``trials``, which this worker asked but will not run: cut short by an interrupt (queued again by
    ``liveness.recover``), or by ``error``; a storage that fails meanwhile leaves them to ``recover``."""
    if isinstance(error, KeyboardInterrupt):
        remember(error)
        for trial in trials:
            with contextlib.suppress(Exception):
                TrialKey.FAIL_REASON.write(trial, INTERRUPTED)
            fail_interrupted(study, trial)
        return
    for trial in trials:
        with contextlib.suppress(Exception):
            _failed(trial, error)
            tell(study, trial, None, TrialState.FAIL, error)


def _outcomes(objective: Planner, trials: list[optuna.Trial]) -> list[tuple]:
    """Per trial (value, state, error) as ``run_queue`` tells it: planned, trained fused, recorded."""
    outcomes, planned = {}, {}
    batch = [trial.number for trial in trials]
    for trial in trials:
        try:
            planned[trial.number] = objective.plan(trial)
            TrialKey.FUSED_WITH.write(trial, batch)
        except optuna.TrialPruned:  # the confirm stage's: a duplicate, or queued for another budget
            outcomes[trial.number] = None, TrialState.PRUNED, None
        except Exception as error:
            outcomes[trial.number] = _failed(trial, error)
    live = [trial for trial in trials if trial.number in planned]
    if live:
        try:
            results, taken, wall = _train(objective, live, [planned[trial.number] for trial in live])
        except Exception as error:
            for trial in live:
                outcomes[trial.number] = _failed(trial, error)
        else:
            # each trial's share of the batch's time, by the epochs it trained: the search's cost per epoch
            # (search.progress) stays the batch's per arm-epoch, not K times it
            epochs = sum(result.epochs_run for result in results) or len(results)
            for trial, result in zip(live, results):
                share = wall * (result.epochs_run or 1) / epochs
                outcomes[trial.number] = _recorded(trial, result, share, trial.number in taken)
    return [outcomes[trial.number] for trial in trials]


def _failed(trial: optuna.Trial, error: Exception) -> tuple:
    record_failure(trial, error)
    return None, TrialState.FAIL, error


def _recorded(trial: optuna.Trial, result, wall_seconds: float, taken_over: bool) -> tuple:
    if taken_over:
        return None, TrialState.FAIL, TakenOver(trial.number)
    try:
        record_run(trial, result, wall_seconds)
        return value_of(trial, result), None, None
    except optuna.TrialPruned:
        return None, TrialState.PRUNED, None
    except optuna.exceptions.UpdateFinishedTrialError:
        return None, TrialState.FAIL, TakenOver(trial.number)
    except Exception as error:
        return _failed(trial, error)


def _train(objective: Planner, trials: list[optuna.Trial], plans: list[Planned]):
    """(each arm's ``RunResult``, the numbers of trials taken over meanwhile, the batch's wall seconds)."""
    started, taken = time.perf_counter(), set()
    hooks = [epoch_reporter(trial, plan) for trial, plan in zip(trials, plans)]

    def on_epoch(arm: int, epoch: int, accuracy: float) -> bool:
        raise_if_interrupted()
        try:
            return hooks[arm](epoch, accuracy)
        except optuna.exceptions.UpdateFinishedTrialError:  # failed by another process: its retry takes it over
            taken.add(trials[arm].number)
            return True

    root, board = objective.config.checkpoint_root(), objective.config.tensorboard
    folders = [run_folders.run_folder(root, trial.study.study_name, trial.number) if root else None
               for trial in trials]
    boards = [run_folders.run_folder(Path(board), trial.study.study_name, trial.number) for trial in trials] \
        if board else None
    with tempfile.TemporaryDirectory() as scratch:  # (an interrupt: run_batch gives every trial back, _give_back)
        models = [Path(scratch) / f"trial-{trial.number:04d}.keras" if plan.keeper else None
                  for trial, plan in zip(trials, plans)]
        results = run_fused([plan.config for plan in plans], [plan.schedule for plan in plans],
                            objective.data, on_epoch=on_epoch, arm_checkpoints=folders, save_models=models,
                            arm_boards=boards)
        for trial, plan, result, model in zip(trials, plans, results, models):
            if model is not None and model.is_file() and trial.number not in taken:
                plan.keeper.offer(trial, result.final_val_accuracy, model)
    return results, taken, time.perf_counter() - started
