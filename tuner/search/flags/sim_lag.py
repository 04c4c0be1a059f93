"""Honest simulated measurements: a trial whose simulator fell behind its own model by more than
SIM_LAG_LIMIT (its event loop could not keep up with --time-scale on a busy machine, so latencies came out
inflated) is measured again at half the time scale; if it still lags, it is marked (a warning on the
console; the fraction stays in the stored /server_info).

It decides nothing about scores and launches nothing itself: the caller hands in how to run a trial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from tuner.runtime.engines.sim import SIM_LAG_LIMIT, lag_note, sim_lag_fraction

MIN_TIME_SCALE = 1.0  # below real time a re-run would only be slower, not more faithful
S = TypeVar("S")  # TrialSettings (engine, engine_options)
O = TypeVar("O")  # TrialOutcome (server_info)


def lagged(outcome: Any) -> float | None:
    """The simulator's lag fraction of a trial outcome when it is beyond the limit, else None."""
    lag = sim_lag_fraction(getattr(outcome, "server_info", None))
    return lag if lag is not None and lag > SIM_LAG_LIMIT else None


def measure_without_lag(settings: S, run: Callable[[S], O], log: Callable[[str], None] | None = None) -> O:
    """run(settings); when the simulator lagged beyond the limit, run again at half --time-scale (once, not
    below real time) and keep that outcome. A lag left over is reported on `log`."""
    outcome = run(settings)
    if getattr(settings, "engine", None) != "sim":
        return outcome
    lag = lagged(outcome)
    if lag is None:
        return outcome
    options = dict(getattr(settings, "engine_options", {}) or {})
    scale = float(options.get("time_scale", 1.0))
    if scale / 2 >= MIN_TIME_SCALE:
        if log is not None:
            log(f"  {lag_note(lag, scale)}; measuring again at --time-scale {scale / 2:g}")
        slower = replace(settings, engine_options={**options, "time_scale": scale / 2})  # type: ignore[type-var]
        outcome, scale = run(slower), scale / 2
        lag = lagged(outcome)
    if lag is not None and log is not None:
        log(f"  marked: {lag_note(lag, scale)}")
    return outcome
