"""Export the best schedule of a study as a schedule JSON file, with its provenance and its evidence.

    python -m search.export --storage sqlite:///search.db --study cifar10-resnet32 --output best.json

The file holds the schedule realised at the searched depth (or --depth), where it came from (study, trial,
dataset, depth searched, epochs), its validation accuracy next to the baseline's on the same budget, and the
multi-seed test evaluation of search.evaluate where one was recorded.
"""
from __future__ import annotations

import sys
from typing import Sequence

from common.cli import ArgumentParser, run_command
from storage.rdb import DEFAULT_URL


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m search.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default=DEFAULT_URL, help=f"study storage URL (default {DEFAULT_URL})")
    parser.add_argument("--study", help="study name (default: the only study in the storage)")
    parser.add_argument("--depth", type=int, help="realise the schedule for this depth (default: the searched one)")
    parser.add_argument("--output", default="best.json", help="schedule JSON file to write (default best.json)")
    args = parser.parse_args(argv)

    import optuna

    from models.schedules import Schedule, block_count, save_schedule
    from search.evaluation import evaluation_for
    from search.study import baseline_trial, best_trial
    from storage.rdb import load_existing_study, open_storage, single_study_name

    if args.depth is not None:
        block_count(args.depth)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(args.storage, heartbeat_seconds=None, create=False)
    study = load_existing_study(storage, args.study or single_study_name(storage))
    best = best_trial(study)
    settings = study.user_attrs.get("settings", {})
    searched_depth = settings.get("depth", len(best.user_attrs.get("values", [])) * 2 + 2)
    schedule = Schedule.from_dict(best.user_attrs["schedule"])
    baseline = baseline_trial(study)
    evidence = {
        "val_accuracy": best.value,
        "baseline_val_accuracy": baseline.value if baseline else None,
        "val_accuracy_gain": best.value - baseline.value if baseline else None,
    }
    provenance = {
        "study": study.study_name, "trial": best.number, "dataset": settings.get("dataset"),
        "depth_searched": searched_depth, "epochs": study.user_attrs.get("epochs"),
        "preset": best.user_attrs.get("preset"),
    }
    evaluation = evaluation_for(study, schedule)
    path = save_schedule(schedule, args.output, depth=args.depth or searched_depth, provenance=provenance,
                         evidence=evidence, **({"evaluation": evaluation} if evaluation else {}))
    gain = evidence["val_accuracy_gain"]
    print(f"wrote {path}: trial {best.number} {schedule.describe()}, val {best.value:.4f}"
          + (f" ({100 * gain:+.2f} pt vs baseline)" if gain is not None else " (no baseline trial finished)")
          + ("" if evaluation else "; next: python -m search.evaluate --schedule " + str(path)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
