"""Is a schedule's gain real? Paired statistics over seeds, and their record on the study.

Baseline and schedule are trained with the same seeds (same initial weights and data order), so the per-seed
differences are paired: the mean difference gets a Student-t 95 % confidence interval and a paired t-test.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Sequence

import numpy as np
import optuna
from scipy import stats

from models.schedules import Schedule

_KEY_PREFIX = "evaluation:"


def paired_statistics(baseline: Sequence[float], schedule: Sequence[float]) -> dict[str, Any]:
    """Mean +- sample std of each arm, and the mean paired difference (schedule - baseline) with its 95 % CI
    and the two-sided paired t-test p-value. Accuracies are fractions; with one seed the CI and p are None."""
    base, sched = np.asarray(baseline, float), np.asarray(schedule, float)
    diff = sched - base
    n = len(diff)
    summary: dict[str, Any] = {
        "seeds": n,
        "baseline_mean": float(base.mean()), "baseline_std": float(base.std(ddof=1)) if n > 1 else None,
        "schedule_mean": float(sched.mean()), "schedule_std": float(sched.std(ddof=1)) if n > 1 else None,
        "difference_mean": float(diff.mean()), "difference_ci95": None, "p_value": None,
    }
    if n > 1:
        spread = diff.std(ddof=1)
        half = float(stats.t.ppf(0.975, n - 1) * spread / math.sqrt(n))
        summary["difference_ci95"] = [float(diff.mean() - half), float(diff.mean() + half)]
        # identical arms give a zero spread: no evidence either way
        summary["p_value"] = float(stats.ttest_rel(sched, base).pvalue) if spread > 0 else 1.0
    return summary


def schedule_key(schedule: Schedule, depth: int, dataset: str) -> str:
    canonical = json.dumps({**schedule.to_dict(), "depth": depth, "dataset": dataset}, sort_keys=True)
    return _KEY_PREFIX + hashlib.sha1(canonical.encode()).hexdigest()[:12]


def record_evaluation(study: optuna.Study, record: dict[str, Any]) -> None:
    """Store an evaluation on the study, under a key of its schedule, depth and data set."""
    key = schedule_key(Schedule.from_dict(record["schedule"]), record["depth"], record["dataset"])
    study.set_user_attr(key, record)


def evaluations(study: optuna.Study) -> list[dict[str, Any]]:
    return [value for key, value in study.user_attrs.items() if key.startswith(_KEY_PREFIX)]


def evaluation_for(study: optuna.Study, schedule: Schedule) -> dict[str, Any] | None:
    """The most recent evaluation of this schedule recorded on the study, at any depth, or None."""
    matches = [record for record in evaluations(study) if record["schedule"] == schedule.to_dict()]
    return max(matches, key=lambda record: record.get("finished_at", ""), default=None)
