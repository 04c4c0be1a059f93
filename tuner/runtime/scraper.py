"""Read an engine's Prometheus /metrics: snapshots, before/after deltas, PromQL-style histogram quantiles,
and a background sampler for gauges during load.

A metric that is absent is reported as missing (None), never as zero. Nothing here knows about engines'
names (see tuner.runtime.engines) or about the load generator.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Self

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tuner.errors import EngineError, TunerError
from tuner.runtime.engines.base import GaugeName

Labels = tuple[tuple[str, str], ...]


class MetricsParseError(TunerError):
    """An engine's /metrics answer that is not Prometheus text."""


@dataclass(frozen=True)
class Snapshot:
    """All samples of one scrape: sample name (e.g. 'x_bucket', 'y_total') -> {labels: value}."""

    url: str
    taken_at_s: float  # time.monotonic() when the answer arrived
    samples: Mapping[str, Mapping[Labels, float]]

    def has(self, name: str) -> bool:
        return name in self.samples

    def series(self, name: str) -> Mapping[Labels, float] | None:
        return self.samples.get(name)

    def value(self, name: str, combine: str = "sum") -> float | None:
        """One number for `name` over its series ('sum', 'mean' or 'max'); None when absent."""
        series = self.samples.get(name)
        if not series:
            return None
        return _combine(series.values(), combine)

    def histogram(self, name: str) -> HistogramCounts | None:
        return _histogram_from(self.samples, name)


def _combine(values: Iterable[float], how: str) -> float:
    vals = list(values)
    if how == "sum":
        return float(sum(vals))
    if how == "mean":
        return float(sum(vals) / len(vals))
    if how == "max":
        return float(max(vals))
    raise ValueError(f"unknown combine {how!r}")


def parse_metrics(text: str, url: str = "<text>", *, taken_at_s: float | None = None) -> Snapshot:
    """Parse Prometheus text exposition; raises MetricsParseError naming `url` and the parser's complaint."""
    samples: dict[str, dict[Labels, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted((str(k), str(v)) for k, v in sample.labels.items()))
                samples.setdefault(sample.name, {})[labels] = float(sample.value)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        first = text.strip().splitlines()[0][:120] if text.strip() else ""
        raise MetricsParseError(
            f"{url} did not return Prometheus text ({type(exc).__name__}: {exc}); it starts with {first!r}. "
            "Is this the engine's metrics port, and was it started with --enable-metrics?"
        ) from None
    if text.strip() and not samples:
        raise MetricsParseError(f"{url} returned text with no metric samples: {text.strip()[:120]!r}")
    return Snapshot(url=url, taken_at_s=time.monotonic() if taken_at_s is None else taken_at_s,
                    samples=samples)


def scrape(url: str, *, client: httpx.Client | None = None, timeout_s: float = 10.0) -> Snapshot:
    """GET `url` (an engine's /metrics) and parse it."""
    try:
        if client is not None:
            r = client.get(url, timeout=timeout_s)
        else:
            r = httpx.get(url, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError as exc:
        raise EngineError(f"cannot read metrics from {url}: {type(exc).__name__}: {exc}") from exc
    if r.status_code != 200:
        raise EngineError(f"{url} answered HTTP {r.status_code}: {r.text[:200]!r}. Was the engine started "
                          "with metrics enabled?")
    return parse_metrics(r.text, url)


# ----------------------------------------------------------------------------------------------------
# Histograms

@dataclass(frozen=True)
class HistogramCounts:
    """Cumulative bucket counts (upper bounds ascending, ending with +Inf), sum and count."""

    upper_bounds: tuple[float, ...]
    cumulative_counts: tuple[float, ...]
    sum: float
    count: float

    def quantile(self, q: float) -> float | None:
        """PromQL histogram_quantile over these buckets; None when there are no observations."""
        value = histogram_quantile(q, self.upper_bounds, self.cumulative_counts)
        return None if math.isnan(value) else value

    def bucket_of_quantile(self, q: float) -> tuple[float, float] | None:
        """(lower, upper) edges of the bucket the q-quantile falls in (the resolution of that estimate)."""
        return quantile_bucket(q, self.upper_bounds, self.cumulative_counts)

    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def minus(self, before: HistogramCounts | None) -> HistogramCounts:
        if before is None:
            return self
        if before.upper_bounds != self.upper_bounds:
            raise TunerError("histogram bucket edges changed between scrapes (did the engine restart?)")
        counts = tuple(a - b for a, b in zip(self.cumulative_counts, before.cumulative_counts, strict=True))
        if any(c < 0 for c in counts) or self.count < before.count:
            return self  # counter reset: the engine restarted; everything since then is the delta
        return HistogramCounts(self.upper_bounds, counts, self.sum - before.sum, self.count - before.count)


def _histogram_from(samples: Mapping[str, Mapping[Labels, float]], name: str) -> HistogramCounts | None:
    buckets = samples.get(name + "_bucket")
    if not buckets:
        return None
    by_le: dict[float, float] = {}
    for labels, value in buckets.items():
        le = dict(labels).get("le")
        if le is None:
            continue
        bound = float(le)  # '+Inf' -> inf
        by_le[bound] = by_le.get(bound, 0.0) + value  # summed over the other labels (ranks, models)
    if not by_le:
        return None
    bounds = tuple(sorted(by_le))
    total_sum = sum((samples.get(name + "_sum") or {}).values())
    count_series = samples.get(name + "_count")
    total_count = sum(count_series.values()) if count_series else by_le.get(math.inf, 0.0)
    return HistogramCounts(bounds, tuple(by_le[b] for b in bounds), float(total_sum), float(total_count))


def _fix_monotonic(counts: Iterable[float]) -> list[float]:
    out: list[float] = []
    high = 0.0
    for c in counts:
        high = max(high, c)
        out.append(high)
    return out


def _rank_bucket(q: float, upper_bounds: tuple[float, ...], cumulative: list[float]) -> tuple[int, float]:
    rank = q * cumulative[-1]
    for i, c in enumerate(cumulative):
        if c >= rank:
            return i, rank
    return len(cumulative) - 1, rank


def histogram_quantile(q: float, upper_bounds: tuple[float, ...] | list[float],
                       cumulative_counts: tuple[float, ...] | list[float]) -> float:
    """PromQL's histogram_quantile: linear interpolation inside the bucket holding rank q*count, the lowest
    bucket starting at 0, and the upper bound of the last finite bucket when the rank lands in +Inf.
    NaN when there is no +Inf bucket or no observation; -Inf/+Inf for q outside [0, 1]."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    bounds = tuple(float(b) for b in upper_bounds)
    if len(bounds) < 2 or not math.isinf(bounds[-1]):
        return math.nan
    cumulative = _fix_monotonic(cumulative_counts)
    if cumulative[-1] == 0:
        return math.nan
    b, rank = _rank_bucket(q, bounds, cumulative)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], cumulative[b]
    if b > 0:
        start = bounds[b - 1]
        count -= cumulative[b - 1]
        rank -= cumulative[b - 1]
    return start + (end - start) * (rank / count)


def quantile_bucket(q: float, upper_bounds: tuple[float, ...],
                    cumulative_counts: tuple[float, ...]) -> tuple[float, float] | None:
    """The bucket edges histogram_quantile interpolated within; +Inf rank -> (last finite, inf)."""
    if not upper_bounds or not cumulative_counts or not 0 <= q <= 1:
        return None
    cumulative = _fix_monotonic(cumulative_counts)
    if cumulative[-1] == 0:
        return None
    b, _ = _rank_bucket(q, tuple(upper_bounds), cumulative)
    lower = 0.0 if b == 0 else float(upper_bounds[b - 1])
    return lower, float(upper_bounds[b])


# ----------------------------------------------------------------------------------------------------
# Deltas

@dataclass(frozen=True)
class Delta:
    """What happened between two scrapes: counter increases, histogram bucket increases, latest gauges."""

    before: Snapshot
    after: Snapshot

    @property
    def duration_s(self) -> float:
        return max(self.after.taken_at_s - self.before.taken_at_s, 0.0)

    def counter(self, name: str) -> float | None:
        """Increase of a counter (summed over its series); None when the engine does not export it."""
        after = self.after.series(name)
        if after is None:
            return None
        before = self.before.series(name) or {}
        total = 0.0
        for labels, value in after.items():
            prev = before.get(labels, 0.0)  # series appear on first use: absent before means 0
            total += value - prev if value >= prev else value  # reset: count from the restart
        return total

    def rate(self, name: str) -> float | None:
        inc = self.counter(name)
        if inc is None or self.duration_s <= 0:
            return None
        return inc / self.duration_s

    def histogram(self, name: str) -> HistogramCounts | None:
        after = self.after.histogram(name)
        if after is None:
            return None
        return after.minus(self.before.histogram(name))

    def gauge(self, name: str, combine: str = "sum") -> float | None:
        """The gauge's value in the later scrape (gauges are not cumulative)."""
        return self.after.value(name, combine)


def delta(before: Snapshot, after: Snapshot) -> Delta:
    return Delta(before, after)


# ----------------------------------------------------------------------------------------------------
# Gauges during load

@dataclass(frozen=True)
class GaugeStat:
    mean: float
    max: float
    n_samples: int


@dataclass
class GaugeSampler:
    """Samples gauges every `interval_s` on a background thread between start() and stop().

    Only the gauge lines are parsed, to keep the sampler's CPU (and GIL) share small while load runs.
    """

    url: str
    gauges: Mapping[str, GaugeName]  # concept -> gauge
    interval_s: float = 0.5
    timeout_s: float = 2.0
    _values: dict[str, list[float]] = field(default_factory=dict, init=False)
    errors: int = field(default=0, init=False)
    last_error: str | None = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def start(self) -> Self:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gauge-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, GaugeStat | None]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + self.interval_s + 1)
        return self.stats()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sample_once(self, client: httpx.Client) -> None:
        names = {g.name for g in self.gauges.values()}
        try:
            r = client.get(self.url, timeout=self.timeout_s)
            r.raise_for_status()
        except httpx.HTTPError as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        wanted = [
            line for line in r.text.splitlines()
            if line.split("{", 1)[0].split(" ", 1)[0] in names
        ]
        try:
            snap = parse_metrics("\n".join(wanted) + "\n", self.url)
        except MetricsParseError as exc:
            self.errors += 1
            self.last_error = str(exc)
            return
        for concept, gauge in self.gauges.items():
            value = snap.value(gauge.name, gauge.combine)
            if value is not None:
                self._values.setdefault(concept, []).append(value)

    def _run(self) -> None:
        with httpx.Client(trust_env=False) as client:
            while not self._stop.is_set():
                t0 = time.monotonic()
                self.sample_once(client)
                self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - t0)))

    def stats(self) -> dict[str, GaugeStat | None]:
        out: dict[str, GaugeStat | None] = {}
        for concept in self.gauges:
            vals = self._values.get(concept)
            out[concept] = GaugeStat(sum(vals) / len(vals), max(vals), len(vals)) if vals else None
        return out
