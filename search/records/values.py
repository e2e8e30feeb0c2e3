"""Typed values the records hold: a budget, a confirm stage's arm and its summary. They travel as JSON in Optuna's
attributes; these types say what their fields are, in one place."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

RUN_SCOPE = ("depth", "epochs", "subset")  # what one run trains, beside the data set and batch size


@dataclass(frozen=True)
class Budget:
    """What a run trains: depth, data set, epochs, images (``subset``; None = all 45k) and batch size. A confirm
    run and a target store only ``run()`` (depth, epochs, subset)."""

    depth: int | None
    dataset: str | None = None
    epochs: int | None = None
    subset: int | None = None
    batch_size: int | None = None

    def run(self) -> dict[str, Any]:
        """``{"depth", "epochs", "subset"}``: what a confirm run and a target record."""
        return {key: getattr(self, key) for key in RUN_SCOPE}

    def at(self, run: dict[str, Any] | None) -> "Budget":
        """This budget with a run's ``{"depth", "epochs", "subset"}`` (a target's) in place; itself for None."""
        if not run:
            return self
        return Budget(**{**self.as_dict(), **{key: run[key] for key in RUN_SCOPE if key in run}})

    def as_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "dataset": self.dataset, "epochs": self.epochs, "subset": self.subset,
                "batch_size": self.batch_size}

    def flags(self, names: tuple[str, ...] = ("epochs", "subset", "batch_size")) -> str:
        """`` --epochs 5 --batch-size 32``: the training flags of a command that trains this budget again."""
        return "".join(f" --{name.replace('_', '-')} {getattr(self, name)}" for name in names
                       if getattr(self, name) is not None)


class Arm(TypedDict, total=False):
    """An arm of the confirm stage: a schedule trained on every seed of the plan."""

    key: str  # a digest of the schedule and its budget (confirm_plan.arm_key)
    label: str  # baseline, paper-c10-r32, #7 linear
    schedule: dict[str, Any]  # Schedule.to_dict()
    source_trial: int | None  # the search trial it came from
    candidate: bool  # one of the search's top K (not the baseline, not the paper's reference)
    rank_in_search: int | None
    proxy: float | None  # its value in the search, when the search trained it at the stage's depth


class ConfirmationSummary(TypedDict, total=False):
    """The confirm stage's summary, stored on the search study (``StudyKey.CONFIRMATION``); ``verdict.summarise``
    builds it, the confirm loop adds the search's budget, the cost and when it was written."""

    top: int | None
    candidates: int
    seeds: list[int]
    budget: dict[str, Any]  # the run budget the verdict was reached at (Budget.run())
    search_budget: dict[str, Any]  # the search's (differs with a target)
    resolution: float | None  # 1 / validation images
    baseline_val_accuracy: list[float | None]
    baseline_diverged: int
    baseline_failed: int
    arms: list[dict[str, Any]]  # one row per arm after the baseline: its runs, paired figures, fates
    candidate_trials: list[int]
    proxy: list[float | None]
    labels: list[str]
    proxy_agreement: dict[str, Any] | None
    verdict: dict[str, Any]  # outcome (verdict.Outcome), winner, best candidate, sigma_d, df, power
    winner: dict[str, Any] | None
    best: dict[str, Any] | None
    cost: dict[str, Any]
    written_at: float
