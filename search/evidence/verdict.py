"""The confirm stage's verdict: every arm paired with the baseline seed by seed, the winner, and its account in
words for the terminal, the dashboard note and the export."""
from __future__ import annotations

from typing import Any

import optuna

from search import records
from search.evidence.stats import holm, paired_statistics
from search.records import BASELINE, StudyKey


def summarise(study: optuna.Study, confirm: optuna.Study) -> dict[str, Any]:
    """Paired statistics of every arm against the baseline, seed by seed, and the confirmed winner."""
    seeds = records.study_value(confirm, StudyKey.PLAN)["seeds"]
    arms = records.study_value(confirm, StudyKey.ARMS)
    accuracy: dict[tuple[str, int], float | None] = {}
    for trial in records.finished(confirm):
        key = (trial.params.get("arm"), trial.params.get("seed"))
        if trial.state == optuna.trial.TrialState.COMPLETE:
            accuracy.setdefault(key, trial.value)
        elif records.diverged_reason(trial) is not None:
            accuracy.setdefault(key, None)
    baseline = [accuracy.get((BASELINE, seed)) for seed in seeds]
    ranks = {t.number: rank for rank, t in enumerate(records.ranked(records.complete(study)), 1)}
    rows = []
    for arm in arms:
        if arm["label"] == BASELINE:
            continue
        values = [accuracy.get((arm["label"], seed)) for seed in seeds]
        stats = paired_statistics(baseline, values)
        rows.append({"label": arm["label"], "source_trial": arm["source_trial"], "candidate": arm["candidate"],
                     "schedule": arm["schedule"], "schedule_val_accuracy": values,
                     "rank_in_search": ranks.get(arm["source_trial"]), **stats})
    candidates = [row for row in rows if row["candidate"]]
    for row, adjusted in zip(candidates, holm([row["p_value"] for row in candidates])):
        row["p_holm"] = adjusted
    scored = [row for row in candidates if row["difference_mean"] is not None]
    winner = max(scored, key=lambda row: row["difference_mean"], default=None)
    return {"candidates": len(candidates), "seeds": seeds, "baseline_val_accuracy": baseline, "arms": rows,
            "winner": winner and {
                **{key: winner[key] for key in ("label", "source_trial", "schedule", "schedule_val_accuracy",
                                                "difference_mean", "difference_ci95", "p_value", "p_holm",
                                                "rank_in_search")},
                "ci_excludes_zero": bool(winner["difference_ci95"] and winner["difference_ci95"][0] > 0),
                "significant_after_holm": winner["p_holm"] is not None and winner["p_holm"] < 0.05}}


def describe(summary: dict[str, Any]) -> str:
    """The terminal's account of a confirmation: one line per arm, then the verdict."""
    lines = [f"confirmed on {len(summary['seeds'])} fresh seeds {summary['seeds']}, validation, paired with the "
             f"baseline:"]
    for row in summary["arms"]:
        if row["difference_mean"] is None:
            lines.append(f"  {row['label']:<24} no finished pair")
            continue
        ci = row["difference_ci95"]
        interval = f" 95 % CI [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else ""
        holm_text = f", Holm p = {row['p_holm']:.3g}" if row.get("p_holm") is not None else ""
        p_text = f", p = {row['p_value']:.3g}" if row["p_value"] is not None else ""
        lines.append(f"  {row['label']:<24} {100 * row['difference_mean']:+.2f} pt{interval}{p_text}{holm_text}")
    winner = summary["winner"]
    if winner is None:
        return "\n".join(lines + ["no candidate finished a pair: no confirmed winner"])
    verdict = ("its 95 % CI excludes zero" if winner["ci_excludes_zero"] else "its 95 % CI includes zero: "
               "no evidence that it beats the baseline") + (
        ", and it stays significant after Holm's correction" if winner["significant_after_holm"] else "")
    lines.append(f"confirmed winner: {winner['label']} ({100 * winner['difference_mean']:+.2f} pt); {verdict}")
    return "\n".join(lines)
