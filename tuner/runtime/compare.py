"""Engine-side figures for one trial (from a /metrics delta and sampled gauges) and their comparison with
what the client measured, with a warning where the two disagree by more than the histogram's resolution.

Pure computation over scraper and summary outputs; it fetches nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tuner.runtime.engines.base import Engine
from tuner.runtime.loadgen.summary import ClientSummary
from tuner.runtime.scraper import Delta, GaugeStat, HistogramCounts


@dataclass(frozen=True)
class Quantile:
    """An engine-side quantile and the edges of the bucket it was interpolated in."""

    value_s: float
    bucket_low_s: float
    bucket_high_s: float

    @property
    def resolution_s(self) -> float:
        return self.bucket_high_s - self.bucket_low_s


@dataclass(frozen=True)
class EngineFigures:
    """The engine's own view of the measured window. None means the engine does not export the metric;
    its name is then listed in `missing`."""

    window_s: float
    ttft_p50: Quantile | None
    ttft_p99: Quantile | None
    ttft_mean_s: float | None
    itl_p50: Quantile | None
    itl_p99: Quantile | None
    itl_mean_s: float | None
    e2e_p50: Quantile | None
    e2e_p99: Quantile | None
    e2e_mean_s: float | None
    queue_p50: Quantile | None
    queue_p99: Quantile | None
    requests: float | None
    prompt_tokens: float | None
    generation_tokens: float | None
    cached_tokens: float | None
    cache_hit_rate: float | None  # cached / prompt tokens over the window
    prompt_tokens_per_s: float | None
    generation_tokens_per_s: float | None
    gauges: Mapping[str, GaugeStat | None] = field(default_factory=dict)  # concept -> mean/max during load
    spec_accept_length: float | None = None
    missing: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _quantile(h: HistogramCounts | None, q: float) -> Quantile | None:
    if h is None:
        return None
    value = h.quantile(q)
    bucket = h.bucket_of_quantile(q)
    if value is None or bucket is None:
        return None
    return Quantile(value, bucket[0], bucket[1])


def engine_figures(d: Delta, engine: Engine, *, gauges: Mapping[str, GaugeStat | None] | None = None,
                   server_info: Mapping[str, Any] | None = None) -> EngineFigures:
    names = engine.metric_names
    missing: list[str] = []

    def hist(name: str | None) -> HistogramCounts | None:
        if name is None:
            return None
        h = d.histogram(name)
        if h is None:
            missing.append(name)
        return h

    def counter(name: str | None) -> float | None:
        if name is None:
            return None
        v = d.counter(name)
        if v is None:
            missing.append(name)
        return v

    ttft, itl, e2e, queue = (hist(names.ttft_histogram), hist(names.itl_histogram),
                             hist(names.e2e_histogram), hist(names.queue_histogram))
    prompt = counter(names.prompt_tokens_counter)
    gen = counter(names.generation_tokens_counter)
    cached = counter(names.cached_tokens_counter)
    requests = counter(names.requests_counter)
    window = d.duration_s
    gauge_stats = dict(gauges or {})
    for concept, gauge in names.gauges().items():
        if concept in gauge_stats and gauge_stats[concept] is None and not d.after.has(gauge.name):
            missing.append(gauge.name)
    return EngineFigures(
        window_s=window,
        ttft_p50=_quantile(ttft, 0.5), ttft_p99=_quantile(ttft, 0.99),
        ttft_mean_s=ttft.mean() if ttft else None,
        itl_p50=_quantile(itl, 0.5), itl_p99=_quantile(itl, 0.99), itl_mean_s=itl.mean() if itl else None,
        e2e_p50=_quantile(e2e, 0.5), e2e_p99=_quantile(e2e, 0.99), e2e_mean_s=e2e.mean() if e2e else None,
        queue_p50=_quantile(queue, 0.5), queue_p99=_quantile(queue, 0.99),
        requests=requests, prompt_tokens=prompt, generation_tokens=gen, cached_tokens=cached,
        cache_hit_rate=(cached / prompt) if cached is not None and prompt else None,
        prompt_tokens_per_s=prompt / window if prompt is not None and window > 0 else None,
        generation_tokens_per_s=gen / window if gen is not None and window > 0 else None,
        gauges=gauge_stats,
        spec_accept_length=engine.spec_accept_length(d, server_info),
        missing=tuple(missing),
    )


@dataclass(frozen=True)
class Comparison:
    """One figure seen from both sides; `agrees` is False when they differ by more than the width of
    the bucket the engine's quantile fell in plus the client's longest event-loop stall (None when either side is
    missing)."""

    metric: str
    client_s: float | None
    engine_s: float | None
    bucket_low_s: float | None
    bucket_high_s: float | None
    agrees: bool | None

    @property
    def resolution_s(self) -> float | None:
        if self.bucket_low_s is None or self.bucket_high_s is None:
            return None
        return self.bucket_high_s - self.bucket_low_s


_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("ttft_p50", "ttft_median_s", "ttft_p50"),
    ("ttft_p99", "ttft_p99_s", "ttft_p99"),
    ("itl_p50", "itl_median_s", "itl_p50"),
    ("itl_p99", "itl_p99_s", "itl_p99"),
    ("e2e_p50", "e2e_median_s", "e2e_p50"),
    ("e2e_p99", "e2e_p99_s", "e2e_p99"),
)


def compare(client: ClientSummary, engine: EngineFigures) -> tuple[tuple[Comparison, ...], tuple[str, ...]]:
    """Side-by-side latency figures and the warnings for those that disagree beyond bucket resolution, plus the
    longest stall the client measured in its own event loop (`loop_lag_max_ms`): a stalled client sees a token
    late by that much that the engine sent on time, so such a difference is the client's, not a disagreement."""
    rows = []
    warnings = []
    client_stall_s = (client.loop_lag_max_ms or 0.0) / 1e3
    for metric, client_field, engine_field in _PAIRS:
        c = getattr(client, client_field)
        q: Quantile | None = getattr(engine, engine_field)
        if c is None or q is None:
            rows.append(Comparison(metric, c, q.value_s if q else None, q.bucket_low_s if q else None,
                                   q.bucket_high_s if q else None, None))
            continue
        resolution = q.resolution_s
        agrees = math.isinf(resolution) or abs(c - q.value_s) <= resolution + client_stall_s
        rows.append(Comparison(metric, c, q.value_s, q.bucket_low_s, q.bucket_high_s, agrees))
        if not agrees:
            warnings.append(
                f"{metric}: client {c * 1e3:.1f} ms vs engine {q.value_s * 1e3:.1f} ms differ by more than "
                f"the engine's bucket ({q.bucket_low_s * 1e3:g}-{q.bucket_high_s * 1e3:g} ms)"
                + (f" and the client's longest stall ({client_stall_s * 1e3:.1f} ms)" if client_stall_s else "")
            )
    if engine.generation_tokens is not None and client.total_output_tokens and engine.generation_tokens > 0:
        ratio = client.total_output_tokens / engine.generation_tokens
        if not 0.9 <= ratio <= 1.1:
            warnings.append(f"output tokens: client counted {client.total_output_tokens}, engine "
                            f"{engine.generation_tokens:.0f} (something else used the engine, or usage is "
                            "off)")
    return tuple(rows), tuple(warnings)


def figures_in_engine_time(figures: EngineFigures, scale: float) -> EngineFigures:
    """Engine figures scraped from an engine running `scale` times faster than real time (the simulator's
    --time-scale, whose histograms see the fast wall clock) -> engine time: the window, quantiles and means
    x scale, token rates / scale. scale 1 returns `figures`."""
    if scale == 1.0:
        return figures

    def q(value: Quantile | None) -> Quantile | None:
        return None if value is None else Quantile(value.value_s * scale, value.bucket_low_s * scale,
                                                   value.bucket_high_s * scale)

    def t(value: float | None) -> float | None:
        return None if value is None else value * scale

    def r(value: float | None) -> float | None:
        return None if value is None else value / scale

    f = figures
    return replace(
        f, window_s=f.window_s * scale, ttft_p50=q(f.ttft_p50), ttft_p99=q(f.ttft_p99), ttft_mean_s=t(f.ttft_mean_s),
        itl_p50=q(f.itl_p50), itl_p99=q(f.itl_p99), itl_mean_s=t(f.itl_mean_s), e2e_p50=q(f.e2e_p50),
        e2e_p99=q(f.e2e_p99), e2e_mean_s=t(f.e2e_mean_s), queue_p50=q(f.queue_p50), queue_p99=q(f.queue_p99),
        prompt_tokens_per_s=r(f.prompt_tokens_per_s), generation_tokens_per_s=r(f.generation_tokens_per_s))
