"""Calibrate the verdict by simulation: how often it claims a winner (or a worse arm) when no schedule differs,
its power for a planted gain against the textbook randomized-block analysis, the power line's promise against
what the test does, collapsed runs, and the bias of the estimate a user acts on.

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

Sections of the report (``--only`` runs some of them):

- ``grid``: per K and S, the false-claim rate under the null (better, and separately worse), the chain's power,
  and the exported estimate's bias for claimed winners (in sigma_d) beside the raw mean's;
- ``unequal``: false claims with one candidate 3x or 5x noisier (K 1, 3, 5) or the baseline 2x or 3x noisier;
- ``power_line``: the power the verdict states (``detectable_effect``) against the simulated rate at which a
  candidate with exactly that gain is claimed (at the stage, no search, no divergence);
- ``seed_effect``: a large seed effect (5 pt) and small run noise (0.1 pt, 5000 images), +0.3 pt on one of K 5 at
  S 3: the tool's power against the textbook block analysis (``stats.block_variance``'s residual alone, Dunnett);
- ``collapse``: a candidate or the baseline collapsed on one seed to 12 % with a finite loss: false claims, how
  often the collapsed arm wins (never), the other arms' power beside the same studies without the collapse, and
  how often ``collapsed_runs`` flags a run when none collapsed;
- ``null_vectorised``: the test alone (``stats.claims``, the same rule as ``many_to_one``, vectorised) on 10x the
  studies, stages complete and without the search: false claims (better / worse) per K, S and noise pattern.
"""
from __future__ import annotations

import json
import math
import sys
import time
from typing import Callable, Sequence

import numpy as np

from common.cli import ArgumentParser, positive_int, run_command
from common.files import write_json_atomic
from common.machine import cpu_info
from search.evidence import power, stats
from search.evidence.verdict import BEATS, collapsed_runs, summarise

SIGMA_D = 0.006  # 0.6 pt: a CIFAR-10 ResNet's seed-to-seed spread of a paired difference at a short budget
SEED_SD = 0.02
DIVERGE = 0.01
BUDGET = {"depth": 32, "dataset": "simulated", "epochs": None, "subset": None, "batch_size": 128}
SECTIONS = ("grid", "unequal", "power_line", "seed_effect", "collapse", "null_vectorised")


def arms_for(top: int, sources: Sequence[int] | None = None) -> list[dict]:
    sources = list(range(top)) if sources is None else list(sources)
    made = [{"key": "baseline", "label": "baseline", "schedule": {}, "source_trial": None, "candidate": False,
             "rank_in_search": None},
            {"key": "paper", "label": "paper", "schedule": {}, "source_trial": None, "candidate": False,
             "rank_in_search": None}]
    return made + [{"key": f"c{index}", "label": f"#{index}", "schedule": {}, "source_trial": int(index),
                    "candidate": True, "rank_in_search": rank} for rank, index in enumerate(sources, 1)]


def stage(rng: np.random.Generator, gains: np.ndarray, seeds: int, n_images: int, scale: np.ndarray | None = None,
          seed_sd: float = SEED_SD, run_sd: float = SIGMA_D / math.sqrt(2), diverge: float = DIVERGE) -> np.ndarray:
    """Accuracies (arms x seeds, NaN: diverged) of one confirm stage."""
    scale = np.ones(len(gains)) if scale is None else scale
    raw = 0.80 + rng.normal(0, seed_sd, seeds)[None, :] + gains[:, None] + \
        rng.normal(0, 1, (len(gains), seeds)) * (scale * run_sd)[:, None]
    values = np.round(raw * n_images) / n_images
    values[rng.random(values.shape) < diverge] = np.nan
    return values


def verdict_on(arms: list[dict], values: np.ndarray, n_images: int) -> dict:
    seeds = list(range(values.shape[1]))
    accuracy = {(arm["key"], seed): None if math.isnan(values[a, seed]) else float(values[a, seed])
                for a, arm in enumerate(arms) for seed in seeds}
    return summarise(arms, seeds, accuracy, set(), 1 / n_images, BUDGET)


def chain(rng: np.random.Generator, top: int, seeds: int, planted: float, n_images: int, candidates: int = 30,
          scale: dict[str, float] | None = None) -> dict:
    """One study, search then stage: the verdict, and whether its winner is the planted schedule (index 0)."""
    scale = scale or {}
    truth = np.zeros(candidates)
    truth[0] = planted * SIGMA_D
    chosen = np.argsort(-(truth + rng.normal(0, SIGMA_D, candidates)))[:top]
    arms = arms_for(top, chosen)
    gains = np.array([0.0, 0.0, *truth[chosen]])
    noise = np.ones(len(arms))
    noise[0] = scale.get("baseline", 1)
    noise[2] = scale.get("first", 1)
    return judged(arms, gains, verdict_on(arms, stage(rng, gains, seeds, n_images, noise), n_images), "#0")


def judged(arms: list[dict], gains: np.ndarray, summary: dict, planted: str | None) -> dict:
    winner = summary["winner"]
    truth = {arm["label"]: gain for arm, gain in zip(arms, gains)}
    out = {"claimed": summary["verdict"]["outcome"] == BEATS, "worse_claimed": bool(summary["verdict"]["worse"]),
           "planted_won": bool(winner and winner["label"] == planted), "winner": winner["label"] if winner else None,
           "error": None, "raw_error": None, "sigma_d": summary["verdict"]["sigma_d"],
           "detectable": summary["verdict"]["detectable_effect"]}
    if winner:  # the estimate a user acts on: a claimed winner's
        out["error"] = winner["difference_estimate"] - truth[winner["label"]]
        out["raw_error"] = winner["difference_mean"] - truth[winner["label"]]
    rows = {row["label"]: row for row in summary["arms"]}
    out["planted_claimed"] = bool(planted in rows and rows[planted]["eligible"]
                                  and rows[planted]["p_better"] < stats.ALPHA)
    return out


def rate(runs: list[dict], key: str) -> float:
    return sum(bool(run[key]) for run in runs) / len(runs)


def mc_se(value: float, studies: int) -> float:
    return math.sqrt(max(value * (1 - value), 0.05 * 0.95) / studies)


def bias(runs: list[dict], key: str) -> float | None:
    errors = [run[key] for run in runs if run[key] is not None]
    return round(float(np.mean(errors)) / SIGMA_D, 3) if errors else None


def grid(studies: int, n_images: int, tops: Sequence[int], seed_counts: Sequence[int]) -> list[dict]:
    rows = []
    for top in tops:
        for seeds in seed_counts:
            rng = np.random.default_rng(1000 * top + seeds)
            row = {"K": top, "S": seeds, "studies": studies}
            for name, planted in (("null", 0.0), ("plus_1_sigma_d", 1.0), ("plus_2_sigma_d", 2.0)):
                runs = [chain(rng, top, seeds, planted, n_images) for _ in range(studies)]
                if planted == 0:
                    row.update(false_claim_rate=round(rate(runs, "claimed"), 4),
                               false_worse_rate=round(rate(runs, "worse_claimed"), 4),
                               false_claim_mc_se=round(mc_se(rate(runs, "claimed"), studies), 4))
                else:
                    row[f"power_{name}"] = round(rate(runs, "planted_won"), 4)
                row[f"winner_bias_sigma_d_{name}"] = bias(runs, "error")
                row[f"winner_raw_bias_sigma_d_{name}"] = bias(runs, "raw_error")
                row[f"winners_{name}"] = sum(run["error"] is not None for run in runs)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def unequal(studies: int, n_images: int) -> list[dict]:
    cases = [(f"one candidate {f}x noisier", {"first": f}, top, seeds) for f in (5,) for top in (1, 3, 5)
             for seeds in (3, 5, 10)]
    cases += [("one candidate 3x noisier", {"first": 3}, top, 5) for top in (1, 5)]
    cases += [(f"baseline {f}x noisier", {"baseline": f}, top, seeds) for f in (2, 3) for top in (1, 5)
              for seeds in (3, 5)]
    rows = []
    for number, (name, scale, top, seeds) in enumerate(cases):
        rng = np.random.default_rng(7000 + number)
        runs = [chain(rng, top, seeds, 0.0, n_images, scale=scale) for _ in range(studies)]
        rows.append({"scenario": name, "K": top, "S": seeds, "studies": studies,
                     "false_claim_rate": round(rate(runs, "claimed"), 4),
                     "false_worse_rate": round(rate(runs, "worse_claimed"), 4),
                     "false_claim_mc_se": round(mc_se(rate(runs, "claimed"), studies), 4),
                     "winner_bias_sigma_d": bias(runs, "error")})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def power_line(studies: int, n_images: int) -> list[dict]:
    """A candidate with exactly the stated detectable effect (at the true sigma_d, the rounding's included), at the
    stage: the predicted 80 % against the simulated claim rate."""
    sigma = math.sqrt(SIGMA_D ** 2 + 2 / (12 * n_images ** 2))  # a paired difference's sd, rounding included
    rows = []
    for top, seeds in ((1, 3), (1, 5), (3, 3), (5, 3), (5, 5), (10, 3), (10, 5)):
        arms = arms_for(top)
        effect = power.detectable_effect(sigma, seeds, top, top + 2)
        gains = np.zeros(top + 2)
        gains[2] = effect
        rng = np.random.default_rng(5000 + 10 * top + seeds)
        runs = [judged(arms, gains, verdict_on(arms, stage(rng, gains, seeds, n_images, diverge=0.0), n_images),
                       "#0") for _ in range(studies)]
        simulated = rate(runs, "planted_claimed")
        rows.append({"K": top, "S": seeds, "studies": studies, "detectable_effect_pt": round(100 * effect, 3),
                     "predicted_power": power.POWER, "simulated_power": round(simulated, 4),
                     "mc_se": round(math.sqrt(simulated * (1 - simulated) / studies), 4)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def textbook_block(values: np.ndarray, comparisons: int, resolution: float) -> np.ndarray:
    """The randomized-block analysis alone: two-way residual over every complete arm, Dunnett on its df."""
    seeds = ~np.isnan(values[0])
    complete = [a for a in range(len(values)) if not np.isnan(values[a, seeds]).any()]
    table = values[complete][:, seeds]
    block = stats.block_variance(table, 2 * stats.rounding_variance(resolution))
    critical = stats.dunnett_critical(comparisons, block["df"])
    se = math.sqrt(block["sigma_d2"] / table.shape[1])
    won = np.zeros(len(values), bool)
    for position, arm in enumerate(complete):
        won[arm] = arm >= 2 and (table[position].mean() - table[0].mean()) > critical * se
    return won


def seed_effect(studies: int) -> list[dict]:
    rows = []
    for top, seeds in ((5, 3), (1, 3), (5, 5)):
        n_images, arms = 5000, arms_for(top)
        gains = np.zeros(top + 2)
        gains[2] = 0.003
        rng = np.random.default_rng(9000 + 10 * top + seeds)
        tool = textbook = 0
        for _ in range(studies):
            values = stage(rng, gains, seeds, n_images, seed_sd=0.05, run_sd=0.001, diverge=0.0)
            tool += judged(arms, gains, verdict_on(arms, values, n_images), "#0")["planted_claimed"]
            textbook += bool(textbook_block(values, top, 1 / n_images)[2])
        rows.append({"K": top, "S": seeds, "studies": studies, "gain_pt": 0.3, "seed_sd_pt": 5, "run_sd_pt": 0.1,
                     "tool_power": round(tool / studies, 4), "block_power": round(textbook / studies, 4)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def collapse(studies: int, n_images: int) -> list[dict]:
    """One run at 12 % with a finite loss: a null candidate (claims; does it ever win?), a candidate while another
    has +2 sigma_d (the other's power, with and without the collapse, the same draws), the baseline; and the flag
    rate with no collapse (every arm as noisy, and one candidate 5x noisier)."""
    rows = []
    top, seeds = 5, 3
    arms = arms_for(top)
    cases: list[tuple[str, int, float, Callable]] = [
        ("collapsed null candidate", 3, 0.0, lambda v: v.__setitem__((3, 1), 0.12)),
        ("collapsed candidate, another +2 sigma_d", 3, 2.0, lambda v: v.__setitem__((3, 1), 0.12)),
        ("baseline collapsed on 1 of 3 seeds", 0, 0.0, lambda v: v.__setitem__((0, 1), 0.12))]
    for number, (name, broken, planted, breaks) in enumerate(cases):
        rng = np.random.default_rng(11000 + number)
        gains = np.zeros(top + 2)
        gains[2] = planted * SIGMA_D
        runs, intact, broken_won = [], [], 0
        for _ in range(studies):
            values = stage(rng, gains, seeds, n_images)
            intact.append(judged(arms, gains, verdict_on(arms, values, n_images), "#0"))
            values = values.copy()
            breaks(values)
            runs.append(judged(arms, gains, verdict_on(arms, values, n_images), "#0"))
            broken_won += runs[-1]["winner"] == arms[broken]["label"]
        row = {"scenario": name, "K": top, "S": seeds, "studies": studies,
               "false_claim_rate": round(rate(runs, "claimed"), 4) if planted == 0 else None,
               "collapsed_arm_won": broken_won,
               "planted_power": round(rate(runs, "planted_claimed"), 4) if planted else None,
               "planted_power_without_collapse": round(rate(intact, "planted_claimed"), 4) if planted else None,
               "median_sigma_d_pt": round(100 * float(np.median([r["sigma_d"] for r in runs if r["sigma_d"]])), 3),
               "median_sigma_d_pt_without_collapse":
                   round(100 * float(np.median([r["sigma_d"] for r in intact if r["sigma_d"]])), 3)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    for name, scale in (("no collapse, equal noise", 1.0), ("no collapse, one candidate 5x noisier", 5.0)):
        rng = np.random.default_rng(12000 + int(scale))
        noise = np.ones(top + 2)
        noise[2] = scale
        flagged = sum(bool(collapsed_runs(np.where(np.isnan(v), None, v).tolist(), 1 / n_images).any())
                      for v in (stage(rng, np.zeros(top + 2), seeds, n_images, noise) for _ in range(studies)))
        rows.append({"scenario": name, "K": top, "S": seeds, "studies": studies,
                     "studies_with_a_run_flagged": flagged})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def null_vectorised(studies: int, n_images: int, tops: Sequence[int], seed_counts: Sequence[int]) -> list[dict]:
    rows = []
    patterns = {"equal": lambda arms: [1] * arms, "one candidate 5x": lambda arms: [1, 1, 5] + [1] * (arms - 3),
                "one candidate 3x": lambda arms: [1, 1, 3] + [1] * (arms - 3),
                "baseline 2x": lambda arms: [2] + [1] * (arms - 1), "baseline 3x": lambda arms: [3] + [1] * (arms - 1)}
    for top in tops:
        for seeds in seed_counts:
            rng = np.random.default_rng(13000 + 100 * top + seeds)
            row: dict = {"K": top, "S": seeds, "studies": studies}
            for name, pattern in patterns.items():
                scale = np.asarray(pattern(top + 2), float)
                raw = 0.8 + rng.normal(0, SEED_SD, (studies, 1, seeds)) + rng.normal(0, 1, (
                    studies, top + 2, seeds)) * (scale * SIGMA_D / math.sqrt(2))[None, :, None]
                values = np.round(raw * n_images) / n_images
                decided = stats.claims(values, top, 1 / n_images)
                row[name] = [round(float(decided["better"].any(1).mean()), 4),
                             round(float(decided["worse"].any(1).mean()), 4)]
                if name in ("one candidate 5x", "baseline 3x"):  # the textbook block analysis alone, for contrast
                    block = stats.block_variance(values, 2 * stats.rounding_variance(1 / n_images))
                    se = np.sqrt(block["sigma_d2"] / seeds)[:, None]
                    gap = values[:, 2:].mean(-1) - values[:, :1].mean(-1)
                    critical = stats.dunnett_critical(top, block["df"])
                    row[f"{name}, block alone"] = [round(float((gap > critical * se).any(1).mean()), 4),
                                                   round(float((gap < -critical * se).any(1).mean()), 4)]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def markdown(report: dict) -> str:
    lines = []
    if report.get("grid"):
        lines += ["| K | S | false claims (better / worse), null | MC se | power +1 / +2 sigma_d (chain) | claimed "
                  "winner's estimate bias, null (raw mean's), sigma_d | the same at +2 sigma_d |",
                  "|---|---|---|---|---|---|---|"]
        for row in report["grid"]:
            fmt = lambda v: "-" if v is None else f"{v:+.2f}"  # noqa: E731
            lines.append(f"| {row['K']} | {row['S']} | {100 * row['false_claim_rate']:.1f} % / "
                         f"{100 * row['false_worse_rate']:.1f} % | {100 * row['false_claim_mc_se']:.1f} % | "
                         f"{100 * row['power_plus_1_sigma_d']:.0f} % / {100 * row['power_plus_2_sigma_d']:.0f} % | "
                         f"{fmt(row['winner_bias_sigma_d_null'])} ({fmt(row['winner_raw_bias_sigma_d_null'])}), "
                         f"{row['winners_null']} winners | {fmt(row['winner_bias_sigma_d_plus_2_sigma_d'])} "
                         f"({fmt(row['winner_raw_bias_sigma_d_plus_2_sigma_d'])}) |")
    if report.get("unequal"):
        lines += ["", "| unequal noise, null | K | S | false claims (better / worse) | MC se |", "|---|---|---|---|---|"]
        lines += [f"| {r['scenario']} | {r['K']} | {r['S']} | {100 * r['false_claim_rate']:.1f} % / "
                  f"{100 * r['false_worse_rate']:.1f} % | {100 * r['false_claim_mc_se']:.1f} % |"
                  for r in report["unequal"]]
    if report.get("power_line"):
        lines += ["", "| power line | K | S | stated detectable effect | predicted | simulated (MC se) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| | {r['K']} | {r['S']} | +{r['detectable_effect_pt']:.2f} pt | 80 % | "
                  f"{100 * r['simulated_power']:.1f} % ({100 * r['mc_se']:.1f} %) |" for r in report["power_line"]]
    if report.get("seed_effect"):
        lines += ["", "| large seed effect (5 pt), run noise 0.1 pt, +0.3 pt | K | S | tool's power | textbook block "
                  "analysis |", "|---|---|---|---|---|"]
        lines += [f"| | {r['K']} | {r['S']} | {100 * r['tool_power']:.1f} % | {100 * r['block_power']:.1f} % |"
                  for r in report["seed_effect"]]
    if report.get("collapse"):
        lines += ["", "| collapse (one run at 12 %, K 5, S 3) | result |", "|---|---|"]
        for r in report["collapse"]:
            if "studies_with_a_run_flagged" in r:
                lines.append(f"| {r['scenario']} | a run flagged as collapsed in {r['studies_with_a_run_flagged']} "
                             f"of {r['studies']} studies |")
                continue
            text = f"collapsed arm won {r['collapsed_arm_won']} of {r['studies']}"
            if r["false_claim_rate"] is not None:
                text += f"; false claims {100 * r['false_claim_rate']:.1f} %"
            if r["planted_power"] is not None:
                text += (f"; the +2 sigma_d arm claimed {100 * r['planted_power']:.1f} % (without the collapse "
                         f"{100 * r['planted_power_without_collapse']:.1f} %)")
            text += (f"; median sigma_d {r['median_sigma_d_pt']:.2f} pt (without "
                     f"{r['median_sigma_d_pt_without_collapse']:.2f})")
            lines.append(f"| {r['scenario']} | {text} |")
    if report.get("null_vectorised"):
        names = [key for key in report["null_vectorised"][0] if key not in ("K", "S", "studies")]
        lines += ["", f"| K | S | {' | '.join(names)} |", "|---|---|" + "---|" * len(names)]
        lines += [f"| {r['K']} | {r['S']} | " + " | ".join(f"{100 * r[n][0]:.1f} / {100 * r[n][1]:.1f} %"
                                                         for n in names) + " |" for r in report["null_vectorised"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.verdict_calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=positive_int, default=2000, help="simulated studies per cell and "
                        "scenario (default 2000)")
    parser.add_argument("--images", type=positive_int, default=144, help="validation images an accuracy is "
                        "counted on (default 144, the digits split: coarse steps, many ties)")
    parser.add_argument("--tops", type=positive_int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--seeds", type=positive_int, nargs="+", default=[2, 3, 5, 10])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run "
                        "(default all)")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report: dict = {"cpu": cpu_info(), "images": args.images, "sigma_d": SIGMA_D, "seed_sd": SEED_SD,
                    "divergence": DIVERGE, "candidates_searched": 30, "studies": args.studies}
    sections = {"grid": lambda: grid(args.studies, args.images, args.tops, args.seeds),
                "unequal": lambda: unequal(args.studies, args.images),
                "power_line": lambda: power_line(args.studies, args.images),
                "seed_effect": lambda: seed_effect(args.studies),
                "collapse": lambda: collapse(args.studies, args.images),
                "null_vectorised": lambda: null_vectorised(10 * args.studies, args.images, args.tops, args.seeds)}
    for name in args.only:
        report[name] = sections[name]()
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.output:
        write_json_atomic(args.output, report)
    print(markdown(report))
    print(f"{report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
