"""The study's own noise floor, and a gain stated in its units next to what chance alone would give."""
from __future__ import annotations

from typing import Any

import numpy as np
import optuna

from search import records
from search.evidence.stats import expected_best_of


def noise_floor(study: optuna.Study) -> dict[str, Any] | None:
    """The study's own noise: the spread of its baseline runs over seeds, on its own budget, and the gain over the
    baseline that the best of N schedules would show by chance if all N were as good as the baseline.

    ``{"seeds": [...], "baseline_val_accuracy": [...], "baseline_seed_std": s, "selected_from": N,
    "expected_best_of_n_by_chance": s * E[max of N standard normals]}``; None below two finished baseline runs.
    N counts the completed trials. (The search's trials share one seed, so the spread across schedules at that
    seed is not exactly the spread across seeds; the seeds' spread is the yardstick a re-run would face.)
    """
    runs = sorted(records.baseline_runs(study), key=lambda t: t.number)
    if len(runs) < 2:
        return None
    values = [t.value for t in runs]
    std = float(np.std(values, ddof=1))
    selected_from = len(records.complete(study))
    return {"seeds": [records.seed_of(t) for t in runs], "baseline_val_accuracy": values,
            "baseline_seed_std": std, "selected_from": selected_from,
            "expected_best_of_n_by_chance": std * expected_best_of(selected_from)}


def gain_in_noise(gain: float, floor: dict[str, Any] | None) -> str:
    """``+0.85 pt (2.1 baseline sd; the best of 40 equal schedules: +0.9 pt by chance)`` or just ``+0.85 pt``."""
    text = f"{100 * gain:+.2f} pt"
    if floor is None or floor["baseline_seed_std"] <= 0:
        return text
    return (f"{text} ({gain / floor['baseline_seed_std']:+.1f} sd of the baseline over {len(floor['seeds'])} "
            f"seeds; the best of {floor['selected_from']} schedules as good as the baseline would show "
            f"{100 * floor['expected_best_of_n_by_chance']:+.2f} pt by chance)")
