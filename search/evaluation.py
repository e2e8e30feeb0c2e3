"""Is a schedule's gain real? Paired statistics over seeds, and their record on the study.

Baseline and schedule are trained with the same seeds (same initial weights and data order), so the per-seed
differences are paired: the mean difference gets a Student-t 95 % confidence interval and a paired t-test. A run
that diverged has no accuracy (None): its pair is left out of the statistics and counted, never scored 0.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

import numpy as np
import optuna
from scipy import stats

from models.schedules import Schedule

_KEY_PREFIX = "evaluation:"


def paired_statistics(baseline: Sequence[float | None], schedule: Sequence[float | None]) -> dict[str, Any]:
    """Mean +- sample std of each arm, and the mean paired difference (schedule - baseline) with its 95 % CI
    and the two-sided paired t-test p-value. Accuracies are fractions, None for a diverged run; pairs with a None
    are left out (``pairs`` counts the rest, ``diverged`` the runs left out per arm). Below two pairs the CI and p
    are None; identical differences give p = 1 when they are zero and p = 0 otherwise."""
    pairs = [(b, s) for b, s in zip(baseline, schedule) if b is not None and s is not None]
    base, sched = np.asarray([b for b, _ in pairs], float), np.asarray([s for _, s in pairs], float)
    diff = sched - base
    n = len(diff)
    mean = lambda values: float(values.mean()) if len(values) else None  # noqa: E731
    std = lambda values: float(values.std(ddof=1)) if len(values) > 1 else None  # noqa: E731
    summary: dict[str, Any] = {
        "seeds": len(baseline), "pairs": n,
        "diverged": {"baseline": sum(b is None for b in baseline), "schedule": sum(s is None for s in schedule)},
        "baseline_mean": mean(base), "baseline_std": std(base),
        "schedule_mean": mean(sched), "schedule_std": std(sched),
        "difference_mean": mean(diff), "difference_ci95": None, "p_value": None,
    }
    if n > 1:
        if diff.std(ddof=1) > 1e-12:  # accuracies are counts / N: a smaller spread is rounding
            test = stats.ttest_rel(sched, base)
            summary["difference_ci95"] = [float(bound) for bound in test.confidence_interval(0.95)]
            summary["p_value"] = float(test.pvalue)
        else:  # the same difference every seed: none at all is no evidence, a constant non-zero one is certain
            summary["difference_ci95"] = [float(diff.mean())] * 2
            summary["p_value"] = 1.0 if abs(diff.mean()) <= 1e-12 else 0.0
    return summary


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of p-values for testing them together (None stays None)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (len(indexed) - rank) * p))
        adjusted[i] = running
    return adjusted


def expected_best_of(n: int) -> float:
    """E[max of n independent standard normal draws]: 0 for n = 1, 1.54 for 10, 2.51 for 100, 3.04 for 500."""
    if n <= 1:
        return 0.0
    x = np.linspace(-9, 9, 6001)
    return float(np.trapezoid(x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), x))


def noise_floor(study: optuna.Study) -> dict[str, Any] | None:
    """The study's own noise: the spread of its baseline runs over seeds, on its own budget, and the gain over the
    baseline that the best of N schedules would show by chance if all N were as good as the baseline.

    ``{"seeds": [...], "baseline_val_accuracy": [...], "baseline_seed_std": s, "selected_from": N,
    "expected_best_of_n_by_chance": s * E[max of N standard normals]}``; None below two finished baseline runs.
    N counts the completed trials. (The search's trials share one seed, so the spread across schedules at that
    seed is not exactly the spread across seeds; the seeds' spread is the yardstick a re-run would face.)
    """
    from search.study import baseline_trials

    runs = sorted(baseline_trials(study), key=lambda t: t.number)
    if len(runs) < 2:
        return None
    values = [t.value for t in runs]
    std = float(np.std(values, ddof=1))
    selected_from = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    return {"seeds": [t.user_attrs.get("seed") for t in runs], "baseline_val_accuracy": values,
            "baseline_seed_std": std, "selected_from": selected_from,
            "expected_best_of_n_by_chance": std * expected_best_of(selected_from)}


def gain_in_noise(gain: float, floor: dict[str, Any] | None) -> str:
    """``+0.85 pt (2.1 baseline sd; the best of 40 equal schedules: +0.9 pt by chance)`` or just ``+0.85 pt``."""
    text = f"{100 * gain:+.2f} pt"
    if floor is None or floor["baseline_seed_std"] <= 0:
        return text
    return (f"{text} ({gain / floor['baseline_seed_std']:+.1f} sd of the baseline over {len(floor['seeds'])} "
            f"seeds; the best of {floor['selected_from']} schedules as good as the baseline would show "
            f"{100 * floor['expected_best_of_n_by_chance']:+.2f} pt by chance)")


def evaluation_key(record: dict[str, Any]) -> str:
    """The study attribute an evaluation is stored under: one per schedule, depth, data set, epochs and subset."""
    budget = {key: record.get(key) for key in ("depth", "dataset", "epochs", "subset")}
    canonical = json.dumps({**Schedule.from_dict(record["schedule"]).to_dict(), **budget}, sort_keys=True)
    return _KEY_PREFIX + hashlib.sha1(canonical.encode()).hexdigest()[:12]


def record_evaluation(study: optuna.Study, record: dict[str, Any]) -> None:
    """Store an evaluation on the study; a later one on the same schedule and budget replaces it."""
    study.set_user_attr(evaluation_key(record), record)


def evaluations(study: optuna.Study) -> list[dict[str, Any]]:
    return [value for key, value in study.user_attrs.items() if key.startswith(_KEY_PREFIX)]


def evaluation_for(study: optuna.Study, schedule: Schedule) -> dict[str, Any] | None:
    """The most recent evaluation of this schedule recorded on the study on the study's own budget (depth, data
    set, epochs and subset as searched), or None."""
    settings = study.user_attrs.get("settings", {})
    budget = {"depth": settings.get("depth"), "dataset": settings.get("dataset"),
              "epochs": study.user_attrs.get("epochs"), "subset": settings.get("subset")}
    matches = [record for record in evaluations(study) if record["schedule"] == schedule.to_dict()
               and all(record.get(key) == value for key, value in budget.items())]
    return max(matches, key=lambda record: record.get("finished_at", ""), default=None)
