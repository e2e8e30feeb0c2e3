"""The study's trials by what they are, and **the one ranking**: validation accuracy, best first, the earlier
trial first on a tie (``ranked``). Every reader that needs "the best", "the candidates" or "how many finished"
asks here."""
from __future__ import annotations

import math
from typing import Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from common.errors import UsageError
from search.records.keys import FINISHED
from search.records.retries import retry_of
from search.records.trials import is_baseline_run, is_candidate, is_learned_arm, is_reference


def rank_key(value: float | None, number: int) -> tuple[float, int]:
    """The one ranking's order: validation accuracy, best first; on a tie the earlier trial first; a trial
    without a value yet (running) last."""
    return (-value if value is not None else math.inf, number)


def ranked(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Trials by the one ranking (``rank_key``), best first."""
    return sorted(trials, key=lambda t: rank_key(t.value, t.number))


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def finished_count(study: optuna.Study) -> int:
    return len(finished(study))


def complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def baseline_runs(study: optuna.Study, replicas: bool = True) -> list[FrozenTrial]:
    """The completed baseline runs: on the search's seed, and with ``replicas`` on the replicas' seeds."""
    return [t for t in complete(study) if is_baseline_run(t, replicas)]


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The completed baseline trial (f = 1 on the study's budget and seed, not a replica), if any."""
    runs = baseline_runs(study, replicas=False)
    return runs[0] if runs else None


def baseline_pending(study: optuna.Study) -> bool:
    """True while no baseline trial has completed but one waits in the queue."""
    if baseline_trial(study) is not None:
        return False
    return any(is_baseline_run(t) for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def candidates(study: optuna.Study) -> list[FrozenTrial]:
    """The completed candidates, ranked (``ranked``): the schedules that could be the study's answer."""
    return ranked(t for t in complete(study) if is_candidate(t))


def candidate_pool(study: optuna.Study) -> list[FrozenTrial]:
    """Every finished candidate, pruned ones included: what the best was selected from."""
    return [t for t in finished(study) if is_candidate(t)]


def rank_in_search(study: optuna.Study, number: int | None) -> int | None:
    """Trial ``number``'s rank among the completed candidates (1 = best), or None."""
    numbers = [t.number for t in candidates(study)]
    return numbers.index(number) + 1 if number in numbers else None


def learned_arms(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in complete(study) if is_learned_arm(t)]


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The best candidate (``ranked``), or UsageError when none completed."""
    if not (ranking := candidates(study)):
        raise UsageError(f"study: {study.study_name!r} has no completed schedule yet besides its references; run "
                         f"the search (with more --trials)")
    return ranking[0]


def reference_count(study: optuna.Study) -> int:
    """References the study holds, run or queued (failed attempts and their retries counted once)."""
    return len([t for t in study.get_trials(deepcopy=False) if is_reference(t) and retry_of(t) is None])
