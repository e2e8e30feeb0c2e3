"""Does a cheap proxy rank shortcut schedules as the target budget does? Measured on real CIFAR-10.

    python -m benchmarks.proxy_fidelity --data-dir CIFAR_FOLDER --output proxy-fidelity.json

Trains N schedules (the baseline, the paper's four, random draws from the search's default space) once at a proxy
budget (default ResNet-8, 4000 images, 4 epochs: what a cheap search would train) and on S seeds at a target budget
(default ResNet-20, 8000 images, 8 epochs, 2 seeds), on the fixed 45k/5k split, judged on validation. Reports
Kendall's tau between the proxy's ranking and the target's mean over seeds, with its permutation p-value and a
bootstrap interval over schedules, the reference level (one target seed against the mean of the others: what one
more target run reaches; a reference, not a ceiling, which an equally good proxy beats about half the time), and the cost ratio (seconds of training at each budget, measured in this run).
``--figure FILE.html`` also draws proxy against target (and a PNG beside it when Chromium and Playwright are
installed); ``--rows FILE.json`` reports again on the runs of an earlier output, without training.

``../shared/tools/cifar10_from_jpeg.py OUT_DIR`` rebuilds CIFAR-10 in the official layout for ``--data-dir``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import optuna
from scipy import stats as scipy_stats

from common.cli import ArgumentParser, positive_int, run_command
from common.errors import UsageError
from common.files import write_json_atomic, write_text_atomic
from common.machine import cpu_info, package_versions, prepare_tensorflow
from models.schedules import FACTOR_BOUNDS, PAPER_PRESETS, block_count, preset
from search.evidence.stats import rank_agreement
from search.space import suggest_schedule
from training.config import TrainConfig
from training.data import load_dataset


def schedules(count: int, seed: int) -> list[tuple[str, object]]:
    """The baseline, the paper's four, then random draws from the search's default space (``--family any``)."""
    chosen = [("baseline", preset("baseline")), *((name, preset(name)) for name in PAPER_PRESETS)]
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    while len(chosen) < count:
        trial = sampler.ask()
        chosen.append((f"random-{len(chosen) - 4}", suggest_schedule(trial, "any", FACTOR_BOUNDS)))
        sampler.tell(trial, 0.0)
    return chosen[:count]


def train(schedule, depth: int, epochs: int, data, seed: int) -> dict:
    from training.loop import run  # TensorFlow, after prepare_tensorflow

    result = run(TrainConfig(depth=depth, epochs=epochs, precision="float32", seed=seed), schedule, data)
    return {"val_accuracy": None if result.diverged else result.final_val_accuracy,
            "seconds": round(result.wall_seconds, 1)}


def tau_interval(proxy: np.ndarray, target: np.ndarray, draws: int = 2000, seed: int = 0) -> list[float]:
    """A 95 % bootstrap interval of Kendall's tau over schedules (resampled with replacement)."""
    generator, taus = np.random.default_rng(seed), []
    for _ in range(draws):
        pick = generator.integers(0, len(proxy), len(proxy))
        tau = scipy_stats.kendalltau(proxy[pick], target[pick]).statistic
        if not np.isnan(tau):
            taus.append(tau)
    return [round(float(v), 3) for v in np.quantile(taus, [0.025, 0.975])]


def figure_html(rows: list[dict], agreement: dict, title: str) -> str:
    import plotly.graph_objects as go

    means = [100 * np.mean(row["target"]) for row in rows]
    figure = go.Figure(go.Scatter(
        x=[100 * row["proxy"] for row in rows], y=means, mode="markers+text", text=[row["name"] for row in rows],
        textposition="top center", marker=dict(size=10),
        error_y=dict(type="data", symmetric=False, array=[100 * max(row["target"]) - m for row, m in zip(rows, means)],
                     arrayminus=[m - 100 * min(row["target"]) for row, m in zip(rows, means)])))
    tau = "undefined" if not agreement or agreement["tau"] is None else f"{agreement['tau']:+.2f}"
    figure.update_layout(title=f"{title}: Kendall's tau {tau}", template="plotly_white",
                         width=900, height=560)
    figure.update_xaxes(title="proxy: validation accuracy (%, one run)")
    figure.update_yaxes(title="target: validation accuracy (%, mean and range over seeds)")
    return figure.to_html(include_plotlyjs=True, full_html=True)


def screenshot(html: Path, png: Path) -> bool:
    """The figure as a PNG through headless Chromium (Playwright), when both are installed."""
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 920, "height": 580})
            page.goto(html.absolute().as_uri())
            page.wait_for_selector(".main-svg")
            page.screenshot(path=str(png))
            browser.close()
        return True
    except Exception:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.proxy_fidelity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder of the CIFAR-10 archive or its extracted folder")
    parser.add_argument("--schedules", type=positive_int, default=10, help="schedules to train (default 10)")
    parser.add_argument("--proxy", type=positive_int, nargs=3, default=(8, 4000, 4), metavar=("DEPTH", "IMAGES",
                        "EPOCHS"), help="the proxy budget (default 8 4000 4)")
    parser.add_argument("--target", type=positive_int, nargs=3, default=(20, 8000, 8), metavar=("DEPTH", "IMAGES",
                        "EPOCHS"), help="the target budget (default 20 8000 8)")
    parser.add_argument("--target-seeds", type=positive_int, default=2, help="seeds at the target (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="the proxy's seed and the random draws' (default 0)")
    parser.add_argument("--output", help="write the JSON here")
    parser.add_argument("--figure", help="write the figure here (.html; a .png beside it with Chromium)")
    parser.add_argument("--rows", help="report on the runs of this earlier --output instead of training")
    args = parser.parse_args(argv)
    for depth in (args.proxy[0], args.target[0]):
        block_count(depth)
    if not args.data_dir and not args.rows:
        raise UsageError("data-dir: give the CIFAR-10 folder (or --rows to report on earlier runs)")
    started, rows = time.perf_counter(), []
    if args.rows:
        earlier = json.loads(Path(args.rows).read_text())
        rows = earlier["rows"]
        args.proxy, args.target = [[earlier[f"{kind}_budget"][key] for key in ("depth", "images", "epochs")]
                                   for kind in ("proxy", "target")]
        args.target_seeds = earlier["target_seeds"]
    else:
        prepare_tensorflow()
        proxy_data = load_dataset("cifar10", args.data_dir, args.proxy[1])
        target_data = load_dataset("cifar10", args.data_dir, args.target[1])
    for name, schedule in ([] if args.rows else schedules(args.schedules, args.seed)):
        proxy = train(schedule, args.proxy[0], args.proxy[2], proxy_data, args.seed)
        target = [train(schedule, args.target[0], args.target[2], target_data, args.seed + 2000 + i)
                  for i in range(args.target_seeds)]
        rows.append({"name": name, "schedule": schedule.to_dict(), "proxy": proxy["val_accuracy"],
                     "target": [run["val_accuracy"] for run in target], "proxy_seconds": proxy["seconds"],
                     "target_seconds": [run["seconds"] for run in target]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    complete = [row for row in rows if row["proxy"] is not None and None not in row["target"]]
    agreement = rank_agreement([row["proxy"] for row in complete], [row["target"] for row in complete])
    proxy_cost = float(np.mean([row["proxy_seconds"] for row in rows]))
    target_cost = float(np.mean([s for row in rows for s in row["target_seconds"]]))
    report = {
        "cpu": cpu_info(), "versions": package_versions(), "seconds": round(time.perf_counter() - started),
        "proxy_budget": dict(zip(("depth", "images", "epochs"), args.proxy)),
        "target_budget": dict(zip(("depth", "images", "epochs"), args.target)), "target_seeds": args.target_seeds,
        "agreement": agreement,
        "tau_interval95": tau_interval(np.array([row["proxy"] for row in complete]),
                                       np.array([np.mean(row["target"]) for row in complete])),
        "proxy_seconds_per_run": round(proxy_cost, 1), "target_seconds_per_run": round(target_cost, 1),
        "cost_ratio": round(target_cost / proxy_cost, 1), "rows": rows,
    }
    if args.output:
        write_json_atomic(args.output, report)
    if args.figure:
        path = write_text_atomic(args.figure, figure_html(complete, agreement, "Proxy against target, CIFAR-10"))
        report["png"] = screenshot(path, path.with_suffix(".png"))
    print(json.dumps({key: value for key, value in report.items() if key != "rows"}))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
