"""What the whole search says about each candidate: a Gaussian process over the realised per-block factors.

A search trial is one noisy seed; its neighbours in the search (schedules whose factors are close) carry
information about it, for a schedule is a smooth curve over the blocks. So the confirm stage's race
(``search.evidence.race``) picks its field by this surrogate's posterior mean, not by each trial's own value:
benchmarks/search_power.py measured the pick alone to find a planted +2 sigma_d schedule 36 % of the time against
23 % for the raw top K, at the same trainings (cpu-cifar noise, 300 studies a cell; benchmarks/README.md).

The model: scikit-learn's ``GaussianProcessRegressor``, a constant times an isotropic RBF over the factors plus a
``WhiteKernel`` (each trial's run noise, fitted), targets normalised; fitted on every completed search trial on
the search's seed (the baseline and the paper's schedules too; not the learned arms, nor the baseline's replicas
on other seeds), its kernel's hyperparameters by maximum likelihood.
Deterministic for the same trials (``random_state`` 0). Units: the trials' metric, a validation accuracy in
[0, 1]; ``sd`` is the posterior standard deviation of the *mean* accuracy at a schedule (the white noise left
out).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import optuna

from search import records
from search.records import TrialKey

__all__ = ["Estimate", "MIN_TRIALS", "estimates", "fitted_trials", "posterior"]

MIN_TRIALS = 5  # below this many completed trials with factors there is nothing to pool: the raw ranking stands


@dataclass(frozen=True)
class Estimate:
    """The surrogate's view of one candidate: its trial, posterior ``mean`` and ``sd`` (accuracy, [0, 1])."""

    trial: int
    mean: float
    sd: float

    def to_dict(self) -> dict:
        return {"trial": self.trial, "mean": round(self.mean, 6), "sd": round(self.sd, 6)}


def fitted_trials(study: optuna.Study) -> list[int]:
    """The trial numbers ``estimates`` fits on now: a stored fit on other trials is out of date."""
    return sorted(t.number for t in _points(study))


def _points(study: optuna.Study) -> list:
    """The trials that are points of the space, on the search's seed: not the learned arms (their recorded
    factors are only where their trainable scalars started), nor the baseline's replicas (other seeds: their
    seed effects are not the schedule's)."""
    return [t for t in records.complete(study) if TrialKey.VALUES.of(t) and t.value is not None
            and not records.is_learned_arm(t) and not records.is_replica(t)]


def estimates(study: optuna.Study) -> tuple[list[Estimate], list[int]]:
    """The study's candidates (``records.candidates``) by the surrogate's posterior mean, best first (ties: the raw
    ranking's order), and the trial numbers it was fitted on. Fewer than ``MIN_TRIALS`` trials with factors: the
    raw ranking, each candidate's mean its own value and sd 0 (``fitted`` says which)."""
    candidates = [t for t in records.candidates(study) if TrialKey.VALUES.of(t)]
    points = _points(study)
    fitted_on = sorted(t.number for t in points)
    if len(points) < MIN_TRIALS or len({len(TrialKey.VALUES.of(t)) for t in points}) != 1:
        return [Estimate(t.number, float(t.value), 0.0) for t in candidates], fitted_on
    x = np.array([TrialKey.VALUES.of(t) for t in points], float)
    asked = np.array([TrialKey.VALUES.of(t) for t in candidates], float).reshape(len(candidates), x.shape[1])
    mean, sd = posterior(x, np.array([t.value for t in points], float), asked)
    order = sorted(range(len(candidates)), key=lambda i: -mean[i])  # stable: the raw ranking breaks ties
    return [Estimate(candidates[i].number, float(mean[i]), float(sd[i])) for i in order], fitted_on


def posterior(x: np.ndarray, y: np.ndarray, asked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian process fitted on factors ``x`` (trials x blocks) and values ``y``: its posterior mean and
    the sd of that mean (the fitted white noise left out) at ``asked`` (points x blocks)."""
    from sklearn.gaussian_process import GaussianProcessRegressor  # a second to import: only when fitting
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(0.2, (0.02, 5.0)) + WhiteKernel(1.0, (1e-3, 1e3))
    model = GaussianProcessRegressor(kernel, normalize_y=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a bound reached by the kernel's fit is a fact of this study, not a fault
        model.fit(x, y)
    if not len(asked):
        return np.zeros(0), np.zeros(0)
    mean, sd = model.predict(asked, return_std=True)
    noise = model.kernel_.k2.noise_level * float(np.std(y)) ** 2  # the white noise, back in the targets' units
    return np.asarray(mean, float), np.sqrt(np.maximum(np.asarray(sd) ** 2 - noise, 0.0))
