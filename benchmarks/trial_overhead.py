"""Per-trial overhead of a worker: a sequence of tiny trials in one process, as JSON.

    python -m benchmarks.trial_overhead --depth 8 --dataset digits --subset 200 --epochs 1 --trials 5

Each trial is one ``training.loop.run`` with its own seed and schedule (the baseline, then the paper's presets and
searched-like constants), as a search worker runs them. Keys: trials, each with wall_seconds (the whole run),
first_step_seconds (from the run's start to the end of its first training step: building, seeding, tracing and
the step itself) and images_per_second; first_trial_overhead_seconds and later_overhead_seconds (first_step_seconds
of the first trial and the median of the others), later_trial_seconds (the median wall time of trials 2..N), and
the machine (cpu, load average). ``--no-reuse`` sets ``training.loop.REUSE_COMPILED`` off: every trial builds
and traces its own graph, as before issue 29.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Sequence

from common.cli import ArgumentParser, positive_int, run_command
from common.machine import cpu_info, prepare_tensorflow
from models.schedules import Schedule, block_count, preset

SCHEDULES = ("baseline", "paper-c10-r32", "paper-c10-r56", "constant-0.8", "constant-1.2")


def schedule_named(name: str) -> Schedule | None:
    if name == "baseline":
        return None
    if name.startswith("constant-"):
        return Schedule("constant", {"value": float(name.removeprefix("constant-"))})
    return preset(name)


def measure(depth: int, dataset: str, subset: int | None, epochs: int, batch_size: int, trials: int,
            reuse: bool) -> dict:
    prepare_tensorflow()  # then TensorFlow, imported here only: --help and bad input stay fast
    import keras  # noqa: F401 - starts TensorFlow

    from training import loop
    from training.config import TrainConfig
    from training.data import load_dataset

    loop.REUSE_COMPILED = reuse
    data = load_dataset(dataset, subset=subset)
    first_step: list[float] = []
    original = loop._Recorder.on_train_batch_end

    def timed(recorder, batch, logs=None):  # the first step's end, measured from the run's start
        if len(first_step) < len(records) + 1:
            first_step.append(time.perf_counter() - started)
        return original(recorder, batch, logs)

    loop._Recorder.on_train_batch_end = timed
    records = []
    for index in range(trials):
        name = SCHEDULES[index % len(SCHEDULES)]
        config = TrainConfig(depth=depth, epochs=epochs, batch_size=batch_size, precision="float32", seed=index)
        started = time.perf_counter()
        result = loop.run(config, schedule_named(name), data)
        records.append({"schedule": name, "seed": index, "wall_seconds": round(result.wall_seconds, 3),
                        "first_step_seconds": round(first_step[index], 3),
                        "images_per_second": round(result.images_per_second, 1),
                        "final_val_accuracy": result.final_val_accuracy})
    later = records[1:] or records
    return {"depth": depth, "dataset": dataset, "subset": subset, "epochs": epochs, "batch_size": batch_size,
            "reuse": reuse, "trials": records,
            "first_trial_overhead_seconds": records[0]["first_step_seconds"],
            "later_overhead_seconds": round(statistics.median(r["first_step_seconds"] for r in later), 3),
            "later_trial_seconds": round(statistics.median(r["wall_seconds"] for r in later), 3),
            "load_average": os.getloadavg(), "cpu": cpu_info()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.trial_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=8, help="network depth 6n+2 (default 8)")
    parser.add_argument("--dataset", default="digits", help="default digits")
    parser.add_argument("--subset", type=positive_int, default=200, help="training images (default 200)")
    parser.add_argument("--epochs", type=positive_int, default=1, help="default 1")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="default 32")
    parser.add_argument("--trials", type=positive_int, default=5, help="trials in one process (default 5)")
    parser.add_argument("--no-reuse", action="store_true", help="build and trace every trial anew (as before)")
    args = parser.parse_args(argv)
    block_count(args.depth)
    print(json.dumps(measure(args.depth, args.dataset, args.subset, args.epochs, args.batch_size, args.trials,
                             not args.no_reuse)))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
