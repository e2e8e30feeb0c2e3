"""Optuna's own cost per trial in a grown SQLite study: sampling (TPE over the schedule space) + storage.

    python -m benchmarks.search_overhead --trials 200

Runs the real search space, sampler and storage with a free objective (a smooth function of the realised
factors), and reports seconds per trial over the last 20 trials, when the study holds ``--trials`` of them.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import optuna

from common.cli import ArgumentParser, positive_int, run_command
from search.config import SearchConfig
from search.space import suggest_schedule
from search.study import open_study
from storage import open_storage


def measure(trials: int, sampler: str) -> dict:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'overhead.db'}"
        config = SearchConfig(dataset="cifar10", depth=32, trials=trials, epochs=1, sampler=sampler,
                              pruner="none", storage=url)
        study = open_study(open_storage(url), config, epochs=1)

        def objective(trial):
            values = np.array(suggest_schedule(trial, config.family, config.scale_range).values(32))
            trial.report(float(-np.square(values - 1.1).mean()), 1)
            return float(-np.square(values - 1.1).mean())

        stamps = []
        study.optimize(objective, n_trials=trials, callbacks=[lambda s, t: stamps.append(time.perf_counter())])
    tail = np.diff(stamps[-21:])
    return {"sampler": sampler, "trials": trials, "seconds_per_trial_last_20": round(float(tail.mean()), 4),
            "seconds_per_trial_max_last_20": round(float(tail.max()), 4)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.search_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=positive_int, default=200, help="trials in the study (default 200)")
    parser.add_argument("--sampler", default="tpe", choices=("tpe", "gp", "cmaes", "random"))
    args = parser.parse_args(argv)
    print(json.dumps(measure(max(args.trials, 21), args.sampler)))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
