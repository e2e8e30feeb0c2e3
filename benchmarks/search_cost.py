"""What pruning saves and what it costs in rank fidelity, from one real search without pruning.

    python -m benchmarks.search_cost --trials 16 --epochs 6
    python -m benchmarks.search_cost --dataset cifar10 --data-dir DIR --subset 10000 --depth 20 --epochs 10 --trials 12

Runs one seeded search with ``--pruner none`` (every trial on the search's seed: no baseline replicas, no confirm
stage), so every trial has its full validation curve, then replays each
pruner (rungs, the default; hyperband; median) on those curves, trials in study order as one worker runs them:
the epochs each would have trained, and whether the best schedule (and each preset) would have survived. Also
Kendall's tau per epoch between that epoch's validation accuracy and the final one (``search.pruning.fidelity``),
with each pruner's decision epochs. On digits (offline) by default.
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

import optuna
from optuna.trial import TrialState

from commands.flags import add_training_arguments
from common.cli import ArgumentParser, positive_int, run_command
from common.files import write_json_atomic
from common.machine import cpu_info
from search import records
from commands import run as search_run
from search.pruning import fidelity, make_pruner, pruner_rungs

REPLAYED = ("rungs", "hyperband", "median")


def replay(study, pruner_name: str) -> dict:
    """Re-run ``pruner_name``'s decisions on the full curves of ``study``'s completed trials, in their order."""
    epochs = records.epochs(study)
    trials = records.complete(study)
    shadow = optuna.create_study(direction="maximize", pruner=make_pruner(pruner_name, epochs))
    trained = {}
    for trial in trials:
        replayed = shadow.ask()
        for epoch in range(1, epochs + 1):
            replayed.report(trial.intermediate_values[epoch], epoch)
            if not records.is_reference(trial) and replayed.should_prune():  # references are never pruned
                shadow.tell(replayed, state=TrialState.PRUNED)
                trained[trial.number] = epoch
                break
        else:
            shadow.tell(replayed, trial.value)
            trained[trial.number] = epochs
    best = max(trials, key=lambda t: t.value)
    survivors = [t for t in trials if trained[t.number] == epochs]
    return {"epochs_trained": sum(trained.values()), "pruned": sum(e < epochs for e in trained.values()),
            "epochs_saved": round(1 - sum(trained.values()) / (epochs * len(trials)), 3),
            "keeps_the_best": trained[best.number] == epochs,
            "best_survivor": max(survivors, key=lambda t: t.value).number,
            "pruned_at": {str(number): epoch for number, epoch in trained.items() if epoch < epochs}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.search_cost", description=__doc__.split("\n\n")[0])
    add_training_arguments(parser)
    parser.add_argument("--trials", type=positive_int, default=16, help="trials of the search (default 16)")
    parser.add_argument("--output", help="also write the JSON to this file")
    parser.set_defaults(dataset="digits", depth=8, epochs=6, batch_size=32)
    args = parser.parse_args(argv)
    argv = ["--dataset", args.dataset, "--depth", str(args.depth), "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--precision", args.precision, "--seed", str(args.seed),
            "--trials", str(args.trials), "--pruner", "none", "--baseline-seeds", "0", "--confirm-top", "0",
            *(["--data-dir", args.data_dir] if args.data_dir else []),
            *(["--subset", str(args.subset)] if args.subset else [])]
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'none.db'}"
        started = time.perf_counter()
        print(f"searching {args.trials} trials without pruning ...", file=sys.stderr)
        with contextlib.redirect_stderr(io.StringIO()):
            code = search_run.main([*argv, "--storage", url])
        wall = time.perf_counter() - started
        study = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
        epochs = records.epochs(study)
        complete = records.ranked(records.complete(study))
        results = {
            "command": " ".join(argv), "exit_code": code, "cpu": cpu_info(), "wall_seconds": round(wall, 1),
            "epochs": epochs, "trials": len(complete), "epochs_trained": epochs * len(complete),
            "ranking": [{"trial": t.number, "preset": records.preset_of(t), "val_accuracy": round(t.value, 4)}
                        for t in complete],
            "fidelity": fidelity(study),
            "pruners": {name: {"rungs": pruner_rungs(name, epochs), **replay(study, name)} for name in REPLAYED},
        }
    if args.output:
        write_json_atomic(args.output, results)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
