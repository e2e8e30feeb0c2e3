"""Train the baseline and a schedule with the same seeds on the full training set, and test both.

    python -m search.evaluate --schedule best.json --depth 32 --dataset cifar10 --seeds 5

Prints per-seed test accuracies, mean +- std of both, the mean difference with a 95 % confidence interval and
a paired t-test's p-value; writes them to --output, and with --storage/--study records them on the study, where
search.export and the dashboards show them. One run's test accuracy moves by ~0.25 pt on CIFAR-10 from the seed
alone: a single-run gain of ~1 pt is not evidence, this is. The default seeds (10000, 10001, ...) are disjoint
from the search's, the baseline replicas' and the confirm stage's; with --study a seed the study used is refused.
A run that diverges is counted and left out of the paired statistics with its partner, never scored 0.
"""
from __future__ import annotations

import datetime
import sys
from typing import Sequence

from common.cli import ArgumentParser, positive_int, run_command
from common.machine import prepare_tensorflow


def main(argv: Sequence[str] | None = None) -> int:
    from search.config import EVALUATION_SEED_START
    from training.train import add_training_arguments

    parser = ArgumentParser(prog="python -m search.evaluate", description=__doc__.split("\n\n")[0])
    add_training_arguments(parser, seed=EVALUATION_SEED_START)
    parser.add_argument("--schedule", required=True, help="schedule JSON file (from search.export) or a preset")
    parser.add_argument("--seeds", type=positive_int, default=5, help="seeds per arm, 0..N-1 after --seed "
                        "(default 5; at least 2 for a confidence interval)")
    parser.add_argument("--output", default="evaluation.json", help="JSON file to write (default evaluation.json)")
    parser.add_argument("--storage", help="study storage URL to record the evaluation on (with --study)")
    parser.add_argument("--study", help="study to record the evaluation on")
    args = parser.parse_args(argv)

    from common.errors import UsageError
    from common.files import write_json_atomic
    from models.schedules import resolve_schedule
    from search.evaluation import paired_statistics, record_evaluation
    from search.study import study_seeds
    from training.config import TrainConfig
    from training.data import load_dataset

    schedule = resolve_schedule(args.schedule)
    configs = [TrainConfig(depth=args.depth, epochs=args.epochs, batch_size=args.batch_size,
                           precision=args.precision, seed=args.seed + i, steps_per_execution=args.steps_per_execution)
               for i in range(args.seeds)]
    study = None
    if args.storage or args.study:
        if not (args.storage and args.study):
            raise UsageError("study: --storage and --study go together; give both to record the evaluation")
        import optuna

        from storage.rdb import load_existing_study, open_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = load_existing_study(open_storage(args.storage, heartbeat_seconds=None, create=False), args.study)
        if reused := sorted(set(study_seeds(study)) & {config.seed for config in configs}):
            raise UsageError(f"seed: the study already trained with seed(s) {', '.join(map(str, reused))}; test "
                             f"with seeds it never used (the default --seed {EVALUATION_SEED_START} does)")
    data = load_dataset(args.dataset, args.data_dir, args.subset, validation=False)
    prepare_tensorflow()
    from training.loop import run

    print(f"{data.summary()}; ResNet-{args.depth}; baseline vs {schedule.describe()}, {args.seeds} seeds",
          file=sys.stderr)
    arms = {"baseline": [], "schedule": []}
    for config in configs:
        for arm, arm_schedule in (("baseline", None), ("schedule", schedule)):
            result = run(config, arm_schedule, data, test=True)
            arms[arm].append(None if result.diverged else result.test_accuracy)
            print(f"seed {config.seed} {arm:>8}: "
                  + (f"diverged ({result.diverged_reason})" if result.diverged else f"test {result.test_accuracy:.4f}")
                  + f"  [{result.epochs_run} epochs, {result.wall_seconds:.0f} s]", file=sys.stderr)
    summary = paired_statistics(arms["baseline"], arms["schedule"])
    record = {
        "schedule": schedule.to_dict(), "depth": args.depth, "dataset": args.dataset,
        "epochs": configs[0].epochs_for(len(data.y_train)), "subset": args.subset,
        "seeds_used": [c.seed for c in configs], "baseline_test_accuracy": arms["baseline"],
        "schedule_test_accuracy": arms["schedule"], **summary,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(args.output, record)
    if study is not None:
        record_evaluation(study, record)
    print(report_lines(record), file=sys.stderr)
    print(f"wrote {args.output}" + (f" and recorded it on study {args.study!r}" if study else ""), file=sys.stderr)
    return 0


def report_lines(record: dict) -> str:
    if record["pairs"] == 0:
        return f"no seed gave two finished runs (diverged: {record['diverged']}): nothing to compare"
    pct = lambda value: f"{100 * value:.2f}"  # noqa: E731
    std = lambda value: f" +- {pct(value)}" if value is not None else ""  # noqa: E731
    left_out = sum(record["diverged"].values())
    lines = [f"baseline  {pct(record['baseline_mean'])}{std(record['baseline_std'])} % test accuracy",
             f"schedule  {pct(record['schedule_mean'])}{std(record['schedule_std'])} %",
             f"difference {100 * record['difference_mean']:+.2f} pt over {record['pairs']} seeds"]
    if left_out:
        lines.insert(0, f"diverged: {record['diverged']['baseline']} baseline and {record['diverged']['schedule']} "
                        f"schedule runs, left out with their partners")
    if record["difference_ci95"]:
        lo, hi = record["difference_ci95"]
        lines[-1] += f", 95 % CI [{100 * lo:+.2f}, {100 * hi:+.2f}] pt, paired t-test p = {record['p_value']:.3g}"
    else:
        lines[-1] += " (one seed: no confidence interval; use --seeds 5)"
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_command(main))
