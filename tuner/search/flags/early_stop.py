"""Stop a load step that can no longer meet its SLO: while load runs, a background thread reads the
engine's TTFT / E2E histograms and counts requests already above a limit. Once more requests exceed it than
a percentile can absorb (2 of 32 for p99), the step's outcome is decided and the rest of it is skipped.

Late requests are counted two ways, both lower bounds, so a step that could still pass is never stopped:
first tokens above the smallest bucket edge at or above the limit, and (on a timed schedule) requests sent
longer ago than the limit that have no first token yet (queued behind a full batch). It reads /metrics only;
it sends no load.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import httpx

from tuner.errors import TunerError
from tuner.runtime.engines.base import MetricNames
from tuner.runtime.loadgen.summary import Slo
from tuner.runtime.scraper import HistogramCounts, Snapshot, parse_metrics

QUANTILES = {"median": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
PENDING_MARGIN = 0.25  # of the limit, plus PENDING_MARGIN_S: client send delay is not the engine's fault
PENDING_MARGIN_S = 0.2


def violations_allowed(q: float, n_requests: int) -> int:
    """How many of n values may exceed a limit while numpy's q-percentile can still be at or below it."""
    if n_requests <= 0:
        return 0
    return n_requests - math.floor(q * (n_requests - 1)) - 1


def count_above(h: HistogramCounts, limit_s: float) -> float:
    """Observations above the smallest bucket edge >= limit (a lower bound of those above the limit)."""
    finite = [b for b in h.upper_bounds if math.isfinite(b)]
    i = bisect.bisect_left(finite, limit_s - 1e-12)
    if i >= len(finite):
        return 0.0  # the limit lies in the +Inf bucket: nothing can be said
    return h.count - h.cumulative_counts[i]


@dataclass(frozen=True)
class Watch:
    histogram: str
    slo: Slo  # limit in wall-clock seconds
    allowed: int


class EarlyStop:
    """Polls /metrics every `interval_s` during a step; `reason` is set once the step cannot pass."""

    def __init__(self, metrics_url: str, names: MetricNames, wall_slos: Sequence[Slo], n_requests: int,
                 before: Snapshot, *, interval_s: float = 0.5, show_limit_s: dict[str, float] | None = None,
                 send_offsets_s: Sequence[float] | None = None):
        self.url = metrics_url
        self.send_offsets_s = sorted(send_offsets_s) if send_offsets_s is not None else None
        self.started = time.monotonic()
        self.before = before
        self.interval_s = interval_s
        self.reason: str | None = None
        self._show = show_limit_s or {}
        self._n = n_requests
        hist = {"ttft": names.ttft_histogram, "e2e": names.e2e_histogram}
        self.watches = [Watch(hist[s.metric], s, violations_allowed(QUANTILES[s.stat], n_requests))
                        for s in wall_slos if s.metric in hist and s.stat in QUANTILES]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def pending_over(self, limit_s: float, first_tokens: float, now: float | None = None) -> float:
        """Requests scheduled more than `limit_s` (plus a margin) ago that have no first token yet."""
        if self.send_offsets_s is None:
            return 0.0
        elapsed = (time.monotonic() if now is None else now) - self.started
        cutoff = elapsed - limit_s * (1 + PENDING_MARGIN) - PENDING_MARGIN_S
        sent_long_ago = bisect.bisect_right(self.send_offsets_s, cutoff)
        return max(0.0, sent_long_ago - first_tokens)

    def check(self, snapshot: Snapshot, now: float | None = None) -> str | None:
        for w in self.watches:
            after = snapshot.histogram(w.histogram)
            if after is None:
                continue
            try:
                h = after.minus(self.before.histogram(w.histogram))
            except TunerError:
                continue
            above = count_above(h, w.slo.limit_s)
            if w.slo.metric == "ttft":
                above += self.pending_over(w.slo.limit_s, h.count, now)
            if above > w.allowed:
                label = f"{w.slo.metric}_{w.slo.stat}"
                shown = self._show.get(label, w.slo.limit_s)
                return (f"{label} cannot be met any more: {int(above)} of {self._n} requests already took "
                        f"(or wait) longer than {shown:g} s")
        return None

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            while not self._stop.wait(self.interval_s):
                try:
                    r = client.get(self.url)
                    if r.status_code != 200:
                        continue
                    reason = self.check(parse_metrics(r.text, self.url))
                except (httpx.HTTPError, TunerError):
                    continue
                if reason:
                    self.reason = reason
                    return

    def __enter__(self) -> Self:
        self.started = time.monotonic()
        if self.watches:
            self._thread = threading.Thread(target=self._run, name="early-stop", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
