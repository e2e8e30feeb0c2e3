"""The confirm stage: re-train the search's top candidates, the baseline and the paper's preset on fresh seeds.

    shortcut-search confirm --storage sqlite:///search.db --study cifar10-resnet32 --top 5 --seeds 3

A search picks its best schedule from single runs on one seed: the best of N is high partly by chance. This stage
trains candidates again on seeds of their own (the study's seed + 2000 + i: disjoint from the search's and the
baseline replicas'), on the same split and budget, judged on validation and paired by seed with the baseline. By
default it races (``--budget``, default ``auto``: (K + 2) x S runs): the surrogate's top candidates raced one seed
a round, then the leader tested against the baseline alone on seeds no round used; ``--budget fixed`` trains the
top K, the baseline and the paper's preset on S seeds each. The verdict is one-sided and simultaneous over the
candidates tested (Dunnett, variance pooled over arms and seeds): a candidate beats the baseline when its adjusted
95 % lower bound is above zero; otherwise the baseline stays the recommendation. ``shortcut-search run`` runs this stage after
its search (``--confirm-top``, ``--confirm-seeds``).

The runs are trials of a study of their own, ``<study>.confirm``, in the same storage: resumable (kill it and
run the command again; nothing done twice), shared by any number of workers or machines, visible in
optuna-dashboard, and never counted toward the search's ``--trials``. Run it again after extending the search:
it confirms the new top K, reusing every run already done.
"""
from __future__ import annotations

import sys
import time
from typing import Sequence

from commands.flags import (add_artifact_dir_argument, add_confirm_arguments, add_fuse_argument,
                            add_storage_argument, add_target_arguments)
from common.cli import ArgumentParser, positive_int, run_command
from common.log import quiet_optuna
from search.interrupts import interruptible
from search.study import confirm_config


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shortcut-search confirm", description=__doc__.split("\n\n")[0])
    add_storage_argument(parser)
    parser.add_argument("--study", required=True, help="the search study to confirm")
    parser.add_argument("--top", type=positive_int, default=5, metavar="K", help="the fixed stage confirms the "
                        "search's best K candidates; an auto race spends (K + 2) x S runs (default 5)")
    add_confirm_arguments(parser, "--seeds", "--budget")
    add_target_arguments(parser)
    parser.add_argument("--data-dir", help="folder of the CIFAR archive, as for the search")
    parser.add_argument("--checkpoint-dir", metavar="DIR", help="where the runs keep their epoch checkpoints, as "
                        "for the search (default: search-checkpoints/ beside a SQLite study; none = off)")
    parser.add_argument("--keep-models", type=int, default=5, metavar="K",
                        help="0 keeps no model; otherwise each arm keeps one run's model, for export --model "
                             "(default 5)")
    add_artifact_dir_argument(parser)
    add_fuse_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return interruptible(lambda: confirm(build_parser().parse_args(argv)))  # parsing included


def confirm(args) -> int:
    invoked_at = time.time()
    quiet_optuna()
    config = confirm_config(args.storage, args.study, data_dir=args.data_dir, confirm_top=args.top,
                            confirm_seeds=args.seeds, min_effect=args.min_effect / 100,
                            confirm_budget=args.budget,
                            checkpoint_dir=args.checkpoint_dir, keep_models=args.keep_models,
                            artifact_dir=args.artifact_dir, target_depth=args.target_depth,
                            target_epochs=args.target_epochs, target_subset=args.target_subset, fuse=args.fuse)
    from search.session import confirm_stage  # imports TensorFlow: once the study and flags are checked

    return confirm_stage(config, invoked_at)


if __name__ == "__main__":
    sys.exit(run_command(main))
