"""The racing confirm stage (issue 28): its layout and stopping rules, its standing read from runs, the surrogate's
pick, and a real race shared by two workers, one killed, resumed to one verdict."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState, create_trial

from commands import confirm as confirm_command
from commands import export
from commands import run as search_run
from common.cli import run_command
from search.evidence import race, surrogate
from search.records import RunState
from tests.conftest import TINY

DONE, DIVERGED, FAILED = RunState.DONE, RunState.DIVERGED, RunState.FAILED


def test_the_layout_halves_the_field_while_the_final_test_keeps_three_seeds():
    assert race.layout(10, 21) == ([10], 5)  # K 5 x S 3's runs: one round of 10 (+ baseline), 5 final seeds
    assert race.layout(10, 40) == ([10, 5, 2], 10)  # 11 + 6 + 3 runs of rounds, 20 left: 10 seeds
    assert race.layout(4, 10) == ([], 5)  # a round of 4 would leave 5 runs: the final test alone
    assert race.layout(1, 50) == ([], 25)  # one candidate: nothing to race
    assert race.layout(3, race.MIN_TRAININGS) == ([], race.FINAL_MIN_SEEDS)


def test_the_standing_drops_the_worse_half_and_a_broken_arm_and_tests_the_leader_on_fresh_seeds():
    field, rounds, final = ["a", "b", "c", "d"], [1, 2], [3, 4, 5]
    results = {("base", 1): (DONE, 0.50), ("a", 1): (DONE, 0.52), ("b", 1): (DIVERGED, None),
               ("c", 1): (DONE, 0.55), ("d", 1): (DONE, 0.51)}
    first = race.standing(field, "base", rounds, final, {k: v for k, v in results.items() if k != ("d", 1)})
    assert not first.decided and first.survivor is None and first.needed == [("base", 1)] + [(k, 1) for k in field]
    now = race.standing(field, "base", rounds, final, results)
    assert set(now.dropped) == {"b", "d"} and now.dropped["b"]["reason"] == "a run diverged or failed"
    assert now.fields == [field, ["c", "a"]]  # the better half, by mean difference
    assert now.needed[-3:] == [("base", 2), ("c", 2), ("a", 2)]  # round two asked for, no final test yet
    results.update({("base", 2): (DONE, 0.50), ("c", 2): (FAILED, None), ("a", 2): (DONE, 0.53)})
    now = race.standing(field, "base", rounds, final, results)
    assert now.survivor == "a" and now.dropped["c"]["round"] == 2 and not now.decided
    assert now.needed[-6:] == [(k, s) for s in final for k in ("base", "a")]  # seeds no round used
    results.update({(k, s): (DONE, 0.5) for s in final for k in ("base", "a")})
    assert race.standing(field, "base", rounds, final, results).decided


def test_a_broken_arm_never_survives_and_a_broken_baseline_still_ranks_its_round():
    # the baseline broke on the round's seed: the field's median stands in, so the better arm still goes on
    results = {("base", 1): (DIVERGED, None), ("a", 1): (DONE, 0.4), ("b", 1): (DONE, 0.9)}
    now = race.standing(["a", "b"], "base", [1], [2, 3, 4], results)
    assert now.survivor == "b" and set(now.dropped) == {"a"} and now.unpaired == [1]
    plan = {"arms": [{"key": "base"}] + [{"key": k, "label": k, "source_trial": 1} for k in "ab"], "sizes": [2],
            "trainings": 9, "round_seeds": [1], "final_seeds": [2, 3, 4], "fitted_on": []}
    assert "the baseline broke in round 1" in race.lines(race.account(plan, now))[0]  # said, not hidden
    # an arm that broke on that same seed is out, never kept for its surrogate rank
    results = {("base", 1): (DIVERGED, None), ("a", 1): (DIVERGED, None), ("b", 1): (DONE, 0.85)}
    assert race.standing(["a", "b"], "base", [1], [2, 3, 4], results).survivor == "b"
    # every arm broke: no survivor, no final test, and the account says why
    results = {("base", 1): (DONE, 0.8), ("a", 1): (DIVERGED, None), ("b", 1): (FAILED, None)}
    now = race.standing(["a", "b"], "base", [1], [2, 3, 4], results)
    assert now.survivor is None and now.decided and now.needed == [("base", 1), ("a", 1), ("b", 1)]
    assert "every arm" in race.account(plan, now)["stopped_by"]
    # ties keep the surrogate's order; no round: the surrogate's first pick goes straight to the final test
    tied = {("base", 1): (DONE, 0.8), ("a", 1): (DONE, 0.8), ("b", 1): (DONE, 0.8)}
    assert race.standing(["b", "a"], "base", [1], [2, 3, 4], tied).survivor == "b"
    no_rounds = race.standing(["a", "b"], "base", [], [2, 3, 4], {})
    assert no_rounds.survivor == "a" and no_rounds.needed == [(k, s) for s in (2, 3, 4) for k in ("base", "a")]


def _trial(value, factors):
    schedule = {"family": "linear", "params": {"start": factors[0], "end": factors[-1]}}
    return create_trial(value=value, user_attrs={"schedule": schedule, "values": list(factors)})


def test_the_surrogate_trusts_a_candidate_its_neighbours_vouch_for_over_a_lone_lucky_one():
    study = optuna.create_study(direction="maximize")
    rng = np.random.default_rng(0)
    for _ in range(40):  # a smooth truth: better towards factors of 1.3, each trial one noisy seed
        level = rng.uniform(0.5, 1.5)
        study.add_trial(_trial(0.80 - 0.05 * (level - 1.3) ** 2 + rng.normal(0, 0.002), [level] * 3))
    lucky = 0.80 + 0.01  # far from the good region, its own value the study's best
    study.add_trial(_trial(lucky, [0.55] * 3))
    learned = {"family": "learned", "params": {}}  # its factors are only where its trainable scalars started
    study.add_trial(create_trial(value=0.40, user_attrs={"preset": "learned", "schedule": learned,
                                                         "values": [1.3] * 3}))
    estimates, fitted_on = surrogate.estimates(study)
    assert len(fitted_on) == 41 and 41 not in fitted_on and max(t.value for t in study.trials) == lucky
    ranked = [e.trial for e in estimates]
    assert ranked.index(40) > 10  # the raw ranking's first is not among the surrogate's top 10
    best = study.trials[ranked[0]]
    assert abs(best.user_attrs["values"][0] - 1.3) < 0.2 and estimates[0].sd >= 0


def test_two_workers_race_one_killed_and_a_rerun_finish_one_verdict_with_each_run_trained_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    assert search_run.main([*TINY, "--trials", "8", "--baseline-seeds", "1", "--storage", url]) == 0
    argv = ["--storage", url, "--study", "digits-resnet8", "--top", "2", "--budget", "13"]
    workers = [subprocess.Popen([sys.executable, "-m", "commands.confirm", *argv], cwd=Path(__file__).parents[1],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and workers[0].poll() is None:
        names = optuna.get_all_study_names(url)
        if "digits-resnet8.confirm" in names and optuna.load_study(
                study_name="digits-resnet8.confirm", storage=url).get_trials(states=(TrialState.COMPLETE,)):
            break
        time.sleep(0.2)
    workers[0].send_signal(signal.SIGTERM)  # one worker killed mid-race
    assert workers[0].wait(timeout=60) in (0, 143)
    assert workers[1].wait(timeout=180) == 0, workers[1].stderr.read()
    assert run_command(confirm_command.main, argv) == 0  # the same command finishes (or just shows) the race
    runs = optuna.load_study(study_name="digits-resnet8.confirm", storage=url).get_trials()
    finished = [(t.user_attrs["arm"], t.user_attrs["seed"]) for t in runs
                if t.state == TrialState.COMPLETE or t.user_attrs.get("diverged")]
    assert len(finished) == len(set(finished))  # nothing trained twice
    summary = optuna.load_study(study_name="digits-resnet8", storage=url).user_attrs["confirmation"]
    account = summary["race"]
    assert account["trainings"] == 13 and account["spent"] == len(finished) <= 13
    assert account["round_seeds"] == [2000] and account["final_seeds"] == [2001, 2002, 2003, 2004, 2005]
    assert summary["seeds"] == account["final_seeds"] and summary["verdict"]["comparisons"] == 1
    assert len(account["field"]) == 2 and sum(arm["final_test"] for arm in account["field"]) == 1
    assert all(arm["dropped"] for arm in account["field"] if not arm["final_test"])
    again = len(runs)
    assert run_command(confirm_command.main, argv) == 0
    assert len(optuna.load_study(study_name="digits-resnet8.confirm", storage=url).get_trials()) == again  # settled
    out = tmp_path / "best.json"
    assert export.main(["--storage", url, "--output", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["verdict"]["current"] and document["confirmation"]["allocation"]["spent"] == account["spent"]
    from dashboards.report_page import report_figures

    titles = [figure.layout.title.text or "" for figure in report_figures(optuna.load_study(
        study_name="digits-resnet8", storage=url))]
    assert any(title.startswith("Race: ") for title in titles)  # the report shows the surrogate's estimates
