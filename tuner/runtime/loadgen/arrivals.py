"""Arrivals: when each session starts. Poisson at a rate, as fast as a concurrency cap allows, or a trace's
own timestamps; any of them may also carry a concurrency cap. No sending happens here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tuner.errors import TunerError
from tuner.runtime.loadgen.workloads import Session


@runtime_checkable
class Arrivals(Protocol):
    name: str
    max_concurrency: int | None  # sessions in flight at most (None: no cap)

    def offsets_s(self, sessions: Sequence[Session], seed: int) -> list[float]:
        """Intended start of each session, in seconds from the start of the load (non-decreasing)."""
        ...

    @property
    def timed(self) -> bool:
        """True when offsets are a real schedule (so lateness against it is meaningful)."""
        ...

    def describe(self) -> dict[str, Any]: ...


def _check_cap(max_concurrency: int | None) -> None:
    if max_concurrency is not None and max_concurrency < 1:
        raise TunerError(f"max-concurrency must be at least 1, got {max_concurrency}")


@dataclass(frozen=True)
class PoissonArrivals:
    """Exponential gaps with mean 1/rate; rate=inf sends everything at once (bench_serving's default)."""

    request_rate: float
    max_concurrency: int | None = None
    name: str = "poisson"

    def __post_init__(self) -> None:
        if not self.request_rate > 0:
            raise TunerError(f"request-rate must be positive (or inf), got {self.request_rate}")
        _check_cap(self.max_concurrency)

    @property
    def timed(self) -> bool:
        return math.isfinite(self.request_rate)

    def offsets_s(self, sessions: Sequence[Session], seed: int) -> list[float]:
        if not math.isfinite(self.request_rate):
            return [0.0] * len(sessions)
        rng = random.Random(seed ^ 0xA441)
        t, out = 0.0, []
        for _ in sessions:
            out.append(t)
            t += rng.expovariate(self.request_rate)
        return out

    def describe(self) -> dict[str, Any]:
        rate: float | str = self.request_rate if math.isfinite(self.request_rate) else "inf"
        return {"name": self.name, "request_rate": rate, "max_concurrency": self.max_concurrency}


@dataclass(frozen=True)
class ConcurrencyArrivals:
    """A fixed number of sessions in flight: a new one starts as soon as one finishes."""

    max_concurrency: int
    name: str = "concurrency"

    def __post_init__(self) -> None:
        _check_cap(self.max_concurrency)

    @property
    def timed(self) -> bool:
        return False

    def offsets_s(self, sessions: Sequence[Session], seed: int) -> list[float]:
        return [0.0] * len(sessions)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "max_concurrency": self.max_concurrency}


@dataclass(frozen=True)
class TraceArrivals:
    """The sessions' own `arrival_s` (from a trace), divided by `speedup`."""

    speedup: float = 1.0
    max_concurrency: int | None = None
    name: str = "trace"

    def __post_init__(self) -> None:
        if not self.speedup > 0:
            raise TunerError(f"trace speed-up must be positive, got {self.speedup}")
        _check_cap(self.max_concurrency)

    @property
    def timed(self) -> bool:
        return True

    def offsets_s(self, sessions: Sequence[Session], seed: int) -> list[float]:
        missing = [s.session_id for s in sessions if s.arrival_s is None]
        if missing:
            raise TunerError("trace arrivals need a workload with timestamps (use --workload trace)")
        return [float(s.arrival_s) / self.speedup for s in sessions]  # type: ignore[arg-type]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "speedup": self.speedup, "max_concurrency": self.max_concurrency}
