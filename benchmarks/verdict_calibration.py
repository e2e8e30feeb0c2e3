"""Calibrate the verdict by simulation: how often it claims a winner when no schedule is better, its power for a
planted gain, and the bias of the estimate it exports.

    python -m benchmarks.verdict_calibration --studies 2000 --output verdict-calibration.json

Each simulated study runs the tool's own verdict (``search.evidence.verdict.summarise``) on accuracies drawn as a
real one would produce them:

- the search: N candidates (default 30), each one run on the search's seed; its difference with the baseline on
  that seed is its true gain plus noise of sd sigma_d. The top K by that figure are confirmed (rung pruning aside:
  it only removes candidates before this point);
- the confirm stage: the baseline, the paper's preset (a reference as good as the baseline) and the K candidates on
  S fresh seeds. Accuracy = 0.80 + the seed's effect (sd 2 pt, shared by every arm of the seed) + the arm's true
  gain + noise of sd sigma_d / sqrt(2), rounded to a validation set of n images; each run diverges with
  probability 1 % (no accuracy);
- under the null every true gain is 0; under an alternative one candidate of the N has +1 or +2 sigma_d.

Reported per K and S: the rate of claimed winners under the null (the verdict's false-claim rate; it must stay at
or below 5 % up to Monte-Carlo error), the power (the planted schedule declared the winner, over the whole chain:
found by the search, then confirmed), and the exported estimate's mean error for a claimed winner (shrunk, and
raw beside it) over every study: the winner's, else the best candidate's.
"""
from __future__ import annotations

import json
import math
import sys
import time
from typing import Sequence

import numpy as np

from common.cli import ArgumentParser, positive_int, run_command
from common.files import write_json_atomic
from common.machine import cpu_info
from search.evidence.verdict import BEATS, summarise

SIGMA_D = 0.006  # 0.6 pt: a CIFAR-10 ResNet's seed-to-seed spread of a paired difference at a short budget
SEED_SD = 0.02
DIVERGE = 0.01
BUDGET = {"depth": 32, "dataset": "simulated", "epochs": None, "subset": None, "batch_size": 128}


def simulate(rng: np.random.Generator, top: int, seeds: int, planted: float, n_images: int,
             candidates: int = 30, noise: dict[str, float] | None = None) -> dict:
    """One study: the verdict, and whether its winner is the planted schedule (index 0 of the N). ``noise``
    scales an arm's run-to-run noise: ``{"baseline": 2}`` or ``{"first": 5}`` (the first confirmed candidate)."""
    noise = noise or {}
    truth = np.zeros(candidates)
    truth[0] = planted * SIGMA_D
    searched = truth + rng.normal(0, SIGMA_D, candidates)
    chosen = np.argsort(-searched)[:top]
    arms = [{"key": "baseline", "label": "baseline", "schedule": {}, "source_trial": None, "candidate": False,
             "rank_in_search": None},
            {"key": "paper", "label": "paper", "schedule": {}, "source_trial": None, "candidate": False,
             "rank_in_search": None}]
    arms += [{"key": f"c{index}", "label": f"#{index}", "schedule": {}, "source_trial": int(index),
              "candidate": True, "rank_in_search": rank} for rank, index in enumerate(chosen, 1)]
    gains = [0.0, 0.0, *truth[chosen]]
    seed_effect = rng.normal(0, SEED_SD, seeds)
    accuracy = {}
    for index, (arm, gain) in enumerate(zip(arms, gains)):
        scale = noise.get("baseline", 1) if index == 0 else noise.get("first", 1) if index == 2 else 1
        raw = 0.80 + seed_effect + gain + rng.normal(0, scale * SIGMA_D / math.sqrt(2), seeds)
        for seed, value in enumerate(np.round(raw * n_images) / n_images):
            accuracy[(arm["key"], seed)] = None if rng.random() < DIVERGE else float(value)
    summary = summarise(arms, list(range(seeds)), accuracy, set(), 1 / n_images, BUDGET)
    winner, exported = summary["winner"], summary["winner"] or summary["best"]
    truth = {arm["label"]: gain for arm, gain in zip(arms, gains)}[exported["label"]] if exported else None
    return {"claimed": summary["verdict"]["outcome"] == BEATS,
            "planted_won": bool(winner and winner["label"] == "#0"),
            "error": exported.get("difference_estimate", exported["difference_mean"]) - truth if exported else None,
            "raw_error": exported["difference_mean"] - truth if exported else None}


def cell(top: int, seeds: int, studies: int, n_images: int, seed: int) -> dict:
    """One row of the table: the null, +1 and +2 sigma_d, ``studies`` each."""
    rng = np.random.default_rng(seed)
    row = {"K": top, "S": seeds, "studies": studies}
    for name, planted in (("null", 0.0), ("plus_1_sigma_d", 1.0), ("plus_2_sigma_d", 2.0)):
        runs = [simulate(rng, top, seeds, planted, n_images) for _ in range(studies)]
        rate = sum(run["claimed"] for run in runs) / studies
        key = "false_claim_rate" if planted == 0 else f"power_{name}"
        row[key] = round(rate if planted == 0 else sum(run["planted_won"] for run in runs) / studies, 4)
        if planted == 0:
            row["false_claim_mc_se"] = round(math.sqrt(max(rate * (1 - rate), 0.05 * 0.95) / studies), 4)
        exported = [run for run in runs if run["error"] is not None]
        row[f"estimate_bias_pt_{name}"] = round(100 * float(np.mean([run["error"] for run in exported])), 3)
        row[f"raw_mean_bias_pt_{name}"] = round(100 * float(np.mean([run["raw_error"] for run in exported])), 3)
    return row


def robustness(studies: int, n_images: int, top: int = 5, seeds: int = 3) -> list[dict]:
    """The false-claim rate when arms differ in noise (no true effect): a baseline 2 and 3 times noisier than the
    candidates, and one candidate 5 times noisier than the rest."""
    rows = []
    for name, noise in (("baseline 2x noisier", {"baseline": 2}), ("baseline 3x noisier", {"baseline": 3}),
                        ("one candidate 5x noisier", {"first": 5})):
        rng = np.random.default_rng(hash(name) % 2 ** 32)
        claims = sum(simulate(rng, top, seeds, 0.0, n_images, noise=noise)["claimed"] for _ in range(studies))
        rows.append({"scenario": name, "K": top, "S": seeds, "studies": studies,
                     "false_claim_rate": round(claims / studies, 4),
                     "false_claim_mc_se": round(math.sqrt(0.05 * 0.95 / studies), 4)})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| K | S | false claims, null | MC se | power, +1 sigma_d | power, +2 sigma_d | exported estimate's "
             "bias, null (pt) | raw mean's bias, null (pt) | estimate's bias, +2 sigma_d (pt) | raw mean's bias, +2 "
             "sigma_d (pt) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['K']} | {row['S']} | {100 * row['false_claim_rate']:.1f} % | "
                     f"{100 * row['false_claim_mc_se']:.1f} % | {100 * row['power_plus_1_sigma_d']:.0f} % | "
                     f"{100 * row['power_plus_2_sigma_d']:.0f} % | {row['estimate_bias_pt_null']:+.2f} | "
                     f"{row['raw_mean_bias_pt_null']:+.2f} | {row['estimate_bias_pt_plus_2_sigma_d']:+.2f} | "
                     f"{row['raw_mean_bias_pt_plus_2_sigma_d']:+.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.verdict_calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=positive_int, default=2000, help="simulated studies per cell and "
                        "scenario (default 2000)")
    parser.add_argument("--images", type=positive_int, default=144, help="validation images an accuracy is "
                        "counted on (default 144, the digits split: coarse steps, many ties)")
    parser.add_argument("--tops", type=positive_int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--seeds", type=positive_int, nargs="+", default=[2, 3, 5, 10])
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    started, rows = time.perf_counter(), []
    for top in args.tops:
        for seeds in args.seeds:
            rows.append(cell(top, seeds, args.studies, args.images, seed=1000 * top + seeds))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    unequal = robustness(args.studies, args.images)
    report = {"cpu": cpu_info(), "images": args.images, "sigma_d": SIGMA_D, "seed_sd": SEED_SD,
              "divergence": DIVERGE, "candidates_searched": 30, "rows": rows, "unequal_noise": unequal,
              "seconds": round(time.perf_counter() - started, 1)}
    if args.output:
        write_json_atomic(args.output, report)
    print(markdown(rows))
    print("\n".join(f"| {row['scenario']} | K {row['K']}, S {row['S']} | {100 * row['false_claim_rate']:.1f} % "
                    f"(MC se {100 * row['false_claim_mc_se']:.1f} %) |" for row in unequal))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
