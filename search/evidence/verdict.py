"""The confirm stage's verdict: does a candidate beat the baseline? One-sided, simultaneous over the candidates,
with a sign, and an account in words for the terminal, the dashboard note, the report and the export.

Three outcomes (``verdict["outcome"]``):

- ``beats_baseline``: a candidate's Dunnett-adjusted one-sided 95 % lower bound is above zero; the winner is the
  best such candidate (with a pooled variance every complete arm shares one standard error, so it is also the one
  with the highest mean). Its headline interval is the adjusted one; its estimate is corrected for having been
  picked as the best of K (``stats.corrected_best``), the raw mean beside it.
- ``no_candidate_beats_baseline``: the baseline stays the recommendation; the best candidate is named as such.
- ``worse_than_baseline``: as the previous one, and a candidate is significantly worse (its adjusted upper bound
  is below zero): named in ``worse`` (also listed when another candidate wins).

An arm with a diverged run cannot win (divergence is a property of the schedule); a run that failed with an error
is retried by the stage, and an arm still missing one after its retries cannot win either. Every figure names its
seeds, the budget it was trained on, and what the stage could have detected (``detectable_effect``).
"""
from __future__ import annotations

import math
from typing import Any

from common.log import duration
from search.evidence import stats

BEATS, NO_WINNER, WORSE = "beats_baseline", "no_candidate_beats_baseline", "worse_than_baseline"
NO_VERDICT = "no_verdict"  # the baseline finished on fewer than two seeds, or no candidate arm is complete


def summarise(arms: list[dict[str, Any]], seeds: list[int], accuracy: dict[tuple[str, int], float | None],
              failed: set[tuple[str, int]], resolution: float | None, budget: dict[str, Any],
              min_effect: float = 0.01, top: int | None = None) -> dict[str, Any]:
    """The verdict over ``arms`` (the baseline first; each ``{"key", "label", "schedule", "source_trial",
    "candidate", "rank_in_search"}``) on ``seeds``: ``accuracy[(arm key, seed)]`` is a run's validation accuracy,
    None when it diverged; ``failed`` the runs still failing after their retries. ``resolution`` is 1 / validation
    images; ``min_effect`` the gain (a fraction) whose seeds the power line states."""
    rows = [[accuracy.get((arm["key"], seed)) for seed in seeds] for arm in arms]
    candidates = [index for index, arm in enumerate(arms) if arm["candidate"]]
    tested = stats.many_to_one(rows, candidates, resolution)

    def fates(arm):  # an arm's runs that diverged, and that failed for good
        return (sum((arm["key"], seed) in accuracy and accuracy[(arm["key"], seed)] is None for seed in seeds),
                sum((arm["key"], seed) in failed for seed in seeds))

    summary_rows = []
    for arm, values, result in zip(arms[1:], rows[1:], tested["arms"]):
        diverged, lost = fates(arm)
        row = {**{key: arm[key] for key in ("key", "label", "source_trial", "candidate", "schedule",
                                            "rank_in_search")},
               "schedule_val_accuracy": values, "diverged": diverged, "failed": lost, **result}
        row["eligible"] = bool(arm["candidate"] and result["complete"] and not diverged and not lost)
        summary_rows.append(row)
    eligible = [row for row in summary_rows if row["eligible"]]
    better = [row for row in eligible if row["p_better"] < stats.ALPHA]
    worse = [row["label"] for row in summary_rows if row["candidate"] and row["p_worse"] is not None
             and row["p_worse"] < stats.ALPHA]
    scored = [row for row in summary_rows if row["candidate"] and row["difference_mean"] is not None]
    winner = max(better, key=lambda row: row["difference_mean"], default=None)
    best = winner or max(eligible or scored, key=lambda row: row["difference_mean"], default=None)
    if best is not None and best["eligible"]:  # the best of K: its mean is high partly by chance
        se = tested["sigma_d"] / math.sqrt(tested["seeds_used"])
        corrected = stats.corrected_best([row["difference_mean"] for row in eligible], se)
        low, high = best["bounds_adjusted"]
        best["difference_estimate"] = min(max(corrected, low), high)
    no_verdict = tested["seeds_used"] < 2 or tested["sigma_d"] is None
    outcome = NO_VERDICT if no_verdict else BEATS if winner else WORSE if worse else NO_WINNER
    sigma_d, arm_count = tested["sigma_d"], len(arms)
    power = {"min_effect": min_effect, "detectable_effect": None, "seeds_for_min_effect": None}
    if sigma_d:
        power.update(detectable_effect=stats.detectable_effect(sigma_d, tested["seeds_used"],
                                                               tested["comparisons"], arm_count),
                     seeds_for_min_effect=stats.seeds_needed(min_effect, sigma_d, tested["comparisons"], arm_count))
    baseline_diverged, baseline_failed = fates(arms[0])
    verdict = {"outcome": outcome, "recommendation": winner["label"] if winner else "baseline",
               "winner": winner["label"] if winner else None, "best_candidate": best["label"] if best else None,
               "worse": worse, "method": tested["method"], "alpha": stats.ALPHA, "sigma_d": sigma_d,
               "sigma_d_is_rounding": tested["floor_binds"], "df": tested["df"],
               "comparisons": tested["comparisons"], "seeds_used": tested["seeds_used"], **power}
    return {"top": top, "candidates": len(candidates), "seeds": seeds, "budget": budget,
            "resolution": resolution, "baseline_val_accuracy": rows[0], "baseline_diverged": baseline_diverged,
            "baseline_failed": baseline_failed, "arms": summary_rows,
            "candidate_trials": sorted(arm["source_trial"] for arm in arms if arm["candidate"]),
            "proxy": [arm.get("proxy") for arm in arms], "labels": [arm["label"] for arm in arms],
            "proxy_agreement": stats.rank_agreement([arm.get("proxy") for arm in arms], rows),
            "verdict": verdict, "winner": winner, "best": best}


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
    if summary.get("baseline_diverged") or summary.get("baseline_failed"):
        lines.append(f"  baseline: {summary['baseline_diverged']} diverged, {summary['baseline_failed']} failed")
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
        if row.get("own_variance"):
            text += " (on its own variance, above the pool's)"
        if row["diverged"] or row["failed"]:
            text += f"; {row['diverged']} diverged, {row['failed']} failed: cannot win"
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
    own seed-to-seed agreement as the ceiling."""
    agreement = summary.get("proxy_agreement")
    if not agreement:
        return None
    where = ""
    if (searched := summary.get("search_budget")) and searched != {key: summary["budget"].get(key) for key in searched}:
        where = f" (searched at ResNet-{searched['depth']}, {searched['epochs']} epochs)"
    tau = "undefined (all tied)" if agreement["tau"] is None else f"{agreement['tau']:+.2f}, p = {agreement['p_value']:.3g}"
    ceiling = "" if agreement["target_seed_tau"] is None else \
        f"; one of the stage's seeds against the mean of the others: tau {agreement['target_seed_tau']:+.2f} (what " \
        f"a proxy as good as the stage's own runs reaches)"
    test = "exact permutation test; few arms, few values" if agreement["arms"] <= 7 else "permutation test"
    return (f"agreement: the search's ranking{where} and the stage's mean over seeds, Kendall's tau {tau} over "
            f"{agreement['arms']} arms ({test}){ceiling}")


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
                f"(corrected for picking the best of {candidates}; raw mean {pt(winner['difference_mean'])} pt); "
                f"with 95 % confidence at least {pt(low)} pt (adjusted lower bound){worse}")
    best = summary.get("best")
    shown = (f"; the best candidate, {best['label']}, {pt(best['difference_mean'])} pt, is not a winner"
             if best else "")
    return f"verdict: no candidate beats the baseline: the baseline stays the recommendation{shown}{worse}"


def power_line(summary: dict[str, Any]) -> str | None:
    """What the stage could have detected, and what the ``min_effect`` would need."""
    verdict = summary["verdict"]
    if not verdict.get("detectable_effect") or math.isnan(verdict["detectable_effect"]):
        return None
    seeds = verdict["seeds_for_min_effect"]
    need = f"{seeds} seeds" if seeds else "more than 200 seeds"
    rounding = " (the rounding of one image: the runs agreed closer than that)" if verdict.get(
        "sigma_d_is_rounding") else ""
    return (f"power: with {verdict.get('seeds_used', len(summary['seeds']))} seeds, {verdict['comparisons']} "
            f"candidate{'s' * (verdict['comparisons'] > 1)} and sigma_d {pt(verdict['sigma_d'], False)} pt{rounding}, "
            f"this stage detects a gain of {pt(verdict['detectable_effect'])} pt 80 % of the time; a gain of "
            f"{pt(verdict['min_effect'])} pt (the paper's is +1 pt) would need {need}")
