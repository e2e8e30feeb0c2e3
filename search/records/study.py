"""A study's own records: its settings and budget, its seeds, the confirm stage's summary, the evaluations
recorded on it, the names of its studies, and the schema version with the one step that migrates an older study."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import optuna
from optuna.trial import TrialState

from common.errors import UsageError
from common.log import without_experimental_warnings
from models.schedules import Schedule
from search.records.keys import CONFIRM_SUFFIX, EVALUATION_PREFIX, METRIC, SCHEMA_VERSION, StudyKey, TrialKey
from search.records.trials import seed_of
from search.records.values import Budget, ConfirmationSummary


def settings(study: optuna.Study) -> dict[str, Any]:
    """The settings the study was made with (``SearchConfig.study_settings()``); empty for a foreign study."""
    return StudyKey.SETTINGS.of(study) or {}


def stored_settings(storage, study_name: str) -> dict[str, Any] | None:
    """The settings of study ``study_name`` read through ``storage`` (None: not made by this tool, or being made)."""
    return StudyKey.SETTINGS.of_stored(storage, study_name)


def holds_records(storage, study_name: str) -> bool:
    """Whether study ``study_name`` holds any record of its own, read through ``storage``."""
    return bool(storage.get_study_user_attrs(storage.get_study_id_from_name(study_name)))


def write_settings(study: optuna.Study, study_settings: dict[str, Any], epochs: int) -> None:
    StudyKey.SCHEMA.write(study, SCHEMA_VERSION)
    StudyKey.SETTINGS.write(study, study_settings)
    StudyKey.EPOCHS.write(study, epochs)
    name_metric(study)


def name_metric(study: optuna.Study) -> None:
    """Name the study's value ``METRIC`` (what the dashboard shows), without Optuna's "experimental" warning."""
    with without_experimental_warnings():
        study.set_metric_names([METRIC])


def schema(study: optuna.Study) -> int:
    """The schema version of the study's records (1: written before versions were stored)."""
    return StudyKey.SCHEMA.of(study, 1)


def migrate(storage, study: optuna.Study) -> bool:
    """Bring a search or confirm study of an older schema to ``SCHEMA_VERSION`` in one step (a writer calls it when
    it opens a study of this tool); True when it migrated. Idempotent: processes opening the study at once write
    the same values. From 1:

    - a confirm stage's summary written without a verdict is out of date: cleared, so the stage runs again
      (reusing its runs);
    - a trial still waiting or running that Optuna's retry callback queued gets ``retry_of`` (finished trials are
      read-only in Optuna: ``retries.retry_of`` reads their ``failed_trial``);
    - a running trial that recorded only ``host`` and ``pid`` gets its ``process`` record, which liveness reads.

    Optuna keeps finished trials read-only, so two schema-1 readings stay where the records are read: Optuna's
    ``failed_trial`` of a finished retry (``retries.retry_of``) and the arm and seed parameters of a finished
    confirm run (``confirm_plan.runs_by_pair``).
    """
    if schema(study) >= SCHEMA_VERSION or not (settings(study) or is_confirm_study(study.study_name)):
        return False
    summary = StudyKey.CONFIRMATION.of(study)
    if isinstance(summary, dict) and "verdict" not in summary:
        StudyKey.CONFIRMATION.write(study, None)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
        failed = trial.system_attrs.get("failed_trial")
        host, pid = TrialKey.HOST.of(trial), TrialKey.PID.of(trial)
        try:  # a trial that finishes meanwhile is read-only: its records are read as they are
            if TrialKey.RETRY_OF.of(trial) is None and failed is not None:
                TrialKey.RETRY_OF.write_stored(storage, study.study_name, trial.number, failed)
            if TrialKey.PROCESS.of(trial) is None and host is not None and isinstance(pid, int):
                TrialKey.PROCESS.write_stored(storage, study.study_name, trial.number, {"host": host, "pid": pid})
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    StudyKey.SCHEMA.write(study, SCHEMA_VERSION)
    return True


def epochs(study: optuna.Study) -> int | None:
    """Epochs of one trial, as resolved when the study was made."""
    return StudyKey.EPOCHS.of(study, settings(study).get("epochs"))


def depth(study: optuna.Study) -> int | None:
    """The searched depth, or None for a study this tool did not make."""
    return settings(study).get("depth")


def budget(study: optuna.Study) -> Budget:
    """What a trial of the study trains."""
    stored = settings(study)
    return Budget(depth=stored.get("depth"), dataset=stored.get("dataset"), epochs=epochs(study),
                  subset=stored.get("subset"), batch_size=stored.get("batch_size"))


def verdict_budget(study: optuna.Study) -> Budget:
    """The budget the study's verdict was reached at: the search's, or its confirm stage's target."""
    return budget(study).at((confirmation(study) or {}).get("budget"))


def require_settings(study: optuna.Study) -> dict[str, Any]:
    """The settings, or UsageError for a study this tool did not make."""
    if not (stored := settings(study)):
        raise UsageError(f"study: {study.study_name!r} was not made by shortcut-search run")
    return stored


def confirmation(study: optuna.Study) -> ConfirmationSummary | None:
    """The confirm stage's summary, once the stage finished."""
    summary = StudyKey.CONFIRMATION.of(study)
    return summary if isinstance(summary, dict) and "verdict" in summary else None


def confirm_study_name(name: str) -> str:
    return name + CONFIRM_SUFFIX


def is_confirm_study(name: str) -> bool:
    return name.endswith(CONFIRM_SUFFIX)


def search_study_name(storage, name: str | None) -> str:
    """``name``, or the storage's only search study (confirm studies do not count); UsageError when it holds none
    or several."""
    if name and is_confirm_study(name):
        raise UsageError(f"study: {name!r} is a confirm stage; name its search study, "
                         f"{name[:-len(CONFIRM_SUFFIX)]!r}")
    if name:
        return name
    names = [study for study in optuna.get_all_study_names(storage) if not is_confirm_study(study)]
    if len(names) != 1:
        listing = ", ".join(names) if names else "none"
        raise UsageError(f"study: name one with --study (studies in this storage: {listing})")
    return names[0]


def study_seeds(study: optuna.Study) -> list[int]:
    """Every seed the study trained with: the search's, its trials' (baseline replicas), its confirm stage's."""
    seeds = {seed_of(t) for t in study.get_trials(deepcopy=False)}
    seeds.add(settings(study).get("seed"))
    seeds.update(StudyKey.CONFIRM_SEEDS.of(study, []))
    return sorted(seed for seed in seeds if seed is not None)


# --- evaluations (shortcut-search evaluate's records on the study) -------------------------------------------------

def evaluation_key(record: dict[str, Any]) -> str:
    """The study attribute an evaluation is stored under: one per schedule, depth, data set, epochs and subset."""
    scope = {key: record.get(key) for key in ("depth", "dataset", "epochs", "subset")}
    canonical = json.dumps({**Schedule.from_dict(record["schedule"]).to_dict(), **scope}, sort_keys=True)
    return EVALUATION_PREFIX + hashlib.sha1(canonical.encode()).hexdigest()[:12]


def record_evaluation(study: optuna.Study, record: dict[str, Any]) -> None:
    """Store an evaluation on the study; a later one on the same schedule and budget replaces it."""
    study.set_user_attr(evaluation_key(record), record)


def evaluations(study: optuna.Study) -> list[dict[str, Any]]:
    return [value for key, value in study.user_attrs.items() if key.startswith(EVALUATION_PREFIX)]


def evaluation_for(study: optuna.Study, schedule: Schedule) -> dict[str, Any] | None:
    """The most recent evaluation of this schedule recorded on the study at the budget its verdict was reached
    at (depth, data set, epochs and subset), or None."""
    scope = {key: value for key, value in verdict_budget(study).as_dict().items() if key != "batch_size"}
    matches = [record for record in evaluations(study) if record["schedule"] == schedule.to_dict()
               and all(record.get(key) == value for key, value in scope.items())]
    return max(matches, key=lambda record: record.get("finished_at", ""), default=None)
