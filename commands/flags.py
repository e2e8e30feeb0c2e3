"""The flags several commands share, defined once: training budget, storage and artifact store.

Commands (and benchmarks) add them to their own parser; the values go into the library's config objects
(``TrainConfig``, ``SearchConfig``), which check them again for callers that do not come through a parser.
"""
from __future__ import annotations

import argparse

from common.cli import ArgumentParser, positive_int
from search.config import CONFIRM_BUDGETS, MAX_SEED, MIN_RACE
from storage.artifacts import ARTIFACT_FOLDER
from storage.urls import DEFAULT_URL, STORAGE_ENV, default_url
from training.config import PRECISIONS
from training.data import DATASETS


def add_training_arguments(parser: ArgumentParser, seed: int = 0) -> None:
    """The flags every command that trains shares (train, run, evaluate, benchmarks); ``seed`` is the command's
    default --seed."""
    parser.add_argument("--depth", type=int, default=32, help="network depth 6n+2: 20, 32, 44, 56, 110 (default 32)")
    parser.add_argument("--dataset", default="cifar10", choices=DATASETS, metavar="{" + ",".join(DATASETS) + "}",
                        help="data set (default cifar10; digits is small, bundled and offline)")
    parser.add_argument("--data-dir", help="folder holding the official CIFAR python archive (cifar-10-python.tar.gz "
                        "or cifar-100-python.tar.gz) or its extracted folder; default: the Keras cache, "
                        "else a download")
    parser.add_argument("--subset", type=positive_int, help="train on a stratified part of this many images of the "
                        "training split (default: all 45k); without --epochs the run keeps He et al.'s 64k "
                        "iterations, i.e. many more passes over the N images")
    parser.add_argument("--epochs", type=positive_int, help="epochs to train (default: He et al.'s 64k iterations, "
                        "about 182 epochs on 45k images); learning-rate drops stay at 50 %% and 75 %%")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per SGD step (default 128); "
                        "changes neither the learning rate (0.1) nor the 64k iterations of a run without --epochs, "
                        "so a larger batch sees more images: scale the rest yourself if you change it")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto = on a GPU mixed_bfloat16 "
                        "(compute capability >= 8.0) or mixed_float16, with XLA; on a CPU float32 (default auto)")
    parser.add_argument("--steps-per-execution", type=positive_int, default=1, help="training steps per call into "
                        "the compiled graph: fewer host round trips for small networks on a GPU (default 1)")
    parser.add_argument("--seed", type=seed_value, default=seed, help="seeds weights, data order and "
                        f"augmentation, 0..{MAX_SEED} (default {seed})")


def seed_value(text: str) -> int:
    """A seed, 0..MAX_SEED: every seed derived from it stays a valid 32-bit seed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must lie in 0..{MAX_SEED}, got {value}")
    return value


def seed_count(text: str) -> int | None:
    """A count of confirm seeds, at least 2, or ``auto`` (None)."""
    if text == "auto":
        return None
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of at least 2, or auto; got {text!r}") from None
    if count < 2:
        raise argparse.ArgumentTypeError(f"at least 2 (a verdict needs a spread over seeds), got {count}")
    return count


def confirm_budget(text: str) -> int | str:
    """--confirm-budget: a number of runs (at least 6), ``auto`` or ``fixed``."""
    if text in CONFIRM_BUDGETS:
        return text
    try:
        runs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of runs, auto or fixed; got {text!r}") from None
    if runs < MIN_RACE:
        raise argparse.ArgumentTypeError(f"at least {MIN_RACE} runs (the final test alone: the survivor and the "
                                         f"baseline on {MIN_RACE // 2} seeds), got {runs}")
    return runs


def fuse_width(text: str) -> int | None:
    """--fuse: a number of trials trained at once, or ``auto`` (None)."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of trials, or auto; got {text!r}") from None


def add_fuse_argument(parser: ArgumentParser) -> None:
    parser.add_argument("--fuse", type=fuse_width, default=None, metavar="K",
                        help="train K runs at once as one fused network (each run's numbers are its own alone's; a "
                             "pruned run is masked, so it costs its share until its batch ends); auto = 1 on a CPU, "
                             "where fusion measured 1.0-1.3x, and on a GPU the K of 2, 4 or 8 that a short probe "
                             "finds at least 1.5x faster than one run at a time; 1 to 16 (default auto)")


def add_confirm_arguments(parser: ArgumentParser, seeds_flag: str, budget_flag: str) -> None:
    """The confirm stage's seeds (``seeds_flag``: --confirm-seeds on run, --seeds on confirm), its racing budget
    (``budget_flag``) and --min-effect."""
    parser.add_argument(seeds_flag, type=seed_count, default=3, metavar="S",
                        help="the fixed stage's fresh seeds per confirmed schedule (seed + 2000 + i), and what an "
                             "auto race's budget is sized by, (K + 2) x S runs; at least 2; auto = as many as "
                             "--min-effect needs to be found 80 %% of the time, from the baseline's spread (2 to 10; "
                             "default 3)")
    parser.add_argument(budget_flag, type=confirm_budget, default="auto", metavar="N",
                        help="the stage races: a field of the surrogate's top 2 candidates (a Gaussian process over "
                             "every search trial's factors) on fresh seeds, one seed a round beside the baseline, the "
                             "better half kept each round, then the leader against the baseline alone on seeds no "
                             "round used; N runs in all, at least 6; auto = the fixed stage's (K + 2) x S runs (21 at "
                             "K 5 x S 3), where the race finds a planted +1 sigma_d gain 4x as often in simulation "
                             "(benchmarks/README.md); fixed = every candidate, the baseline and the paper's preset on "
                             "the same S seeds (default auto)")
    parser.add_argument("--min-effect", type=float, default=1.0, metavar="PT",
                        help="the gain in points the verdict's power line is about, and auto seeds aim at "
                             "(default 1, the paper's)")


def add_target_arguments(parser: ArgumentParser) -> None:
    """The confirm stage's budget, when it is not the search's: search cheaply, confirm where it matters."""
    parser.add_argument("--target-depth", type=int, metavar="D", help="confirm at this depth 6n+2 (default: the "
                        "searched one): schedules transfer across depth through the block position x")
    parser.add_argument("--target-epochs", type=positive_int, metavar="E", help="confirm with this many epochs "
                        "(default: the search's)")
    parser.add_argument("--target-subset", type=positive_int, metavar="N", help="confirm on this many training "
                        "images (default: the search's)")


def add_storage_argument(parser: ArgumentParser, what: str = "study storage URL") -> None:
    """``--storage``, whose default is ``$SEARCH_STORAGE`` when set (its value is never shown), else search.db."""
    parser.add_argument("--storage", default=default_url(),
                        help=f"{what} (default: ${STORAGE_ENV} when set, else {DEFAULT_URL} in this folder; "
                             f"postgresql+psycopg://user:pass@host/db for several machines: put such a URL in "
                             f"${STORAGE_ENV} to keep its password off the command line)")


def add_artifact_dir_argument(parser: ArgumentParser) -> None:
    """``--artifact-dir``, as every command that reads or writes the study's files takes it."""
    parser.add_argument("--artifact-dir", metavar="DIR",
                        help=f"the study's artifact store (trained models, exports, evaluations, reports; what "
                             f"optuna-dashboard --artifact-dir serves): a folder every machine mounts for several "
                             f"machines (default: {ARTIFACT_FOLDER}/ beside a SQLite study, in this folder for "
                             f"other databases)")
