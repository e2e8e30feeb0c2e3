"""The commands a user runs next on a study, as the terminal, the dashboard note and export print them."""
from __future__ import annotations

import optuna

from search import records
from storage.urls import storage_flag


def next_commands(study: optuna.Study, storage_url: str) -> tuple[str, str]:
    """The export and evaluate commands a user runs next on this study; evaluate repeats the budget the verdict
    was reached at (the searched one, or the confirm stage's target). The storage is named without its password
    (``storage_flag``)."""
    budget = {**records.budget(study), **((records.confirmation(study) or {}).get("budget") or {})}
    name = study.study_name
    storage = storage_flag(storage_url)
    export = f"python -m search.export {storage} --study {name} --output best.json"
    flags = "".join(f" --{flag} {budget[key]}" for flag, key in (("epochs", "epochs"), ("subset", "subset"),
                                                                  ("batch-size", "batch_size"))
                    if budget[key] is not None)
    evaluate = (f"python -m search.evaluate --schedule best.json --depth {budget['depth']} "
                f"--dataset {budget['dataset']}{flags} --seeds 5 {storage} --study {name}")
    return export, evaluate
