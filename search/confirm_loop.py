"""The confirm stage: re-train the search's top candidates, the baseline and the paper's preset on fresh seeds.

A search picks its best schedule from single runs on one seed: the best of N is high partly by chance. This stage
trains the top K candidates, the baseline and the study's paper preset again with S seeds of their own (the
study's seed + 2000 + i: disjoint from the search's and the baseline replicas'), on the same split and budget,
judged on validation and paired by seed with the baseline (``verdict`` sums it up).

The runs are trials of a study of their own, ``<study>.confirm``, in the same storage: resumable (kill it and
run the command again; nothing done twice), shared by any number of workers or machines, visible in
optuna-dashboard, and never counted toward the search's ``--trials``. The plan is the search's *current* top K:
extending the search (a larger ``--trials``) or asking for more seeds re-plans the stage, and a run already done
(same schedule, same seed) is reused, never trained again. A run that fails with an error is retried (up to
``ATTEMPTS`` times); one that diverged counts against its arm.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from common.log import log, result
from models.schedules import Schedule
from search import records
from search.evidence import race, surrogate
from search.evidence.confirm_plan import (ATTEMPTS, confirm_seeds, counted_errors, finished_run, outcome,
                                          plan_arms, race_plan, race_runs, runs_by_pair)
from search.evidence.verdict import describe, summarise
from search.keep import ArmModelKeeper
from search.liveness import fail_dead, record_process
from search.objective import (AfterTrial, Planned, environment_fault, epoch_reporter, records_its_errors,
                              train_trial)
from search.progress import FailureGuard
from search.fused_batch import fuse_width, run_batch
from search.run_queue import run_next, run_retries
from search.records import RunState, StudyKey, TrialKey
from search.study import tidy
from storage.attributes import study_lock
from training.data import load_dataset


RACE_POLL_SECONDS = 2.0  # a race's worker waits this long for the others' runs of a round before it looks again


class EnvironmentStopped(Exception):
    """The environment failed the confirm stage ``--max-failures`` times in a row (no space, the storage lost):
    the stage stops, its study intact; the message is the line to show."""


def open_confirm_study(storage, study: optuna.Study) -> optuna.Study:
    """The confirm study of ``study``, created on first use (``run_confirm`` fails its dead runs before each
    plan, which queues them again)."""
    confirm = optuna.create_study(storage=storage, study_name=records.confirm_study_name(study.study_name),
                                  direction="maximize", sampler=optuna.samplers.RandomSampler(),
                                  load_if_exists=True)
    if StudyKey.SOURCE_STUDY.of(confirm) is None:
        StudyKey.SOURCE_STUDY.write(confirm, study.study_name)
        StudyKey.SCHEMA.write(confirm, records.SCHEMA_VERSION)
        records.name_metric(confirm)
    records.migrate(storage, confirm)  # a confirm study of an older schema, in one step
    return confirm


def queue_plan(storage, confirm: optuna.Study, arms: list[dict[str, Any]], seeds: list[int], budget: dict[str, Any],
               allowed: dict[tuple[str, int], int] | None = None) -> int:
    """Queue every (arm, seed) of the plan that has no run, finished or under way (a failed one again, up to
    ``allowed[pair]`` errors in all); seed by seed, so early results already pair up. The count queued. Under the
    study's lock: workers planning at once queue each run once."""
    return queue_pairs(storage, confirm, [(arm, seed) for seed in seeds for arm in arms], budget, allowed)


def queue_pairs(storage, confirm: optuna.Study, wanted: list[tuple[dict[str, Any], int]], budget: dict[str, Any],
                allowed: dict[tuple[str, int], int] | None = None) -> int:
    """``queue_plan`` for a list of (arm, seed) pairs, in their order."""
    with study_lock(storage, confirm.study_name):
        pairs, queued = runs_by_pair(confirm), 0
        for arm, seed in wanted:
            runs = pairs.get((arm["key"], seed), [])
            state, _ = outcome(runs, (allowed or {}).get((arm["key"], seed), ATTEMPTS))
            if state == RunState.MISSING:
                failed = [t for t in runs if t.state == TrialState.FAIL and TrialKey.ARM.of(t)]
                if failed:  # again, taking over the last attempt's checkpoint
                    records.add_retry(confirm, failed[-1], [])
                else:
                    records.enqueue_confirm_run(confirm, arm, seed, budget)
                queued += 1
        return queued


@dataclasses.dataclass
class Stage:
    """What the stage trains: every arm and seed it may use and, seed by seed, the pairs it wants now (the fixed
    stage: all of them; a race: what its standing asks for, ``search.evidence.race``)."""

    arms: list[dict[str, Any]]
    seeds: list[int]
    race: dict[str, Any] | None = None  # the race's plan (confirm_plan.race_plan)

    def standing(self, states) -> race.Standing:
        plan = self.race
        return race.standing([arm["key"] for arm in self.arms[1:]], self.arms[0]["key"], plan["round_seeds"],
                             plan["final_seeds"], states)

    def wanted(self, states) -> list[tuple[dict[str, Any], int]]:
        if self.race is None:
            return [(arm, seed) for seed in self.seeds for arm in self.arms]
        by_key = {arm["key"]: arm for arm in self.arms}
        return [(by_key[key], seed) for key, seed in self.standing(states).needed]

    def racing_on(self, states) -> bool:
        """Whether a race has a round under way: its next round or its final test is still to be asked for."""
        return self.race is not None and any(
            states[(arm["key"], seed)][0] == RunState.RUNNING for arm, seed in self.wanted(states)
            if seed in self.race["round_seeds"])

    def same_as(self, other: "Stage") -> bool:
        split = lambda stage: (stage.race or {}).get("round_seeds")  # noqa: E731 - a race's rounds and final test
        return [arm["key"] for arm in self.arms] == [arm["key"] for arm in other.arms] and self.seeds == other.seeds \
            and split(self) == split(other)


def await_search(storage, study: optuna.Study, heartbeat: float | None) -> None:
    """Wait for the search trials running now to finish (a dead worker's are failed), so that a race's
    surrogate, fitted once for every worker, sees them: a trial finishing after the plan would re-plan the race
    while other workers train the old one's runs. Trials started meanwhile are not waited for."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if running:
        log.info(f"confirm: waiting for {len(running)} search trial{'s' * (len(running) > 1)} still running, so "
                 f"the race's surrogate sees {'them' if len(running) > 1 else 'it'}")
    while running:
        fail_dead(storage, study, heartbeat)
        running &= {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        if running:
            time.sleep(RACE_POLL_SECONDS)


def plan_stage(config, study: optuna.Study, storage, confirm: optuna.Study, budget: dict[str, Any]) -> Stage | None:
    """The stage ``config`` asks for, or None when there is nothing to confirm. A race's plan is made once and
    stored on the confirm study under its lock, so every worker races the same field (a surrogate's fit on
    another machine could order near-ties differently); it is made again when the search has moved on."""
    trainings = race_runs(study, config.confirm_budget, config.confirm_top, config.confirm_seeds, config.min_effect,
                          budget)
    if trainings is None:
        arms = plan_arms(study, config.confirm_top, budget)
        if not any(arm["candidate"] for arm in arms):
            return None
        return Stage(arms, confirm_seeds(study, config.confirm_seeds, config.confirm_top, config.min_effect))
    with study_lock(storage, confirm.study_name):
        plan = StudyKey.RACE.of(confirm)
        asked = {"top": config.confirm_top, "trainings": trainings, "budget": budget,
                 "fitted_on": surrogate.fitted_trials(study)}
        if not plan or any(plan.get(key) != value for key, value in asked.items()):
            plan = race_plan(study, config.confirm_top, trainings, budget)
            if plan is None:
                return None
            StudyKey.RACE.write(confirm, plan)
    return Stage(plan["arms"], plan["round_seeds"] + plan["final_seeds"], plan)


class ConfirmObjective:
    """One confirm run: the queued arm's schedule on its seed, at the stage's budget (``train``: the search's own,
    or its ``--target-*``; ``budget`` says which), no pruning. A run queued for another budget (by a stage that
    was stopped, then asked for another target) is left for a stage at that budget, never trained at this one."""

    def __init__(self, config, data, keeper: ArmModelKeeper | None = None, train=None, budget=None):
        self.config, self.data, self.keeper, self.train = config, data, keeper, train or config.train
        self.budget = budget

    @records_its_errors
    def __call__(self, trial: optuna.Trial) -> float:
        planned = self.plan(trial)
        # every arm keeps one run's model: a reference now (the paper's) may be a candidate after a re-plan
        run = train_trial(trial, planned.config, planned.schedule, self.data, epoch_reporter(trial, planned),
                          self.config.checkpoint_root(), self.keeper, self.config.tensorboard, self.config.heartbeat)
        return run.final_val_accuracy

    def plan(self, trial: optuna.Trial) -> Planned:
        """The queued run's arm and seed, never pruned; ``TrialPruned`` for a run left to another (a duplicate,
        nothing left, another budget)."""
        record_process(trial)
        key, seed = TrialKey.ARM.of(trial), records.seed_of(trial)
        if key is None:  # another worker took the last queued run between our look and our ask
            raise optuna.TrialPruned("nothing left to run")
        planned = TrialKey.BUDGET.of(trial)
        if self.budget is not None and planned is not None and planned != self.budget:
            TrialKey.SKIPPED.write(trial, f"queued for another budget (ResNet-{planned['depth']}, "
                                          f"{planned['epochs']} epochs): left to a stage at that budget")
            raise optuna.TrialPruned("queued for another budget")
        twins = [t for t in trial.study.get_trials(deepcopy=False) if t.number != trial.number
                 and TrialKey.ARM.of(t) == key and records.seed_of(t) == seed
                 and ((t.state == TrialState.RUNNING and t.number < trial.number) or finished_run([t]))]
        if twins:  # two workers queued the same run: the later one steps aside
            TrialKey.DUPLICATE_OF.write(trial, twins[0].number)
            raise optuna.TrialPruned(f"duplicate of trial {twins[0].number}")
        return Planned(Schedule.from_dict(TrialKey.SCHEDULE.of(trial)), dataclasses.replace(self.train, seed=seed),
                       True, self.keeper)


def stage_cost(study: optuna.Study, confirm: optuna.Study, budget: dict[str, Any], runs: int) -> dict[str, Any]:
    """What the search cost at its budget, what the stage cost at its own, and what the search would have cost at
    the stage's: in measured seconds per epoch (the median over finished runs) at each budget."""
    def per_epoch(trials):
        timed = [TrialKey.WALL_SECONDS.of(t) / TrialKey.EPOCHS_RUN.of(t) for t in trials
                 if TrialKey.WALL_SECONDS.of(t) and TrialKey.EPOCHS_RUN.of(t)]
        return statistics.median(timed) if timed else None

    search_epoch = per_epoch(records.finished(study))
    target_epoch = per_epoch(t for t in records.finished(confirm) if TrialKey.BUDGET.of(t) == budget)
    epochs_trained = sum(TrialKey.EPOCHS_RUN.of(t) or 0 for t in records.finished(study))
    cost = {"search_seconds_per_epoch": search_epoch, "target_seconds_per_epoch": target_epoch,
            "search_epochs": epochs_trained, "stage_runs": runs, "target_epochs": budget["epochs"]}
    if search_epoch and target_epoch:
        cost.update(search_seconds=epochs_trained * search_epoch, stage_seconds=runs * budget["epochs"] * target_epoch,
                    search_at_target_seconds=epochs_trained * (budget["epochs"] / (records.epochs(study) or 1))
                    * target_epoch)
    return cost


def run_confirm(config, study: optuna.Study, storage, data,
                invoked_at: float | None = None) -> dict[str, Any] | None:
    """Work through the confirm stage of the search's current top ``config.confirm_top`` candidates on
    ``config.confirm_seeds`` seeds (with any other workers); the summary once every run has finished, stored on the
    search study as ``confirmation``, else None (other workers finish it and say it, or nothing to confirm).
    ``invoked_at``: when the command started (``time.time()``; default now): the same verdict written by another
    worker since is left to it."""
    started = time.time() if invoked_at is None else invoked_at
    budget = config.target(records.epochs(study))
    if not records.candidates(study):
        result(f"nothing to confirm: study {study.study_name!r} has no completed schedule besides its references "
               f"(raise --trials to search some)")
        return None
    confirm = open_confirm_study(storage, study)
    if race_runs(study, config.confirm_budget, config.confirm_top, config.confirm_seeds, config.min_effect, budget):
        await_search(storage, study, config.heartbeat)
    stage = plan_stage(config, study, storage, confirm, budget)
    if stage is None:
        result(f"nothing to confirm: study {study.study_name!r} has no completed schedule besides its references")
        return None
    used = set(StudyKey.CONFIRM_SEEDS.of(study, []))
    if not set(stage.seeds) <= used:
        StudyKey.CONFIRM_SEEDS.write(study, sorted(used | set(stage.seeds)))
    keeper = ArmModelKeeper.for_search(config, storage)
    if budget["subset"] != config.subset:  # a target on another number of images: its own data
        data = load_dataset(config.dataset, config.data_dir, budget["subset"])
    train = dataclasses.replace(config.train, depth=budget["depth"], epochs=budget["epochs"])
    objective = ConfirmObjective(config, data, keeper, train, budget)
    width = fuse_width(config, data)
    after = AfterTrial(config.checkpoint_root(), keeper)
    where = (f"in study {confirm.study_name!r}, at ResNet-{budget['depth']}, {budget['epochs']} epochs"
             + (f", {budget['subset']} images" if budget["subset"] else ""))
    if stage.race:
        log.info(f"confirm: a race of {stage.race['trainings']} runs {where}: {race.plan_line(stage.race)}")
    else:
        log.info(f"confirm: {len(stage.arms)} arms x {len(stage.seeds)} seeds ({len(stage.arms) * len(stage.seeds)} "
                 f"runs, those done already reused) {where}")

    def line(_, trial) -> None:
        if trial.state == TrialState.COMPLETE:
            said = f"val {trial.value:.4f}"
        elif (twin := TrialKey.DUPLICATE_OF.of(trial)) is not None:
            said = f"already run as trial {twin}"
        elif TrialKey.ARM.of(trial) is None:
            return
        elif (skipped := TrialKey.SKIPPED.of(trial)) is not None:
            said = skipped
        else:
            said = records.diverged_reason(trial) or records.fail_reason(trial, trial.state.name)
        log.info(f"confirm {TrialKey.LABEL.of(trial)} seed {records.seed_of(trial)}: {said}")

    # each invocation gives a failing run ATTEMPTS tries more: a cause fixed since (a full disk) is not final
    errors = {pair: counted_errors(runs) for pair, runs in runs_by_pair(confirm).items()}
    allowed = _allowances(stage, errors, {})
    guard = FailureGuard(getattr(config, "max_failures", 5))  # faults of the environment in a row stop the stage
    tidied = waiting = False
    while True:
        if guard.tripped and guard.from_environment:
            raise EnvironmentStopped(guard.message())
        try:
            fail_dead(storage, confirm, config.heartbeat)  # a run whose worker died is queued again, not waited for
            queue_pairs(storage, confirm, stage.wanted(_states(confirm, stage, allowed)), budget, allowed)
            if not tidied:  # after the plan: a cut-short run's checkpoint stays for its retry, just queued
                tidy(storage, confirm, config)
                tidied = True
            if not confirm.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                states = _states(confirm, stage, allowed)
                wanted = [states[(arm["key"], seed)][0] for arm, seed in stage.wanted(states)]
                if RunState.RUNNING in wanted:
                    if stage.racing_on(states):  # a round under way: its next round or final test follows
                        if not waiting:
                            log.info("confirm: waiting for other workers' runs of this round; the next round "
                                     "or the final test follows")
                            waiting = True
                        time.sleep(RACE_POLL_SECONDS)
                        continue
                    log.info("confirm: other workers are finishing the last runs")
                    return None
                if RunState.MISSING in wanted:  # a race's next round, now that this one is decided
                    continue
                current = plan_stage(config, study, storage, confirm, budget)  # the search may have moved on
                if current is not None and current.same_as(stage):
                    stage = current  # the same arms and seeds; a race's plan as stored now (what it was fitted on)
                    break
                stage = current or stage
                allowed = _allowances(stage, errors, allowed)
                continue
            if run_retries(storage, confirm, objective, [after, line, guard]):  # interrupted runs first
                continue
            queued = len(confirm.get_trials(deepcopy=False, states=(TrialState.WAITING,))) if width > 1 else 0
            if queued > 1:  # the queued arms x seeds as one fused network
                run_batch(storage, confirm, objective, [after, line, guard], min(width, queued))
            else:
                run_next(storage, confirm, objective, [after, line, guard])
        except Exception as error:
            if (fault := environment_fault(error)) is None:
                raise
            guard.fault(fault)  # outside a run's record (planning, asking, telling)
            if not guard.tripped:
                log.warning(f"warning: the environment failed ({fault}); trying again")
                time.sleep(1.0)
    summary = _summary(config, stage, states, data, budget)
    summary["search_budget"] = records.budget(study).run()
    if summary["search_budget"] != budget:  # a target: what searching cheaply saved
        summary["cost"] = stage_cost(study, confirm, budget, len(stage.wanted(states)))
    with study_lock(storage, study.study_name):  # workers finishing their last runs at once: one verdict
        if written_meanwhile(records.confirmation(study), summary, started):
            log.info("confirm: another worker finished the last runs and wrote the verdict (shortcut-search report "
                     "and shortcut-search export show it)")
            return None
        summary["written_at"] = time.time()
        StudyKey.CONFIRMATION.write(study, summary)
    result(describe(summary))
    return summary


def _states(confirm: optuna.Study, stage: Stage, counted: dict[tuple[str, int], int]) \
        -> dict[tuple[str, int], tuple[RunState, float | None]]:
    """Where every (arm, seed) of ``stage`` stands (``confirm_plan.outcome``)."""
    pairs = runs_by_pair(confirm)
    return {(arm["key"], seed): outcome(pairs.get((arm["key"], seed), []), counted[(arm["key"], seed)])
            for arm in stage.arms for seed in stage.seeds}


def _allowances(stage: Stage, errors: dict, allowed: dict) -> dict[tuple[str, int], int]:
    """The errors each (arm, seed) of ``stage`` may still have: ``ATTEMPTS`` more than it had when the command
    started (``errors``), as already granted in ``allowed``. A race's round runs have ``ATTEMPTS`` in all,
    whatever the invocation: the rounds decide who goes on, so their outcome must not change with a re-run."""
    rounds = set(stage.race["round_seeds"]) if stage.race else set()
    return {**allowed, **{(arm["key"], seed): ATTEMPTS if seed in rounds else
                          allowed.get((arm["key"], seed), errors.get((arm["key"], seed), 0) + ATTEMPTS)
                          for arm in stage.arms for seed in stage.seeds}}


def _summary(config, stage: Stage, states, data, budget) -> dict[str, Any]:
    """The verdict on the stage's runs: the fixed stage's over every arm and seed; a race's over its final test
    (the survivor and the baseline on the seeds no round used), with the race's account (``race.account``)."""
    arms, seeds = stage.arms, stage.seeds
    if stage.race:
        standing = stage.standing(states)
        arms = [arm for arm in stage.arms if arm["key"] in (stage.arms[0]["key"], standing.survivor)]
        seeds = stage.race["final_seeds"]
    summary = summarise(arms, seeds, {pair: value for pair, (state, value) in states.items()
                                      if state in (RunState.DONE, RunState.DIVERGED) and pair[1] in seeds},
                        {pair for pair, (state, _) in states.items() if state == RunState.FAILED and pair[1] in seeds},
                        resolution=1 / len(data.y_val) if len(data.y_val) else None, budget=budget,
                        min_effect=config.min_effect, top=config.confirm_top)
    if stage.race:
        summary["race"] = race.account(stage.race, standing)
    return summary


# what makes two verdicts the same: the plan and every arm's runs and figures
EVIDENCE = ("candidate_trials", "seeds", "budget", "arms", "baseline_diverged", "baseline_failed")


def written_meanwhile(stored: dict[str, Any] | None, summary: dict[str, Any], started: float) -> bool:
    """Whether another worker wrote this very verdict (same candidates, seeds, budget and every arm's runs and
    figures) since this worker's command started (``started``, seconds since the epoch). An older one is this
    worker's to write again and show (a resumed search prints its verdict), and so is one on fewer finished runs.
    Clocks of machines sharing a study are assumed within seconds of each other (as the heartbeat assumes)."""
    if stored is None or stored.get("written_at", 0) < started:
        return False
    return all(json.dumps(stored.get(key), sort_keys=True) == json.dumps(summary.get(key), sort_keys=True)
               for key in EVIDENCE)
