"""The same seeded search with and without pruning: epochs trained, wall time, and what each found.

    python -m benchmarks.search_cost --trials 16 --epochs 6

On digits (offline) by default, or CIFAR with --dataset cifar10 --data-dir DIR --subset N. Reports per run the
total epochs trained, wall seconds, the best validation accuracy and trial, and the order of the warm-start
presets by validation accuracy (pruned presets last), so one sees whether pruning kept the best schedule's rank.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from common.cli import ArgumentParser, positive_int, run_command


def run_search(argv: list[str], url: str) -> dict:
    import optuna
    from optuna.trial import TrialState

    from search import run as search_run

    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        code = search_run.main([*argv, "--storage", url])
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    presets = sorted((t for t in trials if "preset" in t.user_attrs),
                     key=lambda t: (t.state != TrialState.COMPLETE, -(t.value or 0)))
    return {"exit_code": code, "epochs_trained": sum(t.user_attrs.get("epochs_run", 0) for t in trials),
            "wall_seconds": round(wall, 1), "finished": len(trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "best_val_accuracy": study.best_value, "best_trial": study.best_trial.number,
            "best_is_preset": study.best_trial.user_attrs.get("preset"),
            "presets_by_accuracy": [t.user_attrs["preset"] for t in presets]}


def main(argv: Sequence[str] | None = None) -> int:
    from training.train import add_training_arguments

    parser = ArgumentParser(prog="python -m benchmarks.search_cost", description=__doc__.split("\n\n")[0])
    add_training_arguments(parser)
    parser.add_argument("--trials", type=positive_int, default=16, help="finished trials per search (default 16)")
    parser.set_defaults(dataset="digits", depth=8, epochs=6, batch_size=32)
    args, rest = parser.parse_known_args(argv)
    common = ["--dataset", args.dataset, "--depth", str(args.depth), "--epochs", str(args.epochs),
              "--batch-size", str(args.batch_size), "--precision", args.precision, "--seed", str(args.seed),
              "--trials", str(args.trials), *(["--data-dir", args.data_dir] if args.data_dir else []),
              *(["--subset", str(args.subset)] if args.subset else [])]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for pruner in ("none", "hyperband"):
            results[pruner] = run_search([*common, "--pruner", pruner], f"sqlite:///{Path(folder) / pruner}.db")
    results["epochs_saved"] = round(1 - results["hyperband"]["epochs_trained"] / results["none"]["epochs_trained"], 3)
    results["same_best_preset"] = results["hyperband"]["presets_by_accuracy"][:1] == \
        results["none"]["presets_by_accuracy"][:1]
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
