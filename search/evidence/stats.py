"""The statistics of the evidence, pure (NumPy and SciPy; no Optuna, no Keras): paired differences over seeds,
multiple testing, and what the best of N would show by chance.

Baseline and schedule are trained with the same seeds (same initial weights and data order), so the per-seed
differences are paired: the mean difference gets a Student-t 95 % confidence interval and a paired t-test. A run
that diverged has no accuracy (None): its pair is left out of the statistics and counted, never scored 0.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import stats


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
