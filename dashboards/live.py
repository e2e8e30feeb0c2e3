"""optuna-dashboard while a search runs: the schedules figure and a Markdown note on the study.

Both are made with optuna-dashboard's own API (``save_plotly_graph_object``, ``save_note``) and refreshed after
every finished trial (the search command passes ``publish`` to the search loop), by one worker at a time and in
one transaction (``held_back_study_attrs``), so neither several workers nor a reader ever see a figure or note
half-replaced. Building them reads the study once and draws a few curves: milliseconds, next to minutes of
training per trial.
"""
from __future__ import annotations

import optuna
from optuna_dashboard import get_note, save_note, save_plotly_graph_object

from dashboards.figures import study_schedule_figure, verdict_figure
from search import records
from search.evidence.confirm_plan import is_current
from search.evidence.noise import gain_in_noise, noise_floor
from search.evidence.verdict import describe
from search.progress import next_commands, remaining_cost, unrun_references
from search.pruning import fidelity, pruner_rungs
from storage.attributes import held_back_study_attrs
from storage.urls import redacted

FIGURE_ID = "schedules"
VERDICT_FIGURE_ID = "verdict"
# the tool's part of the study note; a user's own text in optuna-dashboard goes outside these lines and stays
NOTE_BEGIN = "<!-- shortcut-search: this section is rewritten after every trial; write your own notes outside it -->"
NOTE_END = "<!-- shortcut-search: end of section -->"


def study_note(study: optuna.Study, storage_url: str, target: int | None = None, workers: int = 1,
               confirm_runs: float = 0) -> str:
    """Markdown: the best trial, its gap to the baseline on the same budget, the expected time to the ``target``
    count of finished trials, and the export command."""
    complete = records.complete(study)
    searched = len([t for t in records.finished(study) if records.is_searched(t)])
    lines = [f"# {study.study_name}", f"{records.finished_count(study)} trials finished ({len(complete)} complete): "
                                      f"{searched} searched, the rest references."]
    if target is not None and (cost := remaining_cost(study, target, workers, confirm_runs)):
        lines += ["", f"**Cost:** {cost}."]
    if target is not None and records.finished_count(study) >= target and (unrun := unrun_references(study)):
        lines += ["", f"**Not run yet:** {unrun}."]
    candidates = records.candidates(study)
    if candidates:
        best = candidates[0]
        schedule = records.schedule_of(best)
        text = schedule.describe() if schedule else str(best.params)
        lines += ["", f"**Best:** candidate trial {best.number}, `{text}`, validation accuracy "
                      f"{100 * best.value:.2f} %."]
        baseline = records.baseline_trial(study)
        if baseline is not None:
            gap = gain_in_noise(best.value - baseline.value, noise_floor(study))
            lines.append(f"Baseline (f = 1, same budget and seed): {100 * baseline.value:.2f} % (gap {gap}; "
                         f"single runs on the validation split: a best-of-N figure until the confirm stage).")
        if learned := records.learned_arms(study):
            lines.append("Learned arms (the network trains its own per-block scalars; same budget and seed): "
                         + ", ".join(f"{records.preset_of(t)} {100 * t.value:.2f} %" for t in learned) + ".")
        if rows := fidelity(study):
            rungs = pruner_rungs(records.settings(study).get("pruner", ""), records.epochs(study) or 0)
            shown = [row for row in rows if row["epoch"] in rungs] or rows[-2:-1]
            lines.append(f"Rank fidelity (Kendall's tau of an epoch's validation accuracy with the final one, "
                         f"{rows[0]['trials']} completed trials): "
                         + ", ".join(f"epoch {row['epoch']}{' (rung)' if row['epoch'] in rungs else ''}: "
                                     f"{row['tau']}" for row in shown) + ".")
        if confirmation := records.confirmation(study):
            stale = "" if is_current(study, confirmation) else (" **Out of date:** the search has other top "
                                                                "candidates since; run the confirm stage again.")
            lines += ["", f"**Confirm stage** (fresh seeds, validation, paired with the baseline).{stale}", "```",
                      describe(confirmation), "```"]
        lines += ["", "Export it, then test it over seeds:", "```", *next_commands(study, storage_url), "```"]
    return "\n".join(lines)


def publish(storage, study_name: str, storage_url: str, target: int | None = None, workers: int = 1,
            confirm_runs: float = 0) -> None:
    """Store the schedules figure on the study, and the tool's section of its note (the rest stays the user's),
    atomically and one writer at a time."""
    with held_back_study_attrs(storage, study_name) as study:
        save_plotly_graph_object(study, study_schedule_figure(study), graph_object_id=FIGURE_ID)
        if confirmation := records.confirmation(study):
            save_plotly_graph_object(study, verdict_figure(confirmation), graph_object_id=VERDICT_FIGURE_ID)
        note = study_note(study, storage_url, target, workers, confirm_runs)
        save_note(study, merged_note(get_note(study), note))


class DashboardPublisher:
    """``publish`` for one search, as the search loop calls it after every trial: ``(storage, study name)``."""

    def __init__(self, storage_url: str, target: int | None = None, workers: int = 1, confirm_runs: float = 0):
        self.storage_url, self.target, self.workers, self.confirm_runs = storage_url, target, workers, confirm_runs

    def __call__(self, storage, study_name: str) -> None:
        publish(storage, study_name, self.storage_url, self.target, self.workers, self.confirm_runs)

    def __repr__(self) -> str:  # never the storage's password
        return f"DashboardPublisher({redacted(self.storage_url)!r}, target={self.target}, workers={self.workers})"


def merged_note(current: str, section: str) -> str:
    """``current`` with the tool's section (between ``NOTE_BEGIN`` and ``NOTE_END``) replaced by ``section``, or
    put first when it has none: whatever a user wrote in optuna-dashboard outside the section is kept."""
    block = f"{NOTE_BEGIN}\n{section}\n{NOTE_END}"
    start, end = current.find(NOTE_BEGIN), current.find(NOTE_END)
    if start >= 0 and end > start:
        return current[:start] + block + current[end + len(NOTE_END):]
    return f"{block}\n\n{current}" if current.strip() else block
