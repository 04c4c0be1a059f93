"""Summaries of a kernel sweep's results: gains over the engine's current choice and over its default."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from tuner.search.moe_batch import BatchResult


def geomean(values: Iterable[float]) -> float | None:
    """Geometric mean of positive values; None when there are none."""
    logs = [math.log(v) for v in values if v and v > 0]
    return math.exp(sum(logs) / len(logs)) if logs else None


def sweep_summary(results: Sequence[BatchResult]) -> list[str]:
    """Closing lines: geometric-mean gains, the worst M against the engine's choice, how many M kept it."""
    if not results:
        return ["no batch size was swept"]
    over_engine = [r.gain_over_engine for r in results if r.gain_over_engine]
    over_default = [r.gain_over_default for r in results if r.gain_over_default]
    kept = sum(r.kept_engine_choice for r in results)
    nan = float("nan")
    lines = [(f"{len(results)} batch sizes: geometric-mean gain x{geomean(over_engine) or nan:.3f} over "
              f"what the engine runs today, x{geomean(over_default) or nan:.3f} over its default")]
    if over_engine:
        worst = min(results, key=lambda r: r.gain_over_engine or math.inf)
        lines.append(f"worst M vs the engine's choice: M={worst.batch_size} x{worst.gain_over_engine:.3f}; "
                     f"{kept} M kept the engine's own config (no candidate beat it beyond the noise)")
    return lines
