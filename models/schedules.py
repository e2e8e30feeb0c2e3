"""Shortcut-scaling schedules: the factor f(x) that multiplies each residual block's shortcut.

A CIFAR ResNet of depth 6n+2 has L = 3n residual blocks. Block l = 1..L sits at

    x_l = 1 + 14 * (l - 1) / (L - 1)

on the paper's fixed axis [1, 15] (for ResNet-32, L = 15 and x_l = l). A schedule is a function on that axis, so
one schedule transfers across depths: ``values(depth)`` samples it at that depth's block positions.

Families (every factor is > 0; default search bounds in ``FACTOR_BOUNDS`` / ``POSITION_BOUNDS``):

- ``constant(value)``
- ``linear(start, end)``: straight line from (1, start) to (15, end)
- ``peak(position, height, left, right)``: piecewise linear through (1, left), (position, height), (15, right),
  with 1 < position < 15
- ``spline(v1..vK)``, K = 3..7: control values at K evenly spaced x, joined by shape-preserving cubic (PCHIP)
  interpolation, which never overshoots the control values
- ``steps(v1..vM)``, M = 1..15: piecewise constant over M equal bins of [1, 15]; a block takes its bin's value

Two more, not searched but compared against (``LEARNED``): the network learns its own factors while it trains.

- ``learned()``: every block's shortcut factor is a trainable scalar starting at 1 (``values`` are these starting
  values); weight decay does not pull it towards 0
- ``skipinit()``: shortcut factor 1, and every block's residual branch F(x) is multiplied by a trainable scalar
  starting at 0 (De & Smith 2020), so the network starts as the identity function of its stem

NumPy and SciPy only, on purpose: the search, the exports and the dashboards use schedules without loading
TensorFlow.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from scipy.interpolate import PchipInterpolator

from common.errors import UsageError
from common.files import write_json_atomic

AXIS = (1.0, 15.0)
FORMAT = "resnet-shortcut-schedule"
VERSION = 1
FACTOR_BOUNDS = (0.5, 1.5)  # default search range of every factor (the paper's schedules lie in 0.75..1.45)
POSITION_BOUNDS = (2.0, 14.0)  # default search range of a peak's position on the axis
SPLINE_POINTS = (3, 7)  # K control values of a spline, inclusive
STEP_BINS = (1, 15)  # M bins of a step schedule, inclusive


def block_count(depth: int) -> int:
    """Residual blocks L = 3n of a CIFAR ResNet of depth 6n + 2 (n >= 1)."""
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 8 or (depth - 2) % 6:
        raise UsageError(f"depth: must be of the form 6n+2 with n >= 1 (8, 14, 20, 32, 56, 110, ...), got {depth!r}")
    return (int(depth) - 2) // 2


def positions(depth: int) -> np.ndarray:
    """Axis positions x_l of the L blocks of a ResNet of this depth, from 1 to 15."""
    count = block_count(depth)
    return AXIS[0] + (AXIS[1] - AXIS[0]) * np.arange(count) / (count - 1)


# --- the shapes -------------------------------------------------------------------------------------------------

def _constant(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    return np.full_like(x, p["value"])


def _linear(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    return np.interp(x, AXIS, [p["start"], p["end"]])


def _peak(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    return np.interp(x, [AXIS[0], p["position"], AXIS[1]], [p["left"], p["height"], p["right"]])


def _constant_one(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    return np.ones_like(x)


def _control_values(p: Mapping[str, float]) -> np.ndarray:
    return np.array([p[f"v{i}"] for i in range(1, len(p) + 1)], dtype=float)


def _spline(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    # shape-preserving (Fritsch-Carlson) cubic: slopes are zero where the data turns, so the curve stays within
    # each interval's end values and a factor never overshoots the control values the search chose
    y = _control_values(p)
    return PchipInterpolator(np.linspace(*AXIS, len(y)), y)(x)


def _steps(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    y = _control_values(p)
    bins = np.floor((x - AXIS[0]) / (AXIS[1] - AXIS[0]) * len(y)).astype(int)
    return y[np.clip(bins, 0, len(y) - 1)]


@dataclass(frozen=True)
class Family:
    """One shape of schedule: its evaluator and the names of its parameters."""

    name: str
    evaluate: Callable[[np.ndarray, Mapping[str, float]], np.ndarray]
    fixed_params: tuple[str, ...] = ()
    control_points: tuple[int, int] | None = None  # (min, max) count of v1..vK parameters, for spline and steps

    def check_params(self, params: Mapping[str, Any]) -> dict[str, float]:
        names = set(params)
        if self.control_points is None:
            expected = set(self.fixed_params)
        else:
            count = len(params)
            lo, hi = self.control_points
            if not lo <= count <= hi:
                raise UsageError(f"params: {self.name} takes {lo} to {hi} control values v1..vK, got {count}")
            expected = {f"v{i}" for i in range(1, count + 1)}
        if missing := sorted(expected - names):
            raise UsageError(f"params: {self.name} is missing parameter(s) {', '.join(missing)}")
        if extra := sorted(names - expected):
            raise UsageError(f"params: {self.name} has unexpected parameter(s) {', '.join(extra)}")
        checked = {}
        ordered = self.fixed_params or [f"v{i}" for i in range(1, len(expected) + 1)]
        for name in ordered:
            checked[name] = _finite_float(f"params.{name}", params[name])
            if name == "position":
                if not AXIS[0] < checked[name] < AXIS[1]:
                    raise UsageError(f"params.position: must lie strictly inside ({AXIS[0]:g}, {AXIS[1]:g}), "
                                     f"got {checked[name]!r}")
            elif checked[name] <= 0:
                raise UsageError(f"params.{name}: a shortcut factor must be > 0, got {checked[name]!r}")
        return checked


def _finite_float(field_name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UsageError(f"{field_name}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{field_name}: must be finite, got {value!r}")
    return float(value)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("constant", _constant, ("value",)),
        Family("linear", _linear, ("start", "end")),
        Family("peak", _peak, ("position", "height", "left", "right")),
        Family("spline", _spline, control_points=SPLINE_POINTS),
        Family("steps", _steps, control_points=STEP_BINS),
        Family("learned", _constant_one, ()),
        Family("skipinit", _constant_one, ()),
    )
}
LEARNED = ("learned", "skipinit")  # families whose factors the network learns; their values are the start


@dataclass(frozen=True)
class Schedule:
    """A family name plus its parameters: the function f(x) on the axis [1, 15]."""

    family: str
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise UsageError(f"family: unknown family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        if not isinstance(self.params, Mapping):
            raise UsageError(f"params: expected an object of named numbers, got {self.params!r}")
        object.__setattr__(self, "params", FAMILIES[self.family].check_params(self.params))

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        """f at axis positions x (any shape, values in [1, 15])."""
        return FAMILIES[self.family].evaluate(np.asarray(x, dtype=float), self.params)

    def values(self, depth: int) -> list[float]:
        """The L = (depth - 2) / 2 per-block factors of a ResNet of this depth, block 1 first."""
        return [float(v) for v in self(positions(depth))]

    @property
    def learned(self) -> bool:
        """True for ``learned`` and ``skipinit``: the network trains its own per-block scalars."""
        return self.family in LEARNED

    def describe(self) -> str:
        """Short human form, e.g. ``linear(start=1.3, end=0.9)``."""
        if self.family == "learned":
            return "learned(trainable shortcut factor per block, from 1)"
        if self.family == "skipinit":
            return "skipinit(trainable branch scalar per block, from 0)"
        return f"{self.family}(" + ", ".join(f"{k}={v:.4g}" for k, v in self.params.items()) + ")"

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Schedule":
        if not isinstance(data, Mapping):
            raise UsageError(f"schedule: expected an object with 'family' and 'params', got {type(data).__name__}")
        for key in ("family", "params"):
            if key not in data:
                raise UsageError(f"{key}: missing from the schedule")
        return cls(data["family"], data["params"])


def constant(value: float) -> Schedule:
    return Schedule("constant", {"value": value})


def linear(start: float, end: float) -> Schedule:
    return Schedule("linear", {"start": start, "end": end})


def peak(position: float, height: float, left: float, right: float) -> Schedule:
    return Schedule("peak", {"position": position, "height": height, "left": left, "right": right})


def spline(*control_values: float) -> Schedule:
    return Schedule("spline", {f"v{i}": v for i, v in enumerate(control_values, 1)})


def steps(*bin_values: float) -> Schedule:
    return Schedule("steps", {f"v{i}": v for i, v in enumerate(bin_values, 1)})


PRESETS: dict[str, Schedule] = {
    "baseline": constant(1.0),
    "he-half": constant(0.5),  # He et al. 2016's constant scaling, which hurts
    "paper-c10-r32": peak(8.0, 1.3, 0.8, 0.8),
    "paper-c10-r56": linear(1.3, 0.9),
    "paper-c100-r32": steps(1, 1, 1, 1, 1, 0.75, 0.75, 1.45, 1.45, 1.45, 0.8, 0.8, 1, 1, 1),
    "paper-c100-r56": linear(1.25, 0.85),
    "learned": Schedule("learned"),
    "skipinit": Schedule("skipinit"),
}
PAPER_PRESETS = ("paper-c10-r32", "paper-c10-r56", "paper-c100-r32", "paper-c100-r56")


def preset(name: str) -> Schedule:
    """A named schedule: ``baseline``, ``he-half``, one of the paper's four (``paper-c10-r32``, ...), or one of
    the learned arms ``learned`` and ``skipinit``."""
    if name not in PRESETS:
        raise UsageError(f"preset: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def paper_preset_for(dataset: str, depth: int) -> str | None:
    """The paper's schedule tuned for this dataset and depth, or the nearest depth's for the same dataset."""
    tag = {"cifar10": "c10", "cifar100": "c100"}.get(dataset, "c10")
    return f"paper-{tag}-r32" if depth <= 44 else f"paper-{tag}-r56"


# --- JSON files ----------------------------------------------------------------------------------------------

def schedule_document(schedule: Schedule, depth: int = 32, **metadata: Any) -> dict[str, Any]:
    """The versioned JSON document of a schedule realised at ``depth``, plus any metadata fields."""
    reserved = {"format", "version", "family", "params", "depth", "x", "values"} & set(metadata)
    if reserved:
        raise UsageError(f"metadata: {', '.join(sorted(reserved))} are reserved field names")
    return {
        "format": FORMAT,
        "version": VERSION,
        **schedule.to_dict(),
        "depth": depth,
        "x": [float(x) for x in positions(depth)],
        "values": schedule.values(depth),
        **metadata,
    }


def save_schedule(schedule: Schedule, path: str | os.PathLike, *, depth: int = 32, **metadata: Any) -> Path:
    """Write the schedule's JSON document atomically (a crash never leaves half a file)."""
    return write_json_atomic(path, schedule_document(schedule, depth, **metadata))


def parse_schedule_document(document: Any) -> Schedule:
    """Validate a loaded JSON document and rebuild its schedule; its stored values must match the rebuilt ones."""
    if not isinstance(document, dict):
        raise UsageError("format: expected a JSON object")
    if document.get("format") != FORMAT:
        raise UsageError(f"format: expected {FORMAT!r}, got {document.get('format')!r}")
    if document.get("version") != VERSION:
        raise UsageError(f"version: this tool reads version {VERSION}, got {document.get('version')!r}")
    schedule = Schedule.from_dict(document)
    if "values" in document:
        depth = document.get("depth")
        stored = document["values"]
        if not isinstance(stored, list):
            raise UsageError("values: expected a list of numbers")
        stored = [_finite_float(f"values[{i}]", v) for i, v in enumerate(stored)]
        if any(v <= 0 for v in stored):
            raise UsageError("values: every shortcut factor must be > 0")
        expected = schedule.values(depth)
        if len(stored) != len(expected) or not np.allclose(stored, expected, rtol=0, atol=1e-6):
            raise UsageError(f"values: do not match {schedule.describe()} at depth {depth}; was the file edited?")
    return schedule


def load_schedule(path: str | os.PathLike) -> Schedule:
    """Read a schedule JSON file written by ``save_schedule`` (or by ``shortcut-search export``)."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UsageError(f"schedule file: cannot read {path}: {error.strerror}") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise UsageError(f"schedule file: {path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    return parse_schedule_document(document)


def _reject_constant(name: str) -> float:
    raise UsageError(f"schedule file: {name} is not allowed; every number must be finite")


def resolve_schedule(name_or_path: str) -> Schedule:
    """A preset name, or else the path of a schedule JSON file (what ``--schedule`` takes)."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    if name_or_path.endswith(".json") or os.path.sep in name_or_path or Path(name_or_path).exists():
        return load_schedule(name_or_path)
    raise UsageError(f"schedule: {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file")
