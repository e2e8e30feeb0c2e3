"""The statistics of the evidence, pure (NumPy and SciPy; no Optuna, no Keras).

Accuracies are fractions in [0, 1]; a run that diverged has none (None / NaN). Units: a ``resolution`` is the
smallest step an accuracy can take (1 / images it is measured on); ``sigma_d`` is the standard deviation of one
seed's paired difference (schedule - baseline trained on the same seed).

- ``paired_statistics``: one arm against the baseline over seeds (Student-t; ``shortcut-search evaluate``).
- ``many_to_one``: K candidates against one baseline in a randomized block design (arm x seed), one-sided and
  simultaneous (Dunnett), with a pooled variance: the confirm stage's verdict.
- ``dunnett_cdf`` / ``dunnett_sf`` / ``dunnett_critical``: the distribution of the largest of K such comparisons.
- ``claims``: the same decisions, vectorised over many simulated stages; ``selective_estimate``: a winner's
  gain conditional on its having been declared;
- ``rank_agreement``: how a cheap proxy ranks the arms against the target.
The power of the verdict and what chance shows are in ``search.evidence.power``.

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
    simultaneous over the ``candidates`` (row indices).

    The design is a randomized block: every arm is trained on the same seeds, each seed a block (same initial
    weights and data order). Seeds where the baseline has no accuracy are left out; an arm missing an accuracy on
    any other seed (it diverged, collapsed, or failed) is *incomplete*: it cannot win, and its figures are its own
    pairs only.

    The variance (``block_variance``): the arm x seed two-way analysis's residual over the complete arms (the
    baseline and the reference included) and the seeds, (arms - 1)(seeds - 1) degrees of freedom, the textbook
    randomized-block analysis; sigma_d^2 is twice that residual variance (at least the rounding's). It assumes every
    arm is as noisy; an arm (or the baseline) noisier than the rest would be judged on too small a variance. So each
    comparison also has a heteroscedasticity-robust variance, Welch-Satterthwaite from its components: the
    baseline's and the arm's own run variances (Shukla's unbiased estimates from the same residuals), with the
    Satterthwaite degrees of freedom of that sum (at least seeds - 1). A comparison is judged on the larger of the
    two variances, with the degrees of freedom of the one it uses (``robust``): a noisy arm, or a noisy baseline,
    never borrows the others' precision, and an arm on the robust variance never borrows the block's df.
    Simulated (benchmarks/verdict_calibration.py): false claims at or below 5 % within Monte-Carlo error with one
    candidate 3x or 5x noisier, or the baseline 2x or 3x, at K 1-10, S 2-10; the cost is power when every arm is
    as noisy (the robust variance is the larger about half the time, on fewer df).

    Per arm: ``pairs``, ``difference_mean``, ``bounds_raw`` (one-sided 95 % bounds of this arm alone, Student's
    t), and for complete arms ``t``, ``se``, ``df``, ``bounds_adjusted`` (simultaneous one-sided 95 % bounds: with
    95 % confidence every candidate's difference is above its lower bound, and, separately, below its upper one;
    always wider than the raw ones), ``p_better`` and ``p_worse`` (Dunnett-adjusted one-sided p-values over the
    candidates, at the df the arm's variance has), ``robust`` (judged on the robust variance; ``own_variance`` is
    the same flag under its old name). A candidate *beats* the baseline when its lower bound is above 0
    (``p_better`` < ``alpha``), is *worse* when its upper bound is below 0. The ``comparisons`` are all planned
    candidates, complete or not (a diverged arm does not shrink the family).
    """
    values = np.array([[np.nan if v is None else float(v) for v in row] for row in accuracy], float)
    arms, _ = values.shape
    seeds = ~np.isnan(values[0])
    n_seeds = int(seeds.sum())
    complete = [a for a in range(1, arms) if n_seeds >= 2 and not np.isnan(values[a, seeds]).any()]
    diffs = {a: values[a, seeds] - values[0, seeds] for a in range(1, arms)}
    floor = 2 * rounding_variance(resolution)
    block = block_variance(values[[0, *complete]][:, seeds], floor) if complete else None
    comparisons = max(len(candidates), 1)
    rows = []
    for position, arm in enumerate(range(1, arms)):
        diff = diffs[arm][~np.isnan(diffs[arm])]
        row: dict[str, Any] = {"pairs": len(diff), "complete": arm in complete and block is not None
                               and block["sigma_d2"] > 0,
                               "difference_mean": float(diff.mean()) if len(diff) else None,
                               "bounds_raw": None, "t": None, "se": None, "df": None, "bounds_adjusted": None,
                               "p_better": None, "p_worse": None, "robust": False, "own_variance": False}
        if row["complete"]:
            index = 1 + complete.index(arm)  # its row in the block
            variance, df = block["sigma_d2"], block["df"]
            robust, robust_df = block["robust_d2"][index - 1], block["robust_df"][index - 1]
            if robust > variance:  # noisier than the block says: its own (and the baseline's) variance, and df
                variance, df, row["robust"] = robust, robust_df, True
            row["own_variance"] = row["robust"]
            se, mean = math.sqrt(variance / n_seeds), row["difference_mean"]
            # the critical value at df rounded down to a grid (cached; a hair conservative)
            critical = dunnett_critical(comparisons, float(_df_grid(df)), alpha)
            t_raw = float(stats.t.ppf(1 - alpha, df))
            row.update(t=mean / se, se=se, df=round(df, 2), bounds_raw=[mean - t_raw * se, mean + t_raw * se],
                       bounds_adjusted=[mean - critical * se, mean + critical * se],
                       p_better=dunnett_sf(mean / se, comparisons, df),
                       p_worse=dunnett_sf(-mean / se, comparisons, df), critical=critical)
        elif len(diff) > 1:  # its own pairs only, for the table: it cannot win
            own_se = math.sqrt(max(float(diff.var(ddof=1)), floor) / len(diff))
            if own_se > 0:
                half = float(stats.t.ppf(1 - alpha, len(diff) - 1)) * own_se
                row["bounds_raw"] = [float(diff.mean()) - half, float(diff.mean()) + half]
        rows.append(row)
    df = block["df"] if block else 0.0
    sigma_d2 = block["sigma_d2"] if block else 0.0
    robust_count = sum(row["robust"] for row in rows)
    return {"arms": rows, "seeds_used": n_seeds, "df": round(df, 2), "comparisons": comparisons,
            "sigma_d": math.sqrt(sigma_d2) if sigma_d2 > 0 else None,
            "floor_binds": bool(block) and block["floor_binds"], "alpha": alpha, "robust_arms": robust_count,
            "method": f"Dunnett, one-sided, simultaneous over {comparisons} candidate{'s' * (comparisons > 1)}; "
                      f"randomized blocks, {len(complete) + 1} arms x {n_seeds} seeds ({df:.0f} df); an arm "
                      f"noisier than the block (or a noisier baseline) on its own and the baseline's variance "
                      f"with Welch-Satterthwaite df"}


def block_variance(values: np.ndarray, floor: float = 0.0) -> dict[str, Any]:
    """The variances of ``many_to_one`` from complete arms x seeds tables (``values[..., arm, seed]``, any leading
    axes: one table, or many simulated ones; the baseline row 0, seeds >= 2): ``sigma_d2``, twice the two-way
    residual variance, on ``df`` = (arms - 1)(seeds - 1); per arm after the baseline, ``robust_d2`` = the
    baseline's + the arm's own run variance (Shukla's unbiased estimates, arms / (arms - 2) (W_a / (S - 1) - SSE /
    ((arms - 1)(S - 1) arms)), W_a the arm's residual sum of squares; each at least half the rounding floor) and
    its Welch-Satterthwaite ``robust_df`` (scaled to the exact df when every arm is as noisy, ``_shukla_share``;
    between S - 1 and the block's df). With
    two arms the robust variance is the difference's own. Floats for one table, arrays for many."""
    values = np.asarray(values, float)
    arms, seeds = values.shape[-2:]
    residual = (values - values.mean(-1, keepdims=True) - values.mean(-2, keepdims=True)
                + values.mean((-2, -1), keepdims=True))
    per_arm = (residual ** 2).sum(-1)
    total = per_arm.sum(-1)
    df = float((arms - 1) * (seeds - 1))
    sigma_d2 = np.maximum(2 * total / max(df, 1), floor) if df > 0 else np.zeros_like(total)
    if arms > 2:
        runs = arms / (arms - 2) * (per_arm / (seeds - 1) - total[..., None] / ((seeds - 1) * (arms - 1) * arms))
        runs = np.maximum(runs, floor / 2)
        robust = runs[..., :1] + runs[..., 1:]
        spread = np.maximum((runs[..., :1] ** 2 + runs[..., 1:] ** 2) / (seeds - 1), 1e-300)
        robust_df = np.clip(_shukla_share(arms) * robust ** 2 / spread, seeds - 1, max(df, 1))
    else:
        robust = np.maximum(np.var(values[..., 1:, :] - values[..., :1, :], axis=-1, ddof=1), floor)
        robust_df = np.full(robust.shape, seeds - 1.0)
    floor_binds = 2 * total / max(df, 1) <= floor
    if values.ndim == 2:
        return {"sigma_d2": float(sigma_d2), "df": df, "floor_binds": bool(floor_binds),
                "robust_d2": [float(v) for v in robust], "robust_df": [float(v) for v in robust_df]}
    return {"sigma_d2": sigma_d2, "df": df, "floor_binds": floor_binds, "robust_d2": robust,
            "robust_df": robust_df}


def _shukla_share(arms: int) -> float:
    """The Welch-Satterthwaite df of ``block_variance``'s robust sum, which counts each component on S - 1 df,
    times this is the sum's exact df when every arm is as noisy: Shukla's estimates are noisier than a variance on
    S - 1 df and the two in a sum are negatively correlated; with g = (A - 1)^2 - 2 + 1 / (A - 1), Var(estimate) =
    2 sigma^4 g / ((S - 1)(A - 2)^2) and Cov = -2 sigma^4 / ((S - 1)(A - 2)(A - 1)), so the sum has
    2 (S - 1) / (g / (A - 2)^2 - 1 / ((A - 2)(A - 1))) df: S - 1 at 3 arms (the arm's own paired variance's), 1.5
    (S - 1) at 7, against the 2 (S - 1) the plain formula gives."""
    g = (arms - 1) ** 2 - 2 + 1 / (arms - 1)
    return 1 / (g / (arms - 2) ** 2 - 1 / ((arms - 2) * (arms - 1)))


def claims(values: np.ndarray, comparisons: int, resolution: float | None = None, alpha: float = ALPHA,
           exact: bool = True, gate: float = 1.0) -> dict[str, np.ndarray]:
    """``many_to_one``'s decisions on many complete tables at once (``values[study, arm, seed]``, the baseline row
    0, the candidates the last ``comparisons`` rows), vectorised: per study and candidate ``better`` and ``worse``
    (adjusted one-sided, at ``alpha``), ``mean`` (difference), ``se`` and ``critical`` (the rule's: the block's
    variance and df, or the robust one when larger). For simulations (the calibration, the power figures, the
    tests); ``many_to_one`` decides one table the same way. ``exact`` False interpolates the critical values in
    1 / df between a few computed ones (within 0.03 from df 2 on, a little high below; for power figures, where
    thousands of dfs occur). ``gate`` g > 1 takes the robust variance only when it exceeds g times the block's
    (``benchmarks/variance_gate.py`` measures what that trades; the verdict's rule is g = 1)."""
    values = np.asarray(values, float)
    seeds = values.shape[-1]
    block = block_variance(values, 2 * rounding_variance(resolution))
    robust, robust_df = block["robust_d2"][:, -comparisons:], block["robust_df"][:, -comparisons:]
    use = robust > gate * block["sigma_d2"][:, None]
    variance = np.where(use, robust, block["sigma_d2"][:, None])
    df = np.where(use, _df_grid(robust_df), _df_grid(block["df"]))
    if exact:
        critical = np.empty(df.shape)
        for value in np.unique(df):
            critical[df == value] = dunnett_critical(comparisons, float(value), alpha)
    else:
        critical = np.interp(1 / df, *_critical_nodes(comparisons, alpha))
    mean = values[:, -comparisons:].mean(-1) - values[:, :1].mean(-1)
    se = np.sqrt(variance / seeds)
    return {"better": mean > critical * se, "worse": mean < -critical * se, "mean": mean, "se": se,
            "critical": critical, "robust": use}


HYBRID_BETA = 0.001  # the hybrid estimate also conditions on the truth lying within this two-sided normal bound
WIDEN_DF_FLOOR = 4.0  # below 4 df, t's tails would widen the hybrid's bound so far that a real gain reads near 0


_DF_NODES = (1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 60, 120, 240, 1000)


@functools.lru_cache(maxsize=64)
def _critical_nodes(comparisons: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Dunnett critical values at ``_DF_NODES`` and a known variance, by 1 / df ascending (for ``np.interp``)."""
    inverse = np.array([0.0, *(1 / df for df in reversed(_DF_NODES))])
    values = np.array([dunnett_critical(comparisons, math.inf, alpha),
                       *(dunnett_critical(comparisons, float(df), alpha) for df in reversed(_DF_NODES))])
    return inverse, values


def selective_estimate(mean: float, se: float, lower: float = -math.inf, upper: float = math.inf,
                       df: float | None = None, beta: float = HYBRID_BETA) -> float:
    """The gain of an arm picked because its mean difference fell in [``lower``, ``upper``] (its standard error
    ``se``), median-unbiased given that selection: the true gain mu at which half of the means that would have been
    selected lie above ``mean`` (a normal truncated to the selection interval; the polyhedral conditioning of Lee
    et al. 2016). Purely conditional, that estimate runs off to minus infinity when ``mean`` is just past
    ``lower``, so it is the *hybrid* one of Andrews, Kitagawa and McCloskey ("Inference on winners"): it
    conditions also on |mean - mu| <= z_{1 - beta/2} s, and so stays within that many s of ``mean``. s is ``se``
    widened by t_{0.975, df} / z_{0.975} when ``se`` is itself estimated on ``df`` degrees of freedom (a claim
    made on a variance that came out small is pulled back further), df taken as at least ``WIDEN_DF_FLOOR``.

    ``verdict.winner_estimate`` passes, for the winner, lower = max(its critical value x se, 2 d_j - d_w over the
    other claimed arms j: d_w above d_j given the baseline's shared half), and for a best candidate that is not a
    winner, lower = 2 d_j - d_w over the other eligible arms and upper = its critical value x se. Without
    selection (both infinite) it is ``mean``. Its bias for claimed winners, with no true gain and with one, is
    measured by benchmarks/verdict_calibration.py (benchmarks/README.md): few seeds leave a trade-off (a smaller
    bias under the null costs a larger negative one for real gains), which these settings split."""
    if se <= 0 or (math.isinf(lower) and math.isinf(upper)):
        return float(mean)
    lower, upper = min(lower, mean), max(upper, mean)
    widening = float(stats.t.isf(0.025, max(df, WIDEN_DF_FLOOR)) / stats.norm.isf(0.025)) if df else 1.0
    scale = se * widening
    bound = float(stats.norm.isf(beta / 2)) * scale

    def above(mu: float) -> float:  # P(X > mean | X in the selection and within the bound of mu; mu)
        low, high = max(lower, mu - bound), min(upper, mu + bound)
        a, b, x = (low - mu) / scale, (high - mu) / scale, (mean - mu) / scale
        return float(stats.truncnorm.sf(x, a, b)) if b > a else 0.5

    low, high = mean - bound, mean + bound
    if above(low) >= 0.5:
        return float(low)
    if above(high) <= 0.5:
        return float(high)
    return float(optimize.brentq(lambda mu: above(mu) - 0.5, low, high, xtol=1e-6 * se))


def _df_grid(df):
    """Degrees of freedom rounded down to a grid (0.1 below 10, 1 below 100, 10 above) for cached critical
    values: a hair conservative."""
    df = np.asarray(df, float)
    return np.where(df < 10, np.floor(df * 10) / 10, np.where(df < 100, np.floor(df), np.floor(df / 10) * 10))


# --- does a cheap proxy rank as the target does? -----------------------------------------------------------

def rank_agreement(proxy: Sequence[float], target: Sequence[Sequence[float | None]]) -> dict[str, Any] | None:
    """How well ``proxy`` (one figure per arm: its search trial's validation accuracy) ranks the arms as their
    ``target`` runs (arms x seeds) do: Kendall's tau between the proxy and the target's mean over seeds, with its
    permutation p-value (one-sided: the chance that a ranking unrelated to the target agrees at least this well;
    every ordering of up to 7 arms is enumerated, beyond that 20000 are drawn and counted with the observed one),
    and a reference level (``target_seed_tau``, the key kept for studies written before): the mean over seeds of
    the tau between one target seed and the mean of the others, what a proxy as good as one of the stage's own
    runs reaches, with its spread over the seeds (``target_seed_tau_sd``). It is a reference, not a ceiling: a
    proxy as good as one target run beats it about half the time, and with few seeds and arms both scatter widely.
    Arms without a complete target row are left out; None below 3 arms."""
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
    reference = [_tau(runs[:, s], np.delete(runs, s, axis=1).mean(1)) for s in range(seeds)] if seeds > 1 else []
    reference = [value for value in reference if not math.isnan(value)]
    return {"arms": len(x), "tau": None if tied else tau, "p_value": p_value,
            "target_seed_tau": float(np.mean(reference)) if reference else None,
            "target_seed_tau_sd": float(np.std(reference, ddof=1)) if len(reference) > 1 else None, "seeds": seeds}


def _tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (ties counted as SciPy does); NaN when either side is all ties."""
    return float(stats.kendalltau(a, b).statistic)
