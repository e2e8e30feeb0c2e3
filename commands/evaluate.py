"""Train the baseline and one or more schedules with the same seeds on the full training set, and test them all.

    shortcut-search evaluate --schedule best.json --schedule learned --depth 32 --dataset cifar10 --seeds 5

Each arm (a schedule file, a preset, or a learned arm: learned, skipinit) is paired with the baseline seed by seed:
mean +- std, the mean difference with a 95 % confidence interval, a paired t-test's p-value, and Holm's correction
of those p-values across the arms; one table row per arm. Writes them to --output, and with --storage/--study
records them on the study, where shortcut-search export and the dashboards show them. One run's test accuracy moves by ~0.25
pt on CIFAR-10 from the seed alone: a single-run gain of ~1 pt is not evidence, this is. The default seeds (10000,
10001, ...) are disjoint from the search's, the baseline replicas' and the confirm stage's; with --study a seed the
study used is refused. A run that diverges is counted and left out of the paired statistics with its partner, never
scored 0.
"""
from __future__ import annotations

import sys
from typing import Sequence

from commands.flags import add_artifact_dir_argument, add_training_arguments
from common.cli import ArgumentParser, positive_int, run_command
from search.evaluation import evaluate
from search.records import EVALUATION_SEED_START


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shortcut-search evaluate", description=__doc__.split("\n\n")[0])
    add_training_arguments(parser, seed=EVALUATION_SEED_START)
    parser.add_argument("--schedule", required=True, action="append", metavar="SCHEDULE",
                        help="an arm to test against the baseline: a schedule JSON file (from shortcut-search export), a "
                             "preset (paper-c10-r32, ...) or a learned arm (learned, skipinit); give it several "
                             "times for several arms, which share the baseline's seeds")
    parser.add_argument("--seeds", type=positive_int, default=5, help="seeds per arm, 0..N-1 after --seed "
                        "(default 5; at least 2 for a confidence interval)")
    parser.add_argument("--output", default="evaluation.json", help="JSON file to write (default evaluation.json)")
    parser.add_argument("--storage", help="study storage URL to record the evaluation on (with --study)")
    parser.add_argument("--tensorboard", metavar="DIR", help="log every run for TensorBoard, one run folder each "
                        "(DIR/evaluate/seed-10000-ARM, with --study DIR/STUDY/evaluate/...)")
    parser.add_argument("--study", help="study to record the evaluation on (the JSON is attached to it too)")
    parser.add_argument("--keep-models", action="store_true", help="attach every run's trained model to the study "
                        "(seed-10000-ARM.keras, with --study) as an artifact")
    add_artifact_dir_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    evaluate(args.schedule, depth=args.depth, dataset=args.dataset, seeds=args.seeds, epochs=args.epochs,
             subset=args.subset, batch_size=args.batch_size, precision=args.precision, seed=args.seed,
             data_dir=args.data_dir, tensorboard=args.tensorboard, steps_per_execution=args.steps_per_execution,
             storage=args.storage, study=args.study, output=args.output, keep_models=args.keep_models,
             artifact_dir=args.artifact_dir)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
