"""The statistics of the evidence, pure (NumPy and SciPy; no Optuna, no Keras).

Accuracies are fractions in [0, 1]; a run that diverged has none (None / NaN). Units: a ``resolution`` is the
smallest step an accuracy can take (1 / images it is measured on); ``sigma_d`` is the standard deviation of one
seed's paired difference (schedule - baseline trained on the same seed).

- ``paired_statistics``: one arm against the baseline over seeds (Student-t; ``shortcut-search evaluate``).
- ``many_to_one``: K candidates against one baseline in a randomized block design (arm x seed), one-sided and
  simultaneous (Dunnett), with a pooled variance: the confirm stage's verdict.
- ``dunnett_cdf`` / ``dunnett_sf`` / ``dunnett_critical``: the distribution of the largest of K such comparisons.
- ``detectable_effect`` / ``seeds_needed``: the power of that verdict.
- ``chance_best_of`` / ``sigma_interval``: what the best of N equal schedules shows by chance, and how well a
  spread measured on few runs is known.

Ties: a difference measured on n images is known only to 1/n, so no variance is taken below the rounding's,
1 / (12 n^2) per accuracy (``resolution``); identical differences over a few seeds never read as certainty.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Sequence

import numpy as np
from scipy import optimize, special, stats

ALPHA = 0.05  # the family-wise error of every claim (better, and separately worse, than the baseline)
POWER = 0.80
_Z_NODES, _Z_WEIGHTS = special.roots_hermitenorm(64)  # E over a standard normal: sum(w * f(z)) / sqrt(2 pi)
_Z_WEIGHTS = _Z_WEIGHTS / math.sqrt(2 * math.pi)
# E over W = sqrt(chi2_df / df), by its quantiles u on (0, 1), u = v^4 so that the nodes reach u ~ 1e-16 (small W,
# the heavy tail of low df)
_V_NODES, _V_WEIGHTS = special.roots_legendre(160)
_V_NODES, _V_WEIGHTS = (_V_NODES + 1) / 2, _V_WEIGHTS / 2
_U_NODES, _U_WEIGHTS = _V_NODES ** 4, _V_WEIGHTS * 4 * _V_NODES ** 3


def rounding_variance(resolution: float | None) -> float:
    """The variance of one accuracy's rounding to a multiple of ``resolution`` (0 without one)."""
    return (resolution or 0.0) ** 2 / 12


def paired_statistics(baseline: Sequence[float | None], schedule: Sequence[float | None],
                      resolution: float | None = None) -> dict[str, Any]:
    """Mean +- sample std of each arm, and the mean paired difference (schedule - baseline) with its 95 % CI
    and the two-sided paired t-test p-value. Accuracies are fractions, None for a diverged run; pairs with a None
    are left out (``pairs`` counts the rest, ``diverged`` the runs left out per arm). Below two pairs the CI and p
    are None. The differences' variance is at least the rounding's (``resolution``), so identical non-zero
    differences give a finite interval and p > 0; identical zero differences give p = 1."""
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
        variance = max(float(diff.var(ddof=1)), 2 * rounding_variance(resolution))
        if variance <= 1e-24:  # no resolution given and no spread at all
            summary["difference_ci95"] = [float(diff.mean())] * 2
            summary["p_value"] = 1.0 if abs(diff.mean()) <= 1e-12 else 0.0
            return summary
        se = math.sqrt(variance / n)
        half = float(stats.t.ppf(0.975, n - 1)) * se
        summary["difference_ci95"] = [float(diff.mean()) - half, float(diff.mean()) + half]
        summary["p_value"] = float(2 * stats.t.sf(abs(diff.mean()) / se, n - 1))
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


# --- many candidates against one baseline ------------------------------------------------------------------

def dunnett_cdf(t: float, comparisons: int, df: float) -> float:
    """P(max of ``comparisons`` Dunnett statistics <= t) under the null: the statistics share the baseline (their
    correlation is 1/2, as for equal seeds per arm) and one pooled variance estimate with ``df`` degrees of
    freedom (``math.inf``: known). For one comparison it is Student's t.

    T_k = (E_k - E_0) / (sqrt(2) W) with E iid N(0, 1), W = sqrt(chi2_df / df): P = E[Phi(E_0 + sqrt(2) t W)^K],
    a two-dimensional integral (Gauss-Hermite over E_0, Gauss-Legendre over W's quantiles).
    """
    w = np.ones(1) if math.isinf(df) else np.sqrt(stats.chi2.ppf(_U_NODES, df) / df)
    weights = np.ones(1) if math.isinf(df) else _U_WEIGHTS
    inner = stats.norm.cdf(_Z_NODES[None, :] + math.sqrt(2) * t * w[:, None]) ** comparisons
    return float(np.clip(weights @ (inner @ _Z_WEIGHTS), 0.0, 1.0))


def dunnett_sf(t: float, comparisons: int, df: float) -> float:
    """1 - ``dunnett_cdf``, computed as E[1 - Phi(...)^K] so that tiny tail probabilities keep their digits: the
    adjusted one-sided p-value of a statistic t."""
    w = np.ones(1) if math.isinf(df) else np.sqrt(stats.chi2.ppf(_U_NODES, df) / df)
    weights = np.ones(1) if math.isinf(df) else _U_WEIGHTS
    log_below = special.log_ndtr(_Z_NODES[None, :] + math.sqrt(2) * t * w[:, None])
    return float(np.clip(weights @ (-np.expm1(comparisons * log_below) @ _Z_WEIGHTS), 0.0, 1.0))


@functools.lru_cache(maxsize=512)
def dunnett_critical(comparisons: int, df: float, alpha: float = ALPHA) -> float:
    """The one-sided simultaneous critical value c: P(max of ``comparisons`` statistics > c) = ``alpha``."""
    return float(optimize.brentq(lambda t: dunnett_cdf(t, comparisons, df) - (1 - alpha), -5.0, 200.0,
                                 xtol=1e-7))


def many_to_one(accuracy: Sequence[Sequence[float | None]], candidates: Sequence[int],
                resolution: float | None = None, alpha: float = ALPHA) -> dict[str, Any]:
    """Every arm against the baseline (row 0) of ``accuracy`` (arms x seeds, None: no accuracy), one-sided and
    simultaneous over the ``candidates`` (row indices), with a variance pooled over arms.

    The design is a randomized block: every arm is trained on the same seeds, each seed a block (same initial
    weights and data order), so each arm's per-seed differences with the baseline are paired. Seeds where the
    baseline has no accuracy are left out; an arm missing an accuracy on any seed (it diverged, or failed) is
    *incomplete*: it cannot win, and its figures are its own pairs only.

    The variance of a paired difference, sigma_d^2, is the mean of the complete arms' own variances of their
    differences (at least the rounding's): unlike a two-way analysis's residual, it stays right when the baseline
    is noisier or quieter than the candidates. Those arms share the baseline, so their variances are correlated,
    and the pool has fewer degrees of freedom than m (S - 1) (``pooled_df``, with the baseline's share of the
    variance measured). An arm whose own variance is above the pool's is judged on its own (``own_variance``):
    a noisy schedule never borrows the others' precision. Simulated with no true effect (K = 5, S = 3, 144
    images): 3.2 % false claims with equal noise, 3.7-4.3 % with a baseline 2-3 times noisier and 4.8 % with one
    candidate 5 times noisier (12 % with the pool alone), for 10 % less power at +2 sigma_d.

    Per arm: ``pairs``, ``difference_mean``, ``bounds_raw`` (one-sided 95 % bounds of this arm alone, Student's
    t), and for complete arms ``t``, ``bounds_adjusted`` (simultaneous one-sided 95 % bounds: with 95 % confidence
    every candidate's difference is above its lower bound, and, separately, below its upper one; always wider than
    the raw ones), ``p_better`` and ``p_worse`` (Dunnett-adjusted one-sided p-values over the candidates),
    ``own_variance``. A candidate *beats* the baseline when its lower bound is above 0 (``p_better`` < ``alpha``),
    is *worse* when its upper bound is below 0. The ``comparisons`` are all planned candidates, complete or not
    (a diverged arm does not shrink the family).
    """
    values = np.array([[np.nan if v is None else float(v) for v in row] for row in accuracy], float)
    arms, _ = values.shape
    seeds = ~np.isnan(values[0])
    n_seeds = int(seeds.sum())
    complete = [a for a in range(1, arms) if n_seeds >= 2 and not np.isnan(values[a]).any()]
    diffs = {a: values[a, seeds] - values[0, seeds] for a in range(1, arms)}
    floor = 2 * rounding_variance(resolution)
    own = {a: float(diffs[a].var(ddof=1)) for a in complete}
    pooled = max(float(np.mean(list(own.values()))), floor) if own else 0.0
    df = pooled_df(n_seeds, len(complete) + 1, _baseline_share(complete, own, diffs))
    comparisons = max(len(candidates), 1)
    rows = []
    for arm in range(1, arms):
        diff = diffs[arm][~np.isnan(diffs[arm])]
        row: dict[str, Any] = {"pairs": len(diff), "complete": arm in complete and pooled > 0,
                               "difference_mean": float(diff.mean()) if len(diff) else None,
                               "bounds_raw": None, "t": None, "bounds_adjusted": None, "p_better": None,
                               "p_worse": None, "own_variance": False}
        if row["complete"]:
            variance = pooled
            if own[arm] > pooled:  # noisier than the pool: a noisy schedule never borrows the others' precision
                variance, row["own_variance"] = own[arm], True
            se, mean = math.sqrt(variance / n_seeds), row["difference_mean"]
            critical, t_raw = dunnett_critical(comparisons, df, alpha), float(stats.t.ppf(1 - alpha, df))
            row.update(t=mean / se, bounds_raw=[mean - t_raw * se, mean + t_raw * se],
                       bounds_adjusted=[mean - critical * se, mean + critical * se],
                       p_better=dunnett_sf(mean / se, comparisons, df),
                       p_worse=dunnett_sf(-mean / se, comparisons, df))
        elif len(diff) > 1:  # its own pairs only, for the table: it cannot win
            own_se = math.sqrt(max(float(diff.var(ddof=1)), floor) / len(diff))
            if own_se > 0:
                half = float(stats.t.ppf(1 - alpha, len(diff) - 1)) * own_se
                row["bounds_raw"] = [float(diff.mean()) - half, float(diff.mean()) + half]
        rows.append(row)
    return {"arms": rows, "seeds_used": n_seeds, "df": round(df, 2), "comparisons": comparisons,
            "sigma_d": math.sqrt(pooled) if pooled > 0 else None, "floor_binds": bool(own) and pooled <= floor,
            "alpha": alpha,
            "method": f"Dunnett, one-sided, simultaneous over {comparisons} candidate{'s' * (comparisons > 1)}; "
                      f"paired variance pooled over {len(complete)} arm{'s' * (len(complete) != 1)} x {n_seeds} "
                      f"seeds ({df:.1f} df), an arm's own when larger"}


def pooled_df(seeds: int, arms: int, share: float = 0.5) -> float:
    """Degrees of freedom of ``many_to_one``'s pooled variance: ``arms`` - 1 arms' differences with the baseline
    over ``seeds`` seeds, each pair of them correlated by ``share`` (the baseline's share of a difference's
    variance: 1/2 when all arms are as noisy), so their variances by share^2: m (S - 1) / (1 + (m - 1) share^2)
    (Satterthwaite)."""
    m = arms - 1
    return (seeds - 1) * m / (1 + (m - 1) * share ** 2) if m > 0 and seeds > 1 else 0.0


def _baseline_share(arms: list[int], own: dict[int, float], diffs: dict) -> float:
    """The baseline's share of the arms' difference variance: their mean covariance over their mean variance,
    at least 1/2 (a noisy baseline correlates the differences more, and the pool then knows less)."""
    if len(arms) < 2:
        return 0.5
    mean_variance = float(np.mean([own[a] for a in arms]))
    covariances = [float(np.cov(diffs[a], diffs[b])[0, 1]) for i, a in enumerate(arms) for b in arms[i + 1:]]
    return min(max(float(np.mean(covariances)) / mean_variance, 0.5), 1.0) if mean_variance > 0 else 0.5




def corrected_best(means: Sequence[float], se: float) -> float:
    """The largest of ``means`` (each candidate's mean difference, standard error ``se``) with the winner's curse
    taken out by a parametric bootstrap: minus E[max_k (m_k + e_k)] - max_k m_k, where e_k is a candidate's own
    noise (sd se / sqrt 2: the baseline's half of a difference is shared, so it does not bias the choice).

    Simulated (benchmarks/verdict_calibration.py): with no true effect it halves the raw mean's bias; with a
    clear winner (+2 sigma_d) both are nearly unbiased, where shrinking towards the candidates' average
    (James-Stein) was off by -0.4 to -1 sigma_d. With one candidate it is the plain mean."""
    values = np.asarray(means, float)
    if len(values) < 2 or se <= 0:
        return float(values.max())
    sd = se / math.sqrt(2)
    x = np.linspace(values.min() - 9 * sd, values.max() + 9 * sd, 4001)
    all_below = np.prod(stats.norm.cdf((x[None, :] - values[:, None]) / sd), axis=0)
    expected_max = float(x[-1] - np.trapezoid(all_below, x))  # E[max] = b - integral of P(max <= x) up to b
    return float(2 * values.max() - expected_max)


# --- power ------------------------------------------------------------------------------------------------------

def power_of(effect: float, sigma_d: float, seeds: int, comparisons: int, arms: int,
             alpha: float = ALPHA) -> float:
    """The chance that a candidate whose true gain is ``effect`` is declared a winner by ``many_to_one`` with
    ``seeds`` seeds, ``comparisons`` candidates and ``arms`` arms in all (baseline included), the others as good
    as the baseline (a lower bound: a better peer never hurts it)."""
    df = pooled_df(seeds, arms)
    if df <= 0 or sigma_d <= 0:
        return float("nan")
    critical = dunnett_critical(comparisons, df, alpha)
    return float(stats.nct.sf(critical, df, effect * math.sqrt(seeds) / sigma_d))


def detectable_effect(sigma_d: float, seeds: int, comparisons: int, arms: int, alpha: float = ALPHA,
                      power: float = POWER) -> float:
    """The smallest true gain the verdict declares with probability ``power`` (the minimum detectable effect)."""
    if pooled_df(seeds, arms) <= 0 or sigma_d <= 0:
        return float("nan")
    return float(optimize.brentq(lambda e: power_of(e, sigma_d, seeds, comparisons, arms, alpha) - power,
                                 0.0, 100 * sigma_d + 1.0, xtol=1e-6 * sigma_d))


def seeds_needed(effect: float, sigma_d: float, comparisons: int, arms: int, alpha: float = ALPHA,
                 power: float = POWER, most: int = 200) -> int | None:
    """The fewest seeds (>= 2) with which a true gain of ``effect`` is declared with probability ``power``; None
    beyond ``most``."""
    if effect <= 0 or sigma_d <= 0:
        return None
    for seeds in range(2, most + 1):
        if power_of(effect, sigma_d, seeds, comparisons, arms, alpha) >= power:
            return seeds
    return None


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
    difference of sd ``sigma_d``: the mean and the 95th percentile of their maximum."""
    return {"mean": sigma_d * expected_best_of(n), "p95": sigma_d * best_of_quantile(n, 0.95)}


def sigma_interval(sd: float, df: int, level: float = 0.95) -> tuple[float, float] | None:
    """The ``level`` confidence interval of a standard deviation measured as ``sd`` with ``df`` degrees of freedom
    (chi-square: from 4 runs, df 3, the true value may be 0.57 to 3.7 times the measured one); None for df < 1."""
    if df < 1:
        return None
    return (sd * math.sqrt(df / stats.chi2.ppf(0.5 + level / 2, df)),
            sd * math.sqrt(df / stats.chi2.ppf(0.5 - level / 2, df)))


# --- does a cheap proxy rank as the target does? -----------------------------------------------------------

def rank_agreement(proxy: Sequence[float], target: Sequence[Sequence[float | None]]) -> dict[str, Any] | None:
    """How well ``proxy`` (one figure per arm: its search trial's validation accuracy) ranks the arms as their
    ``target`` runs (arms x seeds) do: Kendall's tau between the proxy and the target's mean over seeds, with its
    permutation p-value (one-sided: the chance that a ranking unrelated to the target agrees at least this well;
    every ordering of up to 7 arms is enumerated, beyond that 20000 are drawn and counted with the observed one),
    and the ceiling: the mean over seeds of the tau between one target seed and the mean of the others, the same
    comparison (one run against a mean) made by a proxy as good as the target itself. Arms without a complete
    target row are left out; None below 3 arms."""
    rows = [(p, row) for p, row in zip(proxy, target) if p is not None and row and None not in row]
    if len(rows) < 3:
        return None
    x = np.asarray([p for p, _ in rows], float)
    runs = np.asarray([row for _, row in rows], float)
    mean = runs.mean(1)
    tau = _tau(x, mean)
    tied = math.isnan(tau)  # the proxy (or the target) ranks every arm alike: no ranking to compare
    p_value = None
    if not tied and len(x) <= 7:
        taus = np.asarray([_tau(x[list(order)], mean) for order in itertools.permutations(range(len(x)))])
        p_value = float(np.mean(taus >= tau - 1e-12))
    elif not tied:
        generator = np.random.default_rng(0)
        taus = np.asarray([_tau(generator.permutation(x), mean) for _ in range(20_000)])
        p_value = float((1 + np.sum(taus >= tau - 1e-12)) / (1 + len(taus)))
    seeds = runs.shape[1]
    ceiling = [_tau(runs[:, s], np.delete(runs, s, axis=1).mean(1)) for s in range(seeds)] if seeds > 1 else []
    ceiling = [value for value in ceiling if not math.isnan(value)]
    return {"arms": len(x), "tau": None if tied else tau, "p_value": p_value,
            "target_seed_tau": float(np.mean(ceiling)) if ceiling else None, "seeds": seeds}


def _tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (ties counted as SciPy does); NaN when either side is all ties."""
    return float(stats.kendalltau(a, b).statistic)
