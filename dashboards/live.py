"""optuna-dashboard integration while a search runs: the schedules figure and a Markdown note on the study.

Both are made with optuna-dashboard's own API (``save_plotly_graph_object``, ``save_note``) and refreshed by an
Optuna callback as trials finish, by one worker at a time and in one transaction (``held_back_study_attrs``), so
neither several workers nor a reader ever see a figure or note half-replaced. Building them reads the study once
and draws a few curves: milliseconds, next to minutes of training per trial.
"""
from __future__ import annotations

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard import get_note, save_note, save_plotly_graph_object

from dashboards.figures import study_schedule_figure
from models.schedules import Schedule
from search.confirm import describe
from search.evaluation import gain_in_noise, noise_floor
from search.progress import remaining_cost
from search.pruning import fidelity, pruner_rungs
from search.study import baseline_trial, is_learned_arm, next_commands, schedule_trials
from storage.rdb import held_back_study_attrs

FIGURE_ID = "schedules"
# the tool's part of the study note; a user's own text in optuna-dashboard goes outside these lines and stays
NOTE_BEGIN = "<!-- shortcut-search: this section is rewritten after every trial; write your own notes outside it -->"
NOTE_END = "<!-- shortcut-search: end of section -->"


def study_note(study: optuna.Study, storage_url: str, target: int | None = None, workers: int = 1,
               confirm_runs: int = 0) -> str:
    """Markdown: the best trial, its gap to the baseline on the same budget, the expected time to the ``target``
    count of finished trials, and the export command."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    lines = [f"# {study.study_name}", f"{finished} trials finished ({len(complete)} complete)."]
    if target is not None and (cost := remaining_cost(study, target, workers, confirm_runs)):
        lines += ["", f"**Cost:** {cost}."]
    schedules = schedule_trials(study)
    if schedules:
        best = max(schedules, key=lambda t: t.value)
        schedule = Schedule.from_dict(best.user_attrs["schedule"]).describe() if "schedule" in best.user_attrs \
            else str(best.params)
        lines += ["", f"**Best:** trial {best.number}, `{schedule}`, validation accuracy {100 * best.value:.2f} %."]
        baseline = baseline_trial(study)
        if baseline is not None:
            gap = gain_in_noise(best.value - baseline.value, noise_floor(study))
            lines.append(f"Baseline (f = 1, same budget and seed): {100 * baseline.value:.2f} % (gap {gap}; "
                         f"single runs on the validation split: a best-of-N figure until the confirm stage).")
        if learned := [t for t in complete if is_learned_arm(t)]:
            lines.append("Learned arms (the network trains its own per-block scalars; same budget and seed): "
                         + ", ".join(f"{t.user_attrs['preset']} {100 * t.value:.2f} %" for t in learned) + ".")
        if rows := fidelity(study):
            epochs = study.user_attrs.get("epochs", 0)
            rungs = pruner_rungs(study.user_attrs.get("settings", {}).get("pruner", ""), epochs)
            shown = [row for row in rows if row["epoch"] in rungs] or rows[-2:-1]
            lines.append(f"Rank fidelity (Kendall's tau of an epoch's validation accuracy with the final one, "
                         f"{rows[0]['trials']} completed trials): "
                         + ", ".join(f"epoch {row['epoch']}{' (rung)' if row['epoch'] in rungs else ''}: "
                                     f"{row['tau']}" for row in shown) + ".")
        if confirmation := study.user_attrs.get("confirmation"):
            lines += ["", "**Confirm stage** (fresh seeds, validation, paired with the baseline):", "```",
                      describe(confirmation), "```"]
        lines += ["", "Export it, then test it over seeds:", "```", *next_commands(study, storage_url), "```"]
    return "\n".join(lines)


def publish(storage: RDBStorage, study_name: str, storage_url: str, target: int | None = None, workers: int = 1,
            confirm_runs: int = 0) -> None:
    """Store the schedules figure on the study, and the tool's section of its note (the rest stays the user's),
    atomically and one writer at a time."""
    with held_back_study_attrs(storage, study_name) as study:
        save_plotly_graph_object(study, study_schedule_figure(study), graph_object_id=FIGURE_ID)
        note = study_note(study, storage_url, target, workers, confirm_runs)
        save_note(study, merged_note(get_note(study), note))


def merged_note(current: str, section: str) -> str:
    """``current`` with the tool's section (between ``NOTE_BEGIN`` and ``NOTE_END``) replaced by ``section``, or
    put first when it has none: whatever a user wrote in optuna-dashboard outside the section is kept."""
    block = f"{NOTE_BEGIN}\n{section}\n{NOTE_END}"
    start, end = current.find(NOTE_BEGIN), current.find(NOTE_END)
    if start >= 0 and end > start:
        return current[:start] + block + current[end + len(NOTE_END):]
    return f"{block}\n\n{current}" if current.strip() else block


class LiveDashboard:
    """Optuna callback: ``publish`` after every finished trial."""

    def __init__(self, storage: RDBStorage, storage_url: str, target: int | None = None, workers: int = 1,
                 confirm_runs: int = 0):
        self.storage, self.storage_url = storage, storage_url
        self.target, self.workers, self.confirm_runs = target, workers, confirm_runs

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            publish(self.storage, study.study_name, self.storage_url, self.target, self.workers, self.confirm_runs)
