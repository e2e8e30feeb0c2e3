"""optuna-dashboard integration while a search runs: the schedules figure and a Markdown note on the study.

Both are stored with optuna-dashboard's own API (``save_plotly_graph_object``, ``save_note``) and refreshed
by an Optuna callback as trials finish. Building them reads the study once and draws a few curves: milliseconds,
next to minutes of training per trial.
"""
from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard import save_note, save_plotly_graph_object

from dashboards.figures import study_schedule_figure
from models.schedules import Schedule
from search.study import baseline_trial, next_commands

FIGURE_ID = "schedules"


def study_note(study: optuna.Study, storage_url: str) -> str:
    """Markdown: the best trial, its gap to the baseline on the same budget, and the export command."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    lines = [f"# {study.study_name}", f"{finished} trials finished ({len(complete)} complete)."]
    if complete:
        best = max(complete, key=lambda t: t.value)
        schedule = Schedule.from_dict(best.user_attrs["schedule"]).describe() if "schedule" in best.user_attrs \
            else str(best.params)
        lines += ["", f"**Best:** trial {best.number}, `{schedule}`, validation accuracy {100 * best.value:.2f} %."]
        baseline = baseline_trial(study)
        if baseline is not None:
            lines.append(f"Baseline (f = 1, same budget): {100 * baseline.value:.2f} % "
                         f"(gap {100 * (best.value - baseline.value):+.2f} pt; one run, validation split).")
        lines += ["", "Export it, then test it over seeds:", "```", *next_commands(study, storage_url), "```"]
    return "\n".join(lines)


def publish(study: optuna.Study, storage_url: str) -> None:
    """Store the schedules figure and the note on the study, replacing the previous ones."""
    save_plotly_graph_object(study, study_schedule_figure(study), graph_object_id=FIGURE_ID)
    save_note(study, study_note(study, storage_url))


class LiveDashboard:
    """Optuna callback: ``publish`` after every finished trial."""

    def __init__(self, storage_url: str):
        self.storage_url = storage_url

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            publish(study, self.storage_url)
