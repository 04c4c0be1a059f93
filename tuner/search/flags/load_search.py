"""The maximum sustainable load of one running engine: step or bisect the request rate (or concurrency)
within ONE launch, each step a fresh batch of requests between a before- and an after-scrape of /metrics,
and keep the highest load whose client-side percentiles meet every SLO. No restart per load point.

`search_max_load` is the algorithm (any `StepRunner`); `EngineStepRunner` runs a step on a live engine.
Launching and tearing down belong to trial.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from tuner.errors import TunerError
from tuner.runtime.compare import engine_figures
from tuner.runtime.engines.base import Engine
from tuner.runtime.launcher import RunningEngine
from tuner.runtime.loadgen.arrivals import ConcurrencyArrivals, PoissonArrivals
from tuner.runtime.loadgen.client import LoadOptions, run_load_sync
from tuner.runtime.loadgen.summary import Slo, summarize
from tuner.runtime.loadgen.workloads import Workload
from tuner.runtime.scraper import delta, scrape
from tuner.runtime.session import EngineExited
from tuner.search.flags.early_stop import EarlyStop
from tuner.search.flags.figures import Clock, StepFigures, slo_label, step_figures

LOAD_MODES = ("rate", "concurrency")
STRATEGIES = ("bisect", "step")


@dataclass(frozen=True)
class LoadSearchConfig:
    """How to look for the highest load meeting the SLOs. Rates are requests/s in engine time; `high` may
    be inf for rate (everything at once). bisect: try `high` first (done if it passes), then `low`, then
    geometric bisection; step: `low`, `low * step_factor`, ... until a step fails. `reference_step`
    measures `low` first whatever the strategy (latency at light load, for the Pareto objective)."""

    mode: str = "rate"
    strategy: str = "bisect"
    low: float = 0.5
    high: float = math.inf
    requests_per_step: int = 64
    max_steps: int = 6
    tolerance: float = 0.15
    step_factor: float = 2.0
    reference_step: bool = False
    early_stop: bool = True
    settle_s: float = 0.2

    def __post_init__(self) -> None:
        if self.mode not in LOAD_MODES:
            raise TunerError(f"unknown load search {self.mode!r}; choose rate or concurrency")
        if self.strategy not in STRATEGIES:
            raise TunerError(f"unknown load strategy {self.strategy!r}; choose bisect or step")
        if not 0 < self.low <= self.high:
            raise TunerError(f"the load range needs 0 < low <= high (got {self.low}, {self.high})")
        if self.mode == "concurrency" and not math.isfinite(self.high):
            raise TunerError("a concurrency search needs a finite --rate-max (the highest concurrency)")
        if self.requests_per_step < 1 or self.max_steps < 1:
            raise TunerError("requests per step and max steps must be at least 1")
        if self.step_factor <= 1 or self.tolerance <= 0:
            raise TunerError("step factor must be above 1 and tolerance above 0")

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["high"] = self.high if math.isfinite(self.high) else "inf"
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadSearchConfig:
        values = dict(data)
        if values.get("high") == "inf":
            values["high"] = math.inf
        return cls(**values)


@dataclass(frozen=True)
class LoadStep:
    """One load point: engine-time figures, the SLO verdict, and what the engine's own metrics said."""

    index: int
    load: float  # requests/s (inf: all at once) or concurrency
    mode: str
    requests: int
    completed: int
    failed: int
    duration_s: float
    figures: StepFigures
    early_stop: str | None = None
    engine: Mapping[str, Any] | None = None  # engine figures (wall clock, as the engine reports them)
    warnings: tuple[str, ...] = ()
    wall_s: float = 0.0

    @property
    def meets_slo(self) -> bool:
        return self.figures.meets_slo and self.early_stop is None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["load"] = self.load if math.isfinite(self.load) else "inf"
        out["figures"] = {**asdict(self.figures), "latency_s": dict(self.figures.latency_s),
                          "slo_ratios": dict(self.figures.slo_ratios)}
        out["meets_slo"] = self.meets_slo
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadStep:
        d = dict(data)
        d.pop("meets_slo", None)
        d["load"] = math.inf if d["load"] == "inf" else float(d["load"])
        d["figures"] = StepFigures(**d["figures"])
        d["warnings"] = tuple(d.get("warnings") or ())
        return cls(**d)


@dataclass(frozen=True)
class LoadSearchResult:
    steps: tuple[LoadStep, ...]
    score_kind: str = "goodput"  # which goodput picks `best`: goodput | goodput-req
    stopped: str = ""

    @property
    def passing(self) -> list[LoadStep]:
        return [s for s in self.steps if s.meets_slo]

    @property
    def max_load(self) -> float | None:
        """The highest load that met every SLO; None when none did."""
        return max((s.load for s in self.passing), default=None)

    @property
    def best(self) -> LoadStep | None:
        """The passing step with the highest goodput (the trial's result)."""
        key: Callable[[LoadStep], float] = (
            (lambda s: s.figures.goodput_req_s) if self.score_kind == "goodput-req"
            else (lambda s: s.figures.goodput_tok_s))
        return max(self.passing, key=key, default=None)

    @property
    def lightest(self) -> LoadStep | None:
        return min(self.steps, key=lambda s: s.load, default=None)

    @property
    def reference(self) -> LoadStep | None:
        """The lightest passing step (latency at light load, for the Pareto front)."""
        return min(self.passing, key=lambda s: s.load, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps], "score_kind": self.score_kind,
                "stopped": self.stopped}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadSearchResult:
        return cls(tuple(LoadStep.from_dict(s) for s in data.get("steps", ())),
                   str(data.get("score_kind", "goodput")), str(data.get("stopped", "")))


class StepRunner(Protocol):
    def run_step(self, load: float, index: int) -> LoadStep: ...


def _next_load(config: LoadSearchConfig, tried: dict[float, LoadStep], capacity: float | None) -> float | None:
    """The next load to try, or None when the search is over.

    bisect keeps [lo, hi] = [highest passing, lowest failing] and probes their geometric middle, assuming
    `low` passes until the bracket shrinks onto it (then `low` itself is measured: if it fails, no load
    meets the SLOs). A failing everything-at-once step bounds the rate by the request rate it completed at.
    """
    if config.reference_step and config.low not in tried:
        return config.low
    lo = max((load for load, s in tried.items() if s.meets_slo), default=None)
    hi = min((load for load, s in tried.items() if not s.meets_slo), default=None)
    fresh = (lambda x: None if x in tried else x)
    if config.strategy == "step":
        if lo is None:
            return fresh(config.low)
        if hi is not None or lo >= config.high:
            return None
        return fresh(min(config.high, lo * config.step_factor))
    if hi is None:
        if lo is not None and lo >= config.high:
            return None
        if config.high not in tried:
            return config.high
        return fresh(min(config.high, (lo or config.low) * config.step_factor))
    if math.isinf(hi):
        if capacity is not None and capacity > (lo or config.low) * (1 + config.tolerance):
            hi = capacity
        elif lo is None:
            return fresh(config.low)
        else:
            return fresh(lo * config.step_factor)
    if lo is None:
        failures = sum(1 for s in tried.values() if not s.meets_slo)
        if failures >= 3 or hi <= config.low * (1 + config.tolerance):
            return fresh(config.low)
        return _round_load(config, math.sqrt(config.low * hi), config.low, hi, tried) or fresh(config.low)
    if lo >= config.high or hi <= lo * (1 + config.tolerance):
        return None
    return _round_load(config, math.sqrt(lo * hi), lo, hi, tried)


def _round_load(config: LoadSearchConfig, mid: float, lo: float, hi: float,
                tried: dict[float, LoadStep]) -> float | None:
    if config.mode == "concurrency":
        mid = float(round(mid))
        if mid <= lo or mid >= hi:
            return None
    elif not lo < mid < hi:
        return None
    else:
        mid = float(f"{mid:.4g}")
    return None if mid in tried else mid


def search_max_load(runner: StepRunner, config: LoadSearchConfig, *, score_kind: str = "goodput",
                    ) -> LoadSearchResult:
    """Run steps until the highest load meeting the SLOs is bracketed within `tolerance` (or max_steps)."""
    tried: dict[float, LoadStep] = {}
    steps: list[LoadStep] = []
    capacity: float | None = None
    stopped = "bracketed"
    while True:
        if len(steps) >= config.max_steps:
            stopped = "max steps"
            break
        load = _next_load(config, tried, capacity)
        if load is None:
            if not any(s.meets_slo for s in steps):
                stopped = "no load met the SLOs"
            elif max(s.load for s in steps if s.meets_slo) >= config.high:
                stopped = "the highest load met the SLOs"
            break
        if config.mode == "concurrency":
            load = float(max(1, round(load)))
        step = runner.run_step(load, len(steps))
        steps.append(step)
        tried[load] = step
        if math.isinf(load) and not step.meets_slo and step.completed:
            capacity = step.figures.request_throughput_req_s or None
    return LoadSearchResult(tuple(steps), score_kind, stopped)


# ----------------------------------------------------------------------------------------------------
# One step on a running engine

WorkloadFactory = Callable[[int], Workload]  # requests (sessions) per step -> workload


@dataclass
class EngineStepRunner:
    """Runs load steps against `running`: flush the engine's caches, scrape, send `requests_per_step` fresh
    requests (another seed each step) at the step's load, scrape again. Seconds spent scraping are added
    to `scrape_s`, those spent sending to `measure_s`."""

    running: RunningEngine
    engine: Engine
    workload_for: WorkloadFactory
    load: LoadOptions
    slos: tuple[Slo, ...]  # the objective's, in engine time
    clock: Clock
    config: LoadSearchConfig
    seed: int = 0
    scrape_s: float = 0.0
    measure_s: float = 0.0
    log: Callable[[str], None] | None = None
    _wall_slos: tuple[Any, ...] = field(default=(), init=False)
    _flush_works: bool | None = field(default=None, init=False)  # None: not tried yet

    def __post_init__(self) -> None:
        self._wall_slos = self.clock.wall_slos(self.slos)

    def _arrivals(self, load: float) -> Any:  # an Arrivals
        if self.config.mode == "concurrency":
            return ConcurrencyArrivals(int(load))
        return PoissonArrivals(self.clock.wall_rate(load) if math.isfinite(load) else math.inf)

    def run_step(self, load: float, index: int) -> LoadStep:
        t_start = time.monotonic()
        n = self.config.requests_per_step
        if self.config.mode == "concurrency":
            n = max(n, int(load))
        workload = self.workload_for(n)
        # Every step gets fresh prompts (another seed per step index) and a flushed cache, so no step is
        # served from what an earlier one left behind (prefix cache, a suffix-speculation cache that
        # /flush_cache may not clear). Common random numbers across trials: step i of every trial (and
        # repeat) sends the same prompts on the same arrival pattern, scaled to its rate.
        flushed = self.running.flush_cache()
        if self._flush_works is not False:
            for _ in range(20):  # refused while aborted requests of an early-stopped step are unwinding
                if flushed:
                    break
                time.sleep(0.1)
                flushed = self.running.flush_cache()
            self._flush_works = bool(self._flush_works) or flushed
        seed = self.seed + 7919 * (index + 1)
        opts = replace(self.load, seed=seed, num_warmup=0)
        metrics_url = self.running.base_url + "/metrics"
        t0 = time.monotonic()
        before = scrape(metrics_url)
        self.scrape_s += time.monotonic() - t0
        shown = {slo_label(s): s.limit_s for s in self.slos}
        arrivals = self._arrivals(load)
        offsets = None
        if arrivals.timed and arrivals.max_concurrency is None:
            offsets = arrivals.offsets_s(workload.sessions(opts.seed), opts.seed)
        watcher = EarlyStop(metrics_url, self.engine.metric_names,
                            self._wall_slos if self.config.early_stop else (), n, before,
                            show_limit_s=shown, send_offsets_s=offsets)

        def abort() -> str | None:
            code = self.running.exit_code()
            if code is not None:
                return f"the engine exited with code {code} during the load"
            return watcher.reason

        t0 = time.monotonic()
        with watcher:
            result = run_load_sync(self.running.base_url, workload, arrivals, opts, abort_check=abort)
        self.measure_s += time.monotonic() - t0
        if self.running.exit_code() is not None:
            raise EngineExited(f"the engine exited with code {self.running.exit_code()} during load step "
                             f"{index} ({_load_text(self.config.mode, load)})")
        t0 = time.monotonic()
        after = scrape(metrics_url)
        self.scrape_s += time.monotonic() - t0
        summary = summarize(result, self._wall_slos)
        engine_side = engine_figures(delta(before, after), self.engine).to_dict()
        figures = step_figures(summary, self.slos, self.clock)
        step = LoadStep(
            index=index, load=load, mode=self.config.mode, requests=len(result.records),
            completed=summary.completed, failed=summary.failed,
            duration_s=self.clock.seconds(summary.duration_s) or 0.0, figures=figures,
            early_stop=watcher.reason if result.aborted else None, engine=engine_side,
            warnings=summary.warnings, wall_s=0.0,
        )
        if self.config.settle_s > 0:
            time.sleep(self.config.settle_s)
        step = replace(step, wall_s=round(time.monotonic() - t_start, 3))
        if self.log is not None:
            self.log(describe_step(step))
        return step


def _load_text(mode: str, load: float) -> str:
    if mode == "concurrency":
        return f"concurrency {int(load)}"
    return "all at once" if math.isinf(load) else f"{load:g} req/s"


def describe_step(step: LoadStep) -> str:
    f = step.figures
    checks = ", ".join(f"{k} {('-' if f.latency_s.get(k) is None else format(f.latency_s[k], '.3g'))}s"
                       for k in f.slo_ratios)
    verdict = "meets SLO" if step.meets_slo else ("stopped early: " + step.early_stop if step.early_stop
                                                  else "misses SLO")
    return (f"  step {step.index}: {_load_text(step.mode, step.load)}: {checks}; goodput "
            f"{f.goodput_tok_s:.0f} tok/s ({f.goodput_req_s:.2f} req/s) - {verdict}")
