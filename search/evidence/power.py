"""What a confirm stage could have detected, and what chance alone shows, pure (NumPy and SciPy): the power of
``stats.many_to_one``'s verdict, simulated for the rule it runs (the same df and variance rule, robust path
included), the seeds a gain needs, the best of N equal schedules over one shared baseline run, and how well a
spread measured on few runs is known. Units as in ``search.evidence.stats``: gains and ``sigma_d`` are fractions
of accuracy."""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import stats

from search.evidence.stats import ALPHA, claims, dunnett_critical

POWER = 0.80


POWER_STUDIES = 4000  # simulated studies behind a power figure (Monte-Carlo se of 80 %: 0.6 points)


@functools.lru_cache(maxsize=256)
def _null_draws(seeds: int, arms: int, comparisons: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """``many_to_one``'s test on ``POWER_STUDIES`` simulated stages with every arm as noisy (sigma_d = 1) and no
    gain, vectorised: per study, the first candidate's noise in its mean difference and the standard error and
    critical value the rule gives it. A gain delta then declares it when noise + delta > critical x se (the same
    draws for every delta: power is monotone in it)."""
    rng = np.random.default_rng(20261203)
    values = rng.normal(0.0, math.sqrt(0.5), (POWER_STUDIES, arms, seeds))
    decided = claims(values, comparisons, None, alpha, exact=False)
    return decided["mean"][:, -1], decided["critical"][:, -1] * decided["se"][:, -1]




def power_of(effect: float, sigma_d: float, seeds: int, comparisons: int, arms: int,
             alpha: float = ALPHA) -> float:
    """The chance that a candidate whose true gain is ``effect`` is declared a winner by ``many_to_one`` with
    ``seeds`` seeds, ``comparisons`` candidates and ``arms`` arms in all (baseline and reference included), every
    arm as noisy with the paired difference's sd ``sigma_d`` and the others as good as the baseline: simulated
    (``POWER_STUDIES`` stages; the same df and variance rule as the test, robust path included)."""
    if seeds < 2 or arms < 2 or sigma_d <= 0:
        return float("nan")
    noise, threshold = _null_draws(int(seeds), max(int(arms), 3), int(comparisons), alpha)
    return float(np.mean(noise + effect / sigma_d > threshold))


def detectable_effect(sigma_d: float, seeds: int, comparisons: int, arms: int, alpha: float = ALPHA,
                      power: float = POWER) -> float:
    """The smallest true gain the verdict declares with probability ``power`` (the minimum detectable effect), by
    ``power_of``'s simulation: the ``power`` quantile of threshold - noise, times ``sigma_d``."""
    if seeds < 2 or sigma_d <= 0:
        return float("nan")
    noise, threshold = _null_draws(int(seeds), max(int(arms), 3), int(comparisons), alpha)
    return float(sigma_d * np.quantile(threshold - noise, power))


def seeds_needed(effect: float, sigma_d: float, comparisons: int, arms: int, alpha: float = ALPHA,
                 power: float = POWER, most: int = 200) -> int | None:
    """The fewest seeds (>= 2) with which a true gain of ``effect`` is declared with probability ``power``; None
    beyond ``most``."""
    if effect <= 0 or sigma_d <= 0:
        return None
    if detectable_effect(sigma_d, most, comparisons, arms, alpha, power) > effect:
        return None
    low, high = 1, most  # detectable at high, not (or not tried) at low
    while high - low > 1:
        middle = (low + high) // 2
        if detectable_effect(sigma_d, middle, comparisons, arms, alpha, power) <= effect:
            high = middle
        else:
            low = middle
    return max(high, 2)


# --- chance ----------------------------------------------------------------------------------------------------

def expected_best_of(n: int) -> float:
    """E[max of n independent standard normal draws]: 0 for n = 1, 1.54 for 10, 2.51 for 100, 3.04 for 500."""
    if n <= 1:
        return 0.0
    x = np.linspace(-9, 9, 6001)
    return float(np.trapezoid(x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), x))


def best_of_quantile(n: int, quantile: float = 0.95) -> float:
    """The ``quantile`` of the max of n independent standard normal draws: 1.64 for n = 1, 2.57 for 10."""
    return float(stats.norm.ppf(quantile ** (1 / max(n, 1))))


def chance_best_of(n: int, sigma_d: float) -> dict[str, float]:
    """What the best of ``n`` schedules as good as the baseline shows over it by chance, each a one-seed
    difference of sd ``sigma_d`` with the *same* baseline run: d_i = (x_i - x_0), correlated 1/2 with each other.
    The mean of their maximum is sigma_d E[max of n] / sqrt(2) (the shared baseline run does not move the
    maximum's mean: 1.45 sigma_d for n = 30, not 2.04), and its 95th percentile is the one-sided Dunnett critical
    value for n comparisons with a known variance (the shared run widens the spread: 2.75 sigma_d at n = 30, against 2.95 for independent ones)."""
    if n < 1:
        return {"mean": 0.0, "p95": 0.0}
    return {"mean": sigma_d * expected_best_of(n) / math.sqrt(2),
            "p95": sigma_d * dunnett_critical(n, math.inf, 0.05)}


def sigma_interval(sd: float, df: int, level: float = 0.95) -> tuple[float, float] | None:
    """The ``level`` confidence interval of a standard deviation measured as ``sd`` with ``df`` degrees of freedom
    (chi-square: from 4 runs, df 3, the true value may be 0.57 to 3.7 times the measured one); None for df < 1."""
    if df < 1:
        return None
    return (sd * math.sqrt(df / stats.chi2.ppf(0.5 + level / 2, df)),
            sd * math.sqrt(df / stats.chi2.ppf(0.5 - level / 2, df)))


