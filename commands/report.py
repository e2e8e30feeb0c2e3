"""Write a self-contained HTML report of a schedule study: one offline file, plotly.js inlined.

    shortcut-search report --storage sqlite:///search.db --study cifar10-resnet32 --output report.html

Sections: the schedules as curves next to the baseline (the paper's Figure 1), the optimisation history with
the baseline as a reference, learning curves with pruned trials set apart, accuracy per family, parameter
importances, the multi-seed evaluations recorded by shortcut-search evaluate, and the top trials.
"""
from __future__ import annotations

import sys
from typing import Sequence

from commands.flags import add_artifact_dir_argument, add_storage_argument
from common.cli import ArgumentParser, run_command
from common.files import check_output, write_text_atomic
from common.log import quiet_optuna, result
from dashboards.report_page import render
from search import records
from storage.artifacts import artifact_store, attach_when_free
from storage import load_existing_study, open_storage


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shortcut-search report", description=__doc__.split("\n\n")[0])
    add_storage_argument(parser)
    parser.add_argument("--study", help="study name (default: the only study in the storage)")
    parser.add_argument("--output", default="report.html", help="HTML file to write (default report.html); it is "
                        "also attached to the study as an artifact")
    add_artifact_dir_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_output(args.output, "output")
    quiet_optuna()
    storage = open_storage(args.storage, heartbeat_seconds=None, create=False, reader=True)
    study = load_existing_study(storage, records.search_study_name(storage, args.study))
    path = write_text_atomic(args.output, render(study))
    attach_when_free(args.storage, study.study_name, artifact_store(args.storage, args.artifact_dir), path)
    result(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opens offline)")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
