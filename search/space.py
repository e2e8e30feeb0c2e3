"""The search space: define-by-run suggestions that turn an Optuna trial into a Schedule.

Parameter names carry their family (``linear_start``, ``peak_position``, ``spline_v3``, ...) so that TPE models
each family's parameters separately; with ``--family any`` the family itself is a categorical parameter and the
rest are conditional on it. Factors range over ``scale_range`` (default 0.5..1.5), a peak's position over
[2, 14], a spline's control values K over 3..7 and a step schedule's bins M over 2..15 (15 lets the paper's
CIFAR-100 steps be expressed exactly; one bin would be a constant, which is searched as its own family).
"""
from __future__ import annotations

from typing import Any

from models.schedules import FAMILIES, LEARNED, POSITION_BOUNDS, SPLINE_POINTS, STEP_BINS, Schedule

SEARCHED_FAMILIES = tuple(name for name in FAMILIES if name not in LEARNED)  # fixed schedules only
FAMILY_CHOICES = ("any", *SEARCHED_FAMILIES)
SEARCHED_STEP_BINS = (2, STEP_BINS[1])
_COUNT_PARAM = {"spline": "spline_points", "steps": "steps_bins"}
_COUNT_RANGE = {"spline": SPLINE_POINTS, "steps": SEARCHED_STEP_BINS}


def suggest_schedule(trial, family: str, scale_range: tuple[float, float]) -> Schedule:
    """Ask ``trial`` for a schedule of ``family`` (or, for ``any``, of a suggested family)."""
    if family == "any":
        family = trial.suggest_categorical("family", SEARCHED_FAMILIES)
    lo, hi = scale_range
    factor = lambda name: trial.suggest_float(f"{family}_{name}", lo, hi)  # noqa: E731
    if family == "constant":
        params = {"value": factor("value")}
    elif family == "linear":
        params = {"start": factor("start"), "end": factor("end")}
    elif family == "peak":
        params = {"position": trial.suggest_float("peak_position", *POSITION_BOUNDS),
                  "height": factor("height"), "left": factor("left"), "right": factor("right")}
    else:
        count = trial.suggest_int(_COUNT_PARAM[family], *_COUNT_RANGE[family])
        params = {f"v{i}": factor(f"v{i}") for i in range(1, count + 1)}
    return Schedule(family, params)


def trial_params(schedule: Schedule, family: str) -> dict[str, Any] | None:
    """The trial parameters that make ``suggest_schedule`` rebuild ``schedule`` (for enqueueing warm starts).

    ``family`` is the study's family; a schedule of another family is re-expressed there when it is a constant
    (every family can be flat), else None: it is not in this study's space.
    """
    if family not in ("any", schedule.family):
        if schedule.family != "constant":
            return None
        schedule = _as_flat(schedule.params["value"], family)
    params: dict[str, Any] = {"family": schedule.family} if family == "any" else {}
    if schedule.family in _COUNT_PARAM:
        params[_COUNT_PARAM[schedule.family]] = len(schedule.params)
    params.update({f"{schedule.family}_{name}": value for name, value in schedule.params.items()})
    return params


def _as_flat(value: float, family: str) -> Schedule:
    if family == "linear":
        return Schedule("linear", {"start": value, "end": value})
    if family == "peak":
        return Schedule("peak", {"position": 8.0, "height": value, "left": value, "right": value})
    count = _COUNT_RANGE[family][0]
    return Schedule(family, {f"v{i}": value for i in range(1, count + 1)})
