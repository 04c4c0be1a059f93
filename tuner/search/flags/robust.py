"""Robust scores: the best candidates of a search (and the baseline) are measured again, several load
searches in one launch each, and ranked by median - 1.4826 * MAD of their goodput, so one lucky
measurement does not win. Also the gain over the baseline with its spread.

Pure statistics over goodput samples; the re-measuring itself is done by study.py through an evaluator.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

MAD_SCALE = 1.4826  # makes the MAD estimate a normal distribution's standard deviation


@dataclass(frozen=True)
class RobustScore:
    samples: tuple[float, ...]
    median: float
    mad: float
    sigma: float  # 1.4826 * MAD
    score: float  # median - sigma

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["samples"] = list(self.samples)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobustScore:
        return cls(tuple(data["samples"]), data["median"], data["mad"], data["sigma"], data["score"])


def robust_score(samples: Sequence[float]) -> RobustScore:
    """median - 1.4826 * MAD of `samples` (one sample: no spread known, score = the sample)."""
    if not samples:
        raise ValueError("robust_score needs at least one sample")
    values = [float(s) for s in samples]
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    sigma = MAD_SCALE * mad
    return RobustScore(tuple(values), median, mad, sigma, median - sigma)


@dataclass(frozen=True)
class Gain:
    """Relative gain of `best` over `baseline` (0.25 = +25%), with the range their spreads allow."""

    ratio: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.ratio * 100:+.1f}% (spread {self.low * 100:+.1f}% .. {self.high * 100:+.1f}%)"


def gain(best: RobustScore, baseline: RobustScore) -> Gain | None:
    """None when the baseline has no goodput to compare with (it met no SLO, or failed)."""
    if baseline.median <= 0:
        return None
    low_base = baseline.median + baseline.sigma
    high_base = max(baseline.median - baseline.sigma, 1e-12)
    return Gain(best.median / baseline.median - 1.0,
                (best.median - best.sigma) / low_base - 1.0,
                (best.median + best.sigma) / high_base - 1.0)
