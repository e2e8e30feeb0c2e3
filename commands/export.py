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

import sys
from typing import Sequence

from commands.flags import add_artifact_dir_argument, add_storage_argument
from common.cli import ArgumentParser, run_command
from search.handover import export


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
    return export(args.storage, args.study, args.output, args.depth, args.model, args.artifact_dir)


if __name__ == "__main__":
    sys.exit(run_command(main))
