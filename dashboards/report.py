"""Write a self-contained HTML report of a schedule study: one offline file, plotly.js inlined.

    python -m dashboards.report --storage sqlite:///search.db --study cifar10-resnet32 --output report.html

Sections: the schedules as curves next to the baseline (the paper's Figure 1), the optimisation history with
the baseline as a reference, learning curves with pruned trials set apart, accuracy per family, parameter
importances, the multi-seed evaluations recorded by search.evaluate, and the top trials.
"""
from __future__ import annotations

import html
import sys
from typing import Sequence

from common.cli import ArgumentParser, run_command
from common.log import quiet_optuna, result
from storage.rdb import add_storage_argument

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
.figure{{margin:1.5em 0}} p.meta{{color:#555}}</style></head>
<body><h1>{title}</h1><p class="meta">{meta}</p>
{body}
</body></html>
"""


def report_figures(study) -> list:
    """The report's figures, in order."""
    import optuna

    from dashboards import figures
    from search.evaluation import evaluations

    built = [figures.study_schedule_figure(study), figures.history_figure(study),
             figures.learning_curves_figure(study), figures.training_curves_figure(study),
             figures.fidelity_figure(study), figures.family_figure(study),
             figures.importance_figure(study), optuna.visualization.plot_timeline(study)]
    built += [figures.evaluation_figure(record) for record in evaluations(study)]
    built.append(figures.top_trials_table(study))
    return built


def render(study) -> str:
    """The whole HTML page; the first figure carries plotly.js inline, so the page needs no network."""
    from optuna.trial import TrialState

    parts = []
    for index, figure in enumerate(report_figures(study)):
        parts.append('<div class="figure">' + figure.to_html(
            full_html=False, include_plotlyjs=index == 0, div_id=f"figure-{index}",
            config={"displaylogo": False}) + "</div>")
    settings = study.user_attrs.get("settings", {})
    states = [t.state for t in study.get_trials(deepcopy=False)]
    meta = (f"{settings.get('dataset', '?')}, ResNet-{settings.get('depth', '?')}, "
            f"{study.user_attrs.get('epochs', '?')} epochs a trial; "
            f"{states.count(TrialState.COMPLETE)} complete, {states.count(TrialState.PRUNED)} pruned, "
            f"{states.count(TrialState.FAIL)} failed trials. Validation accuracy on the fixed validation split; "
            f"test accuracy only in the multi-seed evaluations.")
    return PAGE.format(title=html.escape(f"Shortcut schedule search: {study.study_name}"), meta=html.escape(meta),
                       body="\n".join(parts))


def main(argv: Sequence[str] | None = None) -> int:
    from storage.artifacts import add_artifact_dir_argument

    parser = ArgumentParser(prog="python -m dashboards.report", description=__doc__.split("\n\n")[0])
    add_storage_argument(parser)
    parser.add_argument("--study", help="study name (default: the only study in the storage)")
    parser.add_argument("--output", default="report.html", help="HTML file to write (default report.html); it is "
                        "also attached to the study as an artifact")
    add_artifact_dir_argument(parser)
    args = parser.parse_args(argv)

    from common.files import write_text_atomic
    from storage.artifacts import artifact_store, attach_when_free
    from storage.rdb import load_existing_study, open_storage, single_study_name

    quiet_optuna()
    storage = open_storage(args.storage, heartbeat_seconds=None, create=False, reader=True)
    study = load_existing_study(storage, args.study or single_study_name(storage))
    path = write_text_atomic(args.output, render(study))
    attach_when_free(args.storage, study.study_name, artifact_store(args.storage, args.artifact_dir), path)
    result(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opens offline)")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
