"""The study's records: every key the tool writes on a study and its trials, and the one way to read them.

A search keeps everything in Optuna's storage: the study carries its settings, budget, seeds, confirmation and
evaluations as user attributes; each trial its schedule, seed, curves and fate. This module owns those keys (the
``StudyKey`` and ``TrialKey`` constants), the typed readers and writers, and the definitions every reader shares:

- a **baseline run** is a trial of f = 1 (``preset`` baseline): the one on the search's seed, and its replicas on
  seeds of their own (``replica``), whose spread is the study's noise floor;
- a **learned arm** (``learned``, ``skipinit``) trains its own per-block scalars: a reference, never a schedule
  to hand over;
- a **reference** is any warm-start trial (it has a ``preset``): the baseline runs, the paper's schedules and the
  learned arms; a **searched** trial is one the sampler proposed;
- a **candidate** is a trial whose fixed schedule could be the study's answer: a searched trial or one of the
  paper's schedules (never a baseline run, never a learned arm). Only candidates are the best schedule, are
  confirmed, are ranked (``rank_in_search``) and keep their models;
- **the ranking**: validation accuracy, best first, the earlier trial first on a tie (``ranked``).

Nothing else in the tree reads or writes ``user_attrs`` (a test checks): a reader that needs a record asks here.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from common.errors import UsageError
from common.log import without_experimental_warnings
from models.schedules import LEARNED, Schedule

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
BASELINE = "baseline"
CONFIRM_SUFFIX = ".confirm"  # the confirm stage's study is NAME.confirm, in the search's storage
EVALUATION_PREFIX = "evaluation:"  # one study attribute per evaluated schedule and budget: evaluation:<digest>
METRIC = "val_accuracy"


class StudyKey:
    """User attributes of a search study (and of its confirm study: ``PLAN``, ``ARMS``, ``SOURCE_STUDY``)."""

    SETTINGS = "settings"  # SearchConfig.study_settings(): compared on every resume
    EPOCHS = "epochs"  # epochs of a trial, resolved when the study was made
    VERSIONS = "versions"  # package versions of the last process that opened it
    WARM_STARTED = "warm_started"  # the references are queued
    BASELINE_SEEDS = "baseline_seeds"  # the search's seed and the baseline replicas'
    CONFIRM_SEEDS = "confirm_seeds"  # the confirm stage's
    CONFIRMATION = "confirmation"  # the confirm stage's summary (search.evidence.verdict)
    TARGET = "target"  # the --target-* flags last given ({"depth", "epochs", "subset"}, None where not given)
    PLAN = "plan"  # confirm study: {"top": K, "seeds": [...]}
    ARMS = "arms"  # confirm study: the arms it trains
    SOURCE_STUDY = "source_study"  # confirm study: the search study it confirms


class TrialKey:
    """User attributes of a trial."""

    PRESET = "preset"  # a reference's name (baseline, paper-..., learned, skipinit)
    REPLICA = "replica"  # a baseline run on a seed of its own
    SEED = "seed"  # the training seed
    RETRY_OF = "retry_of"  # the interrupted trial this one runs again
    FAMILY = "family"
    SCHEDULE = "schedule"  # Schedule.to_dict()
    X = "x"  # the blocks' positions on the axis
    VALUES = "values"  # the realised per-block factors
    SAMPLER_SEED = "sampler_seed"  # the seed of the process that sampled it
    EPOCHS_RUN = "epochs_run"
    TRAIN_LOSS = "train_loss"
    TRAIN_ACCURACY = "train_accuracy"
    WALL_SECONDS = "wall_seconds"
    IMAGES_PER_SECOND = "images_per_second"
    RESUMED_FROM_EPOCH = "resumed_from_epoch"
    LEARNED_VALUES = "learned_values"  # learned arms: the scalars after training
    DIVERGED = "diverged"  # why the run diverged (pruned)
    PRUNED_AT_EPOCH = "pruned_at_epoch"
    FAIL_REASON = "fail_reason"  # why it failed; "interrupted" for Ctrl-C or SIGTERM
    PROCESS = "process"  # the process running it: search.liveness.ProcessIdentity (host, pid, boot, namespace)
    HOST = "host"  # the same host and pid, readable at a glance
    HEARTBEAT = "heartbeat"  # on a journal: the time (s) the running trial last proved alive
    HEARTBEAT_SECONDS = "heartbeat_seconds"  # on a journal: how often its process writes that heartbeat
    PID = "pid"
    DUPLICATE_OF = "duplicate_of"  # confirm stage: the earlier run of the same arm and seed
    SKIPPED = "skipped"  # confirm stage: why a queued run was not trained (queued for another budget)
    SOURCE_TRIAL = "source_trial"  # confirm stage: the search trial the arm's schedule came from
    ARM = "arm"  # confirm stage: the arm's key (a digest of its schedule)
    LABEL = "label"  # confirm stage: the arm's name (baseline, paper-c10-r32, #7 linear)
    CANDIDATE = "candidate"  # confirm stage: the arm is one of the search's top candidates
    BUDGET = "budget"  # confirm stage: what the run trains, {"depth", "epochs", "subset"}


INTERRUPTED = "interrupted"  # the fail reason of a trial that Ctrl-C or SIGTERM cut short
# what a retry keeps of the trial it re-runs: what defines the run (the process, its fate and its files stay behind)
RETRY_KEEPS = (TrialKey.PRESET, TrialKey.SEED, TrialKey.REPLICA, TrialKey.ARM, TrialKey.LABEL, TrialKey.SCHEDULE,
               TrialKey.SOURCE_TRIAL, TrialKey.CANDIDATE, TrialKey.BUDGET)


# --- trials: reading --------------------------------------------------------------------------------------------

def attr(trial: FrozenTrial, key: str, default: Any = None) -> Any:
    """One user attribute of a trial, by its ``TrialKey``."""
    return trial.user_attrs.get(key, default)


def preset_of(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(TrialKey.PRESET)


def seed_of(trial: FrozenTrial) -> int | None:
    return trial.user_attrs.get(TrialKey.SEED)


def schedule_of(trial: FrozenTrial) -> Schedule | None:
    """The trial's schedule, or None before it recorded one."""
    data = trial.user_attrs.get(TrialKey.SCHEDULE)
    return Schedule.from_dict(data) if data else None


def schedule_text(trial: FrozenTrial) -> str:
    """``paper-c10-r32 = peak(...)``, ``linear(start=1.3, end=0.9)`` or, before it recorded one, its params."""
    schedule = schedule_of(trial)
    text = schedule.describe() if schedule else str(trial.params)
    return f"{preset_of(trial)} = {text}" if preset_of(trial) else text


def label(trial: FrozenTrial) -> str:
    """``#7 linear``, ``#0 baseline``: how figures and tables name a trial."""
    return f"#{trial.number} {preset_of(trial) or attr(trial, TrialKey.FAMILY, 'trial')}"


def values_of(trial: FrozenTrial) -> list[float]:
    return trial.user_attrs.get(TrialKey.VALUES, [])


def curve(trial: FrozenTrial, key: str) -> list[float]:
    """A per-epoch curve the trial kept: ``TrialKey.TRAIN_LOSS`` or ``TrialKey.TRAIN_ACCURACY``."""
    return trial.user_attrs.get(key) or []


def fail_reason(trial: FrozenTrial, default: str | None = None) -> str | None:
    return trial.user_attrs.get(TrialKey.FAIL_REASON, default)


def diverged_reason(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(TrialKey.DIVERGED)


def is_baseline_run(trial: FrozenTrial, replicas: bool = True) -> bool:
    """f = 1: the baseline on the search's seed, and with ``replicas`` its runs on seeds of their own."""
    return preset_of(trial) == BASELINE and (replicas or not trial.user_attrs.get(TrialKey.REPLICA))


def is_replica(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(TrialKey.REPLICA))


def is_learned_arm(trial: FrozenTrial) -> bool:
    """A ``learned`` or ``skipinit`` trial: a reference on the study's budget, not a schedule to hand over."""
    return preset_of(trial) in LEARNED


def is_reference(trial: FrozenTrial) -> bool:
    """A warm-start trial (baseline runs, the paper's schedules, the learned arms): never pruned."""
    return preset_of(trial) is not None


def is_candidate(trial: FrozenTrial) -> bool:
    """A fixed schedule that could be the answer: searched, or one of the paper's (not f = 1, not learned)."""
    return not is_baseline_run(trial) and not is_learned_arm(trial)


def is_searched(trial: FrozenTrial) -> bool:
    """A trial the sampler proposed (no reference)."""
    return not is_reference(trial)


def ranked(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Completed trials by validation accuracy, best first; on a tie the earlier trial first. The one ranking."""
    return sorted(trials, key=lambda t: (-t.value, t.number))


# --- trials: writing --------------------------------------------------------------------------------------------

def write(trial: optuna.Trial, key: str, value: Any) -> None:
    """Record one user attribute on a running trial, by its ``TrialKey``."""
    trial.set_user_attr(key, value)


def write_schedule(trial: optuna.Trial, schedule: Schedule, x: list[float], values: list[float]) -> None:
    """What a trial trains: its family, schedule, and the schedule realised at the study's blocks."""
    trial.set_user_attr(TrialKey.FAMILY, schedule.family)
    trial.set_user_attr(TrialKey.SCHEDULE, schedule.to_dict())
    trial.set_user_attr(TrialKey.X, [round(float(v), 6) for v in x])
    trial.set_user_attr(TrialKey.VALUES, [round(float(v), 6) for v in values])


def write_run(trial: optuna.Trial, result, wall_seconds: float) -> None:
    """A finished training run's record (``training.loop.RunResult``): epochs, curves, time, speed, what it
    resumed from and what it learned."""
    trial.set_user_attr(TrialKey.EPOCHS_RUN, result.epochs_run)
    trial.set_user_attr(TrialKey.TRAIN_LOSS, [round(v, 5) for v in result.train_loss])
    trial.set_user_attr(TrialKey.TRAIN_ACCURACY, [round(v, 5) for v in result.train_accuracy])
    trial.set_user_attr(TrialKey.WALL_SECONDS, round(wall_seconds, 2))
    trial.set_user_attr(TrialKey.IMAGES_PER_SECOND, round(result.images_per_second, 1))
    if result.resumed_from_epoch:
        trial.set_user_attr(TrialKey.RESUMED_FROM_EPOCH, result.resumed_from_epoch)
    if result.learned_values is not None:
        trial.set_user_attr(TrialKey.LEARNED_VALUES, [round(v, 6) for v in result.learned_values])


def write_fail_reason(storage, study_name: str, number: int, reason: str) -> None:
    """Record why trial ``number`` failed, through the storage (for a trial this process does not run)."""
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)
    storage.set_trial_user_attr(trial_id, TrialKey.FAIL_REASON, reason)


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


def enqueue_confirm_run(confirm: optuna.Study, arm: dict[str, Any], seed: int, budget: dict[str, Any]) -> None:
    """Queue one confirm run: ``arm`` (``{"key", "label", "schedule", "source_trial", "candidate"}``) on ``seed``
    at ``budget``. The arm and seed are records, not parameters: the arms change as the search's top K does, and
    a categorical parameter's choices cannot."""
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
    """The trial this one runs again (whose checkpoint it inherits), or None."""
    if (number := trial.user_attrs.get(TrialKey.RETRY_OF)) is not None:
        return number
    return getattr(trial, "system_attrs", {}).get("failed_trial")  # retried by an earlier version (Optuna's)


# --- the study ------------------------------------------------------------------------------------------------

def settings(study: optuna.Study) -> dict[str, Any]:
    """The settings the study was made with (``SearchConfig.study_settings()``); empty for a foreign study."""
    return study.user_attrs.get(StudyKey.SETTINGS) or {}


def stored_settings(storage, study_name: str) -> dict[str, Any] | None:
    """The settings of study ``study_name`` read through ``storage`` (None: not made by this tool, or being made)."""
    return storage.get_study_user_attrs(storage.get_study_id_from_name(study_name)).get(StudyKey.SETTINGS)


def write_settings(study: optuna.Study, study_settings: dict[str, Any], epochs: int) -> None:
    study.set_user_attr(StudyKey.SETTINGS, study_settings)
    study.set_user_attr(StudyKey.EPOCHS, epochs)
    name_metric(study)


def name_metric(study: optuna.Study) -> None:
    """Name the study's value ``METRIC`` (what the dashboard shows), without Optuna's "experimental" warning."""
    with without_experimental_warnings():
        study.set_metric_names([METRIC])


def epochs(study: optuna.Study) -> int | None:
    """Epochs of one trial, as resolved when the study was made."""
    return study.user_attrs.get(StudyKey.EPOCHS, settings(study).get("epochs"))


def depth(study: optuna.Study) -> int | None:
    """The searched depth, or None for a study this tool did not make."""
    return settings(study).get("depth")


def budget(study: optuna.Study) -> dict[str, Any]:
    """What a trial of the study trains: ``{"depth", "dataset", "epochs", "subset", "batch_size"}``."""
    stored = settings(study)
    return {"depth": stored.get("depth"), "dataset": stored.get("dataset"), "epochs": epochs(study),
            "subset": stored.get("subset"), "batch_size": stored.get("batch_size")}


def require_settings(study: optuna.Study) -> dict[str, Any]:
    """The settings, or UsageError for a study this tool did not make."""
    if not (stored := settings(study)):
        raise UsageError(f"study: {study.study_name!r} was not made by search.run")
    return stored


def study_value(study: optuna.Study, key: str, default: Any = None) -> Any:
    """One user attribute of the study, by its ``StudyKey``."""
    return study.user_attrs.get(key, default)


def write_study_value(study: optuna.Study, key: str, value: Any) -> None:
    study.set_user_attr(key, value)


def confirmation(study: optuna.Study) -> dict[str, Any] | None:
    """The confirm stage's summary, once the stage finished (one written by an earlier version, without a
    verdict, is out of date: the stage runs again, reusing its runs)."""
    summary = study.user_attrs.get(StudyKey.CONFIRMATION)
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


# --- trials of the study ------------------------------------------------------------------------------------------

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


def study_seeds(study: optuna.Study) -> list[int]:
    """Every seed the study trained with: the search's, its trials' (baseline replicas), its confirm stage's."""
    seeds = {seed_of(t) for t in study.get_trials(deepcopy=False)}
    seeds.add(settings(study).get("seed"))
    seeds.update(study.user_attrs.get(StudyKey.CONFIRM_SEEDS, []))
    return sorted(seed for seed in seeds if seed is not None)


# --- evaluations (search.evaluate's records on the study) -----------------------------------------------------

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
    """The most recent evaluation of this schedule recorded on the study on the study's own budget (depth, data
    set, epochs and subset as searched), or None."""
    verdict_on = (confirmation(study) or {}).get("budget") or {}
    scope = {key: value for key, value in {**budget(study), **verdict_on}.items() if key != "batch_size"}
    matches = [record for record in evaluations(study) if record["schedule"] == schedule.to_dict()
               and all(record.get(key) == value for key, value in scope.items())]
    return max(matches, key=lambda record: record.get("finished_at", ""), default=None)
