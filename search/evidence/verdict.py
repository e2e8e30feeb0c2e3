"""The confirm stage's verdict: does a candidate beat the baseline? One-sided, simultaneous over the candidates,
with a sign, and an account in words for the terminal, the dashboard note, the report and the export.

Four outcomes (``verdict["outcome"]``, an ``Outcome``):

- ``beats_baseline``: a candidate's Dunnett-adjusted one-sided 95 % lower bound is above zero; the winner is the
  claimed candidate with the highest mean. Its headline interval is the adjusted one; its estimate
  (``difference_estimate``) is conditional on its having been declared the winner (``stats.selective_estimate``:
  median-unbiased given that its mean cleared its critical value and the other claimed arms' means, from its own
  arm's standard error), at K = 1 too; the raw mean beside it.
- ``no_candidate_beats_baseline``: the baseline stays the recommendation; the best candidate is named as such.
- ``worse_than_baseline``: as the previous one, and a candidate is significantly worse (its adjusted upper bound
  is below zero): named in ``worse`` (also listed when another candidate wins).

- ``no_verdict``: the baseline finished on fewer than two seeds, or no candidate arm is complete: the baseline stays
  the recommendation.

An arm with a diverged run cannot win (divergence is a property of the schedule); so does one with a *collapsed*
run: training marks a run whose validation accuracy ends at chance level as diverged (``training.loop``), and
``collapsed_runs`` here finds a run far below both its arm's other seeds and its seed's other arms (a finite loss,
a broken run). A collapsed baseline run drops its seed with its pairs. A run that failed with an error is retried
by the stage, and an arm still missing one after its retries cannot win either. Every figure names its
seeds, the budget it was trained on, and what the stage could have detected (``detectable_effect``).
"""
from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, Sequence

import numpy as np

from common.log import duration
from search.evidence import power, race, stats


class Outcome(StrEnum):
    """The verdict's outcome; equal to the strings stored in studies written before it existed."""

    BEATS = "beats_baseline"
    NO_WINNER = "no_candidate_beats_baseline"
    WORSE = "worse_than_baseline"
    NO_VERDICT = "no_verdict"  # the baseline finished on fewer than two seeds, or no candidate arm is complete


BEATS, NO_WINNER, WORSE, NO_VERDICT = Outcome.BEATS, Outcome.NO_WINNER, Outcome.WORSE, Outcome.NO_VERDICT

# A run is collapsed when it lies both this many robust sigma_d and this share of its predicted accuracy below what
# its arm's other seeds and its seed's other arms predict for it (``collapsed_runs``): a run at chance level (10 %
# on CIFAR-10 against ~80 %) is 100+ sigma_d and 85 % below; a noisy but working schedule (5x the others' noise)
# is not flagged, for it loses a few points, not a quarter of its accuracy. The null rate (runs flagged with no
# collapse, a 5x noisier arm included) is measured by benchmarks/verdict_calibration.py.
COLLAPSE_SIGMAS = 12.0
COLLAPSE_LOSS = 0.25


def collapsed_runs(rows: Sequence[Sequence[float | None]], resolution: float | None = None) -> np.ndarray:
    """Which runs of ``rows`` (arms x seeds, the baseline first; None: no accuracy) collapsed without a NaN: a
    run more than ``COLLAPSE_SIGMAS`` x s and ``COLLAPSE_LOSS`` x its prediction below its prediction, median(its arm's other seeds - those seeds'
    level) + its seed's level, a seed's level being the median of the arms on it; s is 1.4826 x the median
    absolute deviation of every run from its prediction (a robust sigma_d: one broken run does not move it), at
    least the rounding's step (``resolution``). Needs 3 arms and 2 seeds with accuracies; a whole seed that
    collapsed on every arm is a seed, not a schedule, and is not flagged."""
    values = np.array([[np.nan if v is None else float(v) for v in row] for row in rows], float)
    flagged = np.zeros(values.shape, bool)
    arms, seeds = values.shape
    if arms < 3 or seeds < 2 or np.isnan(values).all():
        return flagged
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            level = np.nanmedian(values, axis=0)  # each seed's level
            centred = values - level[None, :]
            predicted = np.full(values.shape, np.nan)
            for seed in range(seeds):
                others = np.delete(centred, seed, axis=1)
                predicted[:, seed] = np.nanmedian(others, axis=1) + level[seed]
    deviation = values - predicted
    finite = deviation[np.isfinite(deviation)]
    if finite.size < 3:
        return flagged
    scale = max(1.4826 * float(np.median(np.abs(finite - np.median(finite)))), resolution or 0.0, 1e-9)
    return np.isfinite(deviation) & (deviation < -np.maximum(COLLAPSE_SIGMAS * scale,
                                                              COLLAPSE_LOSS * np.abs(predicted)))


def summarise(arms: list[dict[str, Any]], seeds: list[int], accuracy: dict[tuple[str, int], float | None],
              failed: set[tuple[str, int]], resolution: float | None, budget: dict[str, Any],
              min_effect: float = 0.01, top: int | None = None) -> dict[str, Any]:
    """The verdict over ``arms`` (the baseline first; each ``{"key", "label", "schedule", "source_trial",
    "candidate", "rank_in_search"}``) on ``seeds``: ``accuracy[(arm key, seed)]`` is a run's validation accuracy,
    None when it diverged; ``failed`` the runs still failing after their retries. ``resolution`` is 1 / validation
    images; ``min_effect`` the gain (a fraction) whose seeds the power line states."""
    rows = [[accuracy.get((arm["key"], seed)) for seed in seeds] for arm in arms]
    collapsed = collapsed_runs(rows, resolution)
    reported = [list(row) for row in rows]  # as trained, for the table
    rows = [[None if collapsed[a, s] else value for s, value in enumerate(row)] for a, row in enumerate(rows)]
    candidates = [index for index, arm in enumerate(arms) if arm["candidate"]]
    tested = stats.many_to_one(rows, candidates, resolution)

    def fates(arm):  # an arm's runs that diverged (a collapsed one included), and that failed for good
        return (sum((arm["key"], seed) in accuracy and rows[arms.index(arm)][i] is None
                    for i, seed in enumerate(seeds)),
                sum((arm["key"], seed) in failed for seed in seeds))

    summary_rows = []
    for index, (arm, values, result) in enumerate(zip(arms[1:], reported[1:], tested["arms"]), 1):
        diverged, lost = fates(arm)
        row = {**{key: arm[key] for key in ("key", "label", "source_trial", "candidate", "schedule",
                                            "rank_in_search")},
               "schedule_val_accuracy": values, "diverged": diverged, "failed": lost,
               "collapsed": int(collapsed[index].sum()), **result}
        row["eligible"] = bool(arm["candidate"] and result["complete"] and not diverged and not lost)
        summary_rows.append(row)
    eligible = [row for row in summary_rows if row["eligible"]]
    better = [row for row in eligible if row["p_better"] < stats.ALPHA]
    worse = [row["label"] for row in summary_rows if row["candidate"] and row["p_worse"] is not None
             and row["p_worse"] < stats.ALPHA]
    scored = [row for row in summary_rows if row["candidate"] and row["difference_mean"] is not None]
    winner = max(better, key=lambda row: row["difference_mean"], default=None)
    best = winner or max(eligible or scored, key=lambda row: row["difference_mean"], default=None)
    if best is not None and best["eligible"]:  # picked (and claimed) partly by chance: conditional on it
        best["difference_estimate"] = winner_estimate(best, better if winner else eligible, bool(winner))
    no_verdict = tested["seeds_used"] < 2 or tested["sigma_d"] is None
    outcome = NO_VERDICT if no_verdict else BEATS if winner else WORSE if worse else NO_WINNER
    sigma_d, arm_count = tested["sigma_d"], len(arms)
    detects = {"min_effect": min_effect, "detectable_effect": None, "detectable_effect_ci95": None,
               "seeds_for_min_effect": None}
    if sigma_d:
        per_sigma = power.detectable_effect(1.0, tested["seeds_used"], tested["comparisons"], arm_count)
        interval = power.sigma_interval(sigma_d, tested["df"]) if tested["df"] >= 1 else None
        detects.update(detectable_effect=per_sigma * sigma_d,
                     detectable_effect_ci95=[per_sigma * interval[0], per_sigma * interval[1]] if interval else None,
                     seeds_for_min_effect=None if tested["floor_binds"] else
                     power.seeds_needed(min_effect, sigma_d, tested["comparisons"], arm_count))
    baseline_diverged, baseline_failed = fates(arms[0])
    verdict = {"outcome": outcome, "recommendation": winner["label"] if winner else "baseline",
               "winner": winner["label"] if winner else None, "best_candidate": best["label"] if best else None,
               "worse": worse, "method": tested["method"], "alpha": stats.ALPHA, "sigma_d": sigma_d,
               "sigma_d_is_rounding": tested["floor_binds"], "df": tested["df"],
               "robust_arms": tested["robust_arms"], "collapsed_runs": int(collapsed.sum()),
               "comparisons": tested["comparisons"], "seeds_used": tested["seeds_used"], **detects}
    return {"top": top, "candidates": len(candidates), "seeds": seeds, "budget": budget,
            "resolution": resolution, "baseline_val_accuracy": rows[0], "baseline_diverged": baseline_diverged,
            "baseline_failed": baseline_failed, "arms": summary_rows,
            "candidate_trials": sorted(arm["source_trial"] for arm in arms if arm["candidate"]),
            "proxy": [arm.get("proxy") for arm in arms], "labels": [arm["label"] for arm in arms],
            "proxy_agreement": stats.rank_agreement([arm.get("proxy") for arm in arms], rows),
            "verdict": verdict, "winner": winner, "best": best}


def winner_estimate(best: dict[str, Any], rivals: list[dict[str, Any]], claimed: bool) -> float:
    """``best``'s gain conditional on how it was picked (``stats.selective_estimate``), from its own standard
    error: a winner (``claimed``) cleared its critical value and every other claimed arm's mean (``rivals``); a
    best candidate that is not a winner stayed below its critical value and above every other eligible arm. The
    difference of two arms shares the baseline's half, so d_w > d_j is d_w > 2 d_j - d_w given the rest."""
    se, mean = best["se"], best["difference_mean"]
    others = [2 * row["difference_mean"] - mean for row in rivals if row is not best]
    edge = best["critical"] * se
    if claimed:
        return stats.selective_estimate(mean, se, max([edge, *others]), df=best["df"])
    return stats.selective_estimate(mean, se, max(others, default=-math.inf), edge, df=best["df"])


def exported_arm(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The arm an export hands over: the winner, else the best candidate (labelled as not a winner)."""
    return summary.get("winner") or summary.get("best")


def pt(value: float | None, sign: bool = True) -> str:
    return "-" if value is None else f"{100 * value:+.2f}" if sign else f"{100 * value:.2f}"


def describe(summary: dict[str, Any]) -> str:
    """The terminal's account: one line per arm (raw and adjusted figures), then the verdict with its sign, then
    the power line."""
    verdict = summary["verdict"]
    budget = summary.get("budget") or {}
    used = verdict.get("seeds_used", len(summary["seeds"]))
    seeds = f"{used} fresh seeds {summary['seeds']}" if used == len(summary["seeds"]) else \
        f"{used} of {len(summary['seeds'])} fresh seeds {summary['seeds']} (the baseline has no run on the others)"
    lines = [f"confirmed on {seeds} (ResNet-{budget.get('depth')}, {budget.get('epochs')} epochs), validation, "
             f"paired with the baseline; {verdict['method']}. Bounds are one-sided 95 %: the gain is above the "
             f"lower one (and, separately, below the upper one) with 95 % confidence; raw: the arm alone, "
             f"adjusted: all candidates at once; p: adjusted one-sided p-value of no gain over the baseline:"]
    if summary.get("race"):
        lines[:0] = race.lines(summary["race"])
        if summary["race"].get("survivor") is None:  # no final test: no table to show
            return "\n".join([*lines[:-1], "verdict: no verdict: every arm of the race's field diverged or failed; "
                                            "the baseline stays the recommendation"])
    if summary.get("baseline_diverged") or summary.get("baseline_failed"):
        lines.append(f"  baseline: {summary['baseline_diverged']} diverged (collapsed ones included; their seeds "
                     f"are left out), {summary['baseline_failed']} failed")
    for row in summary["arms"]:
        name = f"  {row['label']:<24}"
        if row["difference_mean"] is None:
            lines.append(f"{name} no finished pair (diverged {row['diverged']}, failed {row['failed']})")
            continue
        raw = row["bounds_raw"]
        text = f"{name} {pt(row['difference_mean'])} pt"
        if raw:
            text += f", raw [{pt(raw[0])}, {pt(raw[1])}]"
        if row["bounds_adjusted"]:
            low, high = row["bounds_adjusted"]
            text += f", adjusted [{pt(low)}, {pt(high)}], p {row['p_better']:.3g}"
        if row.get("robust") or row.get("own_variance"):
            text += f" (on its own and the baseline's variance, above the block's; {row.get('df') or 0:g} df)"
        if row["diverged"] or row["failed"]:
            broke = f" ({row['collapsed']} collapsed: far below its other seeds and the other arms)" if row.get(
                "collapsed") else ""
            text += f"; {row['diverged']} diverged{broke}, {row['failed']} failed: cannot win"
        elif not row["candidate"]:
            text += " (reference)"
        lines.append(text)
    lines.append(verdict_line(summary))
    for line in (power_line(summary), agreement_line(summary), cost_line(summary)):
        if line:
            lines.append(line)
    return "\n".join(lines)


def agreement_line(summary: dict[str, Any]) -> str | None:
    """Did the search's ranking (its budget, its one seed) foretell the stage's? Kendall's tau, with the stage's
    own seed-to-seed agreement as a reference level (not a ceiling: a proxy as good as one stage run beats it about
    half the time), with its spread over the seeds."""
    agreement = summary.get("proxy_agreement")
    if not agreement:
        return None
    where = ""
    if (searched := summary.get("search_budget")) and searched != {key: summary["budget"].get(key) for key in searched}:
        where = f" (searched at ResNet-{searched['depth']}, {searched['epochs']} epochs)"
    tau = "undefined (all tied)" if agreement["tau"] is None else f"{agreement['tau']:+.2f}, p = {agreement['p_value']:.3g}"
    spread = "" if agreement.get("target_seed_tau_sd") is None else f", sd {agreement['target_seed_tau_sd']:.2f} over seeds"
    reference = "" if agreement["target_seed_tau"] is None else \
        f"; reference level, one of the stage's seeds against the mean of the others: tau " \
        f"{agreement['target_seed_tau']:+.2f}{spread} (what a proxy as good as one stage run reaches on average; " \
        f"not a ceiling)"
    test = "exact permutation test; few arms, few values" if agreement["arms"] <= 7 else "permutation test"
    return (f"agreement: the search's ranking{where} and the stage's mean over seeds, Kendall's tau {tau} over "
            f"{agreement['arms']} arms ({test}){reference}")


def cost_line(summary: dict[str, Any]) -> str | None:
    """What the search and this stage cost, and what the search would have cost at the stage's budget."""
    cost = summary.get("cost") or {}
    if not cost.get("search_at_target_seconds"):
        return None
    return (f"cost: the search {duration(cost['search_seconds'])} ({cost['search_seconds_per_epoch']:.1f} s an "
            f"epoch), this stage {duration(cost['stage_seconds'])} ({cost['target_seconds_per_epoch']:.1f} s an "
            f"epoch); the same search at the stage's budget would have taken "
            f"{duration(cost['search_at_target_seconds'])}")


def verdict_line(summary: dict[str, Any]) -> str:
    """One line: the outcome with its sign."""
    verdict, winner = summary["verdict"], summary.get("winner")
    worse = f"; significantly worse than the baseline: {', '.join(verdict['worse'])}" if verdict["worse"] else ""
    if verdict["outcome"] == NO_VERDICT:
        return ("verdict: none: the baseline finished on fewer than two of the seeds, or no candidate finished on "
                "all of them; the baseline stays the recommendation")
    candidates = f"{verdict['comparisons']} candidate{'s' * (verdict['comparisons'] > 1)}"
    if winner:
        low, high = winner["bounds_adjusted"]
        return (f"verdict: {winner['label']} beats the baseline by {pt(winner['difference_estimate'])} pt "
                f"(median-unbiased given that it was declared the winner of {candidates}; raw mean "
                f"{pt(winner['difference_mean'])} pt); "
                f"with 95 % confidence at least {pt(low)} pt (adjusted lower bound){worse}")
    best = summary.get("best")
    shown = (f"; the best candidate, {best['label']}, {pt(best['difference_mean'])} pt, is not a winner"
             if best else "")
    return f"verdict: no candidate beats the baseline: the baseline stays the recommendation{shown}{worse}"


def power_line(summary: dict[str, Any]) -> str | None:
    """What the stage could have detected (``power.detectable_effect``: simulated for the test that was run, its
    df and its robust path included), with the range sigma_d's 95 % interval allows, and the seeds the
    ``min_effect`` would need. When the runs agreed to within one image the noise was not measured: no seed count
    is promised from the rounding's floor."""
    verdict = summary["verdict"]
    if not verdict.get("detectable_effect") or math.isnan(verdict["detectable_effect"]):
        return None
    used = verdict.get("seeds_used", len(summary["seeds"]))
    head = (f"power: with {used} seeds, {verdict['comparisons']} candidate{'s' * (verdict['comparisons'] > 1)} "
            f"and sigma_d {pt(verdict['sigma_d'], False)} pt")
    if verdict.get("sigma_d_is_rounding"):
        return (f"{head} (the rounding of one image: the runs agreed closer than that, so the noise was not "
                f"measured), this stage detects a gain of {pt(verdict['detectable_effect'])} pt 80 % of the time if "
                f"the noise is that of the rounding, less if it is larger; how many seeds a gain of "
                f"{pt(verdict['min_effect'])} pt needs is not known from these runs")
    interval = verdict.get("detectable_effect_ci95")
    spread = (f"; between {pt(interval[0])} and {pt(interval[1])} pt given sigma_d's 95 % interval "
              f"({verdict['df']:g} df)" if interval else "")
    seeds = verdict["seeds_for_min_effect"]
    need = f"{seeds} seeds" if seeds else "more than 200 seeds"
    return (f"{head}, this stage detects a gain of {pt(verdict['detectable_effect'])} pt 80 % of the time"
            f"{spread}; a gain of {pt(verdict['min_effect'])} pt (the paper's is +1 pt) would need {need} at this "
            f"sigma_d")
