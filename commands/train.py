"""Train one CIFAR ResNet with a shortcut schedule and print its result record.

    shortcut-search train --depth 32 --dataset cifar10 --schedule paper-c10-r32 --epochs 30 --seed 0

Prints per-epoch progress, then one JSON line: the RunResult (curves, final validation accuracy, test accuracy
with --test, epochs run, wall time, images/s, diverged flag).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from commands.flags import add_training_arguments
from common.cli import ArgumentParser, run_command
from common.errors import UsageError
from common.files import check_output, check_writable
from common.log import log
from models.schedules import resolve_schedule
from training.config import TrainConfig
from training.data import load_dataset


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shortcut-search train", description=__doc__.split("\n\n")[0])
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.save_model and not args.save_model.endswith(".keras"):
        raise UsageError(f"save-model: {args.save_model!r} must end in .keras (Keras's file format)")
    if args.save_model:
        check_output(args.save_model, "save-model")  # before the run, not after it
    if args.tensorboard:
        check_writable(Path(args.tensorboard), "tensorboard", "choose another folder")
    schedule = resolve_schedule(args.schedule)
    config = TrainConfig(depth=args.depth, epochs=args.epochs, batch_size=args.batch_size,
                         precision=args.precision, seed=args.seed, steps_per_execution=args.steps_per_execution)
    data = load_dataset(args.dataset, args.data_dir, args.subset)
    log.info(f"{data.summary()}; ResNet-{args.depth} with {schedule.describe()}")
    from training.loop import run  # imports TensorFlow: once the input is checked

    result = run(config, schedule, data, test=args.test, verbose=2, save_model=args.save_model,
                 tensorboard=args.tensorboard)
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
