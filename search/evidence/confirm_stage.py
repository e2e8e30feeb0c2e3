"""The confirm stage: re-train the search's top schedules, the baseline and the paper's preset on fresh seeds.

A search picks its best schedule from single runs on one seed: the best of N is high partly by chance. This stage
trains the top K completed schedules, the baseline and the study's paper preset again with S seeds of their own
(the study's seed + 2000 + i: disjoint from the search's and the baseline replicas'), on the same split and
budget, judged on validation and paired by seed with the baseline (``verdict`` sums it up).

The runs are trials of a study of their own, ``<study>.confirm``, in the same storage: resumable (kill it and
run the command again; nothing done twice), shared by any number of workers or machines, visible in
optuna-dashboard, and never counted toward the search's ``--trials``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import optuna
from optuna.trial import TrialState

from common.errors import UsageError
from common.log import log, result
from models.schedules import Schedule, paper_preset_for, preset
from search import records
from search.config import CONFIRM_SEED_OFFSET
from search.evidence.verdict import describe, summarise
from search.interrupts import raise_if_interrupted
from search.keep import ModelKeeper
from search.liveness import clear_zombies, record_process
from search.objective import train_trial
from search.records import BASELINE, StudyKey, TrialKey
from search.study import requeue_interrupted


def plan_arms(study: optuna.Study, top: int) -> list[dict[str, Any]]:
    """The arms: baseline, the study's paper preset, then the top ``top`` completed schedules by validation
    accuracy (baseline runs and the learned arms excluded; a preset among them is not repeated)."""
    settings = records.settings(study)
    paper = paper_preset_for(settings["dataset"], settings["depth"])
    arms = [{"label": BASELINE, "schedule": preset(BASELINE).to_dict(), "source_trial": None, "candidate": False},
            {"label": paper, "schedule": preset(paper).to_dict(), "source_trial": None, "candidate": False}]
    candidates = records.ranked(t for t in records.schedule_trials(study) if not records.is_baseline_run(t))
    for trial in candidates[:top]:
        name = records.preset_of(trial)
        label = f"#{trial.number}" + (f" {name}" if name else "")
        if name == paper:
            arms[1].update(label=label, source_trial=trial.number, candidate=True)
        else:
            arms.append({"label": label, "schedule": records.schedule_of(trial).to_dict(),
                         "source_trial": trial.number, "candidate": True})
    return arms


def open_confirm_study(storage, study: optuna.Study, top: int, seeds: int) -> optuna.Study:
    """The confirm study, created with its arms and seeds on first use; every (arm, seed) run queued once.

    A later call with another ``top`` or ``seeds`` than the stage was planned with is refused."""
    planned = {"top": top, "seeds": [records.settings(study)["seed"] + CONFIRM_SEED_OFFSET + i
                                     for i in range(seeds)]}
    name = records.confirm_study_name(study.study_name)
    arms = None
    if name not in optuna.get_all_study_names(storage):  # checked before anything is written
        arms = plan_arms(study, top)
        if not any(arm["candidate"] for arm in arms):
            raise UsageError(f"study: {study.study_name!r} has no completed schedule to confirm yet")
    confirm = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                  sampler=optuna.samplers.RandomSampler(), load_if_exists=True)
    if records.study_value(confirm, StudyKey.PLAN) is None:
        records.write_study_value(confirm, StudyKey.PLAN, planned)
        records.write_study_value(confirm, StudyKey.ARMS, arms or plan_arms(study, top))
        records.write_study_value(confirm, StudyKey.SOURCE_STUDY, study.study_name)
        confirm.set_metric_names([records.METRIC])
        records.write_study_value(study, StudyKey.CONFIRM_SEEDS, planned["seeds"])
    elif (plan := records.study_value(confirm, StudyKey.PLAN)) != planned:
        raise UsageError(f"confirm: {study.study_name!r} was confirmed with top {plan['top']} and "
                         f"{len(plan['seeds'])} seeds; ask for the same (--top {plan['top']} --seeds "
                         f"{len(plan['seeds'])}), or search again under a new --study")
    labels = [arm["label"] for arm in records.study_value(confirm, StudyKey.ARMS)]
    for seed in planned["seeds"]:  # seed by seed, so that early results already pair up
        for label in labels:
            confirm.enqueue_trial({"arm": label, "seed": seed}, skip_if_exists=True)
    clear_zombies(storage, confirm)
    requeue_interrupted(confirm)
    return confirm


class ConfirmObjective:
    """One confirm run: the arm's schedule on the arm's seed, the search's budget, no pruning."""

    def __init__(self, config, data, arms: list[dict[str, Any]], seeds: list[int], keeper=None):
        self.config, self.data, self.seeds, self.keeper = config, data, seeds, keeper
        self.arms = {arm["label"]: arm for arm in arms}

    def __call__(self, trial: optuna.Trial) -> float:
        record_process(trial)
        label = trial.suggest_categorical("arm", list(self.arms))
        seed = trial.suggest_categorical("seed", self.seeds)
        # a worker that found the queue empty gets a sampled pair: it runs only if nobody ran it or is running it
        twins = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                 if t.number < trial.number and t.params == {"arm": label, "seed": seed}]
        if twins:
            records.write(trial, TrialKey.DUPLICATE_OF, twins[0].number)
            raise optuna.TrialPruned(f"duplicate of trial {twins[0].number}")
        records.write(trial, TrialKey.SCHEDULE, self.arms[label]["schedule"])
        records.write(trial, TrialKey.SOURCE_TRIAL, self.arms[label]["source_trial"])

        def report(epoch: int, accuracy: float) -> bool:
            raise_if_interrupted()
            trial.report(accuracy, epoch)
            return False

        run = train_trial(trial, dataclasses.replace(self.config.train, seed=seed),
                          Schedule.from_dict(self.arms[label]["schedule"]), self.data, report,
                          self.config.checkpoints(trial.study.study_name), self.keeper, self.config.tensorboard)
        return run.final_val_accuracy


def run_confirm(config, study: optuna.Study, storage, data) -> dict[str, Any] | None:
    """Work through the confirm queue (with any other workers); the summary once every run has finished, stored
    on the search study as ``confirmation``, else None. The ``--keep-models`` best confirm runs keep their trained
    models, as the search's trials do."""
    confirm = open_confirm_study(storage, study, config.confirm_top, config.confirm_seeds)
    arms, seeds = records.study_value(confirm, StudyKey.ARMS), records.study_value(confirm, StudyKey.PLAN)["seeds"]
    objective = ConfirmObjective(config, data, arms, seeds, ModelKeeper.for_search(config, storage))
    log.info(f"confirm: {len(arms)} arms x {len(seeds)} seeds ({len(arms) * len(seeds)} runs) in study "
             f"{confirm.study_name!r}")

    def line(_, trial) -> None:
        if trial.state == TrialState.COMPLETE:
            outcome = f"val {trial.value:.4f}"
        elif (twin := records.attr(trial, TrialKey.DUPLICATE_OF)) is not None:
            outcome = f"already run as trial {twin}"
        else:
            outcome = records.diverged_reason(trial) or records.fail_reason(trial, trial.state.name)
        log.info(f"confirm {trial.params.get('arm')} seed {trial.params.get('seed')}: {outcome}")

    while confirm.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        confirm.optimize(objective, n_trials=1, callbacks=[line], catch=(Exception,), gc_after_trial=True)
    if confirm.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        log.info("confirm: other workers are finishing the last runs")
        return None
    summary = summarise(study, confirm)
    records.write_study_value(study, StudyKey.CONFIRMATION, summary)
    result(describe(summary))
    return summary
