"""One trial's records: what it trains and its fate, written as it runs and read after; and what a trial is:

- a **baseline run** is a trial of f = 1 (``preset`` baseline): the one on the search's seed, and its replicas on
  seeds of their own (``replica``), whose spread is the study's noise floor;
- a **learned arm** (``learned``, ``skipinit``) trains its own per-block scalars: a reference, never a schedule
  to hand over;
- a **reference** is any warm-start trial (it has a ``preset``): the baseline runs, the paper's schedules and the
  learned arms; a **searched** trial is one the sampler proposed;
- a **candidate** is a trial whose fixed schedule could be the study's answer: a searched trial or one of the
  paper's schedules (never a baseline run, never a learned arm). Only candidates are the best schedule, are
  confirmed, are ranked (``rank_in_search``) and keep their models.
"""
from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from models.schedules import LEARNED, Schedule
from search.records.keys import (BASELINE, DIED, ENVIRONMENT, ENVIRONMENT_SIGNS, INTERRUPTED, SILENT, Key, TrialKey,
                                 TrialRole)


def preset_of(trial: FrozenTrial) -> str | None:
    return TrialKey.PRESET.of(trial)


def seed_of(trial: FrozenTrial) -> int | None:
    return TrialKey.SEED.of(trial)


def schedule_of(trial: FrozenTrial) -> Schedule | None:
    """The trial's schedule, or None before it recorded one."""
    data = TrialKey.SCHEDULE.of(trial)
    return Schedule.from_dict(data) if data else None


def schedule_text(trial: FrozenTrial) -> str:
    """``paper-c10-r32 = peak(...)``, ``linear(start=1.3, end=0.9)`` or, before it recorded one, its params."""
    schedule = schedule_of(trial)
    text = schedule.describe() if schedule else str(trial.params)
    return f"{preset_of(trial)} = {text}" if preset_of(trial) else text


def label(trial: FrozenTrial) -> str:
    """``#7 linear``, ``#0 baseline``: how figures and tables name a trial."""
    return f"#{trial.number} {preset_of(trial) or TrialKey.FAMILY.of(trial, 'trial')}"


def curve(trial: FrozenTrial, key: Key[list]) -> list[float]:
    """A per-epoch curve the trial kept: ``TrialKey.TRAIN_LOSS`` or ``TrialKey.TRAIN_ACCURACY``."""
    return key.of(trial) or []


def fail_reason(trial: FrozenTrial, default: str | None = None) -> str | None:
    return TrialKey.FAIL_REASON.of(trial, default)


def from_environment(reason: str | None) -> bool:
    """Whether a fail reason says the environment cut the run short (no space, an I/O error, the storage lost, a
    permission changed under it), not the run itself: written with ``ENVIRONMENT`` first, or an older version's
    reason in the words of such a fault (``ENVIRONMENT_SIGNS``)."""
    return reason is not None and (reason.startswith(ENVIRONMENT) or any(sign in reason for sign in ENVIRONMENT_SIGNS))


def cut_short(trial: FrozenTrial) -> bool:
    """A failed trial whose run was stopped from outside, not one that failed on its own: interrupted (Ctrl-C,
    SIGTERM), its worker died, its heartbeat stopped, the environment failed it (no space, an I/O error, the
    storage lost: ``from_environment``), or no reason at all (Optuna's stale-trial check writes none, and
    neither does a kill before the reason was written; an error of the run writes one)."""
    reason = fail_reason(trial)
    return trial.state == TrialState.FAIL and (reason is None or reason == INTERRUPTED
                                               or reason.startswith((DIED, SILENT)) or from_environment(reason))


def diverged_reason(trial: FrozenTrial) -> str | None:
    return TrialKey.DIVERGED.of(trial)


def is_baseline_run(trial: FrozenTrial, replicas: bool = True) -> bool:
    """f = 1: the baseline on the search's seed, and with ``replicas`` its runs on seeds of their own."""
    return preset_of(trial) == BASELINE and (replicas or not TrialKey.REPLICA.of(trial))


def is_replica(trial: FrozenTrial) -> bool:
    return bool(TrialKey.REPLICA.of(trial))


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


def role(trial: FrozenTrial) -> TrialRole:
    """What the trial is for, as one value."""
    if is_baseline_run(trial):
        return TrialRole.REPLICA if is_replica(trial) else TrialRole.BASELINE
    if is_learned_arm(trial):
        return TrialRole.LEARNED
    return TrialRole.PAPER if is_reference(trial) else TrialRole.SEARCHED


def write_schedule(trial: optuna.Trial, schedule: Schedule, x: list[float], values: list[float]) -> None:
    """What a trial trains: its family, schedule, and the schedule realised at the study's blocks."""
    TrialKey.FAMILY.write(trial, schedule.family)
    TrialKey.SCHEDULE.write(trial, schedule.to_dict())
    TrialKey.X.write(trial, [round(float(v), 6) for v in x])
    TrialKey.VALUES.write(trial, [round(float(v), 6) for v in values])


def write_run(trial: optuna.Trial, result, wall_seconds: float) -> None:
    """A finished training run's record (``training.loop.RunResult``): epochs, curves, time, speed, what it
    resumed from and what it learned."""
    TrialKey.EPOCHS_RUN.write(trial, result.epochs_run)
    TrialKey.TRAIN_LOSS.write(trial, [round(v, 5) for v in result.train_loss])
    TrialKey.TRAIN_ACCURACY.write(trial, [round(v, 5) for v in result.train_accuracy])
    TrialKey.WALL_SECONDS.write(trial, round(wall_seconds, 2))
    TrialKey.IMAGES_PER_SECOND.write(trial, round(result.images_per_second, 1))
    if result.resumed_from_epoch:
        TrialKey.RESUMED_FROM_EPOCH.write(trial, result.resumed_from_epoch)
    if result.learned_values is not None:
        TrialKey.LEARNED_VALUES.write(trial, [round(v, 6) for v in result.learned_values])


def write_fail_reason(storage, study_name: str, number: int, reason: str) -> None:
    """Record why trial ``number`` failed, through the storage (for a trial this process does not run)."""
    TrialKey.FAIL_REASON.write_stored(storage, study_name, number, reason)
