"""Train one CIFAR ResNet with a shortcut schedule and print its result record.

    python -m training.train --depth 32 --dataset cifar10 --schedule paper-c10-r32 --epochs 30 --seed 0

Prints per-epoch progress, then one JSON line: the RunResult (curves, final validation accuracy, test accuracy
with --test, epochs run, wall time, images/s, diverged flag).
"""
from __future__ import annotations

import json
import sys
from typing import Sequence

from common.cli import ArgumentParser, positive_int, run_command
from common.machine import prepare_tensorflow
from common.log import log


def add_training_arguments(parser: ArgumentParser, seed: int = 0) -> None:
    """The flags every command that trains shares (train, search.run, search.evaluate, benchmarks); ``seed`` is
    the command's default --seed."""
    from training.data import DATASETS
    from training.config import PRECISIONS

    parser.add_argument("--depth", type=int, default=32, help="network depth 6n+2: 20, 32, 44, 56, 110 (default 32)")
    parser.add_argument("--dataset", default="cifar10", choices=DATASETS, metavar="{" + ",".join(DATASETS) + "}",
                        help="data set (default cifar10; digits is small, bundled and offline)")
    parser.add_argument("--data-dir", help="folder holding the official CIFAR python archive (cifar-10-python.tar.gz "
                        "or cifar-100-python.tar.gz) or its extracted folder; default: the Keras cache, "
                        "else a download")
    parser.add_argument("--subset", type=positive_int, help="train on a stratified part of this many images of the "
                        "training split (default: all 45k); without --epochs the run keeps He et al.'s 64k "
                        "iterations, i.e. many more passes over the N images")
    parser.add_argument("--epochs", type=positive_int, help="epochs to train (default: He et al.'s 64k iterations, "
                        "about 182 epochs on 45k images); learning-rate drops stay at 50 %% and 75 %%")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per SGD step (default 128); "
                        "changes neither the learning rate (0.1) nor the 64k iterations of a run without --epochs, "
                        "so a larger batch sees more images: scale the rest yourself if you change it")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto = on a GPU mixed_bfloat16 "
                        "(compute capability >= 8.0) or mixed_float16, with XLA; on a CPU float32 (default auto)")
    parser.add_argument("--steps-per-execution", type=positive_int, default=1, help="training steps per call into "
                        "the compiled graph: fewer host round trips for small networks on a GPU (default 1)")
    parser.add_argument("--seed", type=int, default=seed, help="seeds weights, data order and augmentation "
                        f"(default {seed})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    add_training_arguments(parser)
    parser.add_argument("--schedule", default="baseline", help="a preset (baseline, he-half, paper-c10-r32, "
                        "paper-c10-r56, paper-c100-r32, paper-c100-r56), a learned arm (learned: a trainable shortcut "
                        "factor per block from 1; skipinit: a trainable branch scalar per block from 0; the record's "
                        "learned_values holds them after training) or a schedule JSON file (default baseline)")
    parser.add_argument("--test", action="store_true", help="also report test-set accuracy at the end")
    parser.add_argument("--save-model", metavar="PATH", help="save the trained model there (.keras: uint8 images in, "
                        "logits out; keras.saving.load_model reads it once training.loop is imported)")
    parser.add_argument("--tensorboard", metavar="DIR", help="log the run for TensorBoard in DIR: loss, accuracy, "
                        "validation accuracy and learning rate per epoch")
    args = parser.parse_args(argv)

    from common.errors import UsageError
    from models.schedules import resolve_schedule
    from training.config import TrainConfig
    from training.data import load_dataset

    if args.save_model and not args.save_model.endswith(".keras"):
        raise UsageError(f"save-model: {args.save_model!r} must end in .keras (Keras's file format)")
    schedule = resolve_schedule(args.schedule)
    config = TrainConfig(depth=args.depth, epochs=args.epochs, batch_size=args.batch_size,
                         precision=args.precision, seed=args.seed, steps_per_execution=args.steps_per_execution)
    data = load_dataset(args.dataset, args.data_dir, args.subset)
    log.info(f"{data.summary()}; ResNet-{args.depth} with {schedule.describe()}")
    prepare_tensorflow()
    from training.loop import run

    result = run(config, schedule, data, test=args.test, verbose=2, save_model=args.save_model,
                 tensorboard=args.tensorboard)
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
