"""A trial on a simulator that fell behind its model is measured again at half the time scale, and marked
when that does not help; real engines are left alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuner.search.flags.sim_lag import measure_without_lag


@dataclass(frozen=True)
class Settings:
    engine: str = "sim"
    engine_options: dict[str, Any] = field(default_factory=lambda: {"time_scale": 8.0, "gpu": "H200"})


@dataclass(frozen=True)
class Outcome:
    scale: float
    server_info: dict[str, Any]


def runner(lag_at: dict[float, float], calls: list[float]):
    def run(settings: Settings) -> Outcome:
        scale = settings.engine_options["time_scale"]
        calls.append(scale)
        return Outcome(scale, {"internal_states": [{"sim_lag_fraction": lag_at.get(scale, 0.0)}]})
    return run


def test_a_lagging_trial_is_measured_again_at_half_the_time_scale():
    calls: list[float] = []
    lines: list[str] = []
    outcome = measure_without_lag(Settings(), runner({8.0: 0.4, 4.0: 0.01}, calls), lines.append)
    assert calls == [8.0, 4.0] and outcome.scale == 4.0
    assert "40% behind its model at --time-scale 8" in lines[0] and "again at --time-scale 4" in lines[0]
    assert len(lines) == 1  # the re-run was clean: nothing marked


def test_lag_left_after_the_rerun_is_marked_and_time_scale_1_is_not_rerun():
    calls: list[float] = []
    lines: list[str] = []
    outcome = measure_without_lag(Settings(), runner({8.0: 0.4, 4.0: 0.2}, calls), lines.append)
    assert calls == [8.0, 4.0] and outcome.scale == 4.0 and lines[-1].startswith("  marked:")
    calls.clear()
    measure_without_lag(Settings(engine_options={"time_scale": 1.0}), runner({1.0: 0.3}, calls), lines.append)
    assert calls == [1.0] and "marked" in lines[-1]


def test_under_the_limit_or_on_a_real_engine_nothing_is_rerun():
    calls: list[float] = []
    measure_without_lag(Settings(), runner({8.0: 0.04}, calls))
    measure_without_lag(Settings(engine="sglang"), runner({8.0: 0.9}, calls))
    assert calls == [8.0, 8.0]
