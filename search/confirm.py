"""The confirm stage: re-train the search's top schedules, the baseline and the paper's preset on fresh seeds.

    python -m search.confirm --storage sqlite:///search.db --study cifar10-resnet32 --top 5 --seeds 3

A search picks its best schedule from single runs on one seed: the best of N is high partly by chance. This stage
trains the top K completed schedules, the baseline and the study's paper preset again with S seeds of their own
(the study's seed + 2000 + i: disjoint from the search's and the baseline replicas'), on the same split and
budget, judged on validation and paired by seed with the baseline. The confirmed winner is the candidate with the
highest mean paired difference; its 95 % CI, its p-value and Holm's correction over the K candidates say whether
the gain is real. ``search.run`` runs this stage after its search (``--confirm-top``, ``--confirm-seeds``).

The runs are trials of a study of their own, ``<study>.confirm``, in the same storage: resumable (kill it and
run the command again; nothing done twice), shared by any number of workers or machines, visible in
optuna-dashboard, and never counted toward the search's ``--trials``.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Sequence

from common.cli import ArgumentParser, positive_int, run_command
from common.errors import UsageError
from common.log import log, quiet_optuna, result
from storage.rdb import add_storage_argument

SUFFIX = ".confirm"


def confirm_study_name(name: str) -> str:
    return name + SUFFIX


def plan_arms(study, top: int) -> list[dict[str, Any]]:
    """The arms: baseline, the study's paper preset, then the top ``top`` completed schedules by validation
    accuracy (baseline runs and the learned arms excluded; a preset among them is not repeated)."""
    from models.schedules import paper_preset_for, preset
    from search.study import BASELINE, schedule_trials

    settings = study.user_attrs["settings"]
    paper = paper_preset_for(settings["dataset"], settings["depth"])
    arms = [{"label": BASELINE, "schedule": preset(BASELINE).to_dict(), "source_trial": None, "candidate": False},
            {"label": paper, "schedule": preset(paper).to_dict(), "source_trial": None, "candidate": False}]
    ranked = sorted((t for t in schedule_trials(study) if t.user_attrs.get("preset") != BASELINE),
                    key=lambda t: (-t.value, t.number))
    for trial in ranked[:top]:
        label = f"#{trial.number}" + (f" {trial.user_attrs['preset']}" if "preset" in trial.user_attrs else "")
        if trial.user_attrs.get("preset") == paper:
            arms[1].update(label=label, source_trial=trial.number, candidate=True)
        else:
            arms.append({"label": label, "schedule": trial.user_attrs["schedule"], "source_trial": trial.number,
                         "candidate": True})
    return arms


def open_confirm_study(storage, study, top: int, seeds: int):
    """The confirm study, created with its arms and seeds on first use; every (arm, seed) run queued once.

    A later call with another ``top`` or ``seeds`` than the stage was planned with is refused."""
    import optuna

    from search.config import CONFIRM_SEED_OFFSET

    settings = study.user_attrs["settings"]
    planned = {"top": top, "seeds": [settings["seed"] + CONFIRM_SEED_OFFSET + i for i in range(seeds)]}
    name = confirm_study_name(study.study_name)
    arms = None
    if name not in optuna.get_all_study_names(storage):  # checked before anything is written
        arms = plan_arms(study, top)
        if not any(arm["candidate"] for arm in arms):
            raise UsageError(f"study: {study.study_name!r} has no completed schedule to confirm yet")
    confirm = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                  sampler=optuna.samplers.RandomSampler(), load_if_exists=True)
    if "plan" not in confirm.user_attrs:
        confirm.set_user_attr("plan", planned)
        confirm.set_user_attr("arms", arms or plan_arms(study, top))
        confirm.set_user_attr("source_study", study.study_name)
        confirm.set_metric_names(["val_accuracy"])
        study.set_user_attr("confirm_seeds", planned["seeds"])
    elif confirm.user_attrs["plan"] != planned:
        plan = confirm.user_attrs["plan"]
        raise UsageError(f"confirm: {study.study_name!r} was confirmed with top {plan['top']} and "
                         f"{len(plan['seeds'])} seeds; ask for the same (--top {plan['top']} --seeds "
                         f"{len(plan['seeds'])}), or search again under a new --study")
    labels = [arm["label"] for arm in confirm.user_attrs["arms"]]
    for seed in planned["seeds"]:  # seed by seed, so that early results already pair up
        for label in labels:
            confirm.enqueue_trial({"arm": label, "seed": seed}, skip_if_exists=True)
    from search.study import clear_zombies, requeue_interrupted

    clear_zombies(storage, confirm)
    requeue_interrupted(confirm)
    return confirm


class ConfirmObjective:
    """One confirm run: the arm's schedule on the arm's seed, the search's budget, no pruning."""

    def __init__(self, config, data, arms: list[dict[str, Any]], seeds: list[int], keeper=None):
        self.config, self.data, self.seeds, self.keeper = config, data, seeds, keeper
        self.arms = {arm["label"]: arm for arm in arms}

    def __call__(self, trial) -> float:
        import optuna
        from optuna.trial import TrialState

        from models.schedules import Schedule
        from search.interrupts import raise_if_interrupted
        from search.objective import train_trial
        from search.study import record_process

        record_process(trial)
        label = trial.suggest_categorical("arm", list(self.arms))
        seed = trial.suggest_categorical("seed", self.seeds)
        # a worker that found the queue empty gets a sampled pair: it runs only if nobody ran it or is running it
        twins = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                 if t.number < trial.number and t.params == {"arm": label, "seed": seed}]
        if twins:
            trial.set_user_attr("duplicate_of", twins[0].number)
            raise optuna.TrialPruned(f"duplicate of trial {twins[0].number}")
        trial.set_user_attr("schedule", self.arms[label]["schedule"])
        trial.set_user_attr("source_trial", self.arms[label]["source_trial"])

        def report(epoch: int, accuracy: float) -> bool:
            raise_if_interrupted()
            trial.report(accuracy, epoch)
            return False

        result = train_trial(trial, dataclasses.replace(self.config.train, seed=seed),
                             Schedule.from_dict(self.arms[label]["schedule"]), self.data, report,
                             self.config.checkpoints(trial.study.study_name), self.keeper, self.config.tensorboard)
        return result.final_val_accuracy


def run_confirm(config, study, storage, data) -> dict[str, Any] | None:
    """Work through the confirm queue (with any other workers); the summary once every run has finished, stored
    on the search study as ``confirmation``, else None. The ``--keep-models`` best confirm runs keep their trained
    models, as the search's trials do."""
    from optuna.trial import TrialState

    from search.keep import ModelKeeper

    confirm = open_confirm_study(storage, study, config.confirm_top, config.confirm_seeds)
    objective = ConfirmObjective(config, data, confirm.user_attrs["arms"], confirm.user_attrs["plan"]["seeds"],
                                 ModelKeeper.for_search(config, storage))
    total = len(confirm.user_attrs["arms"]) * len(confirm.user_attrs["plan"]["seeds"])
    log.info(f"confirm: {len(confirm.user_attrs['arms'])} arms x {len(confirm.user_attrs['plan']['seeds'])} seeds "
             f"({total} runs) in study {confirm.study_name!r}")

    def line(_, trial) -> None:
        if trial.state == TrialState.COMPLETE:
            outcome = f"val {trial.value:.4f}"
        elif "duplicate_of" in trial.user_attrs:
            outcome = f"already run as trial {trial.user_attrs['duplicate_of']}"
        else:
            outcome = trial.user_attrs.get("diverged") or trial.user_attrs.get("fail_reason", trial.state.name)
        log.info(f"confirm {trial.params.get('arm')} seed {trial.params.get('seed')}: {outcome}")

    while confirm.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        confirm.optimize(objective, n_trials=1, callbacks=[line], catch=(Exception,), gc_after_trial=True)
    if confirm.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        log.info("confirm: other workers are finishing the last runs")
        return None
    summary = summarise(study, confirm)
    study.set_user_attr("confirmation", summary)
    result(describe(summary))
    return summary


def summarise(study, confirm) -> dict[str, Any]:
    """Paired statistics of every arm against the baseline, seed by seed, and the confirmed winner."""
    from optuna.trial import TrialState

    from search.evaluation import holm, paired_statistics
    from search.study import BASELINE

    seeds, arms = confirm.user_attrs["plan"]["seeds"], confirm.user_attrs["arms"]
    accuracy: dict[tuple[str, int], float | None] = {}
    for trial in confirm.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        key = (trial.params.get("arm"), trial.params.get("seed"))
        if trial.state == TrialState.COMPLETE:
            accuracy.setdefault(key, trial.value)
        elif "diverged" in trial.user_attrs:
            accuracy.setdefault(key, None)
    baseline = [accuracy.get((BASELINE, seed)) for seed in seeds]
    ranks = {t.number: rank for rank, t in enumerate(sorted(
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: (-t.value, t.number)), 1)}
    rows = []
    for arm in arms:
        if arm["label"] == BASELINE:
            continue
        values = [accuracy.get((arm["label"], seed)) for seed in seeds]
        stats = paired_statistics(baseline, values)
        rows.append({"label": arm["label"], "source_trial": arm["source_trial"], "candidate": arm["candidate"],
                     "schedule": arm["schedule"], "schedule_val_accuracy": values,
                     "rank_in_search": ranks.get(arm["source_trial"]), **stats})
    candidates = [row for row in rows if row["candidate"]]
    for row, adjusted in zip(candidates, holm([row["p_value"] for row in candidates])):
        row["p_holm"] = adjusted
    scored = [row for row in candidates if row["difference_mean"] is not None]
    winner = max(scored, key=lambda row: row["difference_mean"], default=None)
    return {"candidates": len(candidates), "seeds": seeds, "baseline_val_accuracy": baseline, "arms": rows,
            "winner": winner and {
                **{key: winner[key] for key in ("label", "source_trial", "schedule", "schedule_val_accuracy",
                                                "difference_mean", "difference_ci95", "p_value", "p_holm",
                                                "rank_in_search")},
                "ci_excludes_zero": bool(winner["difference_ci95"] and winner["difference_ci95"][0] > 0),
                "significant_after_holm": winner["p_holm"] is not None and winner["p_holm"] < 0.05}}


def describe(summary: dict[str, Any]) -> str:
    """The terminal's account of a confirmation: one line per arm, then the verdict."""
    lines = [f"confirmed on {len(summary['seeds'])} fresh seeds {summary['seeds']}, validation, paired with the "
             f"baseline:"]
    for row in summary["arms"]:
        if row["difference_mean"] is None:
            lines.append(f"  {row['label']:<24} no finished pair")
            continue
        ci = row["difference_ci95"]
        interval = f" 95 % CI [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else ""
        holm_text = f", Holm p = {row['p_holm']:.3g}" if row.get("p_holm") is not None else ""
        p_text = f", p = {row['p_value']:.3g}" if row["p_value"] is not None else ""
        lines.append(f"  {row['label']:<24} {100 * row['difference_mean']:+.2f} pt{interval}{p_text}{holm_text}")
    winner = summary["winner"]
    if winner is None:
        return "\n".join(lines + ["no candidate finished a pair: no confirmed winner"])
    verdict = ("its 95 % CI excludes zero" if winner["ci_excludes_zero"] else "its 95 % CI includes zero: "
               "no evidence that it beats the baseline") + (
        ", and it stays significant after Holm's correction" if winner["significant_after_holm"] else "")
    lines.append(f"confirmed winner: {winner['label']} ({100 * winner['difference_mean']:+.2f} pt); {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m search.confirm", description=__doc__.split("\n\n")[0])
    add_storage_argument(parser)
    parser.add_argument("--study", required=True, help="the search study to confirm")
    parser.add_argument("--top", type=positive_int, default=5, help="completed schedules to confirm (default 5)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="fresh seeds per arm (default 3)")
    parser.add_argument("--data-dir", help="folder of the CIFAR archive, as for the search")
    args = parser.parse_args(argv)

    from search.config import SearchConfig
    from search.study import BASELINE
    from storage.rdb import HEARTBEAT_SECONDS, load_existing_study, open_storage
    from training.data import load_dataset

    quiet_optuna()
    storage = open_storage(args.storage, HEARTBEAT_SECONDS, create=False)
    study = load_existing_study(storage, args.study)
    if "settings" not in study.user_attrs:
        raise UsageError(f"study: {args.study!r} was not made by search.run")
    # the search's own budget, its epochs as resolved when it started
    settings = {**study.user_attrs["settings"], "epochs": study.user_attrs["epochs"]}
    config = SearchConfig(**settings, storage=args.storage, study=args.study, data_dir=args.data_dir,
                          confirm_top=args.top, confirm_seeds=args.seeds)
    if not any(t.user_attrs.get("preset") == BASELINE for t in study.get_trials(deepcopy=False)):
        raise UsageError(f"study: {args.study!r} has no baseline trial")
    data = load_dataset(config.dataset, config.data_dir, config.subset)
    from search.interrupts import interrupted_exit, signals_as_interrupt

    try:
        with signals_as_interrupt():
            run_confirm(config, study, storage, data)
    except KeyboardInterrupt as interrupt:
        return interrupted_exit(interrupt)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
