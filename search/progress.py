"""What a running search shows: a progress bar over trials, one line per finished trial, and a failure guard."""
from __future__ import annotations

import collections
import sys

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from models.schedules import Schedule
from search.study import FINISHED, baseline_trial, finished_count, next_commands


def describe_trial(trial: FrozenTrial) -> str:
    schedule = trial.user_attrs.get("schedule")
    text = Schedule.from_dict(schedule).describe() if schedule else str(trial.params)
    return f"{trial.user_attrs['preset']} = {text}" if "preset" in trial.user_attrs else text


class TrialReporter:
    """Optuna callback: advances the bar and writes one line per finished or failed trial.

    The line shows the trial's number, schedule, validation accuracy or the epoch it was pruned at, the best so
    far and the gap to the baseline trained on the same budget.
    """

    def __init__(self, config, show_bar: bool = True, initial: int = 0):
        self.config, self.target = config, config.trials
        self.bar = tqdm(total=config.trials, initial=initial, unit="trial", file=sys.stderr, dynamic_ncols=True,
                        disable=not show_bar)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state in FINISHED:
            self.bar.update(1)
        if trial.state == TrialState.COMPLETE:
            outcome = f"val {trial.value:.4f}"
        elif trial.state == TrialState.PRUNED:
            last = trial.intermediate_values.get(max(trial.intermediate_values, default=0))
            reason = "diverged" if "diverged" in trial.user_attrs else f"pruned at epoch {trial.last_step}"
            outcome = f"{reason}" + (f" (val {last:.4f})" if last is not None else "")
        else:
            outcome = f"failed: {trial.user_attrs.get('fail_reason', trial.state.name)}"
        line = f"trial {trial.number:>4} {describe_trial(trial)}: {outcome}"
        line += f" | {finished_count(study)}/{self.target} finished" + self.standing(study)
        self.bar.write(line, file=sys.stderr)

    @staticmethod
    def standing(study: optuna.Study) -> str:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            return ""
        best = max(complete, key=lambda t: t.value)
        text = f" | best {best.value:.4f} (#{best.number})"
        baseline = baseline_trial(study)
        if baseline is not None:
            text += f", {100 * (best.value - baseline.value):+.2f} pt vs baseline {baseline.value:.4f}"
        return text

    def summary(self, study: optuna.Study) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            return
        best = max(complete, key=lambda t: t.value)
        print(f"best: trial {best.number} {describe_trial(best)}{self.standing(study)}", file=sys.stderr)
        export, evaluate = next_commands(study, self.config.storage)
        print(f"next: {export}\n      {evaluate}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


class FailureGuard:
    """Optuna callback: stops the study after ``limit`` trials in a row failed, naming the repeated cause."""

    def __init__(self, limit: int):
        self.limit, self.streak, self.tripped = limit, [], False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self.streak = []
            return
        self.streak.append(trial.user_attrs.get("fail_reason", "unknown error"))
        if len(self.streak) >= self.limit:
            self.tripped = True
            study.stop()

    def message(self) -> str:
        cause, count = collections.Counter(self.streak).most_common(1)[0]
        return (f"{len(self.streak)} trials in a row failed (--max-failures {self.limit}); "
                f"{count} of them with: {cause}")
