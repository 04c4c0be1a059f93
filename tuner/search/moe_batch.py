"""The fused-MoE search at one batch size, in the kernel that will read the file.

1. **Baselines**: what the engine runs today at this M (its shipped file through its own lookup, else its
   default) and SGLang's default are measured like any candidate.
2. **Up phase**: one config for both GEMMs (what a file without a `_down` twin means), searched from seeds
   (the engine's choice, the default, every shipped config for this shape from any device, the best of the
   neighbouring batch sizes), then TPE; or the whole space with `exhaustive`.
3. **Down phase** (engines that read `_down` files): the down GEMM's own config at the BLOCK_SIZE_M of the
   fastest pair so far (the engine's own pair included), with and without USE_TMA where the engine has it;
   then the up config again given that down config (one round of coordinate descent).
4. **Finals**: the fastest few, the engine's choice and the default are re-timed in interleaved rounds, so
   drift hits all alike; the winner must beat the engine's choice by more than the measured noise, or the
   engine's choice itself is kept (never worse than what the user has).

Every measurement is written to the database as it arrives; re-running resumes. The GPU, the kernel and
the compile pool are behind small protocols, so the whole flow runs on CPU tests with a fake problem.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tuner.kernels.base import KernelConfig, MoeConfigs, MoeShape
from tuner.kernels.fused_moe.backends import EngineChoice
from tuner.kernels.fused_moe.space import (
    candidate_space,
    default_config,
    down_candidate_space,
    down_space,
    fits_device,
    full_space,
)
from tuner.kernels.timing import TimingResult
from tuner.search.strategies import AdaptiveSearch, ExhaustiveSearch, SearchStrategy
from tuner.store.db import Database
from tuner.store.kernels import (
    BestConfig,
    Measurement,
    MeasurementContext,
    load_measurements,
    record_measurement,
)

log = logging.getLogger(__name__)

QUICK_REPLAYS = 6
FINAL_ROUNDS = 3  # interleaved rounds of the finals
FINAL_ROUND_REPLAYS = 10
FINAL_REPLAYS = FINAL_ROUNDS * FINAL_ROUND_REPLAYS
FINALISTS = 4
NOISE_FLOOR = 0.005  # a gain under 0.5% of the engine's latency is never taken as a gain


class TunableProblem(Protocol):
    """What the search needs from a kernel at one batch size."""

    def check(self, configs: MoeConfigs) -> float: ...
    def is_correct(self, rel_error: float) -> bool: ...
    def time(self, configs: MoeConfigs, replays: int) -> TimingResult: ...


class Compiler(Protocol):
    workers: int

    def submit(self, configs: list[MoeConfigs]) -> None: ...
    def wait(self, configs: MoeConfigs) -> tuple[str, str]: ...


@dataclass(frozen=True)
class BatchPlan:
    """What one batch size's search starts from."""

    shape: MoeShape
    batch_size: int
    engine: EngineChoice  # what the engine runs here today
    down_configs: bool  # the kernel reads a separate down config (`_down` files)
    tma: bool  # ... and honours USE_TMA in it
    up_seeds: tuple[KernelConfig, ...] = ()  # shipped configs at this M, neighbours' best
    down_seeds: tuple[KernelConfig, ...] = ()
    strategy: str = "adaptive"  # or "exhaustive"
    up_budget: int = 32
    down_budget: int = 16
    seed: int = 0

    @property
    def default(self) -> MoeConfigs:
        return MoeConfigs(default_config(self.shape, self.batch_size))


@dataclass(frozen=True)
class BatchResult:
    """One batch size's outcome. Latencies are per call in microseconds, from the interleaved finals."""

    batch_size: int
    best: MoeConfigs | None  # what gets exported (the engine's own choice when nothing beat it)
    best_latency_us: float | None
    engine: EngineChoice
    engine_latency_us: float | None
    default_latency_us: float | None
    single: KernelConfig | None  # the best one config for both GEMMs (for engines without `_down` files)
    single_latency_us: float | None
    kept_engine_choice: bool
    noise_us: float | None
    measured: int  # new measurements this run
    reused: int  # measurements read back from the database
    rejected_wrong: int
    failed: int
    gpu_seconds: float

    @staticmethod
    def _ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    @property
    def gain_over_default(self) -> float | None:
        return self._ratio(self.default_latency_us, self.best_latency_us)

    @property
    def gain_over_engine(self) -> float | None:
        return self._ratio(self.engine_latency_us, self.best_latency_us)


class BatchSweeper:
    """Measures configs at one batch size: compile (in the pool), check, time, record."""

    def __init__(self, db: Database, ctx: MeasurementContext, shape: MoeShape, problem: TunableProblem,
                 pool: Compiler | None, batch_size: int) -> None:
        self.db, self.ctx, self.shape, self.problem, self.pool = db, ctx, shape, problem, pool
        self.batch_size = batch_size
        self.known: dict[MoeConfigs, Measurement] = {
            MoeConfigs.from_key(m.config_key): m for m in load_measurements(db, ctx, shape.key, batch_size)
        }
        self.reused = len(self.known)
        self.measured = self.wrong = self.failed = 0
        self.gpu_seconds = 0.0

    def _record(self, configs: MoeConfigs, status: str, latency: float | None, spread: float | None,
                err: float | None, detail: str | None, elapsed: float, replays: int) -> Measurement:
        m = Measurement(self.batch_size, configs.key, status, latency, spread, err, detail or None, elapsed, replays)
        record_measurement(self.db, self.ctx, self.shape.key, m)  # written as it arrives
        self.known[configs] = m
        self.measured += 1
        self.gpu_seconds += elapsed
        self.wrong += status == "wrong"
        self.failed += status not in ("ok", "wrong")
        return m

    def measure(self, configs: MoeConfigs) -> Measurement:
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

    def _check_and_time(self, configs: MoeConfigs, replays: int) -> tuple[str, str | None, float | None,
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

    def finals(self, finalists: list[MoeConfigs]) -> dict[MoeConfigs, Measurement]:
        """Re-time `finalists` (each already measured ok) in FINAL_ROUNDS interleaved rounds; a finalist already
        re-timed in an earlier run is read back. Latency = median of the round medians; spread = half their range
        plus the median within-round spread."""
        todo = [c for c in finalists if self.known[c].replays < FINAL_REPLAYS]
        rounds: dict[MoeConfigs, list[TimingResult]] = {c: [] for c in todo}
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


def _fastest(measurements: list[Measurement]) -> list[Measurement]:
    return sorted((m for m in measurements if m.status == "ok"), key=lambda m: (m.latency_us or 0.0, m.config_key))


def _search(sweeper: BatchSweeper, strategy: SearchStrategy, to_configs: Callable[[KernelConfig], MoeConfigs],
            from_configs: Callable[[MoeConfigs], KernelConfig | None], on_progress: Callable[[int], None] | None) -> None:
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


def up_strategy(plan: BatchPlan) -> SearchStrategy:
    seeds = [plan.engine.configs.up, plan.default.up, *plan.up_seeds]
    seeds = [s for s in dict.fromkeys(seeds) if not s.use_tma and fits_device(s, plan.shape)]
    if plan.strategy == "exhaustive":
        return ExhaustiveSearch([c for c in full_space(plan.shape) if fits_device(c, plan.shape)])
    return AdaptiveSearch(candidate_space(plan.shape, plan.batch_size), seeds, plan.up_budget,
                          seed=plan.seed + plan.batch_size)


def down_strategy(plan: BatchPlan, up: KernelConfig) -> SearchStrategy:
    """Down configs at `up`'s BLOCK_SIZE_M; `up` itself (no separate down config) is the first seed."""
    engine_down = plan.engine.configs.down
    seeds = [up, *(d.with_block_m(up.block_size_m) for d in ([engine_down] if engine_down else []) + list(plan.down_seeds))]
    seeds = [s for s in dict.fromkeys(seeds) if (plan.tma or not s.use_tma) and fits_device(s, plan.shape)]
    if plan.strategy == "exhaustive":
        return ExhaustiveSearch([up] + [c for c in down_space(plan.shape, up.block_size_m, plan.tma) if c != up])
    return AdaptiveSearch(down_candidate_space(plan.shape, plan.batch_size, up.block_size_m, plan.tma), seeds,
                          plan.down_budget, seed=plan.seed + plan.batch_size + 7)


def _down_pair(up: KernelConfig) -> Callable[[KernelConfig], MoeConfigs]:
    return lambda down: MoeConfigs(up, None if down == up else down)


def _down_of(up: KernelConfig) -> Callable[[MoeConfigs], KernelConfig | None]:
    return lambda c: (c.down or c.up) if c.up == up else None


@dataclass
class _Finalists:
    items: list[MoeConfigs] = field(default_factory=list)

    def add(self, configs: MoeConfigs | None) -> None:
        if configs is not None and configs not in self.items:
            self.items.append(configs)


def _with_down(down: KernelConfig) -> Callable[[KernelConfig], MoeConfigs]:
    """Up candidates paired with a fixed down config (moved to each up config's BLOCK_SIZE_M)."""
    def pair(up: KernelConfig) -> MoeConfigs:
        d = down.with_block_m(up.block_size_m)
        return MoeConfigs(up, None if d == up else d)
    return pair


def _up_given(down: KernelConfig) -> Callable[[MoeConfigs], KernelConfig | None]:
    return lambda c: c.up if c.effective_down == down.with_block_m(c.up.block_size_m) else None


def sweep_batch_size(sweeper: BatchSweeper, plan: BatchPlan,
                     on_progress: Callable[[int], None] | None = None) -> BatchResult:
    """Search one batch size (see the module docstring); returns what to export and the baselines beside it."""
    engine, default = plan.engine.configs, plan.default
    for baseline in (engine, default):  # measured first: the search starts from what the user has
        sweeper.measure(baseline)
    # Up phase: one config for both GEMMs.
    _search(sweeper, up_strategy(plan), MoeConfigs, lambda c: c.up if c.down is None else None, on_progress)
    singles = _fastest([m for c, m in sweeper.known.items() if c.down is None])
    if plan.down_configs:
        # Down phase, given the up config of the fastest pair so far (the engine's own pair included).
        leader = _fastest(list(sweeper.known.values()))
        if leader:
            anchor = MoeConfigs.from_key(leader[0].config_key).up
            _search(sweeper, down_strategy(plan, anchor), _down_pair(anchor), _down_of(anchor), on_progress)
            # Up again, given that down config: one round of coordinate descent.
            best_pair = MoeConfigs.from_key(_fastest(list(sweeper.known.values()))[0].config_key)
            if best_pair.down is not None and plan.strategy != "exhaustive":
                seeds = [best_pair.up, engine.up, *(MoeConfigs.from_key(m.config_key).up for m in singles[:4])]
                strategy = AdaptiveSearch(candidate_space(plan.shape, plan.batch_size),
                                          [x for x in dict.fromkeys(seeds) if not x.use_tma], plan.down_budget,
                                          seed=plan.seed + plan.batch_size + 13)
                _search(sweeper, strategy, _with_down(best_pair.down), _up_given(best_pair.down), on_progress)
    best_up = MoeConfigs.from_key(singles[0].config_key).up if singles else None
    # Finals, interleaved, with the engine's choice and the default always among them.
    ok = [m for m in _fastest(list(sweeper.known.values()))]
    finalists = _Finalists()
    for m in ok[:FINALISTS]:
        finalists.add(MoeConfigs.from_key(m.config_key))
    if singles:
        finalists.add(MoeConfigs.from_key(singles[0].config_key))
    if best_up is not None and engine.down is not None and plan.down_configs:
        cross = MoeConfigs(best_up, engine.down.with_block_m(best_up.block_size_m))
        if sweeper.measure(cross).status == "ok":
            finalists.add(cross)
    for baseline in (engine, default):
        if sweeper.known[baseline].status == "ok":
            finalists.add(baseline)
    finals = sweeper.finals(finalists.items) if finalists.items else {}
    ranked = _fastest(list(finals.values()))

    def latency(configs: MoeConfigs) -> float | None:
        m = finals.get(configs)
        return m.latency_us if m is not None and m.status == "ok" else None

    best = MoeConfigs.from_key(ranked[0].config_key) if ranked else None
    engine_latency = latency(engine)
    noise = None
    kept = False
    if best is not None and engine_latency is not None:
        noise = max((finals[best].latency_spread_us or 0.0) + (finals[engine].latency_spread_us or 0.0),
                    NOISE_FLOOR * engine_latency)
        if best != engine and (latency(best) or 0.0) > engine_latency - noise:
            best, kept = engine, True  # never worse than what the engine runs today
        kept = kept or best == engine
    single_finals = [m for c, m in finals.items() if c.down is None]
    single = _fastest(single_finals)
    return BatchResult(
        batch_size=plan.batch_size, best=best, best_latency_us=latency(best) if best else None, engine=plan.engine,
        engine_latency_us=engine_latency, default_latency_us=latency(default),
        single=MoeConfigs.from_key(single[0].config_key).up if single else None,
        single_latency_us=single[0].latency_us if single else None, kept_engine_choice=kept, noise_us=noise,
        measured=sweeper.measured, reused=sweeper.reused, rejected_wrong=sweeper.wrong, failed=sweeper.failed,
        gpu_seconds=sweeper.gpu_seconds,
    )


def neighbour_seeds(db: Database, ctx: MeasurementContext, shape: MoeShape, batch_size: int,
                    per_neighbour: int = 3) -> tuple[list[KernelConfig], list[KernelConfig]]:
    """(up, down) configs of the fastest pairs measured at the closest smaller and larger batch sizes."""
    rows = [m for m in load_measurements(db, ctx, shape.key) if m.status == "ok" and m.batch_size != batch_size]
    sizes = sorted({m.batch_size for m in rows})
    lower = [s for s in sizes if s < batch_size][-1:]
    upper = [s for s in sizes if s > batch_size][:1]
    ups: list[KernelConfig] = []
    downs: list[KernelConfig] = []
    for s in lower + upper:
        best = _fastest([m for m in rows if m.batch_size == s])[:per_neighbour]
        for m in best:
            configs = MoeConfigs.from_key(m.config_key)
            ups.append(configs.up)
            if configs.down is not None:
                downs.append(configs.down)
    return ups, downs


def best_config_row(r: BatchResult) -> BestConfig:
    """A batch result as the row the exporters read."""
    assert r.best is not None
    engine = r.engine.configs
    return BestConfig(
        batch_size=r.batch_size, config=r.best.up.to_json_dict(), config_key=r.best.key,
        latency_us=float(r.best_latency_us or 0.0), default_latency_us=r.default_latency_us,
        down_config=r.best.down.to_json_dict() if r.best.down is not None else None,
        engine_config={"up": engine.up.to_json_dict(), "down": engine.down.to_json_dict() if engine.down else None},
        engine_source=r.engine.source, engine_latency_us=r.engine_latency_us,
        single_config=r.single.to_json_dict() if r.single is not None else None,
        single_latency_us=r.single_latency_us, kept_engine_choice=r.kept_engine_choice, noise_us=r.noise_us,
    )
