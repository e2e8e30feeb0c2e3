"""The whole chain's power at equal compute, by simulation: does the search find a real gain, and does the verdict
then claim it, for each way of spending the same trainings?

    python -m benchmarks.search_power --studies 1000 --output search-power.json

Each simulated study draws its schedules from the tool's own search space (``search.space.suggest_schedule``,
``--family any``, factors in 0.5..1.5, realised at ResNet-32's 15 blocks), each trial through Optuna's own sampler
(``--sampler random``: a pool drawn once with ``RandomSampler``, the cheap default; ``tpe``: the search's own
multivariate TPE by ask and tell, which follows the values it is told). A trial's accuracy on seed s is

    0.80 + seed effect[s] (shared by every schedule on that seed) + g(values) + noise of sd sigma_d / sqrt(2),

rounded to the validation set's images, so a within-seed difference has sd sigma_d. The truth g:
``null`` (0 everywhere), ``bump1``/``bump2``/``bump3`` (+1/2/3 sigma_d at one schedule of the space, falling off
as a Gaussian of the root-mean-square distance between realised factors, with a width that puts 5 % of the space
within one width of the peak; the peak drawn where the baseline, f = 1, gets less than 1 % of it, so the planted
gain is a gain over the baseline) and ``ridge2`` (+2 sigma_d along a ridge of the mean factor). A schedule whose
largest factor is above 1.45 diverges (compounded over the blocks, as ResNet-56 at 1.5 reaches 3e5 at init).

Compute is counted in trainings (rung pruning aside, which cuts the search's cost alike for every strategy).
The strategies, each at the same trainings (a search of N trials, then a stage of R runs):

- ``today``: the search on one seed; its top K by raw value confirmed with the baseline and the paper's preset on
  S fresh seeds; the product's verdict (``search.evidence.verdict.summarise``);
- ``gp``: the same runs, but the K to confirm chosen by a Gaussian process (scikit-learn, RBF + white noise) fitted
  over every finished trial's realised factors, by posterior mean;
- ``race``: the product's racing confirm stage (``--confirm-budget``, ``search.evidence.race``): the GP's top 2 (``race.FIELD``)
  raced on fresh seeds, one seed a round, the baseline beside them, halving the field each round by mean paired
  difference; the survivor then tested against the baseline alone on seeds no round used (the product's verdict
  at K = 1), so the final test is valid whatever the rounds chose;
- ``two_seeds``: N/2 schedules each trained on two paired seeds, the baseline on both; the top K by mean paired
  difference confirmed as ``today``.

Reported per noise setting, truth and strategy: false winner claims (the null), the probability that the
exported winner is truly better than the baseline (g > 0.5 sigma_d), the exported schedule's true gain (in
sigma_d, averaged over every study: a "no winner" exports the best candidate, which a user is told not to adopt),
the trainings spent, and Monte-Carlo standard errors.
"""
from __future__ import annotations

import json
import math
import sys
import time
import warnings
import zlib
from typing import Sequence

import numpy as np
import optuna

from common.cli import ArgumentParser, positive_int, run_command
from common.files import write_json_atomic
from common.machine import cpu_info
from models.schedules import block_count
from search.evidence import race
from search.evidence.surrogate import posterior
from search.evidence.verdict import BEATS, summarise
from search.records import RunState
from search.space import suggest_schedule

DEPTH = 32
SCALE = (0.5, 1.5)
DIVERGES_ABOVE = 1.45  # the largest factor of a schedule that diverges
TRULY_BETTER = 0.5  # a winner is truly better when its true gain is above half a sigma_d
# measured noise: (sigma_d in accuracy, the seed effect's sd in accuracy, validation images, where from)
NOISE = {
    "gpu-full": (0.003, 0.0016, 5000, "PAPER.md: He et al.'s ResNet-110 spread over seeds 0.16 pt; one CIFAR-10 "
                 "accuracy's sampling error 0.25 pt at 93 %, so a paired difference ~0.3 pt"),
    "cpu-cifar": (0.03, 0.045, 5000, "benchmarks/README.md, ResNet-20, 5000 images, 15 epochs: the baseline "
                  "spreads 5.5 pt over 3 seeds, paired differences with it 2.5-5.7 pt"),
    "digits": (0.035, 0.02, 144, "the README's main job (digits, ResNet-8, 5 epochs): its power line's detectable "
               "+9.8 pt at K 5 x S 3 implies sigma_d ~3.5 pt; 144 validation images"),
}
STRATEGIES = ["today", "gp", "race", "two_seeds", "race-f1", "race-f3", "race-f5", "race-f10"]
TRUTHS = {"null": (0.0, "bump"), "bump1": (1.0, "bump"), "bump2": (2.0, "bump"), "bump3": (3.0, "bump"),
          "ridge2": (2.0, "ridge")}


def schedule_pool(count: int, seed: int) -> np.ndarray:
    """``count`` schedules of the search space drawn by Optuna's RandomSampler, realised at ResNet-32's blocks."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return np.array([suggest_schedule(study.ask(), "any", SCALE).values(DEPTH) for _ in range(count)])


class Truth:
    """g(values): a bump (or ridge) of ``height`` sigma_d at ``centre``, 5 % of ``pool`` within one width."""

    def __init__(self, height: float, shape: str, centre: np.ndarray, pool: np.ndarray):
        self.height, self.shape, self.centre = height, shape, centre
        self.width = float(np.quantile(self._distance(pool), 0.05)) or 1e-9

    def _distance(self, values: np.ndarray) -> np.ndarray:
        if self.shape == "ridge":
            return np.abs(values.mean(axis=-1) - self.centre.mean())
        return np.sqrt(((values - self.centre) ** 2).mean(axis=-1))

    def gain(self, values: np.ndarray) -> np.ndarray:
        """The true gain in sigma_d."""
        return self.height * np.exp(-0.5 * (self._distance(values) / self.width) ** 2)


class World:
    """One study's truth and noise: runs of schedules on seeds, as a real study's accuracies."""

    def __init__(self, rng: np.random.Generator, truth: Truth, noise: tuple):
        self.rng, self.truth = rng, truth
        self.sigma_d, seed_sd, self.images, _ = noise
        self.seed_sd, self.seed_effects = seed_sd, {}

    def run(self, values: np.ndarray, seed: int) -> float | None:
        """A run's validation accuracy, None when it diverged."""
        if values.max() > DIVERGES_ABOVE:
            return None
        if seed not in self.seed_effects:
            self.seed_effects[seed] = self.rng.normal(0, self.seed_sd)
        raw = (0.80 + self.seed_effects[seed] + self.sigma_d * self.truth.gain(values)
               + self.rng.normal(0, self.sigma_d / math.sqrt(2)))
        return float(np.round(raw * self.images) / self.images)


def search(world: World, draw, trials: int, seeds: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The search: ``trials`` trainings, the baseline first on each of ``seeds`` seeds, the rest schedules trained
    on every seed; each schedule's realised factors and mean paired difference with the baseline (NaN: diverged)."""
    ones = np.ones(block_count(DEPTH))
    baseline = [world.run(ones, seed) for seed in range(seeds)]
    schedules = (trials - seeds) // seeds
    values = np.array([draw(index) for index in range(schedules)])
    gains = np.full(schedules, np.nan)
    for index, row in enumerate(values):
        runs = [world.run(row, seed) for seed in range(seeds)]
        if None not in runs and None not in baseline:
            gains[index] = np.mean(np.subtract(runs, baseline))
        draw.tell(index, gains[index])
    return values, gains


def surrogate_ranking(values: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Indices of the finished schedules by the product's surrogate (``search.evidence.surrogate.posterior``: a
    Gaussian process over the realised factors), by posterior mean, best first."""
    done = np.flatnonzero(~np.isnan(gains))
    mean, _ = posterior(values[done], gains[done], values[done])
    return done[np.argsort(-mean, kind="stable")]


def confirm(world: World, values: np.ndarray, chosen: Sequence[int], seeds: list[int], reference: bool = True) -> dict:
    """The product's verdict on the baseline, with ``reference`` a paper-like reference (f = 1, as good as the
    baseline), and the ``chosen`` schedules on ``seeds``."""
    ones = np.ones(values.shape[1])
    arms = [{"key": "baseline", "label": "baseline", "schedule": {}, "source_trial": None, "candidate": False,
             "rank_in_search": None}]
    if reference:
        arms.append({"key": "paper", "label": "paper", "schedule": {}, "source_trial": None, "candidate": False,
                     "rank_in_search": None})
    arms += [{"key": f"c{index}", "label": f"#{index}", "schedule": {}, "source_trial": int(index),
              "candidate": True, "rank_in_search": rank} for rank, index in enumerate(chosen, 1)]
    rows = [ones] * (2 if reference else 1) + list(values[list(chosen)])
    accuracy = {(arm["key"], seed): world.run(row, seed) for arm, row in zip(arms, rows) for seed in seeds}
    return summarise(arms, seeds, accuracy, set(), 1 / world.images, {"depth": DEPTH})


def outcome(summary: dict, world: World, values: np.ndarray) -> dict:
    exported = summary["winner"] or summary["best"]
    ones = np.ones(values.shape[1])  # the gain over the baseline, which the truth may lift a little too
    gain = float(world.truth.gain(values[exported["source_trial"]]) - world.truth.gain(ones)) if exported else 0.0
    claimed = summary["verdict"]["outcome"] == BEATS
    return {"claimed": claimed, "truly_better": claimed and gain > TRULY_BETTER, "exported_gain": gain}


def race_stage(world: World, values: np.ndarray, ranking: np.ndarray, runs: int, first_seed: int,
               field_size: int = race.FIELD) -> dict:
    """The product's race (``search.evidence.race``: its layout and standing) on the ranking's top ``field_size``
    within the stage's ``runs``: rounds on fresh seeds, one seed a round with the baseline, the better half kept;
    then the survivor against the baseline alone on the seeds no round used."""
    field = [f"c{index}" for index in ranking[:field_size]]
    sizes, final = race.layout(len(field), runs)
    round_seeds = list(range(first_seed, first_seed + len(sizes)))
    final_seeds = list(range(first_seed + len(sizes), first_seed + len(sizes) + final))
    ones, results = np.ones(values.shape[1]), {}
    while True:
        now = race.standing(field, "baseline", round_seeds, final_seeds, results)
        rounds = [pair for pair in now.needed if pair not in results and pair[1] in round_seeds]
        if not rounds:
            break
        for key, seed in rounds:
            accuracy = world.run(ones if key == "baseline" else values[int(key[1:])], seed)
            results[(key, seed)] = (RunState.DONE, accuracy) if accuracy is not None else (RunState.DIVERGED, None)
    return confirm(world, values, [int(now.survivor[1:])], final_seeds, reference=False)


def study(rng: np.random.Generator, strategy: str, truth: Truth, noise: tuple, trials: int, top: int, seeds: int,
          pool: np.ndarray, sampler: str) -> dict:
    """One simulated study of ``strategy``; its outcome and the trainings it spent."""
    world = World(rng, truth, noise)
    draw = Draw(pool, rng) if sampler == "random" else TpeDraw(rng)
    stage = (top + 2) * seeds
    if strategy == "two_seeds":
        values, gains = search(world, draw, trials, seeds=2)
        chosen = np.flatnonzero(~np.isnan(gains))[np.argsort(-gains[~np.isnan(gains)])][:top]
        return {**outcome(confirm(world, values, chosen, list(range(2, 2 + seeds))), world, values),
                "trainings": trials + stage}
    values, gains = search(world, draw, trials)
    if strategy.startswith("race"):  # race-fN: a field of N instead of the product's race.FIELD
        field = int(strategy.partition("-f")[2] or race.FIELD)
        return {**outcome(race_stage(world, values, surrogate_ranking(values, gains), stage, 1, field), world,
                          values),
                "trainings": trials + stage}
    done = np.flatnonzero(~np.isnan(gains))
    chosen = surrogate_ranking(values, gains)[:top] if strategy == "gp" else done[np.argsort(-gains[done])][:top]
    return {**outcome(confirm(world, values, chosen, list(range(1, 1 + seeds))), world, values),
            "trainings": trials + stage}


class Draw:
    """The random sampler: schedules drawn from the pool (``tell`` ignored)."""

    def __init__(self, pool: np.ndarray, rng: np.random.Generator):
        self.order = rng.choice(len(pool), size=len(pool), replace=False)
        self.pool = pool

    def __call__(self, index: int) -> np.ndarray:
        return self.pool[self.order[index % len(self.pool)]]

    def tell(self, index: int, value: float) -> None:
        pass


class TpeDraw:
    """The search's own sampler: multivariate, grouped TPE, told each schedule's paired difference."""

    def __init__(self, rng: np.random.Generator):
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sampler = optuna.samplers.TPESampler(seed=int(rng.integers(2 ** 31)), multivariate=True, group=True)
        self.study, self.trials = optuna.create_study(direction="maximize", sampler=sampler), {}

    def __call__(self, index: int) -> np.ndarray:
        self.trials[index] = self.study.ask()
        return suggest_schedule(self.trials[index], "any", SCALE).values(DEPTH)

    def tell(self, index: int, value: float) -> None:
        trial = self.trials.pop(index)
        if np.isnan(value):
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, float(value))


def cell(strategy: str, truth_name: str, noise_name: str, trials: int, top: int, seeds: int, studies: int,
         pool: np.ndarray, sampler: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    height, shape = TRUTHS[truth_name]
    outcomes = []
    trainable = pool[pool.max(axis=1) <= DIVERGES_ABOVE]  # a peak the search can reach
    ones = np.ones(pool.shape[1])
    for _ in range(studies):
        truth = Truth(height, shape, trainable[rng.integers(len(trainable))], pool)
        while truth.gain(ones) > 0.01 * height:  # a peak the baseline shares is no gain over it: away from f = 1
            truth = Truth(height, shape, trainable[rng.integers(len(trainable))], pool)
        outcomes.append(study(rng, strategy, truth, NOISE[noise_name], trials, top, seeds, pool, sampler))
    claimed = np.mean([o["claimed"] for o in outcomes])
    better = np.mean([o["truly_better"] for o in outcomes])
    gains = np.array([o["exported_gain"] for o in outcomes])
    return {"strategy": strategy, "truth": truth_name, "noise": noise_name, "sampler": sampler, "trials": trials,
            "K": top, "S": seeds, "studies": studies, "trainings": outcomes[0]["trainings"],
            "claims": round(float(claimed), 4), "claims_se": round(math.sqrt(max(claimed * (1 - claimed), 0.0475)
                                                                              / studies), 4),
            "truly_better": round(float(better), 4),
            "truly_better_se": round(math.sqrt(max(better * (1 - better), 0.0475) / studies), 4),
            "exported_gain_sigma_d": round(float(gains.mean()), 3),
            "exported_gain_se": round(float(gains.std(ddof=1) / math.sqrt(studies)), 3)}


def markdown(rows: list[dict]) -> str:
    lines = ["| noise | truth | strategy | trials + stage | studies | winner claimed | truly better winner | "
             "exported gain (sigma_d) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['noise']} | {row['truth']} | {row['strategy']} | {row['trials']} + "
                     f"{row['trainings'] - row['trials']} | {row['studies']} | {100 * row['claims']:.1f} % "
                     f"(+-{100 * row['claims_se']:.1f}) | {100 * row['truly_better']:.1f} % "
                     f"(+-{100 * row['truly_better_se']:.1f}) | {row['exported_gain_sigma_d']:+.2f} "
                     f"(+-{row['exported_gain_se']:.2f}) |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.search_power", description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=positive_int, default=1000, help="simulated studies a cell (default 1000)")
    parser.add_argument("--trials", type=positive_int, nargs="+", default=[200], help="search trials (default 200: "
                        "the README's real job); 100 measures the same strategies at half the search")
    parser.add_argument("--top", type=positive_int, default=5, help="K (default 5)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="S (default 3)")
    parser.add_argument("--strategies", nargs="+", default=["today", "gp", "race", "two_seeds"],
                        choices=STRATEGIES, help="race-fN: the race with a field of N (the product's: "
                        f"{race.FIELD}); default today gp race two_seeds")
    parser.add_argument("--truths", nargs="+", default=list(TRUTHS), choices=list(TRUTHS))
    parser.add_argument("--noise", nargs="+", default=["cpu-cifar"], choices=list(NOISE))
    parser.add_argument("--sampler", default="random", choices=["random", "tpe"],
                        help="random: a pool drawn once by Optuna's RandomSampler (fast); tpe: the search's own "
                             "TPE by ask and tell (slow: use fewer --studies)")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    started, rows = time.perf_counter(), []
    pool = schedule_pool(20_000, seed=0)
    for noise in args.noise:
        for trials in args.trials:
            for truth in args.truths:
                for number, strategy in enumerate(args.strategies):
                    rows.append(cell(strategy, truth, noise, trials, args.top, args.seeds, args.studies, pool,
                                     args.sampler, seed=zlib.crc32(f"{noise}/{trials}/{truth}".encode()) + number))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = {"cpu": cpu_info(), "noise": {name: NOISE[name] for name in args.noise}, "depth": DEPTH,
              "diverges_above": DIVERGES_ABOVE, "truly_better_above_sigma_d": TRULY_BETTER, "rows": rows,
              "seconds": round(time.perf_counter() - started, 1)}
    if args.output:
        write_json_atomic(args.output, report)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
