"""Summaries of a kernel sweep's results: gains over the engine's current choice and over its default."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from tuner.store.kernels import BestConfig


def geomean(values: Iterable[float]) -> float | None:
    """Geometric mean of positive values; None when there are none."""
    logs = [math.log(v) for v in values if v and v > 0]
    return math.exp(sum(logs) / len(logs)) if logs else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def sweep_summary(best: Mapping[int, BestConfig]) -> list[str]:
    """Closing lines from a sweep's stored best configs: geometric-mean gains over the engine's choice and over
    the default, the worst M against the engine's choice, and how many M kept it."""
    if not best:
        return ["no batch size has a tuned config yet"]
    over_engine = {m: _ratio(b.engine_latency_us, b.latency_us) for m, b in best.items()}
    over_default = [_ratio(b.default_latency_us, b.latency_us) for b in best.values()]
    kept = sum(bool(b.kept_engine_choice) for b in best.values())
    nan = float("nan")
    lines = [(f"{len(best)} batch sizes: geometric-mean gain x{geomean(g for g in over_engine.values() if g) or nan:.3f}"
              f" over what the engine runs today, x{geomean(g for g in over_default if g) or nan:.3f} over its default")]
    known = {m: g for m, g in over_engine.items() if g}
    if known:
        worst = min(known, key=lambda m: known[m])
        lines.append(f"worst M vs the engine's choice: M={worst} x{known[worst]:.3f}; {kept} M kept the engine's own "
                     "config (no candidate beat it beyond the noise)")
    return lines
