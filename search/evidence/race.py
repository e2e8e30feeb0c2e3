"""The confirm stage as a race (``--confirm-budget N``): spend the stage's trainings where they decide.

The fixed stage trains its K candidates, the baseline and the paper's preset on the same S seeds, the ones clearly
behind after one seed included, each picked by its own single-seed value. The race instead:

1. takes a field of the surrogate's top ``FIELD`` candidates (``search.evidence.surrogate``: a Gaussian process
   over every search trial's realised factors, so a candidate's neighbours vouch for it);
2. races the field on fresh seeds, one seed a round with the baseline beside it, and after each round keeps the
   better half by mean paired difference with the baseline (a diverged or failed run: out; ties: the surrogate's
   order), while the budget still leaves the final test at least ``FINAL_MIN_SEEDS`` seeds;
3. tests the survivor (the leader by mean difference when the rounds end) against the baseline alone on the
   seeds left (half the trainings left each), seeds no round used: the final test (``verdict.summarise`` at
   K = 1) is valid whatever the rounds chose, for the rounds' results never enter it.

Rounds and the final test are a pure function of the runs recorded (``standing``), so a killed stage resumes
where it was and any number of workers share it: each queues what the standing asks for, under the study's lock.
The layout (field sizes, seeds) depends only on the field's size and the budget. Measured at equal trainings
(benchmarks/search_power.py, 200 search trials and 21 runs, cpu-cifar noise, 300 studies a cell;
benchmarks/README.md): a planted +2 sigma_d schedule declared the winner 99 % of the time against 68 % for the
fixed stage, +1 sigma_d 65 % against 16 %; false claims under a flat null 5.1 % pooled over three cells (the final
test's nominal 5 %).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from search.records import RunState

__all__ = ["FIELD", "FINAL_MIN_SEEDS", "MAX_TRAININGS", "MIN_TRAININGS", "Standing", "account", "layout", "lines",
           "plan_line", "standing"]

# the field: the surrogate's top 2. Measured (benchmarks/search_power.py --strategies race-f1 race race-f3 race-f5
# race-f10 --truths bump1, cpu-cifar noise, 200 studies a cell): a field of 1 / 2 / 3 / 5 / 10 found a planted
# +1 sigma_d 67.5 / 68.5 / 59.0 / 50.5 / 38.5 % of the time at 21 runs; the surrogate's pick is better than one
# seed's, so seeds go to the final test. 2, not 1: a hedge against a surrogate that misleads (a landscape
# rougher than the benchmark's), at no measurable cost.
FIELD = 2
FINAL_MIN_SEEDS = 3  # the final test keeps at least this many seeds (a round only runs if they stay affordable)
MIN_TRAININGS = 2 * FINAL_MIN_SEEDS  # the smallest budget: the final test alone
MAX_TRAININGS = 2000  # the largest: its seeds stay below the range of the evaluations' (EVALUATION_SEED_START)
FINISHED = (RunState.DONE, RunState.DIVERGED, RunState.FAILED)


def layout(field_size: int, trainings: int) -> tuple[list[int], int]:
    """(the field's size in each round, the final test's seeds) for a field of ``field_size`` candidates and a
    budget of ``trainings`` runs: a round of F candidates costs F + 1 runs (the baseline beside them) and halves
    the field; rounds go on while the field has two or more and the final test keeps ``FINAL_MIN_SEEDS`` seeds;
    the final test then trains the survivor and the baseline on half the runs left each."""
    sizes, left, size = [], trainings, field_size
    while size > 1 and left - (size + 1) >= 2 * FINAL_MIN_SEEDS:
        sizes.append(size)
        left -= size + 1
        size = max(1, size // 2)
    return sizes, left // 2


@dataclass
class Standing:
    """Where a race stands, read from its runs: the (arm, seed) pairs it has asked for so far (rounds reached and,
    once the rounds are decided, the final test), the field of each round reached, the arms dropped (key ->
    {"round", "mean_difference", "reason"}), the survivor once the rounds are decided, and ``decided``: every pair
    asked for has finished (done, diverged or failed for good)."""

    needed: list[tuple[str, int]] = field(default_factory=list)
    fields: list[list[str]] = field(default_factory=list)
    dropped: dict[str, dict] = field(default_factory=dict)
    survivor: str | None = None
    decided: bool = False
    means: dict[str, float | None] = field(default_factory=dict)
    unpaired: list[int] = field(default_factory=list)  # rounds whose baseline broke (ranked on the field's median)


def standing(field_keys: Sequence[str], baseline: str, round_seeds: Sequence[int], final_seeds: Sequence[int],
             results: Mapping[tuple[str, int], tuple[RunState, float | None]]) -> Standing:
    """The race's standing: ``field_keys`` in the surrogate's order, ``round_seeds[r]`` the seed of round r (as
    many as ``layout`` gives rounds), ``results[(key, seed)]`` each pair's (state, accuracy) as
    ``confirm_plan.outcome`` reads it (absent: not run yet).

    An arm with a run that diverged or failed is out for good: it is dropped at once (never kept for its
    surrogate rank), and when every arm of the field has broken there is no survivor and no final test. A round
    whose baseline broke still ranks its arms: on one seed, differences to the field's median rank them as
    differences to the baseline would."""
    now = Standing()
    current = list(field_keys[:1]) if not round_seeds else list(field_keys)
    differences: dict[str, list[float]] = {key: [] for key in current}
    for number, seed in enumerate(round_seeds, 1):
        pairs = [(baseline, seed)] + [(key, seed) for key in current]
        now.needed += pairs
        now.fields.append(list(current))
        if not all(results.get(pair, (RunState.MISSING, None))[0] in FINISHED for pair in pairs):
            return now
        values = {key: results[(key, seed)][1] for key in current}
        base = results[(baseline, seed)][1]
        if base is None:  # no pair on this seed: the field's own median stands in for the baseline
            now.unpaired.append(number)
            healthy = [value for value in values.values() if value is not None]
            base = float(np.median(healthy)) if healthy else None
        for key in current:
            differences[key].append(-math.inf if values[key] is None else math.nan if base is None
                                    else values[key] - base)
        means = {key: _mean(differences[key]) for key in current}
        now.means.update(means)
        order = sorted(current, key=lambda key: -means[key] if means[key] is not None else math.inf)
        broken = [key for key in order if means[key] == -math.inf]
        healthy = [key for key in order if key not in broken]
        keep = healthy[:max(1, len(current) // 2)]
        for key in order:
            if key in keep:
                continue
            reason = "a run diverged or failed" if key in broken else \
                f"behind the better half after {number} round{'s' * (number > 1)}"
            now.dropped[key] = {"round": number, "mean_difference": _finite(means[key]), "reason": reason}
        current = keep  # by mean difference, ties in the surrogate's order
    now.survivor = current[0] if current else None
    for key in current[1:]:  # the budget stopped the race with more than one left: the leader goes on
        now.dropped[key] = {"round": len(round_seeds), "mean_difference": _finite(now.means.get(key)),
                            "reason": "kept to the end, behind the leader"}
    if now.survivor is None:  # every arm broke: nothing to test
        now.decided = True
        return now
    final = [(key, seed) for seed in final_seeds for key in (baseline, now.survivor)]
    now.needed += final
    now.decided = all(results.get(pair, (RunState.MISSING, None))[0] in FINISHED for pair in final)
    return now


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def _mean(values: list[float]) -> float | None:
    """The mean paired difference over the rounds with a baseline run; None when there is none (unranked)."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return None
    return -math.inf if -math.inf in finite else float(np.mean(finite))


def account(plan: dict, now: Standing) -> dict:
    """What the race did, for the verdict's summary (``summary["race"]``), the terminal, the note, the report and
    the export: its budget and the (arm, seed) runs it asked for (``spent``), the seeds of its rounds and of its
    final test, why it stopped, whether a surrogate was fitted, and per arm of the field the surrogate's estimate,
    the search's own value, the rounds it ran, its mean paired difference in them, and whether (and why) it was
    dropped."""
    field = []
    for arm in plan["arms"][1:]:
        key, rounds = arm["key"], sum(arm["key"] in keys for keys in now.fields)
        dropped = now.dropped.get(key) or (None if rounds or key == now.survivor else
                                           {"round": 0, "mean_difference": None,
                                            "reason": "not raced: the budget left only the final test"})
        field.append({"label": arm["label"], "source_trial": arm["source_trial"],
                      "surrogate_mean": arm.get("surrogate_mean"), "surrogate_sd": arm.get("surrogate_sd"),
                      "search_value": arm.get("proxy"), "rounds": rounds,
                      "mean_difference": _finite(now.means.get(key)), "dropped": dropped,
                      "final_test": key == now.survivor})
    sizes = plan["sizes"]
    if now.survivor is None and now.decided:
        stopped = "every arm of the field diverged or failed: no final test"
    elif len(plan["arms"]) == 2:
        stopped = "a field of one: nothing to race"
    elif not sizes:
        stopped = "the budget left only the final test: the surrogate's first pick went straight to it"
    elif max(1, sizes[-1] // 2) == 1:
        stopped = "the field was down to one"
    else:
        stopped = f"the budget: another round would have left the final test fewer than {FINAL_MIN_SEEDS} seeds"
    survivor = next((arm["label"] for arm in plan["arms"] if arm["key"] == now.survivor), None)
    return {"trainings": plan["trainings"], "spent": len(now.needed), "sizes": sizes,
            "round_seeds": plan["round_seeds"], "final_seeds": plan["final_seeds"], "fitted_on": plan["fitted_on"],
            "surrogate": plan.get("surrogate", True), "survivor": survivor, "stopped_by": stopped,
            "rounds_without_baseline": now.unpaired, "field": field}


def plan_line(plan: dict) -> str:
    """The race's plan in one line, for the stage's first log line."""
    rounds, size = len(plan["sizes"]), len(plan["arms"]) - 1
    picked = (f"by the surrogate (a Gaussian process over {len(plan['fitted_on'])} search trials)"
              if plan.get("surrogate", True) else "by the search's own values (too few trials for a surrogate)")
    raced = (f"{rounds} round{'s' * (rounds != 1)} of {', '.join(map(str, plan['sizes']))} candidates, one seed "
             f"each, the baseline beside, then the leader" if rounds else "no round, the first")
    return (f"a field of {size} {picked}; {raced} against the baseline on {len(plan['final_seeds'])} seeds no "
            f"round used")


def lines(race: dict) -> list[str]:
    """The terminal's account of a race (``account``): its allocation, then one line per arm of the field."""
    rounds = len(race["round_seeds"])
    surrogate = race.get("surrogate", True)
    unpaired = race.get("rounds_without_baseline")
    said = [f"race: {race['spent']} runs asked for, of a budget of {race['trainings']} (runs done before reused); "
            f"{rounds} round{'s' * (rounds != 1)}"
            + (f" on seeds {race['round_seeds']}" if rounds else "")
            + f", the final test on {len(race['final_seeds'])} fresh seeds {race['final_seeds']}; stopped: "
            f"{race['stopped_by']}. " + ("Surrogate: the Gaussian process's mean accuracy +- sd; " if surrogate
                                         else "Too few trials for a surrogate: the search's own ranking; ")
            + "search: the trial's own single-seed value; race: mean paired difference in the rounds"
            + (f" (the baseline broke in round {', '.join(map(str, unpaired))}: there the difference to the "
               f"field's median)" if unpaired else "") + ":"]
    for arm in race["field"]:
        text = f"  {arm['label']:<24}"
        if surrogate and arm["surrogate_mean"] is not None:
            text += f" surrogate {100 * arm['surrogate_mean']:.2f} +- {100 * (arm['surrogate_sd'] or 0):.2f} %,"
        if arm["search_value"] is not None:
            text += f" search {100 * arm['search_value']:.2f} %"
        if arm["mean_difference"] is not None:
            text += f", race {100 * arm['mean_difference']:+.2f} pt over {arm['rounds']} round" + \
                    "s" * (arm["rounds"] != 1)
        if arm["final_test"]:
            text += ": to the final test"
        elif arm["dropped"] and arm["dropped"]["reason"].startswith("kept"):
            text += f": {arm['dropped']['reason']}"
        elif arm["dropped"]:
            text += f": dropped ({arm['dropped']['reason']})"
        said.append(text)
    return said
