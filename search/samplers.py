"""The study's sampler: which one, and the seed each process samples from."""
from __future__ import annotations

import importlib.util
import os
import socket
import time
import warnings
import weakref
import zlib

import numpy as np
import optuna

from common.errors import UsageError
from search.config import SearchConfig


def sampler_seed(config: SearchConfig, worker: int = 0, created: bool = True) -> int:
    """This process's sampler seed.

    The process that created the study (worker 0) uses ``--seed`` itself, so a study searched by one worker from
    start to end is reproducible from it. Every other process (more workers, other machines joining, a resumed
    study) draws its seed from NumPy's SeedSequence over ``--seed``, its host, its pid and the clock: two
    processes on any machines never share a stream, so neither repeats the other's proposals (two machines with
    the same seed and the same history would otherwise propose the same points). Each trial records the seed
    of the process that sampled it (``sampler_seed``).
    """
    if created and worker == 0:
        return config.seed
    entropy = [config.seed, zlib.crc32(socket.gethostname().encode()), os.getpid(), time.time_ns()]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


_SEEDS: "weakref.WeakKeyDictionary[optuna.samplers.BaseSampler, int]" = weakref.WeakKeyDictionary()


# what a sampler's model runs on, which Optuna imports only once it first samples past its start-up trials
NEEDS = {"gp": ("torch", "PyTorch"), "cmaes": ("cmaes", "the cmaes package")}


def check_installed(name: str) -> None:
    """UsageError when sampler ``name``'s model is not installed: otherwise every trial past the sampler's
    start-up ones would fail. ``cmaes`` is a dependency of the tool; PyTorch (for ``gp``) is not (a large install)."""
    if name in NEEDS and importlib.util.find_spec(NEEDS[name][0]) is None:
        module, what = NEEDS[name]
        raise UsageError(f"sampler: {name} needs {what}, which Optuna's sampler runs on: python -m pip install "
                         f"{module}, or choose another --sampler")


def make_sampler(config: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with ``seed`` (``sampler_seed``; ``seed_of`` gives it back)."""
    sampler = _sampler(config, seed)
    _SEEDS[sampler] = seed
    return sampler


def seed_of(sampler: optuna.samplers.BaseSampler) -> int | None:
    """The seed ``make_sampler`` gave ``sampler`` (what every trial records), or None for another sampler."""
    return _SEEDS.get(sampler)


def _sampler(config: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if config.sampler == "tpe":
        # multivariate + group: the family's parameters are modelled jointly, and only with their own family;
        # constant liar keeps parallel workers from sampling the same point while a trial runs
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    # GP and CMA-ES only get fixed-dimension families (SearchConfig refuses the others), so nothing is sampled
    # independently and their warning stays on in case that ever changes
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if config.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, consider_pruned_trials=True)
    return optuna.samplers.RandomSampler(seed=seed)
