"""The multi-seed evaluation on the test set: the baseline and one or more arms trained with the same seeds on
the full training set, each arm paired with the baseline seed by seed, Holm's correction across the arms.

What ``shortcut-search evaluate`` runs and prints, and what the notebook API returns. One run's test accuracy moves by
~0.25 pt on CIFAR-10 from the seed alone: a single-run gain of ~1 pt is not evidence, this is. A run that diverges
is counted and left out of the paired statistics with its partner, never scored 0.
"""
from __future__ import annotations

import datetime
import re
import tempfile
from pathlib import Path
from typing import Sequence

from common.errors import UsageError
from common.files import check_output, check_writable, write_json_atomic
from common.log import log, quiet_optuna, result
from models.schedules import resolve_schedule
from search import records, run_folders
from search.checks import check_database_file
from search.evidence.stats import holm, paired_statistics
from search.records import EVALUATION_SEED_START
from storage import load_existing_study, open_storage
from storage.artifacts import artifact_folder, artifact_store, attach
from training.config import TrainConfig
from training.data import load_dataset


def evaluate(schedules: Sequence[str], *, depth: int = 32, dataset: str = "cifar10", seeds: int = 5,
             epochs: int | None = None, subset: int | None = None, batch_size: int = 128, precision: str = "auto",
             seed: int = EVALUATION_SEED_START, data_dir: str | None = None, tensorboard: str | None = None,
             steps_per_execution: int = 1, storage: str | None = None, study: str | None = None,
             output: str | None = None, keep_models: bool = False, artifact_dir: str | None = None) -> dict:
    """The baseline and each of ``schedules`` (files, presets, ``learned``, ``skipinit``) trained and tested on seeds
    ``seed .. seed + seeds - 1``; the record (arms, CIs, Holm's p), written to ``output`` when given, and with
    ``storage`` and ``study`` recorded on that study (which must not have trained with these seeds) and attached,
    with every run's model when ``keep_models``. Everything the user can get wrong is checked before training.
    What ``shortcut-search evaluate`` and the notebook API share."""
    if not schedules:
        raise UsageError("schedule: give one or more schedules")
    if keep_models and not study:
        raise UsageError("keep-models: the models are attached to a study; give --storage and --study")
    if output is not None:
        check_output(output, "output")  # before hours of training, not after
    if tensorboard:
        check_writable(Path(tensorboard), "tensorboard", "choose another folder")
    arms = arms_from(schedules)
    configs = [TrainConfig(depth=depth, epochs=epochs, batch_size=batch_size, precision=precision, seed=seed + i,
                           steps_per_execution=steps_per_execution) for i in range(seeds)]
    recorded = None
    if storage or study:
        if not (storage and study):
            raise UsageError("study: --storage and --study go together; give both to record the evaluation")
        check_database_file(storage)
        quiet_optuna()
        recorded = load_existing_study(open_storage(storage, heartbeat_seconds=None, create=False), study)
        check_writable(artifact_folder(storage, artifact_dir), "artifact-dir", "choose another folder")
        if reused := sorted(set(records.study_seeds(recorded)) & {config.seed for config in configs}):
            raise UsageError(f"seed: the study already trained with seed(s) {', '.join(map(str, reused))}; test "
                             f"with seeds it never used (the default --seed {EVALUATION_SEED_START} does)")
    data = load_dataset(dataset, data_dir, subset, validation=False)
    store = artifact_store(storage, artifact_dir) if recorded is not None else None
    keep = (lambda path: attach(recorded, store, path)) if keep_models else None
    record = evaluate_arms(arms, configs, data, dataset, subset, tensorboard, keep, study)
    if output is not None:
        write_json_atomic(output, record)
    if recorded is not None:
        records.record_evaluation(recorded, record)
        if output is not None:
            attach(recorded, store, output)
    if output is not None:
        result(arm_table(record))
        result(f"wrote {output}" + (f" and recorded it on study {study!r}" if recorded else ""))
    return record


def evaluate_arms(arms: list["Arm"], configs: list, data, dataset: str, subset: int | None = None,
                  tensorboard: str | None = None, keep=None, study_name: str | None = None) -> dict:
    """Train and test the baseline and every arm on each config's seed; the record ``--output`` holds: each arm
    paired with the baseline, Holm's correction across the arms, the first arm's statistics at the top level.
    One line per run on stderr; ``keep(path)`` receives each finished run's model (``seed-S-ARM.keras``). What
    the command and the notebook API (``commands.api.evaluate``) share."""
    from training.loop import run  # imports TensorFlow: arms_from and arm_table are used without it

    depth = configs[0].depth
    board = Path(tensorboard or ".") / (run_folders.study_folder(study_name) if study_name else "") / "evaluate"
    log.info(f"{data.summary()}; ResNet-{depth}; baseline vs {', '.join(arm.name for arm in arms)}, "
             f"{len(configs)} seeds, {configs[0].epochs_for(len(data.y_train))} epochs")
    baseline = Arm("baseline", None)
    for config in configs:
        for arm in (baseline, *arms):
            name = f"seed-{config.seed}-{arm.folder}"
            with tempfile.TemporaryDirectory() as folder:
                model = Path(folder) / f"{name}.keras" if keep else None
                outcome = run(config, arm.schedule, data, test=True, save_model=model,
                              tensorboard=board / name if tensorboard else None)
                if model is not None and model.is_file():
                    keep(model)
            arm.test_accuracy.append(None if outcome.diverged else outcome.test_accuracy)
            arm.learned_values.append(outcome.learned_values)
            log.info(f"seed {config.seed} {arm.name:>16}: "
                     + (f"diverged ({outcome.diverged_reason})" if outcome.diverged
                        else f"test {outcome.test_accuracy:.4f}")
                     + f"  [{outcome.epochs_run} epochs, {outcome.wall_seconds:.0f} s]")
    resolution = 1 / len(data.y_test)  # a test accuracy moves in steps of one image
    rows = [arm.compare(baseline.test_accuracy, resolution) for arm in arms]
    for row, p_holm in zip(rows, holm([row["p_value"] for row in rows])):
        row["p_holm"] = p_holm
    return {
        "schedule": rows[0]["schedule"], "depth": depth, "dataset": dataset,
        "epochs": configs[0].epochs_for(len(data.y_train)), "subset": subset,
        "seeds_used": [c.seed for c in configs], "baseline_test_accuracy": baseline.test_accuracy,
        "schedule_test_accuracy": arms[0].test_accuracy,
        **paired_statistics(baseline.test_accuracy, arms[0].test_accuracy, resolution), "arms": rows,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def arms_from(names: Sequence[str]) -> list["Arm"]:
    """The arms named by ``--schedule`` (files, presets, ``learned``, ``skipinit``), each once, or UsageError."""
    if len(set(names)) < len(names):
        raise UsageError("schedule: an arm is given twice; give each --schedule once")
    return [Arm(name, resolve_schedule(name)) for name in names]


class Arm:
    """One arm of an evaluation: its name as given, its schedule (None: the baseline), its runs seed by seed."""

    def __init__(self, name: str, schedule):
        self.name, self.schedule = name, schedule
        self.folder = re.sub(r"[^\w.-]", "_", Path(name).stem)  # a TensorBoard run folder's name
        self.test_accuracy: list[float | None] = []  # None: diverged
        self.learned_values: list[list[float] | None] = []

    def compare(self, baseline: list[float | None], resolution: float | None = None) -> dict:
        """This arm's row of the record: its runs and its paired difference with the baseline."""
        summary = paired_statistics(baseline, self.test_accuracy, resolution)
        row = {"name": self.name, "schedule": self.schedule.to_dict(), "test_accuracy": self.test_accuracy,
               "diverged": summary["diverged"]["schedule"], "mean": summary["schedule_mean"],
               "std": summary["schedule_std"], "pairs": summary["pairs"],
               **{key: summary[key] for key in ("difference_mean", "difference_ci95", "p_value")}}
        if self.schedule.learned:
            row["learned_values"] = self.learned_values
        return row


def arm_table(record: dict) -> str:
    """The terminal's table: the baseline, then one row per arm with its paired difference, CI, p and Holm's p."""
    pct = lambda value: "-" if value is None else f"{100 * value:.2f}"  # noqa: E731
    signed = lambda value: "-" if value is None else f"{100 * value:+.2f}"  # noqa: E731
    p = lambda value: "-" if value is None else f"{value:.3g}"  # noqa: E731
    base = [a for a in record["baseline_test_accuracy"] if a is not None]
    mean = sum(base) / len(base) if base else None
    std = record.get("baseline_std")
    width = max(16, *(len(row["name"]) for row in record["arms"]))
    lines = [f"{'arm':<{width}}  {'test acc (%)':>15}  {'diff (pt)':>9}  {'95 % CI (pt)':>17}  {'p':>7}  "
             f"{'p Holm':>7}  diverged",
             f"{'baseline':<{width}}  {pct(mean) + ' +- ' + pct(std):>15}  {'':>9}  {'':>17}  {'':>7}  {'':>7}  "
             f"{record['diverged']['baseline']}"]
    for row in record["arms"]:
        if not row["pairs"]:
            lines.append(f"{row['name']:<{width}}  no seed gave both runs a result: nothing to compare "
                         f"(diverged: {row['diverged']})")
            continue
        ci = row["difference_ci95"]
        interval = f"[{signed(ci[0])}, {signed(ci[1])}]" if ci else "(one pair)"
        lines.append(f"{row['name']:<{width}}  {pct(row['mean']) + ' +- ' + pct(row['std']):>15}  "
                     f"{signed(row['difference_mean']):>9}  {interval:>17}  {p(row['p_value']):>7}  "
                     f"{p(row['p_holm']):>7}  {row['diverged']}")
    lines.append(f"test accuracy over seeds {', '.join(map(str, record['seeds_used']))} at {record['epochs']} epochs; "
                 f"differences paired by seed with the baseline (pairs with a diverged run left out); Holm's p "
                 f"corrects for the {len(record['arms'])} arm(s) tested together")
    return "\n".join(lines)
