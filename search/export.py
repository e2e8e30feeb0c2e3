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

from optuna.artifacts import download_artifact

from commands.flags import add_artifact_dir_argument, add_storage_argument
from common.cli import ArgumentParser, run_command
from common.files import write_json_atomic
from common.log import log, quiet_optuna, result
from models.schedules import Schedule, block_count
from search import records
from search.evidence.document import export_document
from search.evidence.noise import gain_in_noise, noise_floor
from search.keep import model_to_export
from search.next_steps import next_commands
from storage.artifacts import artifact_store, attach_when_free
from storage.rdb import load_existing_study, open_storage


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m search.export", description=__doc__.split("\n\n")[0])
    add_storage_argument(parser)
    parser.add_argument("--study", help="study name (default: the only study in the storage)")
    parser.add_argument("--depth", type=int, help="realise the schedule for this depth (default: the searched one)")
    parser.add_argument("--output", default="best.json", help="schedule JSON file to write (default best.json)")
    parser.add_argument("--model", metavar="PATH", help="also write the exported trial's trained model (.keras), as "
                        "the search kept it: trained on the searched budget and the trial's seed")
    add_artifact_dir_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.depth is not None:
        block_count(args.depth)
    quiet_optuna()
    storage = open_storage(args.storage, heartbeat_seconds=None, create=False, reader=True)
    study = load_existing_study(storage, records.search_study_name(storage, args.study))
    document = export_document(study, args.depth)
    provenance, evidence = document["provenance"], document["evidence"]
    best, schedule, floor = study.trials[provenance["trial"]], Schedule.from_dict(document), noise_floor(study)
    confirmation = records.confirmation(study)
    winner = confirmation and confirmation.get("winner")
    store = artifact_store(args.storage, args.artifact_dir)
    model = args.model and model_to_export(best, study, store, args.model, args.output)
    path = write_json_atomic(args.output, document)
    attach_when_free(args.storage, study.study_name, store, path)
    if model:
        partial = Path(f"{args.model}.partial")
        partial.unlink(missing_ok=True)
        download_artifact(artifact_store=store, file_path=str(partial), artifact_id=model)
        os.replace(partial, args.model)
        result(f"wrote {args.model}: the trained model of trial {best.number} (seed {records.seed_of(best)}, "
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
    if "evaluation" not in document:
        log.info(f"next: {next_commands(study, args.storage)[1].replace('best.json', str(path))}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
