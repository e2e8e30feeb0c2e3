"""Export the confirmed winner of a study (else its best trial) as a schedule JSON file, with its evidence.

    python -m search.export --storage sqlite:///search.db --study cifar10-resnet32 --output best.json

The file holds the schedule realised at the searched depth (or --depth), where it came from (study, trial,
dataset, depth searched, epochs), its validation accuracy next to the baseline's on the same budget, the study's
noise floor (the baseline's spread over seeds, and the gain the best of N equal schedules would show by chance),
the confirm stage's paired statistics on fresh seeds when the stage ran, and the multi-seed test evaluation of
search.evaluate on the same budget where one was recorded. Without a confirmation it exports the single-seed best
of N trials and warns that this is what it is. The file is also attached to the study as an artifact.

    python -m search.export --output best.json --model best.keras

``--model`` also hands over the trained network of the exported trial (kept by the search: --keep-models), a
``.keras`` file that ``keras.saving.load_model`` reads once ``training.loop`` is imported; it takes uint8 images.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

from common.cli import ArgumentParser, run_command
from common.errors import UsageError
from common.log import log, quiet_optuna, result
from storage.rdb import add_storage_argument


def main(argv: Sequence[str] | None = None) -> int:
    from storage.artifacts import add_artifact_dir_argument

    parser = ArgumentParser(prog="python -m search.export", description=__doc__.split("\n\n")[0])
    add_storage_argument(parser)
    parser.add_argument("--study", help="study name (default: the only study in the storage)")
    parser.add_argument("--depth", type=int, help="realise the schedule for this depth (default: the searched one)")
    parser.add_argument("--output", default="best.json", help="schedule JSON file to write (default best.json)")
    parser.add_argument("--model", metavar="PATH", help="also write the exported trial's trained model (.keras), as "
                        "the search kept it: trained on the searched budget and the trial's seed")
    add_artifact_dir_argument(parser)
    args = parser.parse_args(argv)

    from optuna.artifacts import download_artifact

    from common.files import write_json_atomic
    from models.schedules import Schedule, block_count
    from search.evaluation import gain_in_noise, noise_floor
    from search.study import next_commands
    from storage.artifacts import artifact_store, attach_when_free
    from storage.rdb import load_existing_study, open_storage, single_study_name

    if args.depth is not None:
        block_count(args.depth)
    quiet_optuna()
    storage = open_storage(args.storage, heartbeat_seconds=None, create=False, reader=True)
    study = load_existing_study(storage, args.study or single_study_name(storage))
    document = export_document(study, args.depth)
    provenance, evidence, evaluation = document["provenance"], document["evidence"], document.get("evaluation")
    best, schedule, floor = study.trials[provenance["trial"]], Schedule.from_dict(document), noise_floor(study)
    confirmation = study.user_attrs.get("confirmation")
    winner = confirmation and confirmation.get("winner")
    store = artifact_store(args.storage, args.artifact_dir)
    model = args.model and _check_model(args.model, best, study, provenance, args.output, store)
    path = write_json_atomic(args.output, document)
    attach_when_free(args.storage, study.study_name, store, path)
    if model:
        partial = Path(f"{args.model}.partial")
        partial.unlink(missing_ok=True)
        download_artifact(artifact_store=store, file_path=str(partial), artifact_id=model)
        os.replace(partial, args.model)
        result(f"wrote {args.model}: the trained model of trial {best.number} (seed {best.user_attrs.get('seed')}, "
               f"{provenance['epochs']} epochs, validation accuracy {best.value:.4f})")
    if winner:
        ci = winner["difference_ci95"]
        result(f"wrote {path}: confirmed winner {winner['label']} {schedule.describe()}, "
               f"{100 * winner['difference_mean']:+.2f} pt vs baseline over {len(confirmation['seeds'])} fresh seeds"
               + (f", 95 % CI [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else ""))
    else:
        gain = evidence["val_accuracy_gain"]
        log.warning(f"warning: no confirm stage has run on {study.study_name!r}: trial {best.number} is the "
                    f"single-seed best of {evidence['selected_from']} trials, and its gain is partly chance; run "
                    f"python -m search.confirm")
        result(f"wrote {path}: trial {best.number} {schedule.describe()}, val {best.value:.4f}"
               + (f" ({gain_in_noise(gain, floor)} vs baseline)" if gain is not None else " (no baseline trial)"))
    if not evaluation:
        log.info(f"next: {next_commands(study, args.storage)[1].replace('best.json', str(path))}")
    return 0


def export_document(study, depth: int | None = None) -> dict:
    """The JSON document ``search.export`` writes for ``study``: its confirmed winner (else its best schedule
    trial) realised at ``depth`` (default: the searched one), with provenance, evidence, the confirmation and a
    matching multi-seed evaluation. Reads the study only."""
    from models.schedules import Schedule, schedule_document
    from search.evaluation import evaluation_for, noise_floor
    from search.study import baseline_trial, best_trial, schedule_trials

    confirmation = study.user_attrs.get("confirmation")
    winner = confirmation and confirmation.get("winner")
    best = study.trials[winner["source_trial"]] if winner and winner["source_trial"] is not None else None
    best = best or best_trial(study)
    settings = study.user_attrs.get("settings", {})
    searched_depth = settings.get("depth", len(best.user_attrs.get("values", [])) * 2 + 2)
    schedule = Schedule.from_dict(winner["schedule"] if winner else best.user_attrs["schedule"])
    baseline = baseline_trial(study)
    floor = noise_floor(study)
    evidence = {
        "val_accuracy": best.value,
        "baseline_val_accuracy": baseline.value if baseline else None,
        "val_accuracy_gain": best.value - baseline.value if baseline else None,
        "selected_from": len(schedule_trials(study)),
        "baseline_seed_std": floor["baseline_seed_std"] if floor else None,
        "expected_best_of_n_by_chance": floor["expected_best_of_n_by_chance"] if floor else None,
        "seed": best.user_attrs.get("seed"),
        "note": "val_accuracy_gain is one run on the search's seed, picked as the best of selected_from",
    }
    provenance = {
        "study": study.study_name, "trial": best.number, "dataset": settings.get("dataset"),
        "depth_searched": searched_depth, "epochs": study.user_attrs.get("epochs"), "subset": settings.get("subset"),
        "preset": best.user_attrs.get("preset"),
    }
    extra = {}
    if winner:
        extra["confirmation"] = {
            "candidates": confirmation["candidates"], "seeds": confirmation["seeds"],
            "baseline_val_accuracy": confirmation["baseline_val_accuracy"],
            **{key: winner[key] for key in ("schedule_val_accuracy", "difference_mean", "difference_ci95", "p_value",
                                            "p_holm", "rank_in_search", "ci_excludes_zero",
                                            "significant_after_holm")}}
    if evaluation := evaluation_for(study, schedule):
        extra["evaluation"] = evaluation
    return schedule_document(schedule, depth or searched_depth, provenance=provenance, evidence=evidence, **extra)


def _check_model(path: str, trial, study, provenance: dict, output: str, store) -> str:
    """The artifact id of ``trial``'s kept model, or UsageError (with the command that trains it, or the store to
    name) before anything is written."""
    from storage.artifacts import kept_model

    if not path.endswith(".keras"):
        raise UsageError(f"model: {path!r} must end in .keras (Keras's file format)")
    if (artifact := kept_model(trial)) is None:
        settings = study.user_attrs.get("settings", {})
        budget = "".join(f" --{flag} {settings[key]}" for flag, key in (("subset", "subset"),
                                                                        ("batch-size", "batch_size"))
                         if settings.get(key) is not None)
        raise UsageError(f"model: the search did not keep trial {trial.number}'s model (it keeps the --keep-models "
                         f"best completed trials); train it: shortcut-search train --schedule {output} --depth "
                         f"{provenance['depth_searched']} --dataset {provenance['dataset']} --epochs "
                         f"{provenance['epochs']}{budget} --seed {trial.user_attrs.get('seed')} --save-model {path}")
    try:
        store.open_reader(artifact).close()
    except Exception:
        raise UsageError(f"model: trial {trial.number}'s model is not in this artifact store; name the one the "
                         f"search used with --artifact-dir") from None
    return artifact


if __name__ == "__main__":
    sys.exit(run_command(main))
