"""The learned workload model: arrival rate over time, prompt/output length distributions, prefix-cache hit
ratio and speculative accept length, as frozen values with a JSON form and a content fingerprint.

Only values and the arithmetic on them (sampling, distances); reading metrics is `tuner.workload.fit`'s job.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tuner.errors import WorkloadError


@dataclass(frozen=True)
class LengthBin:
    """`weight` requests with a length in (low_tokens, high_tokens]; low == high is a point mass."""

    low_tokens: float
    high_tokens: float
    weight: float


@dataclass(frozen=True)
class LengthDistribution:
    """A token-length distribution as weighted bins (from an engine histogram, per-step counter means, or
    a request log). `mean_tokens` is the measured mean (the histogram's sum / count), not the bins'."""

    bins: tuple[LengthBin, ...]
    mean_tokens: float
    origin: str  # histogram | counter-means | request-log

    @property
    def total_weight(self) -> float:
        return sum(b.weight for b in self.bins)

    def sample(self, rng: random.Random) -> int:
        """One length in tokens (>= 1): a bin by weight, then uniform within it."""
        weights = [b.weight for b in self.bins]
        b = rng.choices(self.bins, weights=weights)[0]
        if b.high_tokens <= b.low_tokens:
            return max(1, round(b.low_tokens))
        low = math.floor(b.low_tokens) + 1
        return max(1, rng.randint(low, max(low, math.floor(b.high_tokens))))

    def edges(self) -> list[float]:
        return sorted({e for b in self.bins for e in (b.low_tokens, b.high_tokens)})

    def mass_on(self, grid: Sequence[float]) -> list[float]:
        """Probability in each cell (grid[i-1], grid[i]] (cell 0 is (-inf, grid[0]]), spreading a bin
        uniformly over the cells it overlaps; `grid` must contain every edge of this distribution."""
        total = self.total_weight
        mass = [0.0] * len(grid)
        if total <= 0:
            return mass
        for b in self.bins:
            if b.high_tokens <= b.low_tokens:
                mass[bisect.bisect_left(grid, b.high_tokens)] += b.weight / total
                continue
            i = bisect.bisect_left(grid, b.low_tokens) + 1
            width = b.high_tokens - b.low_tokens
            while i < len(grid) and grid[i - 1] < b.high_tokens:
                overlap = min(grid[i], b.high_tokens) - max(grid[i - 1], b.low_tokens)
                mass[i] += b.weight / total * max(0.0, overlap) / width
                i += 1
        return mass


def js_divergence(a: LengthDistribution, b: LengthDistribution) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two length distributions on their common grid."""
    grid = sorted(set(a.edges()) | set(b.edges()))
    p, q = a.mass_on(grid), b.mass_on(grid)
    js = 0.0
    for pi, qi in zip(p, q, strict=True):
        m = (pi + qi) / 2
        if pi > 0:
            js += 0.5 * pi * math.log2(pi / m)
        if qi > 0:
            js += 0.5 * qi * math.log2(qi / m)
    return min(1.0, max(0.0, js))


@dataclass(frozen=True)
class LatencyHistogram:
    """Requests (or tokens, for ITL) per latency bucket over the window: `counts[i]` in
    (upper_s[i-1], upper_s[i]], the last count above the last edge."""

    upper_s: tuple[float, ...]
    counts: tuple[float, ...]

    def fraction_within(self, limit_s: float) -> float | None:
        """Share of observations <= limit_s, interpolating linearly inside a bucket; None when empty."""
        total = sum(self.counts)
        if total <= 0:
            return None
        below, low = 0.0, 0.0
        for high, count in zip(self.upper_s, self.counts, strict=False):
            if limit_s >= high:
                below += count
            elif limit_s > low:
                below += count * (limit_s - low) / (high - low)
            low = high
        return min(1.0, below / total)


@dataclass(frozen=True)
class WorkloadModel:
    """Traffic over one window, as an engine measured it. Rates are requests finished per second of wall
    time as the engine's clock saw it (a simulator at --time-scale N shows N times the modelled rate)."""

    engine: str  # sglang | vllm | unknown (request logs)
    window_start_s: float  # Unix time
    window_end_s: float
    step_s: float  # width of one rate-profile step
    num_requests: int
    rate_rps: float  # num_requests / window_s
    rate_profile_rps: tuple[float, ...]  # one rate per step
    burstiness: float  # index of dispersion of requests per step: variance / mean (Poisson: 1)
    prompt_tokens: LengthDistribution
    output_tokens: LengthDistribution
    prefix_cache_hit_ratio: float | None  # cached prompt tokens / prompt tokens
    spec_accept_length: float | None  # tokens per verify step (1 = no speculation benefit)
    ttft_s: LatencyHistogram | None = None
    itl_s: LatencyHistogram | None = None

    @property
    def window_s(self) -> float:
        return self.window_end_s - self.window_start_s

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkloadModel:
        try:
            def dist(d: dict[str, Any]) -> LengthDistribution:
                return LengthDistribution(tuple(LengthBin(**b) for b in d["bins"]), float(d["mean_tokens"]),
                                          d["origin"])

            def hist(d: dict[str, Any] | None) -> LatencyHistogram | None:
                return None if d is None else LatencyHistogram(tuple(d["upper_s"]), tuple(d["counts"]))

            return cls(**{**data, "rate_profile_rps": tuple(data["rate_profile_rps"]),
                          "prompt_tokens": dist(data["prompt_tokens"]),
                          "output_tokens": dist(data["output_tokens"]),
                          "ttft_s": hist(data.get("ttft_s")), "itl_s": hist(data.get("itl_s"))})
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkloadError(f"a stored workload model is not readable by this tuner ({exc})") from None

    def fingerprint(self) -> str:
        """sha256 of what a replay depends on (rates, lengths, prefix sharing, acceptance), 16 hex digits;
        the same traffic learned twice over the same window gives the same fingerprint."""
        content = {k: v for k, v in self.to_json().items() if k not in ("ttft_s", "itl_s")}
        text = json.dumps(content, sort_keys=True, default=_round)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _round(value: Any) -> Any:
    return round(value, 9) if isinstance(value, float) else str(value)


def histogram_from_values(values: Sequence[float], origin: str) -> LengthDistribution:
    """Exact lengths (a request log) as bins: each distinct length its own point while there are few,
    else geometric bins 10% wide."""
    if not values:
        raise WorkloadError("no lengths to build a distribution from")
    distinct = sorted(set(values))
    if len(distinct) <= 64:
        bins = tuple(LengthBin(v, v, float(values.count(v))) for v in distinct)
    else:
        edges = [max(0.0, distinct[0] - 1)]
        while edges[-1] < distinct[-1]:
            edges.append(max(edges[-1] + 1, math.ceil(edges[-1] * 1.1)))
        counts = [0] * (len(edges) - 1)
        for v in values:
            counts[max(0, bisect.bisect_left(edges, v) - 1)] += 1
        bins = tuple(LengthBin(edges[i], edges[i + 1], float(c)) for i, c in enumerate(counts) if c)
    return LengthDistribution(bins, sum(values) / len(values), origin)
