"""Plotly figures of a schedule study, shared by the HTML report, optuna-dashboard and notebooks.

Each function takes a study (or plain data) and returns a ``plotly.graph_objects.Figure``; none trains or
writes. Accuracies are shown in percent.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from models.schedules import AXIS, LEARNED, Schedule, paper_preset_for, positions, preset
from search import records
from search.evidence.noise import noise_floor
from search.evidence.verdict import Outcome
from search.pruning import FIDELITY_MIN_TRIALS, fidelity, pruner_rungs
from search.records import TrialKey

IMPORTANCE_EVALUATOR = optuna.importance.PedAnovaImportanceEvaluator
PRUNED_STYLE = dict(color="rgba(150,150,150,0.6)", dash="dot", width=1)  # a pruned trial's curve
BASELINE_STYLE = dict(color="black", dash="dash", width=1.5)
LAYOUT = dict(template="plotly_white", height=420, margin=dict(l=60, r=20, t=60, b=50),
              legend=dict(font=dict(size=10)))


def _baseline_line(figure: go.Figure, study: optuna.Study, text: str = "baseline", **where) -> None:
    """The baseline trial's validation accuracy as a dashed horizontal reference line, when it has finished."""
    baseline = records.baseline_trial(study)
    if baseline is not None:
        figure.add_hline(y=100 * baseline.value, line=BASELINE_STYLE,
                         annotation_text=text.format(100 * baseline.value), **where)


def _finish(figure: go.Figure, title: str, x_title: str | None = None, **layout) -> go.Figure:
    """Common layout, titles, and the y axis of validation accuracy."""
    figure.update_layout(title=title, **{**LAYOUT, **layout})
    if x_title:
        figure.update_xaxes(title=x_title)
    figure.update_yaxes(title="validation accuracy (%)")
    return figure


def schedule_figure(curves: Sequence[tuple[str, Schedule]], depth: int | None = None,
                    title: str = "Shortcut schedules f(x)") -> go.Figure:
    """The paper's Figure 1: f against x on [1, 15], the baseline f = 1 as a dashed line, and, for ``depth``,
    markers at the blocks' positions."""
    figure = go.Figure()
    x = np.linspace(*AXIS, 281)
    figure.add_trace(go.Scatter(x=list(AXIS), y=[1.0, 1.0], mode="lines", name="baseline f = 1",
                                line=BASELINE_STYLE))
    for label, schedule in curves:
        trace = dict(x=x, y=schedule(x), mode="lines", name=label, line=dict(width=2.5 if "#" in label else 1.5),
                     legendgroup=label)
        if label.startswith("paper"):
            trace["line"]["dash"] = "dot"
        figure.add_trace(go.Scatter(**trace))
        if depth is not None:
            figure.add_trace(go.Scatter(x=positions(depth), y=schedule.values(depth), mode="markers",
                                        marker=dict(size=6), name=f"{label} blocks", legendgroup=label,
                                        showlegend=False))
    subtitle = f" (markers: the {len(positions(depth))} blocks of ResNet-{depth})" if depth else ""
    figure.update_layout(title=title + subtitle, **LAYOUT)
    figure.update_xaxes(title="x (block position)", range=[AXIS[0] - 0.3, AXIS[1] + 0.3], dtick=1)
    figure.update_yaxes(title="f(x)")
    return figure


def study_schedule_figure(study: optuna.Study, top: int = 5) -> go.Figure:
    """The best ``top`` completed trials' schedules next to the baseline and the paper's preset for the study,
    and what the learned arms learned: ``learned``'s shortcut factors and ``skipinit``'s branch scalars, per
    block on the same axis (the searched f is fixed, theirs is what training made of it)."""
    depth = records.depth(study)
    best = records.candidates(study)[:top]
    curves = [(f"{records.label(t)} ({100 * t.value:.2f} %)", records.schedule_of(t)) for t in best
              if records.schedule_of(t) is not None]
    if depth is not None:
        paper = paper_preset_for(records.settings(study)["dataset"], depth)
        curves.append((paper, preset(paper)))
    figure = schedule_figure(curves, depth, title=f"Best schedules of {study.study_name}")
    for trial in records.learned_arms(study):
        values = TrialKey.LEARNED_VALUES.of(trial)
        if depth is not None and values and len(values) == len(positions(depth)):
            meaning = "shortcut factor" if records.preset_of(trial) == LEARNED[0] else "branch scalar (not f)"
            figure.add_trace(go.Scatter(x=positions(depth), y=values, mode="lines+markers", line=dict(dash="dash"),
                                        name=f"{records.label(trial)}: learned {meaning} ({100 * trial.value:.2f} %)"))
    return figure


def history_figure(study: optuna.Study) -> go.Figure:
    """Validation accuracy per trial, the best so far, and the baseline's accuracy as a reference line."""
    complete = records.complete(study)
    figure = go.Figure()
    numbers = [t.number for t in complete]
    values = [100 * t.value for t in complete]
    figure.add_trace(go.Scatter(x=numbers, y=values, mode="markers", name="trial",
                                text=[records.label(t) for t in complete]))
    figure.add_trace(go.Scatter(x=numbers, y=np.maximum.accumulate(values) if values else [], mode="lines",
                                name="best so far", line=dict(shape="hv")))
    _baseline_line(figure, study, "baseline {:.2f} %", annotation_position="bottom right")
    floor = noise_floor(study)
    if floor is not None and floor["baseline_seed_std"] is not None:  # the spread a re-run of the baseline would show
        mean, std = np.mean(floor["baseline_val_accuracy"]), floor["baseline_seed_std"]
        figure.add_hrect(y0=100 * (mean - std), y1=100 * (mean + std), fillcolor="gray", opacity=0.15, line_width=0,
                         annotation_text=f"baseline mean +- 1 sd over {len(floor['seeds'])} seeds",
                         annotation_position="top left")
    return _finish(figure, "Optimisation history", "trial")


def fidelity_figure(study: optuna.Study) -> go.Figure:
    """Kendall's tau between each epoch's validation accuracy and the final one over the completed trials, with
    the epochs at which the study's pruner decides: where tau is low, a decision there is a coin toss."""
    rows = fidelity(study)
    epochs = records.epochs(study) or 0
    figure = go.Figure()
    if rows:
        figure.add_trace(go.Scatter(x=[row["epoch"] for row in rows], y=[row["tau"] for row in rows],
                                    mode="lines+markers", name="Kendall's tau"))
        for rung in pruner_rungs(records.settings(study).get("pruner", ""), epochs):
            figure.add_vline(x=rung, line=dict(color="firebrick", dash="dot", width=1.5),
                             annotation_text=f"rung {rung}", annotation_position="top left")
    else:
        complete = len(records.complete(study))
        figure.add_annotation(text=f"not enough completed trials with full curves yet ({complete} of "
                                   f"{FIDELITY_MIN_TRIALS})", showarrow=False, x=0.5, y=0.5, xref="paper",
                              yref="paper")
    trials = f" ({rows[0]['trials']} completed trials)" if rows else ""
    figure.update_layout(title=f"Rank fidelity: Kendall's tau of each epoch's ranking with the final one{trials}",
                         **LAYOUT)
    figure.update_xaxes(title="epoch", dtick=1 if epochs <= 30 else None)
    figure.update_yaxes(title="Kendall's tau with the final accuracy", range=[-1.05, 1.05])
    return figure


def learning_curves_figure(study: optuna.Study) -> go.Figure:
    """Validation accuracy per epoch of every trial; pruned trials grey and dotted, ending in a cross."""
    figure = go.Figure()
    shown = set()
    for trial in records.finished(study):
        if not trial.intermediate_values:
            continue
        epochs = sorted(trial.intermediate_values)
        values = [100 * trial.intermediate_values[e] for e in epochs]
        pruned = trial.state == TrialState.PRUNED
        group = "pruned" if pruned else "complete"
        style = PRUNED_STYLE if pruned else dict(width=2)
        figure.add_trace(go.Scatter(
            x=epochs, y=values, mode="lines+markers", name=group if group not in shown else records.label(trial),
            legendgroup=group, showlegend=group not in shown, line=style, text=records.label(trial),
            marker=dict(symbol=["circle"] * (len(epochs) - 1) + ["x" if pruned else "circle"], size=6)))
        shown.add(group)
    return _finish(figure, "Learning curves (validation accuracy per epoch)", "epoch")


def training_curves_figure(study: optuna.Study) -> go.Figure:
    """Training loss per epoch of every trial that recorded it (``train_loss``): how each schedule trains, beside
    how it validates; pruned trials grey and dotted."""
    figure = go.Figure()
    for trial in records.finished(study):
        if losses := records.curve(trial, TrialKey.TRAIN_LOSS):
            pruned = trial.state == TrialState.PRUNED
            style = PRUNED_STYLE if pruned else dict(width=2)
            figure.add_trace(go.Scatter(x=list(range(1, len(losses) + 1)), y=losses, mode="lines", line=style,
                                        name=records.label(trial)))
    if not figure.data:
        figure.add_annotation(text="not enough trials with training curves yet (recorded since 2026-11-29)",
                              showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_layout(title="Training loss per epoch", **LAYOUT)
    figure.update_xaxes(title="epoch")
    figure.update_yaxes(title="training loss (cross-entropy + weight decay)", type="log")
    return figure


def family_figure(study: optuna.Study) -> go.Figure:
    """Validation accuracy of completed trials per schedule family: which shapes work."""
    figure = go.Figure()
    by_family: dict[str, list[float]] = {}
    for trial in records.complete(study):
        by_family.setdefault(TrialKey.FAMILY.of(trial, "?"), []).append(100 * trial.value)
    for family, values in sorted(by_family.items()):
        figure.add_trace(go.Box(y=values, name=f"{family} ({len(values)})", boxpoints="all", jitter=0.4,
                                pointpos=0))
    _baseline_line(figure, study)
    return _finish(figure, "Validation accuracy per family", showlegend=False)


def importance_figure(study: optuna.Study) -> go.Figure:
    """Parameter importances by Optuna's PED-ANOVA evaluator (Optuna 5's default: how much each parameter
    sets the best trials apart from the rest), per family (each family's parameters exist only in its trials)."""
    figure = go.Figure()
    families: dict[str, list[FrozenTrial]] = {}
    for trial in records.complete(study):
        families.setdefault(TrialKey.FAMILY.of(trial, "?"), []).append(trial)
    sections = {"family": records.complete(study)} if len(families) > 1 else {}
    sections.update({name: trials for name, trials in families.items()})
    for name, trials in sections.items():
        importances = _importances(trials, only="family" if name == "family" else None)
        if importances:
            figure.add_trace(go.Bar(x=list(importances.values()), y=list(importances), orientation="h",
                                    name=name))
    if not figure.data:
        figure.add_annotation(text="not enough completed trials yet: importances need 3 complete trials of a family", showarrow=False,
                              x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_layout(title=f"Parameter importances ({IMPORTANCE_EVALUATOR.__name__}, per family)",
                         barmode="group", **LAYOUT)
    figure.update_xaxes(title="importance (normalised to sum to 1 within a family)")
    return figure


def _importances(trials: list[FrozenTrial], only: str | None = None) -> dict[str, float]:
    """Importances over the parameters every one of ``trials`` has; empty when they cannot be computed."""
    common = set.intersection(*(set(t.params) for t in trials)) if trials else set()
    common = {only} & common if only else common - {"family"}
    if len(trials) < 3 or not common:
        return {}
    subset = optuna.create_study(direction="maximize")
    subset.add_trials([t for t in trials if common <= set(t.params)])
    try:
        return optuna.importance.get_param_importances(subset, evaluator=IMPORTANCE_EVALUATOR(),
                                                       params=sorted(common))
    except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. a parameter that never varied
        return {}


def evaluation_figure(record: dict[str, Any]) -> go.Figure:
    """A multi-seed evaluation: per-seed test accuracy of the baseline and each arm, and each arm's mean paired
    difference with the baseline with its 95 % confidence interval (and Holm's p with several arms)."""
    arms = record.get("arms") or [{  # a record written before evaluations had several arms
        "name": "schedule", "test_accuracy": record["schedule_test_accuracy"],
        **{key: record.get(key) for key in ("difference_mean", "difference_ci95", "p_value")}}]
    figure = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                           subplot_titles=("test accuracy per seed", "arm - baseline"))
    seeds = [str(s) for s in record["seeds_used"]]
    percent = lambda values: [None if v is None else 100 * v for v in values]  # noqa: E731 - None: diverged
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for index, (name, accuracy) in enumerate([("baseline", record["baseline_test_accuracy"]),
                                              *((arm["name"], arm["test_accuracy"]) for arm in arms)]):
        figure.add_trace(go.Bar(x=seeds, y=percent(accuracy), name=name,
                                marker_color="#555" if index == 0 else colors[(index - 1) % len(colors)]),
                         row=1, col=1)
    title = f"Multi-seed evaluation, ResNet-{record['depth']} on {record['dataset']}"
    compared = [arm for arm in arms if arm.get("difference_mean") is not None]
    if not compared:
        figure.add_annotation(text="not enough finished pairs: every seed had a diverged run", showarrow=False,
                              x=0.85, y=0.5, xref="paper", yref="paper")
        figure.update_layout(title=title, barmode="group", **LAYOUT)
        return figure
    means = [100 * arm["difference_mean"] for arm in compared]
    intervals = [arm.get("difference_ci95") or [arm["difference_mean"]] * 2 for arm in compared]
    figure.add_trace(go.Scatter(
        x=[arm["name"] for arm in compared], y=means, mode="markers", marker=dict(size=12),
        name="mean difference (95 % CI)",
        error_y=dict(type="data", symmetric=False, array=[100 * hi - m for (_, hi), m in zip(intervals, means)],
                     arrayminus=[m - 100 * lo for (lo, _), m in zip(intervals, means)])), row=1, col=2)
    figure.add_hline(y=0, line=BASELINE_STYLE, row=1, col=2)
    every = record["baseline_test_accuracy"] + [a for arm in arms for a in arm["test_accuracy"]]
    figure.update_yaxes(title="test accuracy (%)", range=[max(0, min(v for v in percent(every) if v is not None) - 2),
                                                         None], row=1, col=1)
    figure.update_yaxes(title="points", row=1, col=2)
    if len(arms) == 1:
        arm, ci = compared[0], compared[0].get("difference_ci95")
        p = arm.get("p_value")
        title += f": {means[0]:+.2f} pt" + (f", 95 % CI [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}], p = {p:.3g}"
                                            if ci else "")
    else:
        title += f" ({len(arms)} arms; p corrected by Holm: " + ", ".join(
            f"{arm['name']} {arm['p_holm']:.3g}" for arm in compared if arm.get("p_holm") is not None) + ")"
    figure.update_layout(title=title, barmode="group", **LAYOUT)
    return figure


def verdict_figure(summary: dict[str, Any]) -> go.Figure:
    """The confirm stage: every arm's mean paired difference with the baseline (points), its raw one-sided 95 %
    bounds (thin) and, for complete arms, its adjusted ones (thick: Dunnett, simultaneous over the candidates);
    the baseline at zero; the verdict in the title."""
    figure = go.Figure()
    rows = [row for row in summary["arms"] if row["difference_mean"] is not None]
    for kind, width in (("bounds_raw", 1.5), ("bounds_adjusted", 6)):
        shown = [row for row in rows if row.get(kind)]
        if not shown:
            continue
        means = [100 * row["difference_mean"] for row in shown]
        figure.add_trace(go.Scatter(
            x=[row["label"] for row in shown], y=means, mode="markers",
            name="raw bounds (this arm alone)" if kind == "bounds_raw" else "adjusted bounds (Dunnett)",
            marker=dict(size=11 if width > 2 else 1, color="#1f77b4"),
            error_y=dict(type="data", symmetric=False, thickness=width, width=0 if width > 2 else 6,
                         array=[100 * row[kind][1] - m for row, m in zip(shown, means)],
                         arrayminus=[m - 100 * row[kind][0] for row, m in zip(shown, means)])))
    figure.add_hline(y=0, line=BASELINE_STYLE, annotation_text="baseline", annotation_position="bottom right")
    verdict = summary["verdict"]
    outcome = {Outcome.BEATS: f"{verdict['winner']} beats the baseline",
               Outcome.NO_WINNER: "no candidate beats the baseline",
               Outcome.WORSE: "no candidate beats the baseline; " + ", ".join(verdict["worse"]) + " worse",
               Outcome.NO_VERDICT: "no verdict (too few finished runs)"}
    budget = summary.get("budget") or {}
    figure.update_layout(title=f"Confirm stage: {outcome[verdict['outcome']]} (ResNet-{budget.get('depth')}, "
                               f"{budget.get('epochs')} epochs, {len(summary['seeds'])} seeds, "
                               f"{verdict['comparisons']} candidates)", **LAYOUT)
    figure.update_xaxes(title="arm (candidates: #trial)")
    figure.update_yaxes(title="validation accuracy - baseline (points, paired by seed)")
    return figure


def race_figure(summary: dict[str, Any]) -> go.Figure:
    """A racing confirm stage's field: per arm, the surrogate's estimate of its accuracy (the Gaussian process over
    every search trial, mean +- one sd) beside the trial's own single-seed value; the leader sent to the final test
    in the title with its seeds."""
    race = summary["race"]
    field = race["field"]
    figure = go.Figure()
    labels = [arm["label"] + (" (final test)" if arm["final_test"] else "") for arm in field]
    if race.get("surrogate", True):
        figure.add_trace(go.Scatter(x=labels, y=[100 * (arm["surrogate_mean"] or 0) for arm in field],
                                    mode="markers", name="surrogate: mean +- sd", marker=dict(size=11),
                                    error_y=dict(type="data", array=[100 * (arm["surrogate_sd"] or 0)
                                                                     for arm in field])))
    figure.add_trace(go.Scatter(x=labels, y=[None if arm["search_value"] is None else 100 * arm["search_value"]
                                             for arm in field], mode="markers", name="search: its own seed",
                                marker=dict(symbol="x", size=9)))
    return _finish(figure, f"Race: {race['survivor'] or 'no survivor'} tested on {len(race['final_seeds'])} fresh "
                           f"seeds ({race['spent']} of {race['trainings']} runs; stopped: {race['stopped_by']})",
                   "arm of the field (#trial)")


def agreement_figure(summary: dict[str, Any]) -> go.Figure:
    """Did the search's ranking foretell the confirm stage's? Each arm's search value (its one run at the search's
    budget) against its mean over the stage's seeds at the stage's budget, the seeds' spread as a bar; Kendall's
    tau and the stage's own seed-to-seed agreement in the title."""
    figure = go.Figure()
    points = [(label, proxy, [v for v in values if v is not None]) for label, proxy, values in
              zip(summary.get("labels", []), summary.get("proxy", []),
                  [summary["baseline_val_accuracy"], *(row["schedule_val_accuracy"] for row in summary["arms"])])
              if proxy is not None and any(v is not None for v in values)]
    if points:
        means = [100 * float(np.mean(values)) for _, _, values in points]
        figure.add_trace(go.Scatter(
            x=[100 * proxy for _, proxy, _ in points], y=means, mode="markers+text", marker=dict(size=11),
            text=[label for label, _, _ in points], textposition="top center", name="arm",
            error_y=dict(type="data", symmetric=False,
                         array=[100 * max(values) - mean for (_, _, values), mean in zip(points, means)],
                         arrayminus=[mean - 100 * min(values) for (_, _, values), mean in zip(points, means)])))
    else:
        figure.add_annotation(text="not enough arms with a search value and a confirm run", showarrow=False,
                              x=0.5, y=0.5, xref="paper", yref="paper")
    agreement, searched, budget = summary.get("proxy_agreement"), summary.get("search_budget") or {}, \
        summary.get("budget") or {}
    tau = "" if not agreement or agreement["tau"] is None else \
        f": Kendall's tau {agreement['tau']:+.2f} (p {agreement['p_value']:.2g}, {agreement['arms']} arms)" + (
            "" if agreement["target_seed_tau"] is None else f", reference (one seed against the others) {agreement['target_seed_tau']:+.2f}"
            + (f" +- {agreement['target_seed_tau_sd']:.2f}" if agreement.get("target_seed_tau_sd") is not None else ""))
    figure.update_layout(title=f"Search (ResNet-{searched.get('depth')}, {searched.get('epochs')} epochs) against "
                               f"confirm stage (ResNet-{budget.get('depth')}, {budget.get('epochs')} epochs){tau}",
                         **LAYOUT)
    figure.update_xaxes(title="validation accuracy in the search (%, one run)")
    figure.update_yaxes(title="validation accuracy, confirm stage (%, mean and range over seeds)")
    return figure


def top_trials_table(study: optuna.Study, top: int = 10) -> go.Figure:
    """The ``top`` completed trials with their schedules and validation accuracy."""
    best = records.ranked(records.complete(study))[:top]
    baseline = records.baseline_trial(study)
    gap = [f"{100 * (t.value - baseline.value):+.2f}" if baseline else "" for t in best]
    describe = [records.schedule_of(t).describe() if records.schedule_of(t) else "" for t in best]
    figure = go.Figure(go.Table(
        columnwidth=[40, 80, 420, 70, 70],
        header=dict(values=["trial", "preset", "schedule", "val acc (%)", "vs baseline (pt)"], align="left"),
        cells=dict(values=[[t.number for t in best], [records.preset_of(t) or "" for t in best], describe,
                           [f"{100 * t.value:.2f}" for t in best], gap], align="left")))
    figure.update_layout(title=f"Top {len(best)} trials", **{**LAYOUT, "height": 140 + 45 * max(len(best), 1)})
    return figure

