"""Fit a `WorkloadModel` from counter and histogram series sampled over a window (a Prometheus range query
or a folder of `/metrics` snapshots, both turned into a `SeriesWindow` first).

Counter deltas are taken per series; a value that goes down is an engine restart inside the window and is
refused (the deltas around it cannot be told apart from lost traffic). Reading the series is not done here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tuner.errors import WorkloadSourceError
from tuner.runtime.engines.sglang import SGLANG_METRICS
from tuner.runtime.engines.vllm import VLLM_METRICS
from tuner.workload_model import LatencyHistogram, LengthBin, LengthDistribution, WorkloadModel


@dataclass(frozen=True)
class EngineMetricNames:
    """The series a workload is learned from, per engine (names as exposed, `_total` included)."""

    engine: str
    requests: str  # counter of finished requests
    prompt_tokens: str
    generation_tokens: str
    prompt_hist: str  # histogram base name (without _bucket/_sum/_count)
    generation_hist: str
    cache_hits: str  # counter of prompt tokens served from the prefix cache
    cache_queries: str  # counter the hits are a share of
    ttft_hist: str
    itl_hist: str
    spec_verify: str | None = None  # SGLang: verify steps (accept length = generation / verify)
    spec_accept_gauge: str | None = None
    spec_drafts: str | None = None  # vLLM: accept length = 1 + accepted / drafts
    spec_accepted: str | None = None

    def counters(self) -> list[str]:
        names = [self.requests, self.prompt_tokens, self.generation_tokens, self.cache_hits, self.cache_queries,
                 self.spec_verify, self.spec_drafts, self.spec_accepted]
        return [n for n in dict.fromkeys(names) if n]

    def histograms(self) -> list[str]:
        return [self.prompt_hist, self.generation_hist, self.ttft_hist, self.itl_hist]

    def series_names(self) -> list[str]:
        """Every sample name to read."""
        names = self.counters()
        for h in self.histograms():
            names += [f"{h}_bucket", f"{h}_sum", f"{h}_count"]
        if self.spec_accept_gauge:
            names.append(self.spec_accept_gauge)
        return names


def _known(name: str | None) -> str:
    if name is None:
        raise AssertionError("an engine adapter lost a metric name workload learning needs")
    return name


# The names the engine adapters already know (tuner/runtime/engines), plus the length histograms and the
# counters only learning needs. SGLang 0.5.23: token histograms always defined (TokenizerMetricsCollector).
SGLANG = EngineMetricNames(
    engine="sglang",
    requests=_known(SGLANG_METRICS.requests_counter),
    prompt_tokens=SGLANG_METRICS.prompt_tokens_counter,
    generation_tokens=SGLANG_METRICS.generation_tokens_counter,
    prompt_hist="sglang:prompt_tokens_histogram",
    generation_hist="sglang:generation_tokens_histogram",
    cache_hits=SGLANG_METRICS.cached_tokens_counter or "sglang:cached_tokens_total",
    cache_queries=SGLANG_METRICS.prompt_tokens_counter,
    ttft_hist=SGLANG_METRICS.ttft_histogram,
    itl_hist=SGLANG_METRICS.itl_histogram,
    spec_verify="sglang:spec_verify_calls_total",
    spec_accept_gauge="sglang:spec_accept_length",
)
# vLLM V1 (0.10+): request length histograms and the prefix-cache query counter.
VLLM = EngineMetricNames(
    engine="vllm",
    requests=_known(VLLM_METRICS.requests_counter),
    prompt_tokens=VLLM_METRICS.prompt_tokens_counter,
    generation_tokens=VLLM_METRICS.generation_tokens_counter,
    prompt_hist="vllm:request_prompt_tokens",
    generation_hist="vllm:request_generation_tokens",
    cache_hits=VLLM_METRICS.cached_tokens_counter or "vllm:prefix_cache_hits_total",
    cache_queries="vllm:prefix_cache_queries_total",
    ttft_hist=VLLM_METRICS.ttft_histogram,
    itl_hist=VLLM_METRICS.itl_histogram,
    spec_drafts=VLLM_METRICS.spec_drafts_counter,
    spec_accepted=VLLM_METRICS.spec_accepted_tokens_counter,
)
ENGINES: dict[str, EngineMetricNames] = {"sglang": SGLANG, "vllm": VLLM}


@dataclass(frozen=True)
class Series:
    labels: Mapping[str, str]
    values: tuple[float | None, ...]  # aligned with SeriesWindow.times_s; None where no sample


@dataclass(frozen=True)
class SeriesWindow:
    """Samples of many series at common times (Unix seconds, increasing), keyed by sample name."""

    times_s: tuple[float, ...]
    series: Mapping[str, Sequence[Series]] = field(default_factory=dict)
    where: str = ""  # for messages: the source and selector


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def step_increments(window: SeriesWindow, name: str) -> list[float]:
    """Per-step increase of the counter `name`, summed over its series (length len(times) - 1).

    A series that first appears after the window's first sample counts from zero (engines create labelled
    series on first use). Raises WorkloadSourceError when a value goes down: the counters were reset.
    """
    n = len(window.times_s)
    out = [0.0] * max(0, n - 1)
    for s in window.series.get(name, ()):
        prev: float | None = None
        for i, v in enumerate(s.values):
            if v is None:
                continue
            if prev is None:
                if i > 0:
                    out[i - 1] += v
            elif v < prev:
                raise WorkloadSourceError(
                    f"{name} went from {prev:g} down to {v:g} at {_when(window.times_s[i])}: the engine restarted "
                    f"inside the window ({window.where}); learn from a window that starts after the restart"
                )
            else:
                out[i - 1] += v - prev
            prev = v
    return out


def total_increase(window: SeriesWindow, name: str) -> float:
    return sum(step_increments(window, name))


def has_series(window: SeriesWindow, name: str) -> bool:
    return any(any(v is not None for v in s.values) for s in window.series.get(name, ()))


def bucket_increments(window: SeriesWindow, hist: str) -> list[tuple[float, float]]:
    """(upper edge, requests in the window at or below it) of a histogram, summed over series; [] if absent."""
    per_le: dict[float, float] = {}
    for s in window.series.get(f"{hist}_bucket", ()):
        le = float(s.labels.get("le", "nan"))
        one = SeriesWindow(window.times_s, {"x": [s]}, window.where)
        per_le[le] = per_le.get(le, 0.0) + total_increase(one, "x")
    return sorted(per_le.items())


def _distribution(window: SeriesWindow, hist: str, counter: str, requests: Sequence[float],
                  label: str) -> LengthDistribution:
    num = sum(requests)
    cumulative = bucket_increments(window, hist)
    count = cumulative[-1][1] if cumulative else 0.0
    if count > 0:
        total = total_increase(window, f"{hist}_sum")
        mean = total / count
        bins, low, below = [], 0.0, 0.0
        finite = [(le, c) for le, c in cumulative if le != float("inf")]
        for le, c in finite:
            if c - below > 0:
                bins.append(LengthBin(low, le, c - below))
            low, below = le, c
        if count - below > 0:
            # above the last edge: as wide as needed for the histogram's sum to come out right
            rest_sum = total - sum((b.low_tokens + b.high_tokens) / 2 * b.weight for b in bins)
            tail_mean = max(low, rest_sum / (count - below))
            bins.append(LengthBin(low, max(low + 1, 2 * tail_mean - low), count - below))
        return LengthDistribution(tuple(bins), mean, "histogram")
    # no histogram: each step's mean length (tokens / requests), weighted by its requests
    tokens = step_increments(window, counter)
    if sum(tokens) <= 0:
        raise WorkloadSourceError(f"no {label} tokens counted in the window ({window.where}): {counter} is "
                                  "missing or flat")
    points: dict[float, float] = {}
    for r, t in zip(requests, tokens, strict=True):
        if r > 0:
            mean_len = round(t / r, 1)
            points[mean_len] = points.get(mean_len, 0.0) + r
    bins = [LengthBin(v, v, w) for v, w in sorted(points.items())]
    return LengthDistribution(tuple(bins), sum(tokens) / num, "counter-means")


def _latency(window: SeriesWindow, hist: str) -> LatencyHistogram | None:
    cumulative = bucket_increments(window, hist)
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    uppers, counts, below = [], [], 0.0
    for le, c in cumulative:
        uppers.append(le)
        counts.append(c - below)
        below = c
    return LatencyHistogram(tuple(u for u in uppers if u != float("inf")), tuple(counts))


def detect_engine(window: SeriesWindow) -> EngineMetricNames:
    for names in ENGINES.values():  # any of its series: a counter created on first use may not exist yet
        if any(has_series(window, n) for n in names.series_names()):
            return names
    raise WorkloadSourceError(
        f"no series match {window.where} (looked for {SGLANG.requests} and {VLLM.requests}); check the "
        "selector and that the engine runs with metrics on (SGLang: --enable-metrics)"
    )


def fit_workload(window: SeriesWindow, names: EngineMetricNames | None = None) -> WorkloadModel:
    """The workload over `window` (needs at least two sample times).

    Raises WorkloadSourceError when no series match, no request finished in the window, or a counter was
    reset inside it.
    """
    if len(window.times_s) < 2:
        raise WorkloadSourceError(f"the window has fewer than two samples ({window.where}); widen it or scrape "
                                  "more often")
    names = names or detect_engine(window)
    for counter in names.counters():  # refuse a reset anywhere before fitting anything
        step_increments(window, counter)
    requests = step_increments(window, names.requests)
    num = sum(requests)
    t0, t1 = window.times_s[0], window.times_s[-1]
    if num <= 0:
        raise WorkloadSourceError(f"no requests finished between {_when(t0)} and {_when(t1)} "
                                  f"({window.where}); pick a window with traffic")
    steps = [b - a for a, b in zip(window.times_s, window.times_s[1:], strict=False)]
    step_s = sum(steps) / len(steps)
    profile = tuple(r / s for r, s in zip(requests, steps, strict=True))
    mean_count = num / len(requests)
    variance = sum((r - mean_count) ** 2 for r in requests) / len(requests)
    prompt = _distribution(window, names.prompt_hist, names.prompt_tokens, requests, "prompt")
    output = _distribution(window, names.generation_hist, names.generation_tokens, requests, "output")
    queries = total_increase(window, names.cache_queries)
    hit_ratio = total_increase(window, names.cache_hits) / queries if queries > 0 else None
    return WorkloadModel(
        engine=names.engine,
        window_start_s=t0,
        window_end_s=t1,
        step_s=step_s,
        num_requests=round(num),
        rate_rps=num / (t1 - t0),
        rate_profile_rps=profile,
        burstiness=variance / mean_count,
        prompt_tokens=prompt,
        output_tokens=output,
        prefix_cache_hit_ratio=hit_ratio,
        spec_accept_length=_accept_length(window, names),
        ttft_s=_latency(window, names.ttft_hist),
        itl_s=_latency(window, names.itl_hist),
    )


def _accept_length(window: SeriesWindow, names: EngineMetricNames) -> float | None:
    if names.spec_verify and total_increase(window, names.spec_verify) > 0:
        return total_increase(window, names.generation_tokens) / total_increase(window, names.spec_verify)
    if names.spec_drafts and total_increase(window, names.spec_drafts) > 0 and names.spec_accepted:
        return 1 + total_increase(window, names.spec_accepted) / total_increase(window, names.spec_drafts)
    if names.spec_accept_gauge:
        # SGLang refreshes the gauge only under load and keeps stale values when idle: average busy samples
        values = [v for s in window.series.get(names.spec_accept_gauge, ()) for v in s.values if v]
        if values:
            return sum(values) / len(values)
    return None
