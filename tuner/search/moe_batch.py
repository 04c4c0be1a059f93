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
from collections.abc import Callable
from dataclasses import dataclass

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
from tuner.search.batch import (  # noqa: F401 - re-exported: the finals' constants belong with the MoE search too
    FINAL_REPLAYS,
    FINAL_ROUND_REPLAYS,
    FINAL_ROUNDS,
    FINALISTS,
    QUICK_REPLAYS,
    BatchSweeper,
    Finalists,
    Gains,
    compile_ahead,
    cross_batch_finalists,
    decide,
    fastest,
    search,
)
from tuner.search.strategies import AdaptiveSearch, ExhaustiveSearch, SearchStrategy
from tuner.store.db import Database
from tuner.store.kernels import (
    BestConfig,
    MeasurementContext,
    load_measurements,
)

log = logging.getLogger(__name__)



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
class BatchResult(Gains):
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
    up = up_strategy(plan)
    compile_ahead(sweeper, [engine, default, *map(MoeConfigs, up.upcoming())])
    for baseline in (engine, default):  # measured first: the search starts from what the user has
        sweeper.measure(baseline)
    # Up phase: one config for both GEMMs.
    search(sweeper, up, MoeConfigs, lambda c: c.up if c.down is None else None, on_progress)
    singles = fastest([m for c, m in sweeper.known.items() if c.down is None])
    if plan.down_configs:
        # Down phase, given the up config of the fastest pair so far (the engine's own pair included).
        leader = fastest(list(sweeper.known.values()))
        if leader:
            anchor = MoeConfigs.from_key(leader[0].config_key).up
            search(sweeper, down_strategy(plan, anchor), _down_pair(anchor), _down_of(anchor), on_progress)
            # Up again, given that down config: one round of coordinate descent.
            best_pair = MoeConfigs.from_key(fastest(list(sweeper.known.values()))[0].config_key)
            if best_pair.down is not None and plan.strategy != "exhaustive":
                seeds = [best_pair.up, engine.up, *(MoeConfigs.from_key(m.config_key).up for m in singles[:4])]
                strategy = AdaptiveSearch(candidate_space(plan.shape, plan.batch_size),
                                          [x for x in dict.fromkeys(seeds) if not x.use_tma], plan.down_budget,
                                          seed=plan.seed + plan.batch_size + 13)
                search(sweeper, strategy, _with_down(best_pair.down), _up_given(best_pair.down), on_progress)
    return _conclude(sweeper, plan)


def refine_batch_size(sweeper: BatchSweeper, plan: BatchPlan, candidates: list[MoeConfigs],
                      on_progress: Callable[[int], None] | None = None) -> BatchResult:
    """The second pass at one batch size, once every batch size has had its first: `candidates` (the finalists of
    the other batch sizes, see `cross_batch_candidates`) are measured here too, then the finals and the never-worse
    decision run again over everything measured at this M, all finalists re-timed in one window.

    Why: a first pass seeds from the neighbouring batch sizes measured *before* it, so a config that wins at
    larger M (or at an M another GPU was still searching) is never tried; this pass makes the result independent
    of the order and of how the batch sizes were spread over workers."""
    leader = fastest(list(sweeper.known.values()))
    if leader:  # the nearest batch sizes' finalists recombined with this M's best pair
        candidates = list(candidates) + recombined(MoeConfigs.from_key(leader[0].config_key),
                                                   list(candidates)[:RECOMBINED])
    usable = [c for c in dict.fromkeys(candidates)
              if not c.up.use_tma and fits_device(c.up, plan.shape)
              and (c.down is None or (plan.down_configs and (plan.tma or not c.down.use_tma)
                                      and c.down.block_size_m == c.up.block_size_m
                                      and fits_device(c.down, plan.shape)))]
    if sweeper.pool is not None:
        sweeper.pool.submit([c for c in usable if c not in sweeper.known])
    for configs in (plan.engine.configs, plan.default, *usable):  # baselines: read back from the first pass
        sweeper.measure(configs)
        if on_progress:
            on_progress(1)
    return _conclude(sweeper, plan, retime=True)


RECOMBINED = 12  # finalists of the nearest batch sizes (nearest first) that are also recombined with the best pair


def recombined(best: MoeConfigs, others: list[MoeConfigs]) -> list[MoeConfigs]:
    """Each of `others` moved to `best`'s BLOCK_SIZE_M, its down config under `best`'s up config, and `best`'s
    down config under its up config: a finalist of a neighbouring batch size often wins here only at this M's
    BLOCK_SIZE_M, or as one half of a pair (the down GEMM's optimum moves less with M than the up GEMM's)."""
    bm = best.up.block_size_m
    best_down = best.effective_down.with_block_m(bm)

    def pair(up: KernelConfig, down: KernelConfig) -> MoeConfigs:
        return MoeConfigs(up, None if down == up else down)

    out: list[MoeConfigs] = []
    for c in others:
        up, down = c.up.with_block_m(bm), c.effective_down.with_block_m(bm)
        out += [pair(up, down), pair(best.up, down), pair(up, best_down)]
    return out


def cross_batch_candidates(db: Database, ctx: MeasurementContext, shape: MoeShape, batch_size: int,
                           per_batch_size: int = 2) -> list[MoeConfigs]:
    """The other batch sizes' finalists, nearest first (batch.cross_batch_finalists)."""
    return cross_batch_finalists(db, ctx, shape.key, batch_size, MoeConfigs.from_key, per_batch_size)


def _conclude(sweeper: BatchSweeper, plan: BatchPlan, retime: bool = False) -> BatchResult:
    """Finals, interleaved, with the engine's choice and the default always among them, then the decision."""
    engine, default = plan.engine.configs, plan.default
    singles = fastest([m for c, m in sweeper.known.items() if c.down is None])
    best_up = MoeConfigs.from_key(singles[0].config_key).up if singles else None
    ok = [m for m in fastest(list(sweeper.known.values()))]
    finalists = Finalists()
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
    finals = sweeper.finals(finalists.items, retime) if finalists.items else {}
    decision = decide(finals, engine, MoeConfigs.from_key)
    best = decision.best
    single_finals = [m for c, m in finals.items() if c.down is None]
    single = fastest(single_finals)
    return BatchResult(
        batch_size=plan.batch_size, best=best, best_latency_us=decision.best_latency_us, engine=plan.engine,
        engine_latency_us=decision.engine_latency_us,
        default_latency_us=finals[default].latency_us if default in finals else None,
        single=MoeConfigs.from_key(single[0].config_key).up if single else None,
        single_latency_us=single[0].latency_us if single else None, kept_engine_choice=decision.kept_engine_choice,
        noise_us=decision.noise_us,
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
        best = fastest([m for m in rows if m.batch_size == s])[:per_neighbour]
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
