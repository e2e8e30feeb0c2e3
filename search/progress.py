"""What a running search shows: a progress bar over trials, one line per finished trial, a failure guard, and the
commands a user runs next."""
from __future__ import annotations

import collections
import statistics
import sys
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from common.log import duration, log, result, verbosity
from models.schedules import block_count
from search import records
from search.evidence.noise import gain_in_noise, noise_floor
from search.records import TrialKey
from search.records.keys import ENVIRONMENT
from search.records.trials import from_environment
from storage.urls import storage_flag


def remaining_cost(study: optuna.Study, target: int, workers: int = 1, confirm_runs: float = 0) -> str | None:
    """The expected wall time of the trials still to run, at the speed the finished ones were trained at, and of
    the ``confirm_runs`` full runs of the confirm stage after them.

    Seconds an epoch: the median over finished trials of wall time / epochs trained (build and compile included).
    The pruner's savings: the share of epochs the searched (non-preset) trials trained so far; None before any
    trial finished or once the target is reached.
    """
    finished = records.finished(study)
    timed = [t for t in finished if TrialKey.EPOCHS_RUN.of(t) and TrialKey.WALL_SECONDS.of(t)]
    epochs, left = records.epochs(study), target - len(finished)
    if not timed or not epochs or left <= 0:
        return None
    per_epoch = statistics.median(TrialKey.WALL_SECONDS.of(t) / TrialKey.EPOCHS_RUN.of(t)
                                  for t in timed)
    full = left * epochs * per_epoch / workers
    text = (f"{left} trials left: about {duration(full)} at {per_epoch:.1f} s an epoch"
            f"{f' over {workers} workers' if workers > 1 else ''} if none is pruned")
    searched = [t for t in timed if not records.is_reference(t)]
    if isinstance(study.pruner, optuna.pruners.NopPruner):
        text += " (no pruner)"
    elif not searched:
        text += "; pruning will cut this once searched trials run"
    else:
        share = sum(TrialKey.EPOCHS_RUN.of(t) for t in searched) / (len(searched) * epochs)
        text += (f", about {duration(full * share)} if the pruner keeps stopping trials as so far "
                 f"({100 * share:.0f} % of the epochs trained, {len(searched)} searched trials)")
    if confirm_runs:
        text += f"; then the confirm stage, up to {confirm_runs:.0f} search trials' worth: about " \
                f"{duration(confirm_runs * epochs * per_epoch / workers)}"
    return text


def confirm_runs(config) -> float:
    """The confirm stage's work at most, in full search trials: (top K + baseline + paper preset) x seeds (fewer
    when the paper preset is among the top K), or a race's budget, each scaled to the target's blocks, and to its epochs and images
    where the flags give both sides (without ``--epochs`` every run keeps 64k iterations); 0 without a stage."""
    if not config.confirm_top:
        return 0
    runs = config.confirm_budget if isinstance(config.confirm_budget, int) else \
        (config.confirm_top + 2) * (config.confirm_seeds or 3)
    scale = block_count(config.target_depth or config.depth) / block_count(config.depth)
    if config.epochs is not None:
        scale *= (config.target_epochs or config.epochs) / config.epochs
        if config.target_subset and config.subset:
            scale *= config.target_subset / config.subset
    return runs * scale


class TrialReporter:
    """Optuna callback: advances the bar and writes one line per finished or failed trial.

    The line shows the trial's number, schedule, validation accuracy or the epoch it was pruned at, the best so
    far and the gap to the baseline trained on the same budget. After the first trial, and every
    ``COST_EVERY`` after it, a line with the expected wall time of the rest (``remaining_cost``).
    """

    COST_EVERY = 10

    def __init__(self, config, show_bar: bool = True, initial: int = 0):
        self.config, self.target, self.seen = config, config.trials, 0
        self.quiet = verbosity() < 0  # -q: neither the bar nor the per-trial lines
        self.bar = tqdm(total=config.trials, initial=initial, unit="trial", file=sys.stderr, dynamic_ncols=True,
                        disable=not show_bar or self.quiet)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state in records.FINISHED:
            self.bar.update(1)
        if self.quiet:
            return
        if trial.state == TrialState.COMPLETE:
            outcome = f"val {trial.value:.4f}"
        elif trial.state == TrialState.PRUNED:
            last = trial.intermediate_values.get(max(trial.intermediate_values, default=0))
            reason = "diverged" if records.diverged_reason(trial) else f"pruned at epoch {trial.last_step}"
            outcome = f"{reason}" + (f" (val {last:.4f})" if last is not None else "")
        else:
            outcome = f"failed: {records.fail_reason(trial, trial.state.name)}"
        line = f"trial {trial.number:>4} {records.schedule_text(trial)}: {outcome}"
        line += f" | {finished_ordinal(study, trial)}/{self.target} finished" + self.standing(study)
        self.bar.write(line, file=sys.stderr)
        self.seen += 1
        cost = remaining_cost(study, self.target, self.config.workers, confirm_runs(self.config)) \
            if self.seen % self.COST_EVERY == 1 else None
        if cost:
            self.bar.write(f"cost: {cost}", file=sys.stderr)

    @staticmethod
    def standing(study: optuna.Study) -> str:
        if not (candidates := records.candidates(study)):
            return ""
        best = candidates[0]
        text = f" | best {best.value:.4f} (#{best.number})"
        baseline = records.baseline_trial(study)
        if baseline is not None:
            gain = gain_in_noise(best.value - baseline.value, noise_floor(study), short=True)
            text += f"; vs baseline {baseline.value:.4f}: {gain}"
        return text

    def summary(self, study: optuna.Study) -> None:
        searched = len([t for t in records.finished(study) if records.is_searched(t)])
        result(f"searched {searched} schedules; {len(records.candidate_pool(study))} candidates in all with the "
               f"paper's")
        if line := unrun_references(study):
            log.warning(f"warning: {line}")
        if not (candidates := records.candidates(study)):
            return
        best, baseline = candidates[0], records.baseline_trial(study)
        gain = "" if baseline is None else \
            f"; vs baseline {baseline.value:.4f}: {gain_in_noise(best.value - baseline.value, noise_floor(study))}"
        result(f"best candidate: trial {best.number} {records.schedule_text(best)}, val {best.value:.4f}{gain} "
               f"(a single-seed best of N until the confirm stage)")

    def close(self) -> None:
        self.bar.close()


def finished_ordinal(study: optuna.Study, trial: FrozenTrial) -> int:
    """The study's finished trials up to ``trial`` in the order they finished (ties by number): one count per
    study, whichever worker reports it and however late (two workers finishing together read 3/4 and 4/4, not
    4/4 twice)."""
    def order(t: FrozenTrial) -> tuple:
        return (t.datetime_complete or datetime.max, t.number)

    return sum(1 for t in records.finished(study) if order(t) <= order(trial))


def unrun_references(study: optuna.Study) -> str | None:
    """Which references still wait unrun (an interrupted one's retry too), and the ``--trials`` that would run
    them: they come before any searched trial, after the waiting retries and the trials running now (counted
    too, so that every worker names the same figure whenever it stops); None when all ran."""
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    unrun = [t for t in waiting if records.is_reference(t)]
    if not unrun:
        return None
    retries = [t for t in waiting if records.retry_of(t) is not None and not records.is_reference(t)]
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    names = ", ".join(f"{records.preset_of(t)}" + (f" (seed {records.seed_of(t)})" if records.is_replica(t) else "")
                      for t in unrun)
    return (f"{len(unrun)} reference(s) did not run: {names}; --trials "
            f"{records.finished_count(study) + len(running) + len(retries) + len(unrun)} runs them")


class FailureGuard:
    """Optuna callback: stops the study after ``limit`` trials in a row failed, naming the repeated cause. Faults
    of the environment count too (a trial failed by one, ``records.from_environment``, or one outside any trial:
    ``fault``); a streak of them only is ``from_environment``: the search stops for the environment, not for its
    schedules (the trials it cut short are queued again, first, by the next run)."""

    def __init__(self, limit: int):
        self.limit, self.streak, self.tripped = limit, [], False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self.streak = []
            return
        self._count(records.fail_reason(trial, "unknown error"))
        if self.tripped:
            try:
                study.stop()
            except RuntimeError:  # a claimed retry runs outside study.optimize: the search loop checks tripped
                pass

    def fault(self, fault: str) -> None:
        """A fault of the environment outside any trial's record (``objective.environment_fault``'s text)."""
        self._count(f"{ENVIRONMENT}: {fault}")

    def _count(self, reason: str) -> None:
        self.streak.append(reason)
        self.tripped = len(self.streak) >= self.limit

    @property
    def from_environment(self) -> bool:
        """The last ``limit`` failures in a row were all faults of the environment."""
        return bool(self.streak) and all(from_environment(reason) for reason in self.streak[-self.limit:])

    def message(self) -> str:
        if self.from_environment:
            cause, _ = collections.Counter(self.streak[-self.limit:]).most_common(1)[0]
            fault = cause.removeprefix(f"{ENVIRONMENT}: ")
            return (f"the environment failed {self.limit} times in a row ({fault}); the study is intact: free "
                    f"the space (or bring back the storage, the permissions) and run the same command again, which "
                    f"resumes the trials cut short first")
        cause, count = collections.Counter(self.streak).most_common(1)[0]
        return (f"{len(self.streak)} trials in a row failed (--max-failures {self.limit}); "
                f"{count} of them with: {cause}")


def next_commands(study: optuna.Study, storage_url: str) -> tuple[str, str]:
    """The export and evaluate commands a user runs next on this study; evaluate repeats the budget the verdict
    was reached at (the searched one, or the confirm stage's target). The storage is named without its password
    (``storage_flag``)."""
    budget = records.verdict_budget(study)
    name = study.study_name
    storage = storage_flag(storage_url)
    export = f"shortcut-search export {storage} --study {name} --output best.json"
    evaluate = (f"shortcut-search evaluate --schedule best.json --depth {budget.depth} "
                f"--dataset {budget.dataset}{budget.flags()} --seeds 5 {storage} --study {name}")
    return export, evaluate
