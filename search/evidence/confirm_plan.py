"""The confirm stage's plan, read without training: which arms (the baseline, the paper's preset, the search's
current top K candidates) on which seeds, where each run stands, and whether a stored verdict is current."""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from models.schedules import Schedule, paper_preset_for, preset
from search import records
from search.evidence import power, race, surrogate
from search.records import BASELINE, CONFIRM_SEED_OFFSET, INTERRUPTED, RunState, TrialKey
from storage import MAX_RETRY

ATTEMPTS = 3  # runs of one arm and seed that fail with an error before the stage gives up on them


def arm_key(schedule: dict[str, Any], budget: dict[str, Any] | None = None) -> str:
    """An arm's identity in the confirm study: a digest of its schedule (and of its budget, when the stage trains
    at another one than the search), so a run is reused under any label, never at another budget."""
    canonical = Schedule.from_dict(schedule).to_dict()
    text = json.dumps([canonical, budget] if budget else canonical, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def target_budget(study: optuna.Study, target: dict[str, Any] | None) -> dict[str, Any] | None:
    """``target`` (``{"depth", "epochs", "subset"}``) when it differs from the search's own budget, else None."""
    own = records.budget(study).run()
    return target if target and target != own else None


AUTO_SEEDS = (2, 10)  # the range --confirm-seeds auto chooses from


def confirm_seeds(study: optuna.Study, count: int | None, top: int, min_effect: float) -> list[int]:
    """The stage's seeds, the study's seed + 2000 + i; ``count`` None: as many as a true gain of ``min_effect``
    needs to be found 80 % of the time, with sigma_d estimated from the baseline's replicas (3 without them)."""
    if count is None:
        count = auto_seed_count(study, top, min_effect)
    return [records.settings(study)["seed"] + CONFIRM_SEED_OFFSET + i for i in range(count)]


def race_runs(study: optuna.Study, budget: int | str, top: int, count: int | None, min_effect: float,
              target: dict[str, Any] | None = None) -> int | None:
    """The runs a race may spend (``--confirm-budget``): ``budget`` itself, or for ``auto`` the fixed stage's
    (top + 2) x its seeds (``confirm_seeds``); None for no race: ``fixed``, or ``auto`` on a study whose current
    verdict came from the fixed stage at ``target`` (a study confirmed before the race was the default keeps it)."""
    if budget == "fixed" or (budget == "auto" and is_settled(study, top, count, min_effect, target, None)):
        return None
    if budget == "auto":  # at most as many as an explicit budget may ask for: the seeds stay in their range
        return min((top + 2) * len(confirm_seeds(study, count, top, min_effect)), race.MAX_TRAININGS)
    return int(budget)


def auto_seed_count(study: optuna.Study, top: int, min_effect: float) -> int:
    values = [t.value for t in records.baseline_runs(study)]
    if len(values) < 2 or np.std(values, ddof=1) <= 0:
        return 3
    needed = power.seeds_needed(min_effect, math.sqrt(2) * float(np.std(values, ddof=1)), top, top + 2)
    return min(max(needed or AUTO_SEEDS[1], AUTO_SEEDS[0]), AUTO_SEEDS[1])


def plan_arms(study: optuna.Study, top: int, target: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The arms: baseline, the paper's preset for the data set and the depth the stage trains at, then the
    search's current top ``top`` candidates (a preset among them is not repeated). ``target``: the stage's budget
    when it is not the search's. Each arm carries its ``proxy``: its search trial's validation accuracy."""
    settings, budget = records.settings(study), target_budget(study, target)
    paper = paper_preset_for(settings["dataset"], (budget or settings)["depth"])
    searched = {records.preset_of(t): t.value for t in records.complete(study)
                if records.is_reference(t) and not records.is_replica(t)}
    arms = [_arm(study, BASELINE, preset(BASELINE).to_dict(), None, False, searched.get(BASELINE), budget),
            _arm(study, paper, preset(paper).to_dict(), None, False, searched.get(paper), budget)]
    for trial in records.candidates(study)[:top]:
        candidate = _candidate_arm(study, trial, budget)
        if records.preset_of(trial) == paper:
            arms[1] = candidate
        else:
            arms.append(candidate)
    return arms


def _arm(study, label, schedule, source_trial, candidate, proxy, budget) -> dict[str, Any]:
    return {"key": arm_key(schedule, budget), "label": label, "schedule": schedule, "source_trial": source_trial,
            "candidate": candidate, "proxy": proxy, "rank_in_search": records.rank_in_search(study, source_trial)}


def _candidate_arm(study, trial, budget) -> dict[str, Any]:
    name = records.preset_of(trial)
    return _arm(study, f"#{trial.number}" + (f" {name}" if name else ""), records.schedule_of(trial).to_dict(),
                trial.number, True, trial.value, budget)


def race_plan(study: optuna.Study, top: int, trainings: int, target: dict[str, Any] | None = None) \
        -> dict[str, Any] | None:
    """The race's plan (``search.evidence.race``): the baseline and a field of the surrogate's top ``race.FIELD``
    candidates, each with the surrogate's ``surrogate_mean`` and ``surrogate_sd``; the field's ``sizes`` per
    round; the rounds' seeds and the final test's (the study's seed + 2000 + i: rounds first, then the final
    test, so no final seed was raced on); ``fitted_on``, the trials the surrogate saw. None: no candidate."""
    budget = target_budget(study, target)
    estimates, fitted_on = surrogate.estimates(study)
    field = estimates[:race.FIELD]
    if not field:
        return None
    sizes, final = race.layout(len(field), trainings)
    first = records.settings(study)["seed"] + CONFIRM_SEED_OFFSET
    trials = {t.number: t for t in records.candidates(study)}
    arms = [_arm(study, BASELINE, preset(BASELINE).to_dict(), None, False, None, budget)]
    arms += [{**_candidate_arm(study, trials[e.trial], budget), "surrogate_mean": e.mean, "surrogate_sd": e.sd}
             for e in field]
    return {"top": top, "trainings": trainings, "budget": target, "fitted_on": fitted_on, "sizes": sizes,
            "surrogate": len(fitted_on) >= surrogate.MIN_TRIALS,
            "round_seeds": [first + i for i in range(len(sizes))],
            "final_seeds": [first + len(sizes) + i for i in range(final)], "arms": arms}


def runs_by_pair(confirm: optuna.Study) -> dict[tuple[str, int], list[optuna.trial.FrozenTrial]]:
    """The confirm study's trials by (arm key, seed)."""
    pairs: dict[tuple[str, int], list] = {}
    for trial in confirm.get_trials(deepcopy=False):
        key, seed = TrialKey.ARM.of(trial), records.seed_of(trial)
        schedule = TrialKey.SCHEDULE.of(trial)
        if key is None and schedule and "seed" in trial.params:  # a run of an earlier version: arm, seed params
            key, seed = arm_key(schedule), trial.params["seed"]
        if key is not None:
            pairs.setdefault((key, seed), []).append(trial)
    return pairs


def finished_run(runs: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The run that decides an (arm, seed): the first to complete or diverge (a duplicate trained by a race
    never overrules it, a divergence included)."""
    done = [t for t in runs if t.state == TrialState.COMPLETE
            or (t.state == TrialState.PRUNED and records.diverged_reason(t))]
    return min(done, key=lambda t: t.number, default=None)


def outcome(runs: list[optuna.trial.FrozenTrial], failures_allowed: int = ATTEMPTS) \
        -> tuple[RunState, float | None]:
    """Where one (arm, seed) stands: ``done`` (its accuracy), ``diverged``, ``running``, ``failed`` (
    ``failures_allowed`` of its attempts failed with an error of the run) or ``missing`` (to queue). An attempt cut
    short from outside (interrupted, its worker died, its heartbeat stopped, the environment failed it:
    ``records.cut_short``) is not the run's: it does not count, but for deaths past ``MAX_RETRY``."""
    if (decided := finished_run(runs)) is not None:
        return (RunState.DONE, decided.value) if decided.state == TrialState.COMPLETE else (RunState.DIVERGED, None)
    if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in runs):
        return RunState.RUNNING, None
    return (RunState.FAILED if counted_errors(runs) >= failures_allowed else RunState.MISSING), None


def counted_errors(runs: list[optuna.trial.FrozenTrial]) -> int:
    """The failed attempts that count against one (arm, seed): the run's own errors, and a worker's deaths (or
    silences) past ``MAX_RETRY``, for its own run may have killed it (out of memory); faults of the environment
    and interruptions never count (``records.cut_short``)."""
    failed = [t for t in runs if t.state == TrialState.FAIL]
    errors = [t for t in failed if not records.cut_short(t)]
    deaths = [t for t in failed if records.cut_short(t) and not records.from_environment(records.fail_reason(t))
              and records.fail_reason(t) != INTERRUPTED]
    return len(errors) + max(0, len(deaths) - MAX_RETRY)


def is_settled(study: optuna.Study, top: int, count: int | None, min_effect: float,
               target: dict[str, Any] | None = None, trainings: int | None = None) -> bool:
    """Whether the study holds a confirmation of its current top ``top`` candidates on the seeds and at the
    budget asked for (``trainings``: a race of that many runs, ``search.evidence.race``)."""
    summary = records.confirmation(study)
    budget = target or records.budget(study).run()
    if not summary or summary.get("top") != top or not is_current(study, summary) \
            or {key: (summary.get("budget") or {}).get(key) for key in budget} != budget:
        return False
    if trainings is not None:
        return (summary.get("race") or {}).get("trainings") == trainings
    return not summary.get("race") and summary["seeds"] == confirm_seeds(study, count, top, min_effect)


def is_current(study: optuna.Study, summary: dict[str, Any]) -> bool:
    """Whether a stored confirmation confirmed the search's current top candidates (a search extended since may
    have new ones); a race's, whether its surrogate saw the search's trials as they are now."""
    if summary.get("race"):
        return summary["race"].get("fitted_on") == surrogate.fitted_trials(study)
    arms = plan_arms(study, summary.get("top") or summary.get("candidates") or 0, summary.get("budget"))
    return sorted(arm["source_trial"] for arm in arms if arm["candidate"]) == summary.get("candidate_trials")
