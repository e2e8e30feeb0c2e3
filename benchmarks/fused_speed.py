"""Aggregate training speed of K fused arms (training.fused.run_fused) against K sequential runs (training.loop.run,
the search's one-trial-at-a-time worker) and, with --processes, K concurrent worker processes.

    nice -n 10 python -m benchmarks.fused_speed --cases digits8 cifar20 cifar32 --ks 1 2 4 8 --epochs 2

Cases: digits8 (ResNet-8 on scikit-learn's digits, as the README's main job: batch 32, its whole training split),
cifar20 and cifar32 (ResNet-20/-32 on random CIFAR-shaped uint8 images, 10 classes, batch 128, --images training
images, 500 validation images). Every run is float32 with its own schedule (the baseline, the paper's presets, then
constants), all arms of one seed (the search's case).

Per case and K: steady images/s (training steps of the epochs after the first, which traces: the aggregate of the K
arms for fused, one run's for sequential, since runs one after another never overlap; the sum of the processes' for
processes, an upper bound: their steady epochs need not overlap), whole-run images/s (K x epochs x training images
over the wall time of everything: building, tracing, validation), and the ratios fused / sequential. A worker reuses
its compiled step: the sequential runs follow a warm-up run; fused has a cold run (it builds and traces the fused
graph) and warm ones on the worker's compiled fused model (``training.fused.lent_fused``); the whole-run ratio is
the warm runs'. After the cold run, --rounds rounds alternate a warm fused run and K sequential runs; the best of
each counts, so that a busy neighbour on a shared machine, which only ever slows a measurement, biases neither side.
Then masking against dropping a pruned arm: a masked arm costs its share of a fused epoch for every epoch left,
dropping it costs a new trace (first epoch minus a steady one); the break-even is their ratio in epochs. Prints the
CPU (model, cores, ISA flags), a markdown table, and with --output the JSON.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from typing import Sequence

import numpy as np

from benchmarks.trial_overhead import schedule_named
from common.cli import ArgumentParser, positive_int, run_command
from common.machine import cpu_info, prepare_tensorflow
from training.config import TrainConfig
from training.data import Dataset, load_dataset

CASES = {"digits8": (8, "digits", 32), "cifar20": (20, "random", 128), "cifar32": (32, "random", 128)}
SCHEDULES = ("baseline", "paper-c10-r32", "paper-c10-r56", "constant-0.8", "constant-1.2", "constant-0.9",
             "constant-1.1", "constant-0.7")




def dataset(kind: str, images: int):
    """The case's data: digits, or random CIFAR-shaped uint8 images (the same for every run of a case)."""
    if kind == "digits":
        return load_dataset("digits")
    rng = np.random.default_rng(0)
    pixels = lambda n: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # noqa: E731
    labels = lambda n: rng.integers(0, 10, n).astype("int32")  # noqa: E731
    return Dataset("random", 10, pixels(images), labels(images), pixels(500), labels(500), pixels(10), labels(10))


def _config(depth: int, epochs: int, batch: int, seed: int = 0) -> TrainConfig:
    return TrainConfig(depth=depth, epochs=epochs, batch_size=batch, precision="float32", seed=seed)


def fused_run(depth: int, data, batch: int, epochs: int, k: int, seed: int) -> dict:
    """One fused run of K arms: its steady aggregate images/s, wall seconds and each epoch's training seconds."""
    import keras  # TensorFlow: imported where it is measured, so that --help stays fast

    from training.fused import run_fused

    class EpochTimes(keras.callbacks.Callback):
        """Each epoch's training time, to its last step (validation excluded)."""

        def __init__(self):
            super().__init__()
            self.seconds, self.start, self.end = [], 0.0, 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.start = self.end = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(self.end - self.start)

    times = EpochTimes()
    started = time.perf_counter()
    results = run_fused(_config(depth, epochs, batch, seed), [schedule_named(n) for n in SCHEDULES[:k]], data,
                        callbacks=[times])
    return {"steady": results[0].images_per_second * k, "wall": time.perf_counter() - started,
            "epochs": times.seconds}


def sequential_runs(depth: int, data, batch: int, epochs: int, k: int, seed: int) -> dict:
    """K runs one after another (the worker's compiled step reused): one run's steady images/s and the walls."""
    from training import loop  # starts TensorFlow (Keras)

    walls, steady = [], []
    for index in range(k):
        result = loop.run(_config(depth, epochs, batch, seed), schedule_named(SCHEDULES[index]), data)
        walls.append(result.wall_seconds)
        steady.append(result.images_per_second)
    return {"steady": k / sum(1 / s for s in steady), "wall": sum(walls)}


def compare(depth: int, data, batch: int, epochs: int, k: int, rounds: int) -> dict:
    """Fused against sequential for one K: a cold fused run (it traces), a warm-up single run, then ``rounds``
    alternating warm fused and sequential measurements; the best of each counts (a busy neighbour only slows)."""
    from training import loop  # starts TensorFlow (Keras)

    images = k * epochs * len(data.y_train)
    cold = fused_run(depth, data, batch, epochs, k, 0)
    loop.run(_config(depth, epochs, batch), None, data)  # warm-up: the worker has traced its single step
    warm, alone = [], []
    for index in range(rounds):
        warm.append(fused_run(depth, data, batch, epochs, k, 1 + index))
        alone.append(sequential_runs(depth, data, batch, epochs, k, 1 + index))
    seconds = cold["epochs"]
    return {"fused": {"steady": max(r["steady"] for r in (cold, *warm)),
                      "whole": images / min(r["wall"] for r in warm), "whole_cold": images / cold["wall"],
                      "first_epoch_extra": seconds[0] - min(seconds[1:]) if len(seconds) > 1 else None},
            "sequential": {"steady": max(r["steady"] for r in alone), "whole": images / min(r["wall"] for r in alone)}}


def _child(job: tuple) -> tuple[float, float]:
    depth, kind, images, batch, epochs, index = job
    prepare_tensorflow()
    from training import loop  # starts TensorFlow (Keras), in the spawned process

    result = loop.run(_config(depth, epochs, batch), schedule_named(SCHEDULES[index]), dataset(kind, images))
    return result.images_per_second, result.wall_seconds


def processes(depth: int, kind: str, images: int, batch: int, epochs: int, k: int, train: int) -> dict:
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(k) as pool:
        runs = pool.map(_child, [(depth, kind, images, batch, epochs, index) for index in range(k)])
    wall = time.perf_counter() - started
    # each process's steady epochs need not overlap the others' (they start staggered): their sum is an upper
    # bound only; the whole-run figure (TensorFlow's start, tracing, everything) is the one to compare
    return {"steady_sum": sum(speed for speed, _ in runs), "whole": k * epochs * train / wall, "wall": wall}


def measure(cases: Sequence[str], ks: Sequence[int], epochs: int, images: int, with_processes: bool,
            rounds: int = 2) -> dict:
    prepare_tensorflow()
    import keras  # noqa: F401 - starts TensorFlow

    rows = []
    for case in cases:
        depth, kind, batch = CASES[case]
        data = dataset(kind, images)
        for k in ks:
            row = {"case": case, "depth": depth, "batch": batch, "k": k, "train_images": len(data.y_train),
                   **compare(depth, data, batch, epochs, k, rounds)}
            if with_processes:
                row["processes"] = processes(depth, kind, images, batch, epochs, k, len(data.y_train))
            for what in ("steady", "whole"):
                row[f"{what}_ratio"] = row["fused"][what] / row["sequential"][what]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return {"rows": rows, "masking": masking(rows), "epochs": epochs, "rounds": rounds, "cpu": cpu_info(),
            "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d")}


def masking(rows: list[dict]) -> list[dict]:
    """Per case and K >= 2: a masked arm's cost per epoch (a fused epoch's share of one arm: the steady epoch of K
    arms less that of the next smaller K measured, per arm), dropping's cost (the smaller fused graph's trace), and
    the epochs left above which dropping pays."""
    found = []
    for row in rows:
        smaller = [r for r in rows if r["case"] == row["case"] and r["k"] < row["k"]]
        if not smaller:
            continue
        other = max(smaller, key=lambda r: r["k"])
        epoch = lambda r: r["k"] * r["train_images"] / r["fused"]["steady"]  # noqa: E731
        per_arm = (epoch(row) - epoch(other)) / (row["k"] - other["k"])
        trace = other["fused"]["first_epoch_extra"]
        found.append({"case": row["case"], "k": row["k"], "masked_arm_seconds_per_epoch": per_arm,
                      "drop_seconds": trace, "break_even_epochs": trace / per_arm if trace and per_arm > 0 else None})
    return found


def table(report: dict) -> str:
    cpu = report["cpu"]
    lines = [f"CPU: {cpu['model']}, {cpu['cores']} cores, ISA {' '.join(cpu['isa'])}; load average "
             f"{' '.join(f'{v:.1f}' for v in report['load_average'])}; {report['epochs']} epochs, best of "
             f"{report['rounds']} rounds; {report['date']}",
             "", "| case | K | fused img/s (steady) | sequential img/s (steady) | ratio | fused img/s (whole, cold / "
             "warm) | sequential img/s (whole) | ratio (warm) | K processes img/s (whole) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        f, s, p = row["fused"], row["sequential"], row.get("processes")
        spawned = f"{p['whole']:.0f}" if p else "-"
        lines.append(f"| {row['case']} | {row['k']} | {f['steady']:.0f} | {s['steady']:.0f} | "
                     f"{row['steady_ratio']:.2f}x | {f['whole_cold']:.0f} / {f['whole']:.0f} | {s['whole']:.0f} | "
                     f"{row['whole_ratio']:.2f}x | {spawned} |")
    lines += ["", "| case | K | masked arm s/epoch | drop (retrace) s | dropping pays after |",
              "|---|---|---|---|---|"]
    for m in report["masking"]:
        even = f"{m['break_even_epochs']:.1f} epochs" if m["break_even_epochs"] else "-"
        drop = f"{m['drop_seconds']:.2f}" if m["drop_seconds"] is not None else "-"
        lines.append(f"| {m['case']} | {m['k']} | {m['masked_arm_seconds_per_epoch']:.2f} | {drop} | {even} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.fused_speed", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["digits8", "cifar20", "cifar32"],
                        help="digits8: ResNet-8 on digits, batch 32; cifar20/cifar32: ResNet-20/-32 on random "
                             "CIFAR-shaped images, batch 128 (default: all three)")
    parser.add_argument("--ks", nargs="+", type=positive_int, default=[1, 2, 4, 8],
                        help=f"arms per fused run (default 1 2 4 8; at most {len(SCHEDULES)})")
    parser.add_argument("--epochs", type=positive_int, default=2,
                        help="epochs of every run (default 2: the first traces, the rest are steady)")
    parser.add_argument("--images", type=positive_int, default=1280,
                        help="training images of the random CIFAR-shaped cases (default 1280: 10 steps of 128)")
    parser.add_argument("--rounds", type=positive_int, default=2,
                        help="alternating warm fused and sequential measurements per K; the best counts (default 2)")
    parser.add_argument("--processes", action="store_true", help="also K concurrent worker processes (spawned)")
    parser.add_argument("--output", help="also write the JSON report here")
    args = parser.parse_args(argv)
    if max(args.ks) > len(SCHEDULES):
        parser.error(f"--ks: at most {len(SCHEDULES)} arms")
    print(f"cpu: {json.dumps(cpu_info())}", flush=True)
    report = measure(args.cases, args.ks, args.epochs, args.images, args.processes, args.rounds)
    if args.output:
        with open(args.output, "w") as file:
            json.dump(report, file, indent=1)
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
