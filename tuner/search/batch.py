"""What every kernel family's search at one batch size shares: measuring a config (compile, check against the
float32 reference, time, store as it arrives), asking a strategy until it is done, interleaved finals, and the
never-worse decision against what the engine runs today. Families supply configs (anything with a `.key`) and a
problem (check and time); see moe_batch.py for the fused MoE's phases.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tuner.kernels.base import KernelConfig, MoeConfigs
from tuner.kernels.timing import TimingResult
from tuner.search.strategies import SearchStrategy
from tuner.store.db import Database
from tuner.store.kernels import Measurement, MeasurementContext, load_measurements, record_measurement

QUICK_REPLAYS = 6
FINAL_ROUNDS = 3  # interleaved rounds of the finals
FINAL_ROUND_REPLAYS = 10
FINAL_REPLAYS = FINAL_ROUNDS * FINAL_ROUND_REPLAYS
FINALISTS = 4
NOISE_FLOOR = 0.005  # a gain under 0.5% of the engine's latency is never taken as a gain


class TunableProblem(Protocol):
    """What the search needs from a kernel at one batch size."""

    def check(self, configs: Any) -> float: ...
    def is_correct(self, rel_error: float) -> bool: ...
    def time(self, configs: Any, replays: int) -> TimingResult: ...


class Compiler(Protocol):
    workers: int

    def submit(self, configs: list[Any]) -> None: ...
    def wait(self, configs: Any) -> tuple[str, str]: ...


class BatchSweeper:
    """Measures configs at one batch size: compile (in the pool), check, time, record. `parse_key` turns a stored
    config key back into the family's config object (MoeConfigs.from_key for the fused MoE)."""

    def __init__(self, db: Database, ctx: MeasurementContext, shape: Any, problem: TunableProblem,
                 pool: Compiler | None, batch_size: int, parse_key: Callable[[str], Any] = MoeConfigs.from_key) -> None:
        self.db, self.ctx, self.shape, self.problem, self.pool = db, ctx, shape, problem, pool
        self.batch_size = batch_size
        self.parse_key = parse_key
        self.known: dict[Any, Measurement] = {
            parse_key(m.config_key): m for m in load_measurements(db, ctx, shape.key, batch_size)
        }
        self.reused = len(self.known)
        self.measured = self.wrong = self.failed = 0
        self.gpu_seconds = 0.0

    def _record(self, configs: Any, status: str, latency: float | None, spread: float | None,
                err: float | None, detail: str | None, elapsed: float, replays: int) -> Measurement:
        m = Measurement(self.batch_size, configs.key, status, latency, spread, err, detail or None, elapsed, replays)
        record_measurement(self.db, self.ctx, self.shape.key, m)  # written as it arrives
        self.known[configs] = m
        self.measured += 1
        self.gpu_seconds += elapsed
        self.wrong += status == "wrong"
        self.failed += status not in ("ok", "wrong")
        return m

    def measure(self, configs: Any) -> Measurement:
        """Compile, check against the float32 reference, and time `configs` with a quick sample (once ever)."""
        prior = self.known.get(configs)
        if prior is not None:
            return prior
        t0 = time.perf_counter()
        status, detail_text = ("ok", "") if self.pool is None else self.pool.wait(configs)
        detail: str | None = detail_text
        err = latency = spread = None
        timed = 0
        if status == "ok":
            status, detail, err, timing = self._check_and_time(configs, QUICK_REPLAYS)
            if timing is not None:
                latency, spread, timed = timing.median_us, timing.spread_us, timing.replays
        return self._record(configs, status, latency, spread, err, detail, time.perf_counter() - t0, timed)

    def _check_and_time(self, configs: Any, replays: int) -> tuple[str, str | None, float | None,
                                                                            TimingResult | None]:
        try:
            err = self.problem.check(configs)
            if not self.problem.is_correct(err):
                return "wrong", f"relative error {err:.3g} against the float32 reference", err, None
            return "ok", None, err, self.problem.time(configs, replays)
        except Exception as exc:  # noqa: BLE001 - a config that fails to launch is recorded, not fatal
            if type(exc).__name__ == "OutOfMemoryError":
                return "oom", str(exc)[:300], None, None
            return "launch_error", f"{type(exc).__name__}: {str(exc)[:300]}", None, None

    def finals(self, finalists: list[Any], retime: bool = False) -> dict[Any, Measurement]:
        """Re-time `finalists` (each already measured ok) in FINAL_ROUNDS interleaved rounds; a finalist already
        re-timed in an earlier run is read back unless `retime` (a second pass, whose finalists must share one
        time window). Latency = median of the round medians; spread = half their range plus the median
        within-round spread."""
        todo = [c for c in finalists if retime or self.known[c].replays < FINAL_REPLAYS]
        rounds: dict[Any, list[TimingResult]] = {c: [] for c in todo}
        started = time.perf_counter()
        for _ in range(FINAL_ROUNDS):
            for configs in todo:
                rounds[configs].append(self.problem.time(configs, FINAL_ROUND_REPLAYS))
        share = (time.perf_counter() - started) / max(len(todo), 1)
        for configs, timings in rounds.items():
            medians = [t.median_us for t in timings]
            spread = (max(medians) - min(medians)) / 2 + statistics.median(t.spread_us for t in timings)
            prior = self.known[configs]
            self._record(configs, "ok", statistics.median(medians), spread, prior.max_rel_error, None, share,
                         sum(t.replays for t in timings))
        return {c: self.known[c] for c in finalists}


def fastest(measurements: list[Measurement]) -> list[Measurement]:
    return sorted((m for m in measurements if m.status == "ok"), key=lambda m: (m.latency_us or 0.0, m.config_key))


def cross_batch_finalists(db: Database, ctx: MeasurementContext, shape_key: str, batch_size: int,
                          parse_key: Callable[[str], Any], per_batch_size: int = 2) -> list[Any]:
    """The `per_batch_size` fastest finalists (configs re-timed in a first pass's finals) of every other batch size
    of a shape, nearest batch sizes first, as the family's config objects (`parse_key`): a second pass's candidates."""
    rows = [m for m in load_measurements(db, ctx, shape_key)
            if m.status == "ok" and m.batch_size != batch_size and m.replays >= FINAL_REPLAYS]
    sizes = sorted({m.batch_size for m in rows}, key=lambda s: (abs(s - batch_size), s))
    return [parse_key(m.config_key) for s in sizes for m in fastest([r for r in rows if r.batch_size == s])[:per_batch_size]]


def compile_ahead(sweeper: BatchSweeper, configs: list[Any]) -> None:
    """Start compiling `configs` (those not measured yet) at once: a batch size's baselines and its search's seeds
    compile side by side, instead of each baseline's compile waiting for the one before (one compile round per
    batch size less on the critical path)."""
    if sweeper.pool is not None:
        sweeper.pool.submit([c for c in dict.fromkeys(configs) if c not in sweeper.known])


def search(sweeper: BatchSweeper, strategy: SearchStrategy, to_configs: Callable[[KernelConfig], Any],
            from_configs: Callable[[Any], KernelConfig | None], on_progress: Callable[[int], None] | None) -> None:
    """Ask/measure/tell until the strategy is done; results already stored are told first, never re-measured."""
    for configs, m in list(sweeper.known.items()):
        config = from_configs(configs)
        if config is not None:
            strategy.preload(config, m.latency_us if m.status == "ok" else None)
    if sweeper.pool is not None:
        # Start compiling everything already known to be needed, so the workers run ahead of the timing instead
        # of idling while each batch is timed (the exhaustive search knows its whole list up front).
        sweeper.pool.submit([to_configs(c) for c in strategy.upcoming()])
    width = sweeper.pool.workers if sweeper.pool is not None else 8
    while not strategy.finished():
        batch = strategy.ask(width)
        if not batch:
            break
        if sweeper.pool is not None:
            sweeper.pool.submit([to_configs(c) for c in batch])
        for config in batch:
            m = sweeper.measure(to_configs(config))
            strategy.tell(config, m.latency_us if m.status == "ok" else None)
            if on_progress:
                on_progress(1)


class Gains:
    """Gains of a batch result's exported config over the engine's choice and the default (latencies in us,
    set by the dataclass that mixes this in); None where one side was not measured."""

    best_latency_us: float | None
    engine_latency_us: float | None
    default_latency_us: float | None

    @property
    def gain_over_default(self) -> float | None:
        return self.default_latency_us / self.best_latency_us if self.default_latency_us and self.best_latency_us else None

    @property
    def gain_over_engine(self) -> float | None:
        return self.engine_latency_us / self.best_latency_us if self.engine_latency_us and self.best_latency_us else None


@dataclass
class Finalists:
    """An ordered set of configs to re-time in the finals."""

    items: list[Any] = field(default_factory=list)

    def add(self, configs: Any) -> None:
        if configs is not None and configs not in self.items:
            self.items.append(configs)


@dataclass(frozen=True)
class Decision:
    """The finals' outcome: what to export and its latency beside the engine's choice."""

    best: Any
    best_latency_us: float | None
    engine_latency_us: float | None
    kept_engine_choice: bool
    noise_us: float | None


def decide(finals: dict[Any, Measurement], engine: Any, parse_key: Callable[[str], Any]) -> Decision:
    """The fastest finalist, unless it does not beat the engine's own choice by more than the noise (the two
    spreads, at least NOISE_FLOOR of the engine's latency): then the engine's choice is kept."""
    ranked = fastest(list(finals.values()))

    def latency(configs: Any) -> float | None:
        m = finals.get(configs)
        return m.latency_us if m is not None and m.status == "ok" else None

    best = parse_key(ranked[0].config_key) if ranked else None
    engine_latency = latency(engine)
    noise = None
    kept = False
    if best is not None and engine_latency is not None:
        noise = max((finals[best].latency_spread_us or 0.0) + (finals[engine].latency_spread_us or 0.0),
                    NOISE_FLOOR * engine_latency)
        if best != engine and (latency(best) or 0.0) > engine_latency - noise:
            best, kept = engine, True  # never worse than what the engine runs today
        kept = kept or best == engine
    return Decision(best, latency(best) if best is not None else None, engine_latency, kept, noise)
