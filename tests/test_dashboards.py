"""Figures, the offline HTML report in a real Chromium, and optuna-dashboard over HTTP, on a real small study."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dashboards import figures, report_page
from commands import report
from dashboards.live import FIGURE_ID, VERDICT_FIGURE_ID, publish
from search import records
from search.evidence.verdict import summarise
from storage import open_storage
from commands import evaluate
from commands import run as search_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--depth", "8", "--dataset", "digits", "--subset", "200", "--epochs", "2", "--batch-size", "50",
        "--precision", "float32", "--seed", "1", "--pruner", "hyperband", "--confirm-top", "0"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A real search of 7 trials (4 of the warm start: the baseline on 2 seeds and the learned arms, no paper
    schedule fitting in 0.5-1.2; then 3 searched, of which hyperband prunes some) with a recorded 2-seed
    evaluation."""
    folder = tmp_path_factory.mktemp("study")
    url = f"sqlite:///{folder / 'search.db'}"
    assert search_run.main([*TINY, "--trials", "7", "--scale-range", "0.5", "1.2", "--baseline-seeds", "1",
                                   "--storage", url]) == 0
    assert evaluate.main(["--schedule", "paper-c10-r32", "--depth", "8", "--dataset", "digits", "--epochs", "1",
                          "--batch-size", "50", "--precision", "float32", "--seeds", "2",
                          "--output", str(folder / "evaluation.json"), "--storage", url,
                          "--study", "digits-resnet8", "--keep-models"]) == 0
    # a confirm stage's verdict on constructed accuracies (the stage itself runs in test_search): the report and
    # the dashboard draw it
    study = study_of(url)
    plan = [{"key": f"k{i}", "label": label, "schedule": {}, "source_trial": number, "candidate": i > 0,
             "rank_in_search": i or None, "proxy": 0.5 + 0.1 * i}
            for i, (label, number) in enumerate([("baseline", None), ("#3", 3), ("#4", 4)])]
    accuracy = {("k0", 0): 0.80, ("k0", 1): 0.82, ("k1", 0): 0.83, ("k1", 1): 0.86, ("k2", 0): 0.79,
                ("k2", 1): 0.84}
    summary = summarise(plan, [0, 1], accuracy, set(), 1 / 144, {"depth": 14, "epochs": 2, "subset": 200})
    summary["search_budget"] = {"depth": 8, "epochs": 2, "subset": 200}
    records.StudyKey.CONFIRMATION.write(study, summary)
    publish(open_storage(url), study.study_name, url)
    return url, folder


def study_of(url):
    return optuna.load_study(study_name="digits-resnet8", storage=url)


def test_schedule_figure_draws_the_baseline_at_one_and_the_blocks():
    figure = figures.schedule_figure([("paper-c10-r32", figures.preset("paper-c10-r32"))], depth=32)
    baseline = figure.data[0]
    assert list(baseline.y) == [1.0, 1.0] and list(baseline.x) == [1.0, 15.0]
    curve, blocks = figure.data[1], figure.data[2]
    assert min(curve.x) == 1.0 and max(curve.x) == 15.0 and max(curve.y) == pytest.approx(1.3)
    assert list(blocks.x) == list(range(1, 16)) and list(blocks.y) == pytest.approx(
        figures.preset("paper-c10-r32").values(32))
    assert tuple(figure.layout.xaxis.range) == (0.7, 15.3)


def test_study_figures_show_the_study(searched):
    url, _ = searched
    study = study_of(url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert complete and pruned  # a seeded search of this size has both

    schedules = figures.study_schedule_figure(study)
    names = [trace.name for trace in schedules.data]
    assert "baseline f = 1" in names and "paper-c10-r32" in names
    assert any(name.startswith(f"#{max(complete, key=lambda t: t.value).number} ") for name in names)
    # the learned arms ran on the full budget, recorded what they learned, and the figure draws it per block
    arms = {t.user_attrs["preset"]: t for t in complete if t.user_attrs.get("preset") in ("learned", "skipinit")}
    assert set(arms) == {"learned", "skipinit"} and all(t.user_attrs["epochs_run"] == 2 for t in arms.values())
    learned = next(trace for trace in schedules.data if "learned shortcut factor" in trace.name)
    assert list(learned.x) == [1.0, 8.0, 15.0] and list(learned.y) == arms["learned"].user_attrs["learned_values"]
    assert any("learned branch scalar" in name for name in names)
    assert not arms["learned"].params  # no point of the search space: the sampler learns nothing from it

    history = figures.history_figure(study)
    baseline = next(t for t in complete if t.user_attrs.get("preset") == "baseline")
    lines = [shape for shape in history.layout.shapes if shape.type == "line"]
    assert [shape.y0 for shape in lines] == [pytest.approx(100 * baseline.value)]
    assert [shape.type for shape in history.layout.shapes].count("rect") == 1  # the baseline's band over 2 seeds
    assert len(history.data[0].x) == len(complete)

    losses = figures.training_curves_figure(study)
    assert len(losses.data) == len([t for t in complete + pruned if t.user_attrs.get("train_loss")]) > 0
    curves = figures.learning_curves_figure(study)
    dotted = [trace for trace in curves.data if trace.line.dash == "dot"]
    assert len(dotted) == len([t for t in pruned if t.intermediate_values])
    assert all(trace.marker.symbol[-1] == "x" for trace in dotted)

    family = figures.family_figure(study)
    assert sum(len(trace.y) for trace in family.data) == len(complete)

    table = figures.top_trials_table(study)
    assert list(table.data[0].cells.values[0]) == [t.number for t in sorted(complete, key=lambda t: -t.value)]


def test_fidelity_figure_and_note_show_tau_per_epoch_the_rungs_and_the_noise_floor(tmp_path):
    from optuna.trial import create_trial

    from dashboards.live import study_note
    from search.config import SearchConfig
    from search.study import open_study
    from storage import open_storage

    url = f"sqlite:///{tmp_path / 'search.db'}"
    study = open_study(open_storage(url), SearchConfig(dataset="digits", depth=8, epochs=10), epochs=10)
    # eight trials whose order is reversed until epoch 5 and final from epoch 6 on; three baseline seeds
    for i in range(8):
        final = 0.50 + 0.05 * i
        curve = {e: (0.9 - final if e <= 5 else final) for e in range(1, 11)}
        attrs = {"preset": "baseline", "seed": [0, 1000, 1001][i], "replica": i > 0} if i < 3 else {}
        study.add_trial(create_trial(value=final, intermediate_values=curve, user_attrs=attrs))
    figure = figures.fidelity_figure(study)
    taus = list(figure.data[0].y)
    assert taus[:5] == [-1.0] * 5 and taus[5:] == [1.0] * 5
    assert sorted(shape.x0 for shape in figure.layout.shapes) == [6, 8]  # the default pruner's rungs
    note = study_note(study, url)
    assert "epoch 6 (rung): 1.0, epoch 8 (rung): 1.0" in note
    assert "sigma_d" in note and "the baseline's spread over 3 seeds" in note and "95th percentile" in note
    history = figures.history_figure(study)
    assert any("+- 1 sd over 3 seeds" in (a.text or "") for a in history.layout.annotations)


def test_a_note_the_user_wrote_survives_the_searchs_refreshes(tmp_path):
    from optuna.trial import create_trial
    from optuna_dashboard import get_note, save_note

    from dashboards.live import NOTE_BEGIN, publish
    from search.config import SearchConfig
    from search.study import open_study
    from storage import open_storage

    url = f"sqlite:///{tmp_path / 'search.db'}"
    storage = open_storage(url)
    study = open_study(storage, SearchConfig(dataset="digits", depth=8, epochs=1), epochs=1)
    study.add_trial(create_trial(value=0.5, user_attrs={"preset": "baseline", "schedule": {
        "family": "constant", "params": {"value": 1.0}}}))
    study.add_trial(create_trial(value=0.6, user_attrs={"schedule": {"family": "linear", "params": {
        "start": 1.2, "end": 0.9}}}))
    save_note(study, "My remarks: the lr looks too high.")  # typed in optuna-dashboard before the search wrote
    publish(storage, study.study_name, url)
    publish(storage, study.study_name, url)
    note = get_note(study)
    assert "My remarks: the lr looks too high." in note and note.count(NOTE_BEGIN) == 1 and "Best:" in note
    save_note(study, note + "\n\nA second remark.")
    publish(storage, study.study_name, url)
    assert "A second remark." in get_note(study) and get_note(study).count("Best:") == 1


def test_importance_figure_ranks_the_parameters_that_matter():
    study = optuna.create_study(direction="maximize")
    for start in (0.5, 0.7, 0.9, 1.1, 1.3, 1.5):
        for end in (0.6, 1.4):
            study.add_trial(optuna.trial.create_trial(
                params={"family": "linear", "start": start, "end": end},
                distributions={"family": optuna.distributions.CategoricalDistribution(["linear"]),
                               "start": optuna.distributions.FloatDistribution(0.5, 1.5),
                               "end": optuna.distributions.FloatDistribution(0.5, 1.5)},
                value=start + 0.001 * end, user_attrs={"family": "linear"}))
    bars = figures.importance_figure(study).data
    assert [trace.name for trace in bars] == ["linear"]
    importance = dict(zip(bars[0].y, bars[0].x))
    assert importance["start"] > 0.9 > importance["end"]

    few = optuna.create_study(direction="maximize")
    few.add_trials(study.trials[:2])
    empty = figures.importance_figure(few)
    assert not empty.data and "not enough" in empty.layout.annotations[0].text


def test_evaluation_figure_shows_seeds_and_the_interval(searched):
    _, folder = searched
    record = json.loads((folder / "evaluation.json").read_text())
    figure = figures.evaluation_figure(record)
    bars = [trace for trace in figure.data if trace.type == "bar"]
    assert [trace.name for trace in bars] == ["baseline", record["arms"][0]["name"]]
    assert list(bars[1].y) == pytest.approx([100 * v for v in record["schedule_test_accuracy"]])
    mean = figure.data[-1]
    assert mean.y[0] == pytest.approx(100 * record["difference_mean"])
    assert mean.y[0] + mean.error_y.array[0] == pytest.approx(100 * record["difference_ci95"][1])


def test_search_keeps_its_schedule_figure_and_note_on_the_study(searched):
    url, _ = searched
    study = study_of(url)
    from optuna_dashboard import get_note

    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    assert any(key.startswith(f"dashboard:plot_data:{FIGURE_ID}:") for key in system_attrs)
    note = get_note(study)
    assert "Best:" in note and "Baseline" in note and "shortcut-search export" in note


def _chromium():
    path = shutil.which("chromium")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/services should have installed it")
        pytest.skip("no chromium")
    return path


def test_report_renders_every_figure_offline_in_chromium(searched, tmp_path):
    from playwright.sync_api import sync_playwright

    url, _ = searched
    output = tmp_path / "report.html"
    assert report.main(["--storage", url, "--output", str(output)]) == 0
    assert "report.html" in [meta.filename for meta in optuna.artifacts.get_all_artifact_meta(study_of(url))]
    page_html = output.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page_html)  # plotly.js is inline, nothing is fetched
    drawn = report_page.report_figures(study_of(url))
    expected = len(drawn)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        problems, requests = [], []
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(output.as_uri())
        page.wait_for_function(
            "n => [...document.querySelectorAll('.js-plotly-plot')].filter(d => d.querySelector('.main-svg'))"
            ".length === n", arg=expected, timeout=60_000)
        marks = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].map(plot =>
            plot.querySelectorAll('.scatterlayer path.js-line, .scatterlayer path.point, .boxlayer path.box,'
              + ' .barlayer path, .table .cell-text').length)""")
        notes = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].map(plot =>
            [...plot.querySelectorAll('.annotation-text')].map(text => text.textContent).join(' '))""")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert len(marks) == expected
    for figure, count, note in zip(drawn, marks, notes):
        if figure.data:
            assert count > 0, (figure.layout.title.text, marks)
        else:  # a figure with nothing to show yet (few complete trials on this machine) says why
            assert "not enough" in note, (figure.layout.title.text, note)
    assert problems == []
    assert all(request.startswith("file://") for request in requests), requests
    assert (tmp_path / "report.png").stat().st_size > 10_000


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_optuna_dashboard_serves_the_study_and_its_figure(searched):
    url, _ = searched
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "commands.serve", "--storage", url, "--port", str(port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    summaries = json.load(response)["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.3)
        (summary,) = [s for s in summaries if s["study_name"] == "digits-resnet8"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}") as response:
            detail = json.load(response)
        graphs = {graph["id"]: graph for graph in detail["plotly_graph_objects"]}
        assert FIGURE_ID in graphs and VERDICT_FIGURE_ID in graphs
        verdict = json.loads(graphs[VERDICT_FIGURE_ID]["graph_object"])
        assert "Confirm stage" in verdict["layout"]["title"]["text"]
        figure = json.loads(graphs[FIGURE_ID]["graph_object"])
        assert any(trace.get("name") == "baseline f = 1" for trace in figure["data"])
        assert "Best:" in detail["note"]["body"]
        trial = next(t for t in detail["trials"] if t["state"] == "Complete")
        assert any(attr["key"] == "values" for attr in trial["user_attrs"])
        # the study's files and its best trials' models, listed and served from the artifact store
        files = [a["filename"] for a in detail["artifacts"]]  # (and the report, once written)
        assert "evaluation.json" in files and "seed-10001-paper-c10-r32.keras" in files  # evaluate --keep-models
        models = [(t["trial_id"], a) for t in detail["trials"] for a in t["artifacts"]]
        candidates = [t for t in study_of(url).get_trials(states=(TrialState.COMPLETE,))
                      if t.user_attrs.get("preset") not in ("baseline", "learned", "skipinit")]
        assert len(models) == min(5, len(candidates)) > 0  # only candidates keep models, references never
        assert all(re.fullmatch(r"trial-\d{4}\.keras", a["filename"]) for _, a in models)
        trial_id, model = models[0]
        address = f"http://127.0.0.1:{port}/artifacts/{summary['study_id']}/{trial_id}/{model['artifact_id']}"
        with urllib.request.urlopen(address) as response:
            assert response.read(2) == b"PK"  # a .keras file is a zip archive
    finally:
        server.terminate()
        server.wait(timeout=30)
