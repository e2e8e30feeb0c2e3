"""Pruning that decides only where validation accuracy ranks trials as their final accuracy does, and the measure
that shows whether it does.

At learning rate 0.1, validation accuracy jumps by points from epoch to epoch and says little about the final
accuracy; after each /10 drop (at 50 % and 75 % of the epochs) it settles. ``RungPruner`` therefore decides at two
rungs only, at 55 % and 80 % of the epochs, keeping the top third of the trials that reached each rung: successive
halving with rungs placed by the learning-rate schedule. Optuna's SuccessiveHalvingPruner and HyperbandPruner
place rungs geometrically (min_resource x factor^k, factor an integer >= 2): from one epoch, every rung of a
182-epoch run (1, 3, 9, 27, 81) comes before the first drop; from 100 epochs, the second rung is past the end.

``fidelity`` measures it on the study itself: per epoch, Kendall's tau between the completed trials' validation
accuracy at that epoch and their final one.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from search import records

PRUNERS = ("rungs", "hyperband", "median", "none")
RUNG_FRACTIONS = (0.55, 0.80)  # 5 % of the run after each learning-rate drop
KEEP = 1 / 3
MIN_PEERS = 4  # other trials that must have reached a rung before it decides anything
FIDELITY_MIN_TRIALS = 8
HYPERBAND_MIN_RESOURCE, HYPERBAND_FACTOR = 1, 3


def rung_epochs(epochs: int) -> list[int]:
    """The epochs at which ``RungPruner`` decides for a run of ``epochs``: 55 % and 80 %, rounded up, before the
    last epoch (none for runs of 2 epochs or fewer)."""
    return sorted({math.ceil(fraction * epochs) for fraction in RUNG_FRACTIONS} & set(range(1, epochs)))


def pruner_rungs(pruner: str, epochs: int) -> list[int]:
    """Epochs at which a study's pruner can stop a trial: the rungs, hyperband's geometric rungs, or none
    (median decides at every epoch; none never)."""
    if pruner == "rungs":
        return rung_epochs(epochs)
    if pruner == "hyperband":
        rungs, rung = [], HYPERBAND_MIN_RESOURCE
        while rung < epochs:
            rungs.append(rung)
            rung *= HYPERBAND_FACTOR
        return rungs
    return []


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """The pruner ``name`` for trials of ``epochs``: successive halving at 55 % and 80 % of the epochs (``rungs``,
    the default), hyperband over epochs (1..epochs, factor 3: aggressive, from the first epoch), the median rule
    after 5 finished trials, or none."""
    if name == "rungs":
        return RungPruner(rung_epochs(epochs))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=HYPERBAND_MIN_RESOURCE, max_resource=max(epochs, 1),
                                              reduction_factor=HYPERBAND_FACTOR)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


class RungPruner(optuna.pruners.BasePruner):
    """Successive halving at fixed epochs: at each rung, a trial is stopped unless its validation accuracy there is
    within the top ``keep`` share of the trials that reported at that rung (complete, pruned or running).

    Args:
        rungs: epochs (1-based steps) at which to decide; between them nothing is stopped.
        keep: share kept at each rung, in (0, 1]; 1/3 keeps the top third.
        min_peers: no decision at a rung before this many other trials have reached it.
    """

    def __init__(self, rungs: Sequence[int], keep: float = KEEP, min_peers: int = MIN_PEERS):
        if not 0 < keep <= 1:
            raise ValueError(f"keep must lie in (0, 1], got {keep}")
        self.rungs, self.keep, self.min_peers = frozenset(rungs), keep, min_peers

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs:
            return False
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        own = trial.intermediate_values[step]
        if math.isnan(own):
            return True
        peers = [t.intermediate_values[step] for t in study.get_trials(
                     deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
                 if t.number != trial.number and step in t.intermediate_values
                 and not math.isnan(t.intermediate_values[step])]
        if len(peers) < self.min_peers:
            return False
        ranked = sorted((sign * value for value in [*peers, own]), reverse=True)
        cutoff = ranked[max(1, math.ceil(len(ranked) * self.keep)) - 1]
        return sign * own < cutoff


def fidelity(study: optuna.Study) -> list[dict[str, Any]]:
    """Per epoch, Kendall's tau between the completed trials' validation accuracy at that epoch and their final
    accuracy: ``[{"epoch": e, "tau": t, "trials": n}, ...]`` (tau in [-1, 1], 1 = the same ranking; None where the
    accuracies are all tied). Only trials with a full curve count; empty below ``FIDELITY_MIN_TRIALS`` of them."""
    epochs = records.epochs(study)
    curves = [t for t in records.complete(study)
              if epochs and all(e in t.intermediate_values for e in range(1, epochs + 1))]
    if len(curves) < FIDELITY_MIN_TRIALS:
        return []
    finals = [t.value for t in curves]
    rows = []
    for epoch in range(1, epochs + 1):
        tau = stats.kendalltau([t.intermediate_values[epoch] for t in curves], finals).statistic
        rows.append({"epoch": epoch, "tau": None if math.isnan(tau) else round(float(tau), 3),
                     "trials": len(curves)})
    return rows
