"""What ``shortcut-search export`` hands over: the study's answer as a schedule JSON file, and on request the trained
network behind it, written whole or not at all, attached to the study, and the lines that say what they are worth
(a confirmed winner, the best candidate that is not one, or a single-seed best of N)."""
from __future__ import annotations

import shutil
from pathlib import Path

import optuna

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
from storage import load_existing_study, open_storage
from storage.artifacts import artifact_store, attach_when_free


def export(url: str, name: str | None, output: str, depth: int | None = None, model_path: str | None = None,
           artifact_dir: str | None = None) -> int:
    """Write study ``name``'s answer to ``output`` (and with ``model_path`` its trained inference network), attach
    it to the study, and say what was written and what it is worth; the exit code. Everything the user can get
    wrong is checked first; the model is verified against its recorded checksum before anything is written, and
    a failure leaves no file behind."""
    if depth is not None:
        block_count(depth)
    check_output(output, "output")
    if model_path:
        check_output(model_path, "model")
    quiet_optuna()
    storage = open_storage(url, heartbeat_seconds=None, create=False, reader=True)
    study = load_existing_study(storage, records.search_study_name(storage, name))
    document = export_document(study, depth)
    provenance, evidence, verdict = document["provenance"], document["evidence"], document["verdict"]
    best, schedule = study.trials[provenance["trial"]], Schedule.from_dict(document)
    store = artifact_store(url, artifact_dir)
    model = None
    if model_path:
        confirm_name = records.confirm_study_name(study.study_name)
        confirm = (optuna.load_study(study_name=confirm_name, storage=storage)
                   if confirm_name in optuna.get_all_study_names(storage) else None)
        target = target_budget(study, provenance["verdict_on"])  # a verdict at a target: that budget's model
        model = fetch_model(best, study, store, model_path, output, confirm, arm_key(document, target), target)
    try:
        path = write_json_atomic(output, document)
        attach_when_free(url, study.study_name, store, path)
        if model:
            shutil.move(model.file, model_path)  # a rename where the folder existed
            result(f"wrote {model_path}: the trained model of {model.origin}, {model.checked}")
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
        log.info(f"next: {next_commands(study, url)[1].replace('best.json', str(path))}")
    return 0
