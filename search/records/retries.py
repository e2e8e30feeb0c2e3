"""Building trials: the warm start's references and the confirm stage's runs queued once each, and retries of
trials cut short, which keep what defines the run and nothing of the process that died."""
from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.records.keys import RETRY_KEEPS, TrialKey
from search.records.trials import is_reference, is_replica, preset_of, seed_of
from search.records.values import Arm


def enqueue_reference(study: optuna.Study, params: dict[str, Any], preset: str, seed: int | None = None) -> bool:
    """Queue the reference ``preset`` (on a ``seed`` of its own: a baseline replica) unless the study holds it
    already, in any state: a warm start killed half-way and run again queues each reference once. True when
    queued."""
    held = {(preset_of(t), seed_of(t) if is_replica(t) else None) for t in study.get_trials(deepcopy=False)
            if is_reference(t)}
    if (preset, seed) in held:
        return False
    attrs: dict[str, Any] = {TrialKey.PRESET: preset}
    if seed is not None:
        attrs.update({TrialKey.SEED: seed, TrialKey.REPLICA: True})
    study.enqueue_trial(params, user_attrs=attrs)
    return True


def enqueue_confirm_run(confirm: optuna.Study, arm: Arm, seed: int, budget: dict[str, Any]) -> None:
    """Queue one confirm run: ``arm`` on ``seed`` at ``budget`` (``Budget.run()``). The arm and seed are records,
    not parameters: the arms change as the search's top K does, and a categorical parameter's choices cannot."""
    confirm.enqueue_trial({}, user_attrs={
        TrialKey.ARM: arm["key"], TrialKey.SEED: seed, TrialKey.LABEL: arm["label"],
        TrialKey.SCHEDULE: arm["schedule"], TrialKey.SOURCE_TRIAL: arm["source_trial"],
        TrialKey.CANDIDATE: arm["candidate"], TrialKey.BUDGET: budget})


def add_retry(study: optuna.Study, trial: FrozenTrial, history: list[int]) -> None:
    """Queue ``trial`` again: the same parameters and fixed parameters, the records that define the run
    (``RETRY_KEEPS``), ``retry_of`` the trial, and ``history`` the retries that count towards the limit."""
    attrs = {key: trial.user_attrs[key] for key in RETRY_KEEPS if key in trial.user_attrs}
    attrs[TrialKey.RETRY_OF] = trial.number
    system = {"retry_history": history, **({"failed_trial": history[0]} if history else {})}
    if "fixed_params" in trial.system_attrs:
        system["fixed_params"] = trial.system_attrs["fixed_params"]
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=trial.params,
                                              distributions=trial.distributions, user_attrs=attrs,
                                              system_attrs=system))


def retry_history(trial: FrozenTrial) -> list[int]:
    """The failed trials this one retries, oldest first (an interrupt does not count)."""
    return list(trial.system_attrs.get("retry_history", []))


def retry_of(trial: FrozenTrial) -> int | None:
    """The trial this one runs again (whose checkpoint it inherits), or None. Schema 1 (Optuna's retry callback)
    left only Optuna's ``failed_trial``: the migration rewrites it on trials still waiting or running, and Optuna
    keeps finished trials read-only, so for those it is read here."""
    if (number := TrialKey.RETRY_OF.of(trial)) is not None:
        return number
    return getattr(trial, "system_attrs", {}).get("failed_trial")
