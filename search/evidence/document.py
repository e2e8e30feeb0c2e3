"""The export document: the schedule the study recommends trying, as a schedule JSON document, with where it came
from, the verdict with its sign, and the evidence behind it.

What is exported: the confirm stage's winner; without one, its best candidate, with ``verdict.outcome`` saying that
no candidate beats the baseline (the baseline stays the recommendation); without a confirm stage, the search's
best candidate, a single-seed best of N, and ``verdict.outcome`` ``not_confirmed``. A confirmation made before the
search was extended is marked ``verdict.current: false``.
"""
from __future__ import annotations

from typing import Any

import optuna

from common.errors import UsageError
from models.schedules import schedule_document
from search import records
from search.evidence.confirm_plan import is_current
from search.evidence.noise import noise_floor
from search.evidence.verdict import exported_arm

NOT_CONFIRMED = "not_confirmed"
ARM_FIELDS = ("label", "schedule_val_accuracy", "difference_mean", "difference_estimate", "bounds_raw",
              "bounds_adjusted", "p_better", "p_worse", "se", "df", "robust", "pairs", "diverged", "collapsed", "failed",
              "rank_in_search")


def exported_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The search trial whose schedule an export hands over: the confirmed winner's (else the confirmed best
    candidate's) source trial, else the best candidate."""
    arm = exported_arm(records.confirmation(study) or {})
    if arm and arm.get("source_trial") is not None:
        return study.trials[arm["source_trial"]]
    return records.best_trial(study)


def export_document(study: optuna.Study, depth: int | None = None) -> dict[str, Any]:
    """The JSON document ``shortcut-search export`` writes for ``study``, realised at ``depth`` (default: the depth the
    verdict was reached at, the searched one unless the stage confirmed at a target). Reads the study only."""
    settings = records.settings(study)
    if not settings:
        raise UsageError(f"study: {study.study_name!r} was not made by shortcut-search run")
    best = exported_trial(study)
    schedule = records.schedule_of(best)
    baseline = records.baseline_trial(study)
    floor = noise_floor(study) or {}
    evidence = {
        "val_accuracy": best.value,
        "baseline_val_accuracy": baseline.value if baseline else None,
        "val_accuracy_gain": best.value - baseline.value if baseline else None,
        "selected_from": len(records.candidate_pool(study)),
        "searched": len([t for t in records.finished(study) if records.is_searched(t)]),
        "rank_in_search": records.rank_in_search(study, best.number),
        **{key: floor.get(key) for key in ("baseline_seed_std", "sigma_d", "sigma_d_ci95", "chance_best_mean",
                                           "chance_best_p95")},
        "sigma_d_source": floor.get("source"),
        "seed": records.seed_of(best),
        "note": "val_accuracy_gain is one run on the search's seed, picked as the best of selected_from "
                "candidates (pruned ones included); chance_best_p95 is what the best of that many candidates as "
                "good as the baseline would show 5 % of the time",
    }
    confirmation = records.confirmation(study)
    ranked_on = records.budget(study).run()
    verdict_on = (confirmation or {}).get("budget") or ranked_on
    provenance = {
        "study": study.study_name, "trial": best.number, "dataset": settings["dataset"],
        "depth_searched": settings["depth"], "epochs": records.epochs(study), "subset": settings.get("subset"),
        "batch_size": settings.get("batch_size"), "preset": records.preset_of(best),
        "ranked_on": ranked_on, "verdict_on": {key: verdict_on.get(key) for key in ranked_on},
    }
    extra: dict[str, Any] = {"verdict": verdict_block(study)}
    if confirmation and confirmation.get("proxy_agreement"):
        extra["proxy_agreement"] = confirmation["proxy_agreement"]
    if arm := exported_arm(confirmation or {}):
        extra["confirmation"] = {"seeds": confirmation["seeds"], "budget": confirmation["budget"],
                                 "candidates": confirmation["candidates"],
                                 "baseline_val_accuracy": confirmation["baseline_val_accuracy"],
                                 **{key: arm.get(key) for key in ARM_FIELDS}}
        if confirmation.get("race"):  # how the stage spent its runs: seeds per arm, who was dropped and why
            extra["confirmation"]["allocation"] = confirmation["race"]
    if evaluation := records.evaluation_for(study, schedule):
        extra["evaluation"] = evaluation
    return schedule_document(schedule, depth or verdict_on["depth"], provenance=provenance, evidence=evidence,
                             **extra)


def verdict_block(study: optuna.Study) -> dict[str, Any]:
    """The machine-readable verdict: its outcome and what it recommends, with the method, seeds, budget and
    power; ``current`` false when the search has new top candidates since the confirm stage ran."""
    confirmation = records.confirmation(study)
    if not confirmation:
        return {"outcome": NOT_CONFIRMED, "recommendation": None, "current": False,
                "exported": "the search's best candidate: a single-seed best of N, not confirmed"}
    verdict = confirmation["verdict"]
    exported = ("the winner" if confirmation.get("winner") else
                "the best candidate, which does not beat the baseline")
    return {**verdict, "seeds": confirmation["seeds"], "budget": confirmation["budget"],
            "current": is_current(study, confirmation), "exported": exported}
