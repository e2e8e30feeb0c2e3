"""Export a study's answer as a schedule JSON file: the confirmed winner, with the verdict and its evidence.

    shortcut-search export --storage sqlite:///search.db --study cifar10-resnet32 --output best.json

The file holds the schedule realised at the verdict's depth (the search's or its target's; or --depth), where it
came from (study, trial, dataset, depth searched, epochs), the verdict (does it beat the baseline? one-sided,
adjusted for the K candidates confirmed, with its seeds, budget and power), the confirm stage's figures for it, its
validation accuracy next to the baseline's on the same budget with the study's noise in sigma_d and what the best
of N would show by chance, and the multi-seed test evaluation of shortcut-search evaluate on the same budget where one was
recorded. When no candidate beats the baseline, it holds the best candidate and says so (the baseline stays the
recommendation); without a confirmation, the single-seed best of N candidates, and it warns. The file is also
attached to the study.

    shortcut-search export --output best.json --model best.keras

``--model`` also hands over the trained network of the exported trial (kept by the search: --keep-models), checked
against the size and SHA-256 recorded when it was kept, as its inference network: a ``.keras`` file of Keras's
built-in layers (uint8 images in, logits out) that plain ``keras.saving.load_model`` reads without this project.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Sequence

import optuna

from commands.flags import add_artifact_dir_argument, add_storage_argument
from common.cli import ArgumentParser, run_command
from common.files import check_output, write_json_atomic
from common.log import log, quiet_optuna, result
from models.schedules import Schedule, block_count
from search import records
from search.evidence.confirm_plan import arm_key, target_budget
from search.evidence.document import export_document
from search.evidence.noise import gain_in_noise, noise_floor
from search.evidence.verdict import power_line, verdict_line
from search.keep import fetch_model
from search.progress import next_commands
from storage.artifacts import artifact_store, attach_when_free
from storage import load_existing_study, open_storage


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shortcut-search export", description=__doc__.split("\n\n")[0])
    add_storage_argument(parser)
    parser.add_argument("--study", help="study name (default: the only study in the storage)")
    parser.add_argument("--depth", type=int, help="realise the schedule for this depth (default: the depth of the "
                        "verdict: the search's, or its --target-depth)")
    parser.add_argument("--output", default="best.json", help="schedule JSON file to write (default best.json)")
    parser.add_argument("--model", metavar="PATH", help="also write the exported trial's trained model (.keras), as "
                        "the search kept it: trained on the searched budget and the trial's seed")
    add_artifact_dir_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.depth is not None:
        block_count(args.depth)
    check_output(args.output, "output")
    if args.model:
        check_output(args.model, "model")
    quiet_optuna()
    storage = open_storage(args.storage, heartbeat_seconds=None, create=False, reader=True)
    study = load_existing_study(storage, records.search_study_name(storage, args.study))
    document = export_document(study, args.depth)
    provenance, evidence, verdict = document["provenance"], document["evidence"], document["verdict"]
    best, schedule = study.trials[provenance["trial"]], Schedule.from_dict(document)
    store = artifact_store(args.storage, args.artifact_dir)
    model = None
    if args.model:
        confirm_name = records.confirm_study_name(study.study_name)
        confirm = (optuna.load_study(study_name=confirm_name, storage=storage)
                   if confirm_name in optuna.get_all_study_names(storage) else None)
        target = target_budget(study, provenance["verdict_on"])  # a verdict at a target: that budget's model
        model = fetch_model(best, study, store, args.model, args.output, confirm, arm_key(document, target), target)
    try:
        path = write_json_atomic(args.output, document)
        attach_when_free(args.storage, study.study_name, store, path)
        if model:
            shutil.move(model.file, args.model)  # a rename where the folder existed
            result(f"wrote {args.model}: the trained model of {model.origin}, {model.checked}")
    finally:
        if model:
            Path(model.file).unlink(missing_ok=True)
    confirmation = records.confirmation(study)
    if confirmation is None:
        gain = evidence["val_accuracy_gain"]
        log.warning(f"warning: no confirm stage has run on {study.study_name!r}: trial {best.number} is the "
                    f"single-seed best of {evidence['selected_from']} candidates, and its gain is partly chance; "
                    f"run shortcut-search confirm --study {study.study_name}")
        result(f"wrote {path}: trial {best.number} {schedule.describe()}, val {best.value:.4f}"
               + (f" ({gain_in_noise(gain, noise_floor(study))} vs baseline)" if gain is not None
                  else " (no baseline trial)"))
    else:
        if not verdict["current"]:
            log.warning(f"warning: the confirmation is out of date: the search has other top candidates since it "
                        f"ran; run shortcut-search confirm --study {study.study_name} to confirm them")
        if confirmation.get("winner"):
            result(f"wrote {path}: {schedule.describe()}; {verdict_line(confirmation)}")
        else:
            log.warning(f"warning: {verdict_line(confirmation)}; {path} holds that best candidate, "
                        f"{schedule.describe()}, for the record, not as a winner")
            result(f"wrote {path}: the best candidate (not a winner; recommendation: the baseline)")
        if line := power_line(confirmation):
            log.info(line)
    if "evaluation" not in document:
        log.info(f"next: {next_commands(study, args.storage)[1].replace('best.json', str(path))}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
