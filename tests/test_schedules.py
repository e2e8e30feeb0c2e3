import json
import math

import numpy as np
import pytest
from scipy.interpolate import PchipInterpolator

from models import schedules as s
from models.schedules import Schedule, load_schedule, preset, save_schedule

X = np.arange(1, 16)  # ResNet-32: x_l = l


@pytest.mark.parametrize("name, expected", [
    ("baseline", [1.0] * 15),
    ("he-half", [0.5] * 15),
    ("paper-c10-r32", [0.8 + 0.5 * (1 - abs(x - 8) / 7) for x in X]),
    ("paper-c10-r56", [1.3 - 0.4 * (x - 1) / 14 for x in X]),
    ("paper-c100-r32", [1, 1, 1, 1, 1, 0.75, 0.75, 1.45, 1.45, 1.45, 0.8, 0.8, 1, 1, 1]),
    ("paper-c100-r56", [1.25 - 0.4 * (x - 1) / 14 for x in X]),
])
def test_presets_reproduce_the_paper_at_every_block_of_resnet32(name, expected):
    assert s.positions(32).tolist() == X.tolist()
    assert preset(name).values(32) == pytest.approx(expected, abs=1e-12)


def test_paper_c10_r32_peaks_at_the_middle():
    values = preset("paper-c10-r32").values(32)
    assert values[7] == pytest.approx(1.3) and values[0] == values[-1] == pytest.approx(0.8)


@pytest.mark.parametrize("depth, blocks", [(8, 3), (20, 9), (32, 15), (56, 27), (110, 54)])
def test_positions_span_the_axis_at_any_depth(depth, blocks):
    x = s.positions(depth)
    assert len(x) == blocks == s.block_count(depth)
    assert x[0] == 1.0 and x[-1] == 15.0 and np.all(np.diff(x) > 0)


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_resampling_to_other_depths_keeps_the_shape(depth):
    x = s.positions(depth)
    assert preset("paper-c10-r56").values(depth) == pytest.approx(1.3 - 0.4 * (x - 1) / 14)
    peak = preset("paper-c10-r32").values(depth)
    assert max(peak) <= 1.3 + 1e-12 and peak[0] == peak[-1] == pytest.approx(0.8)
    steps = preset("paper-c100-r32").values(depth)
    # a block takes the value of the 15-bin step its x falls in
    bins = np.minimum(np.floor((x - 1) / 14 * 15).astype(int), 14)
    assert steps == [preset("paper-c100-r32").params[f"v{b + 1}"] for b in bins]


def test_spline_is_pchip_and_never_overshoots():
    rng = np.random.default_rng(1)
    for k in range(3, 8):
        control = rng.uniform(0.5, 1.5, k)
        schedule = s.spline(*control)
        x = np.linspace(1, 15, 401)
        y = schedule(x)
        assert y == pytest.approx(PchipInterpolator(np.linspace(1, 15, k), control)(x), abs=1e-12)
        assert control.min() - 1e-12 <= y.min() and y.max() <= control.max() + 1e-12
        assert schedule(np.linspace(1, 15, k)) == pytest.approx(control)


def test_steps_with_m_bins():
    schedule = s.steps(1.0, 2.0, 3.0)
    # bin edges at 1 + 14/3 and 1 + 28/3
    assert schedule([1.0, 5.66, 5.67, 10.33, 10.34, 15.0]).tolist() == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]


def test_json_round_trip_rebuilds_the_same_function(tmp_path):
    for name in s.PRESETS:
        path = save_schedule(preset(name), tmp_path / f"{name}.json", depth=56, study="demo", trial=3)
        document = json.loads(path.read_text())
        assert document["format"] == "resnet-shortcut-schedule" and document["version"] == 1
        assert document["depth"] == 56 and len(document["x"]) == len(document["values"]) == 27
        assert document["study"] == "demo" and document["trial"] == 3
        loaded = load_schedule(path)
        assert loaded == preset(name)
        assert loaded.values(110) == preset(name).values(110)
    assert Schedule.from_dict(preset("paper-c100-r32").to_dict()) == preset("paper-c100-r32")


@pytest.mark.parametrize("family, params, field", [
    ("wiggle", {}, "family"),
    ("linear", {"start": 1.0}, "end"),
    ("linear", {"start": 1.0, "end": 1.0, "slope": 2}, "slope"),
    ("constant", {"value": math.nan}, "value"),
    ("constant", {"value": math.inf}, "value"),
    ("constant", {"value": 0.0}, "value"),
    ("constant", {"value": -1.0}, "value"),
    ("constant", {"value": "1"}, "value"),
    ("peak", {"position": 15.0, "height": 1, "left": 1, "right": 1}, "position"),
    ("spline", {"v1": 1.0, "v2": 1.0}, "spline"),
    ("spline", {"v1": 1.0, "v2": 1.0, "v4": 1.0}, "v3"),
    ("steps", {f"v{i}": 1.0 for i in range(1, 17)}, "steps"),
])
def test_bad_schedules_name_the_field(family, params, field):
    with pytest.raises(ValueError, match=field):
        Schedule(family, params)


@pytest.mark.parametrize("depth", [0, 7, 9, 2, 31, -4, 32.0, "32", True])
def test_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match="depth"):
        preset("baseline").values(depth)


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset"):
        preset("paper-c10-r44")


@pytest.mark.parametrize("text, field", [
    ("{not json", "not valid JSON"),
    ('{"format": "something-else", "version": 1, "family": "constant", "params": {"value": 1}}', "format"),
    ('{"format": "resnet-shortcut-schedule", "version": 2, "family": "constant", "params": {"value": 1}}', "version"),
    ('{"format": "resnet-shortcut-schedule", "version": 1, "family": "constant", "params": {"value": NaN}}', "NaN"),
    ('{"format": "resnet-shortcut-schedule", "version": 1, "family": "constant", "params": {"value": -1}}', "value"),
    ('{"format": "resnet-shortcut-schedule", "version": 1, "family": "constant", "params": {"value": 1}, '
     '"depth": 8, "values": [1, 1, Infinity]}', "Infinity"),
    ('{"format": "resnet-shortcut-schedule", "version": 1, "family": "constant", "params": {"value": 1}, '
     '"depth": 8, "values": [1, 1, 0]}', "values"),
    ('{"format": "resnet-shortcut-schedule", "version": 1, "family": "constant", "params": {"value": 1}, '
     '"depth": 8, "values": [1, 1, 1.2]}', "values"),
    ('{"format": "resnet-shortcut-schedule", "version": 1, "params": {"value": 1}}', "family"),
    ('[1, 2]', "format"),
])
def test_bad_schedule_files_name_the_field(tmp_path, text, field):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=field):
        load_schedule(path)


def test_save_writes_nothing_for_bad_metadata(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_schedule(preset("baseline"), tmp_path / "x.json", values=[1])
    assert not list(tmp_path.iterdir())


def test_schedules_import_no_keras_or_tensorflow():
    import subprocess
    import sys

    code = "import sys, models.schedules; print(any(m.split('.')[0] in ('keras', 'tensorflow') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
