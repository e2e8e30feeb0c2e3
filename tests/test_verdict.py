"""The verdict on constructed accuracies: its sign, ties, diverged and failed runs, its false-claim rate with no
true effect, and a confirm plan that follows an extended search without training anything twice."""
import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial
from scipy import stats as scipy_stats

from search import records
from search.config import SearchConfig
from search.evidence import power, stats
from search.evidence.confirm_plan import is_current, plan_arms, runs_by_pair
from search.confirm_loop import open_confirm_study, queue_plan, written_meanwhile
from search.evidence.verdict import BEATS, NO_WINNER, WORSE, describe, summarise
from search.study import open_study
from storage import open_storage

SEEDS = [2000, 2001, 2002]
BUDGET = {"depth": 8, "dataset": "digits", "epochs": 1, "subset": None, "batch_size": 32}
OWN = {"depth": 8, "epochs": 1, "subset": None}  # the search's own budget, at which the stage trains


def arms(count):
    """The baseline, then ``count`` candidates."""
    made = [{"key": "base", "label": "baseline", "schedule": {}, "source_trial": None, "candidate": False,
             "rank_in_search": None}]
    return made + [{"key": f"c{i}", "label": f"#{i}", "schedule": {}, "source_trial": i, "candidate": True,
                    "rank_in_search": i} for i in range(1, count + 1)]


def verdict_of(table, failed=(), resolution=1 / 5000, seeds=SEEDS):
    """``table``: arm key -> accuracies per seed (None: diverged)."""
    planned = arms(len(table) - 1)
    accuracy = {(arm["key"], seed): value for arm in planned for seed, value in zip(seeds, table[arm["key"]])}
    return summarise(planned, seeds, accuracy, set(failed), resolution, BUDGET)


def test_dunnett_is_students_t_for_one_comparison_and_matches_a_simulation_for_several():
    for df in (1, 3, 12):
        assert stats.dunnett_cdf(1.7, 1, df) == pytest.approx(scipy_stats.t.cdf(1.7, df), abs=1e-4)
    rng = np.random.default_rng(1)
    errors, chi = rng.standard_normal((200_000, 6)), np.sqrt(rng.chisquare(8, 200_000) / 8)
    largest = ((errors[:, 1:] - errors[:, [0]]) / (math.sqrt(2) * chi[:, None])).max(1)
    assert stats.dunnett_critical(5, 8) == pytest.approx(np.quantile(largest, 0.95), abs=0.03)


def test_every_candidate_worse_is_never_a_winner_and_the_significantly_worse_one_is_named():
    summary = verdict_of({"base": [0.80, 0.82, 0.81], "c1": [0.795, 0.826, 0.800], "c2": [0.70, 0.72, 0.71]})
    verdict = summary["verdict"]
    assert verdict["outcome"] == WORSE and verdict["winner"] is None and verdict["recommendation"] == "baseline"
    assert verdict["worse"] == ["#2"] and summary["winner"] is None
    assert verdict["best_candidate"] == "#1" and summary["best"]["difference_mean"] < 0
    assert all(row["p_better"] > 0.5 for row in summary["arms"])  # nothing is significantly better
    text = describe(summary)
    assert "no candidate beats the baseline" in text and "worse than the baseline: #2" in text


def test_a_clear_gain_wins_with_an_adjusted_bound_and_a_shrunk_estimate():
    summary = verdict_of({"base": [0.80, 0.82, 0.81], "c1": [0.805, 0.826, 0.814], "c2": [0.83, 0.851, 0.839]})
    winner = summary["winner"]
    assert summary["verdict"]["outcome"] == BEATS and winner["label"] == "#2"
    low, high = winner["bounds_adjusted"]
    raw_low, raw_high = winner["bounds_raw"]
    assert 0 < low < raw_low and raw_high < high  # adjusted for 2 candidates: wider than this arm's own bounds
    assert low <= winner["difference_estimate"] <= winner["difference_mean"] <= high
    assert winner["p_better"] < 0.05 and winner["pairs"] == 3
    assert "#2 beats the baseline" in describe(summary) and "power:" in describe(summary)


def test_identical_differences_on_two_seeds_are_not_certainty():
    one_image = 1 / 144  # a validation set of 144 images: accuracies move in steps of 0.69 pt
    base = [100 / 144, 104 / 144]
    summary = verdict_of({"base": base, "c1": [b + one_image for b in base], "c2": [b + one_image for b in base]},
                         resolution=one_image, seeds=SEEDS[:2])
    for row in summary["arms"]:
        assert row["p_better"] > 0.05 and row["bounds_adjusted"][0] < 0  # not a win, and no p = 0
    assert summary["verdict"]["outcome"] == NO_WINNER
    paired = stats.paired_statistics(base, [b + one_image for b in base], resolution=one_image)
    assert 0 < paired["p_value"] < 1 and paired["difference_ci95"][0] < paired["difference_ci95"][1]


def test_a_diverged_or_failed_run_keeps_an_arm_from_winning_and_is_counted():
    summary = verdict_of({"base": [0.80, 0.82, 0.81], "c1": [0.85, None, 0.86], "c2": [0.86, 0.88, 0.87],
                          "c3": [0.811, 0.83, 0.82]}, failed={("c2", 2001)})
    rows = {row["label"]: row for row in summary["arms"]}
    assert rows["#1"]["diverged"] == 1 and rows["#1"]["pairs"] == 2 and not rows["#1"]["eligible"]
    assert rows["#2"]["failed"] == 1 and not rows["#2"]["eligible"]
    assert summary["winner"] is None or summary["winner"]["label"] == "#3"
    assert "cannot win" in describe(summary)


def test_a_divergence_where_the_baseline_also_diverged_still_keeps_an_arm_from_winning():
    summary = verdict_of({"base": [0.80, 0.82, 0.81, None], "c1": [0.85, 0.87, 0.86, None],
                          "c2": [0.80, 0.821, 0.812, 0.80]}, seeds=[0, 1, 2, 3])
    rows = {row["label"]: row for row in summary["arms"]}
    assert rows["#1"]["diverged"] == 1 and not rows["#1"]["eligible"] and summary["winner"] is None
    assert summary["baseline_diverged"] == 1 and summary["verdict"]["seeds_used"] == 3
    assert "3 of 4 fresh seeds" in describe(summary)


def test_no_baseline_run_means_no_verdict_and_a_noisy_arm_is_judged_on_its_own_variance():
    none = verdict_of({"base": [None, None, None], "c1": [0.85, 0.87, 0.86]})
    assert none["verdict"]["outcome"] == "no_verdict" and none["winner"] is None
    noisy = verdict_of({"base": [0.80, 0.82, 0.81], "c1": [0.801, 0.822, 0.811], "c2": [0.802, 0.821, 0.812],
                        "c3": [0.90, 0.78, 0.86]})
    assert [row["own_variance"] for row in noisy["arms"]] == [False, False, True]
    assert noisy["winner"] is None or noisy["winner"]["label"] != "#3"


def test_with_no_true_effect_the_verdict_claims_a_winner_at_most_five_percent_of_the_time():
    rng = np.random.default_rng(7)
    claims, studies, n_images = 0, 300, 144  # end to end through summarise; the vectorised test below has more
    for _ in range(studies):
        seed_effect = rng.normal(0, 0.02, 3)
        table = {arm["key"]: [round((0.8 + s + rng.normal(0, 0.005)) * n_images) / n_images for s in seed_effect]
                 for arm in arms(5)}
        claims += verdict_of(table, resolution=1 / n_images)["verdict"]["outcome"] == BEATS
    assert claims / studies <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / studies)


def test_a_confirmation_of_an_earlier_version_is_out_of_date():
    study = optuna.create_study()
    study.set_user_attr("confirmation", {"winner": {"label": "#1"}, "arms": []})  # no verdict: written before it
    assert records.confirmation(study) is None


def test_the_verdict_is_shown_by_the_worker_that_wrote_it_and_again_on_resume():
    mine = {"candidate_trials": [3], "seeds": [2000, 2001], "budget": {"depth": 8, "epochs": 1, "subset": 100},
            "arms": [{"label": "#3", "pairs": 2, "bounds_adjusted": (-0.01, 0.02)}], "baseline_failed": 0}
    other = {**mine, "arms": [{"label": "#3", "pairs": 2, "bounds_adjusted": [-0.01, 0.02]}],  # read back as JSON
             "written_at": 100.0}  # a second task of the array wrote it after this one's command started
    assert written_meanwhile(other, mine, started=50.0)
    assert not written_meanwhile(other, mine, started=150.0)  # written before this resume began: shown again
    assert not written_meanwhile({**other, "seeds": [2000, 2001, 2002]}, mine, started=50.0)  # another plan
    assert not written_meanwhile({**other, "baseline_failed": 1}, mine, started=50.0)  # on fewer finished runs
    assert not written_meanwhile(None, mine, started=50.0)


def test_power_and_the_seeds_a_gain_needs():
    effect = power.detectable_effect(0.006, seeds=3, comparisons=5, arms=7)
    assert power.power_of(effect, 0.006, 3, 5, 7) == pytest.approx(0.8, abs=1e-3)
    assert power.power_of(0.01, 0.006, 3, 5, 7) > power.power_of(0.005, 0.006, 3, 5, 7)
    needed = power.seeds_needed(0.01, 0.006, comparisons=5, arms=7)
    assert power.power_of(0.01, 0.006, needed, 5, 7) >= 0.8 > power.power_of(0.01, 0.006, needed - 1, 5, 7)
    low, high = power.sigma_interval(1.0, df=3)
    assert low < 1 < high and high / low > 5  # four runs say little about a spread


def _candidate(value, start):
    return create_trial(value=value, user_attrs={"schedule": {"family": "linear", "params": {"start": start,
                                                                                           "end": 1.0}}})


def test_an_extended_search_replans_the_confirm_stage_and_reuses_every_run_done(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    storage = open_storage(url)
    study = open_study(storage, SearchConfig(dataset="digits", depth=8, epochs=1, storage=url), epochs=1)
    study.add_trial(create_trial(value=0.70, user_attrs={"preset": "baseline", "schedule": {
        "family": "constant", "params": {"value": 1.0}}}))
    study.add_trial(_candidate(0.75, 1.2))
    confirm = open_confirm_study(storage, study)
    first = plan_arms(study, top=1)
    assert [arm["candidate"] for arm in first] == [False, False, True]
    assert queue_plan(storage, confirm, first, SEEDS[:2], OWN) == 6
    assert queue_plan(storage, confirm, first, SEEDS[:2], OWN) == 0  # queued once
    for trial in confirm.get_trials(states=(TrialState.WAITING,)):  # the runs finish
        confirm.tell(confirm.ask(), 0.7)
    done = {pair: [t.number for t in runs] for pair, runs in runs_by_pair(confirm).items()}
    assert len(done) == 6 and all(len(numbers) == 1 for numbers in done.values())
    summary = {"top": 1, "candidate_trials": [arm["source_trial"] for arm in first if arm["candidate"]]}
    assert is_current(study, summary)
    study.add_trial(_candidate(0.80, 1.4))  # the search goes on and finds a better one
    assert not is_current(study, summary)
    second = plan_arms(study, top=1)
    assert second[-1]["source_trial"] != first[-1]["source_trial"]
    assert queue_plan(storage, confirm, second, SEEDS[:2], OWN) == 2  # only the new candidate's two seeds
    assert queue_plan(storage, confirm, second, SEEDS[:3], OWN) == 3  # a third seed: one run per arm
    runs = runs_by_pair(confirm)
    assert all(len(runs[pair]) == 1 for pair in done)  # nothing done is queued again


def test_rank_agreement_of_a_proxy_with_its_target():
    target = [[0.70, 0.71], [0.72, 0.74], [0.75, 0.75], [0.78, 0.80], [0.80, 0.83]]
    perfect = stats.rank_agreement([0.1, 0.2, 0.3, 0.4, 0.5], target)
    assert perfect["tau"] == pytest.approx(1) and perfect["p_value"] == pytest.approx(1 / 120)  # 5! orders
    assert perfect["target_seed_tau"] == pytest.approx(1) and perfect["arms"] == 5
    reversed_ = stats.rank_agreement([0.5, 0.4, 0.3, 0.2, 0.1], target)
    assert reversed_["tau"] == pytest.approx(-1) and reversed_["p_value"] == 1.0
    tied = stats.rank_agreement([0.3] * 5, target)
    assert tied["tau"] is None and tied["p_value"] is None  # a proxy that ranks nothing
    partial = stats.rank_agreement([0.1, 0.2, None, 0.4], [[0.7, 0.7], [0.8, None], [0.6, 0.6], [0.9, 0.9]])
    assert partial is None  # below three arms with a proxy and every target seed
    many = stats.rank_agreement(list(range(10)), [[v, v + 0.01] for v in range(10)])
    assert many["tau"] == pytest.approx(1) and 0 < many["p_value"] <= 1 / 1000  # drawn orders: never p = 0


def test_a_run_queued_for_another_budget_is_never_trained_at_this_one_and_the_target_is_kept(tmp_path):
    from search.confirm_loop import ConfirmObjective
    from search.study import settle_target

    url = f"sqlite:///{tmp_path / 'search.db'}"
    storage = open_storage(url)
    config = SearchConfig(dataset="digits", depth=8, epochs=1, storage=url, target_depth=14, target_epochs=3)
    study = open_study(storage, config, epochs=1)
    study.add_trial(create_trial(value=0.70, user_attrs={"preset": "baseline", "schedule": {
        "family": "constant", "params": {"value": 1.0}}}))
    study.add_trial(_candidate(0.75, 1.2))
    assert settle_target(study, config) is config  # flags given: recorded on the study
    resumed = settle_target(study, SearchConfig(dataset="digits", depth=8, epochs=1, storage=url))
    assert resumed.target(1) == {"depth": 14, "epochs": 3, "subset": None}  # a re-run without them keeps them
    confirm = open_confirm_study(storage, study)
    old = {"depth": 14, "epochs": 3, "subset": None}
    queue_plan(storage, confirm, plan_arms(study, 1, old), SEEDS[:1], old)  # a stage stopped, then asked for 2 epochs
    new = {"depth": 14, "epochs": 2, "subset": None}
    objective = ConfirmObjective(resumed, data=None, train=resumed.train, budget=new)  # data None: no training
    confirm.optimize(objective, n_trials=1)
    skipped = confirm.trials[0]
    assert skipped.state == TrialState.PRUNED and "another budget" in skipped.user_attrs["skipped"]
    assert queue_plan(storage, confirm, plan_arms(study, 1, old), SEEDS[:1], old) == 1  # that budget's stage runs it again


def test_the_search_noise_ignores_a_stage_at_another_budget(tmp_path):
    from search.evidence.noise import noise_floor

    url = f"sqlite:///{tmp_path / 'search.db'}"
    study = open_study(open_storage(url), SearchConfig(dataset="digits", depth=8, epochs=1, storage=url), epochs=1)
    for value in (0.70, 0.72):
        study.add_trial(create_trial(value=value, user_attrs={"preset": "baseline", "schedule": {
            "family": "constant", "params": {"value": 1.0}}}))
    measured = {"verdict": {"sigma_d": 0.001, "df": 6}, "budget": {"depth": 14, "epochs": 2, "subset": None}}
    records.StudyKey.CONFIRMATION.write(study, measured)
    assert noise_floor(study)["source"].startswith("estimated")  # the replicas, at the search's own budget
    measured["budget"] = {"depth": 8, "epochs": 1, "subset": None}
    records.StudyKey.CONFIRMATION.write(study, measured)
    assert noise_floor(study)["sigma_d"] == 0.001


def _tables(rng, studies, arms, seeds, scale, n_images=144, sigma_d=0.006):
    """``studies`` stages (arms x seeds), no true gain: a seed effect of 2 pt, run noise sigma_d / sqrt 2 times
    ``scale`` per arm, rounded to ``n_images``."""
    raw = 0.8 + rng.normal(0, 0.02, (studies, 1, seeds)) + \
        rng.normal(0, 1, (studies, arms, seeds)) * (np.asarray(scale) * sigma_d / math.sqrt(2))[None, :, None]
    return np.round(raw * n_images) / n_images


def test_the_null_rate_holds_with_a_noisier_candidate_or_baseline_vectorised():
    """No true gain, 1500 stages each (vectorised: stats.claims decides as many_to_one does): one candidate 5x
    noisier at K = 1 (the reference beside it), S 3 and 5, and a baseline 3x noisier at K 5, S 3."""
    rng = np.random.default_rng(26)
    for scale, seeds in (([1, 1, 5], 3), ([1, 1, 5], 5), ([3, 1, 1, 1, 1, 1, 1], 3)):
        comparisons = len(scale) - 2
        decided = stats.claims(_tables(rng, 1500, len(scale), seeds, scale), comparisons, 1 / 144)
        for key in ("better", "worse"):
            assert decided[key].any(1).mean() <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 1500), (scale, seeds, key)


def test_the_vectorised_decisions_are_many_to_ones():
    rng = np.random.default_rng(3)
    values = _tables(rng, 40, 5, 3, [1, 1, 4, 1, 1])
    values[:, 3] += 0.012  # a real gain on one candidate, so that some are claimed
    decided = stats.claims(values, 3, 1 / 144)
    for study in range(40):
        tested = stats.many_to_one(values[study].tolist(), [2, 3, 4], 1 / 144)
        assert [row["p_better"] < 0.05 for row in tested["arms"][1:]] == list(decided["better"][study])
        assert [row["robust"] for row in tested["arms"][1:]] == list(decided["robust"][study])
    assert decided["better"].any()


def test_a_collapsed_candidate_never_wins_and_leaves_the_other_tests_intact():
    """The issue's case: a run that ends at 12 % with a finite loss, beside arms at ~80 %."""
    table = {"base": [0.800, 0.820, 0.810], "c1": [0.830, 0.851, 0.839], "c2": [0.801, 0.822, 0.811],
             "c3": [0.805, 0.12, 0.812]}
    summary = verdict_of(table, resolution=1 / 5000)
    rows = {row["label"]: row for row in summary["arms"]}
    assert rows["#3"]["collapsed"] == 1 and rows["#3"]["diverged"] == 1 and not rows["#3"]["eligible"]
    assert summary["verdict"]["collapsed_runs"] == 1 and "collapsed" in describe(summary)
    intact = verdict_of({key: table[key] for key in ("base", "c1", "c2")}, resolution=1 / 5000)
    assert summary["verdict"]["sigma_d"] == pytest.approx(intact["verdict"]["sigma_d"])  # not 23.7 pt
    assert summary["winner"]["label"] == "#1" and rows["#1"]["p_better"] < 0.05
    broken_base = verdict_of({"base": [0.800, 0.12, 0.810], "c1": [0.803, 0.821, 0.812],
                              "c2": [0.801, 0.823, 0.811]}, resolution=1 / 5000)
    assert broken_base["verdict"]["seeds_used"] == 2 and broken_base["winner"] is None  # its seed is left out
    assert all(abs(row["difference_mean"]) < 0.01 for row in broken_base["arms"])  # not +27 pt


def test_a_run_that_learned_and_ends_at_chance_is_marked_diverged():
    from types import SimpleNamespace

    from training.loop import RunResult, mark_collapse, chance_floor

    data = SimpleNamespace(y_val=np.arange(5000) % 10, num_classes=10)
    assert 0.10 < chance_floor(data) < 0.12  # CIFAR-10's 5000 validation images
    collapsed = RunResult(8, "cifar10", {}, 0, "float32", 3, val_accuracy=[0.40, 0.62, 0.10])
    mark_collapse(collapsed, data)
    assert collapsed.diverged and collapsed.diverged_reason.startswith("collapsed")
    never = RunResult(8, "cifar10", {}, 0, "float32", 3, val_accuracy=[0.10, 0.11, 0.10])
    mark_collapse(never, data)  # a budget too short to learn is not a collapse
    assert not never.diverged


def test_the_power_line_states_sigma_ds_uncertainty_and_no_seed_count_from_the_rounding_floor():
    summary = verdict_of({"base": [0.80, 0.82, 0.81], "c1": [0.805, 0.826, 0.814], "c2": [0.803, 0.821, 0.812]})
    verdict = summary["verdict"]
    low, high = verdict["detectable_effect_ci95"]
    assert low < verdict["detectable_effect"] < high and "given sigma_d's 95 % interval" in describe(summary)
    one_image = 1 / 144
    base = [100 / 144, 104 / 144, 102 / 144]
    tied = verdict_of({"base": base, "c1": [b + one_image for b in base], "c2": base}, resolution=one_image)
    assert tied["verdict"]["sigma_d_is_rounding"] and tied["verdict"]["seeds_for_min_effect"] is None
    assert "not known from these runs" in describe(tied) and "would need" not in describe(tied)


def test_the_outcome_is_a_str_enum_equal_to_the_stored_strings():
    from search.evidence.verdict import NO_VERDICT, Outcome

    assert Outcome.BEATS == "beats_baseline" == BEATS and NO_VERDICT == "no_verdict"
    assert Outcome("no_candidate_beats_baseline") is NO_WINNER and WORSE is Outcome.WORSE


def test_the_chance_line_counts_the_shared_baseline_run():
    chance = power.chance_best_of(30, 1.0)
    rng = np.random.default_rng(5)
    runs = rng.normal(0, math.sqrt(0.5), (20_000, 31))  # sigma_d = 1: each run sd 1 / sqrt 2
    best = (runs[:, 1:] - runs[:, [0]]).max(1)
    assert chance["mean"] == pytest.approx(best.mean(), abs=0.03)  # 1.45, not 2.04
    assert chance["p95"] == pytest.approx(np.quantile(best, 0.95), abs=0.05)


def test_a_winner_at_k_1_is_corrected_and_never_above_its_raw_mean_when_it_barely_won():
    summary = verdict_of({"base": [0.80, 0.82, 0.81], "c1": [0.806, 0.823, 0.819]}, resolution=1 / 5000)
    winner = summary["winner"]
    assert winner is not None and 0.01 < winner["p_better"] < 0.05  # it barely won
    assert winner["difference_estimate"] < winner["difference_mean"]
