"""The offline HTML report of a study: every figure on one page, plotly.js inlined, so it opens without a network."""
from __future__ import annotations

import html

import optuna
from optuna.trial import TrialState

from dashboards import figures
from search import records

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
.figure{{margin:1.5em 0}} p.meta{{color:#555}}</style></head>
<body><h1>{title}</h1><p class="meta">{meta}</p>
{body}
</body></html>
"""


def report_figures(study: optuna.Study) -> list:
    """The report's figures, in order."""
    built = [figures.study_schedule_figure(study), figures.history_figure(study),
             figures.learning_curves_figure(study), figures.training_curves_figure(study),
             figures.fidelity_figure(study), figures.family_figure(study),
             figures.importance_figure(study), optuna.visualization.plot_timeline(study)]
    if confirmation := records.confirmation(study):
        built += [figures.verdict_figure(confirmation), figures.agreement_figure(confirmation)]
        if confirmation.get("race"):
            built.append(figures.race_figure(confirmation))
    built += [figures.evaluation_figure(record) for record in records.evaluations(study)]
    built.append(figures.top_trials_table(study))
    return built


def render(study: optuna.Study) -> str:
    """The whole HTML page; the first figure carries plotly.js inline, so the page needs no network."""
    parts = []
    for index, figure in enumerate(report_figures(study)):
        parts.append('<div class="figure">' + figure.to_html(
            full_html=False, include_plotlyjs=index == 0, div_id=f"figure-{index}",
            config={"displaylogo": False}) + "</div>")
    budget = records.budget(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    meta = (f"{budget.dataset or '?'}, ResNet-{budget.depth or '?'}, {budget.epochs or '?'} epochs a "
            f"trial; {states.count(TrialState.COMPLETE)} complete, {states.count(TrialState.PRUNED)} pruned, "
            f"{states.count(TrialState.FAIL)} failed trials. Validation accuracy on the fixed validation split; "
            f"test accuracy only in the multi-seed evaluations.")
    return PAGE.format(title=html.escape(f"Shortcut schedule search: {study.study_name}"), meta=html.escape(meta),
                       body="\n".join(parts))
