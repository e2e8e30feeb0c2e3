"""The export document: the confirmed winner (else the best schedule trial) as a schedule JSON document, with
where it came from and the evidence for it."""
from __future__ import annotations

from typing import Any

import optuna

from common.errors import UsageError
from models.schedules import Schedule, schedule_document
from search import records
from search.evidence.noise import noise_floor


def exported_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The trial an export hands over: the confirmed winner's source trial, else the best schedule trial."""
    winner = (records.confirmation(study) or {}).get("winner")
    if winner and winner["source_trial"] is not None:
        return study.trials[winner["source_trial"]]
    return records.best_trial(study)


def export_document(study: optuna.Study, depth: int | None = None) -> dict[str, Any]:
    """The JSON document ``search.export`` writes for ``study``: its confirmed winner (else its best schedule
    trial) realised at ``depth`` (default: the searched one), with provenance, evidence, the confirmation and a
    matching multi-seed evaluation. Reads the study only."""
    settings = records.settings(study)
    if not settings:
        raise UsageError(f"study: {study.study_name!r} was not made by search.run")
    confirmation = records.confirmation(study)
    winner = confirmation and confirmation.get("winner")
    best = exported_trial(study)
    schedule = Schedule.from_dict(winner["schedule"]) if winner else records.schedule_of(best)
    baseline = records.baseline_trial(study)
    floor = noise_floor(study)
    evidence = {
        "val_accuracy": best.value,
        "baseline_val_accuracy": baseline.value if baseline else None,
        "val_accuracy_gain": best.value - baseline.value if baseline else None,
        "selected_from": len(records.schedule_trials(study)),
        "baseline_seed_std": floor["baseline_seed_std"] if floor else None,
        "expected_best_of_n_by_chance": floor["expected_best_of_n_by_chance"] if floor else None,
        "seed": records.seed_of(best),
        "note": "val_accuracy_gain is one run on the search's seed, picked as the best of selected_from",
    }
    provenance = {
        "study": study.study_name, "trial": best.number, "dataset": settings["dataset"],
        "depth_searched": settings["depth"], "epochs": records.epochs(study), "subset": settings.get("subset"),
        "preset": records.preset_of(best),
    }
    extra = {}
    if winner:
        extra["confirmation"] = {
            "candidates": confirmation["candidates"], "seeds": confirmation["seeds"],
            "baseline_val_accuracy": confirmation["baseline_val_accuracy"],
            **{key: winner[key] for key in ("schedule_val_accuracy", "difference_mean", "difference_ci95", "p_value",
                                            "p_holm", "rank_in_search", "ci_excludes_zero",
                                            "significant_after_holm")}}
    if evaluation := records.evaluation_for(study, schedule):
        extra["evaluation"] = evaluation
    return schedule_document(schedule, depth or settings["depth"], provenance=provenance, evidence=evidence,
                             **extra)
