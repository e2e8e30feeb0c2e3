"""The study's own noise, in the unit a gain is measured in, and what chance alone would show.

Every search trial is trained on the study's seed, so a searched gain is a *within-seed* difference (schedule -
baseline on the same initial weights and data order). Its chance spread is sigma_d, the standard deviation of one
seed's paired difference. Once the confirm stage has run at the search's own budget, sigma_d is measured there
(its paired differences, pooled over arms and seeds; a stage at a target budget measures another budget's noise). Before it, sigma_d is estimated as sqrt(2) times the baseline's spread over its seeds
(the replicas): an upper bound, for the replicas differ in seed, so their spread holds the seed's effect, which a
paired difference cancels (and two schedules on one seed are positively correlated); the chance line errs high,
never low; uncertain with few runs (its 95 % interval is stated).

The chance line: every searched difference subtracts the *same* baseline run, so the N differences are correlated
(1/2). The best of N candidates as good as the baseline reaches on average sigma_d E[max of N normals] / sqrt(2)
(the shared run shifts them all alike; 1.45 sigma_d at N = 30), and 5 % of the time more than the one-sided
Dunnett critical value for N comparisons with a known variance (2.75 sigma_d at N = 30) (``power.chance_best_of``).
N counts every finished candidate, pruned ones included: they were part of the selection.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna

from search import records
from search.evidence import power


def noise_floor(study: optuna.Study) -> dict[str, Any] | None:
    """``{"sigma_d", "sigma_d_ci95", "source", "runs"/"df", "seeds", "baseline_val_accuracy",
    "baseline_seed_std", "selected_from", "chance_best_mean", "chance_best_p95"}``; None before two baseline
    runs finished and without a confirm stage."""
    runs = sorted(records.baseline_runs(study), key=lambda t: t.number)
    values = [t.value for t in runs]
    floor: dict[str, Any] = {"seeds": [records.seed_of(t) for t in runs], "baseline_val_accuracy": values,
                             "baseline_seed_std": float(np.std(values, ddof=1)) if len(runs) > 1 else None,
                             "selected_from": len(records.candidate_pool(study))}
    confirmation = records.confirmation(study) or {}
    verdict = confirmation.get("verdict") or {}
    searched = records.budget(study).run()
    if confirmation.get("budget", searched) != searched:  # a stage at a target: another budget's noise
        verdict = {}
    if verdict.get("sigma_d") and verdict.get("df"):
        source = ("the confirm stage's runs agreed to within one image: the rounding's" if
                  verdict.get("sigma_d_is_rounding") else f"measured by the confirm stage ({verdict['df']:g} df)")
        floor.update(sigma_d=verdict["sigma_d"], sigma_d_ci95=list(power.sigma_interval(verdict["sigma_d"],
                                                                                         verdict["df"])),
                     source=source)
    elif floor["baseline_seed_std"] is not None:
        sigma_d = math.sqrt(2) * floor["baseline_seed_std"]
        interval = power.sigma_interval(sigma_d, len(runs) - 1)
        floor.update(sigma_d=sigma_d, sigma_d_ci95=list(interval),
                     source=f"estimated: sqrt(2) x the baseline's spread over {len(runs)} seeds, an upper bound "
                            f"(it holds the seeds' own effect)")
    else:
        return None
    chance = power.chance_best_of(floor["selected_from"], floor["sigma_d"])
    floor.update(chance_best_mean=chance["mean"], chance_best_p95=chance["p95"])
    return floor


def gain_in_noise(gain: float, floor: dict[str, Any] | None, short: bool = False) -> str:
    """``+0.85 pt (+1.5 sigma_d; chance: the best of 31 equal candidates +1.20 pt at the 95th percentile)``; with
    ``short`` the sigma_d count only; just ``+0.85 pt`` without a noise floor."""
    text = f"{100 * gain:+.2f} pt"
    if floor is None or not floor["sigma_d"]:
        return text
    text += f" ({gain / floor['sigma_d']:+.1f} sigma_d"
    if short:
        return text + f"; chance p95 {100 * floor['chance_best_p95']:+.2f} pt)"
    low, high = floor["sigma_d_ci95"]
    return (f"{text}, sigma_d {100 * floor['sigma_d']:.2f} pt [95 % {100 * low:.2f}-{100 * high:.2f}], "
            f"{floor['source']}; the best of {floor['selected_from']} candidates as good as the baseline would "
            f"show {100 * floor['chance_best_p95']:+.2f} pt by chance at the 95th percentile, "
            f"{100 * floor['chance_best_mean']:+.2f} pt on average)")
