"""The block-FP8 GEMM's search at one batch size, in the kernel that will read the file.

Like the fused MoE's (moe_batch.py): SGLang's current choice (its shipped file through its own lookup, else its
default) and the default are measured first; seeds are those, every shipped config for this (N, K) from any
device, and the neighbouring batch sizes' best; a TPE search over the six file keys follows; on sm90 the best few
are tried with SGLang's SWAP_AB / SPLIT_K variants; then interleaved finals and the never-worse rule
(tuner/search/batch.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuner.kernels.base import GemmShape, KernelConfig, nearest_entry
from tuner.kernels.fp8_gemm.backends import GemmChoice
from tuner.kernels.fp8_gemm.space import BLOCK_M, GemmConfig, default_config, gemm_space
from tuner.search.batch import (
    FINALISTS,
    BatchSweeper,
    Finalists,
    Gains,
    compile_ahead,
    cross_batch_finalists,
    decide,
    fastest,
    search,
)
from tuner.search.strategies import AdaptiveSearch, ExhaustiveSearch
from tuner.store.db import Database
from tuner.store.kernels import BestConfig, MeasurementContext, load_measurements

HOPPER_BASES = 3  # the fastest plain configs tried with every SWAP_AB / SPLIT_K variant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GemmPlan:
    shape: GemmShape
    batch_size: int
    engine: GemmChoice
    hopper: bool  # the kernel has SGLang's sm90 variant (SWAP_AB / SPLIT_K)
    seeds: tuple[GemmConfig, ...] = ()
    strategy: str = "adaptive"
    budget: int = 32
    seed: int = 0


@dataclass(frozen=True)
class GemmBatchResult(Gains):
    batch_size: int
    best: GemmConfig | None
    best_latency_us: float | None
    engine: GemmChoice
    engine_latency_us: float | None
    default_latency_us: float | None
    kept_engine_choice: bool
    noise_us: float | None
    plain: GemmConfig | None  # the best config without SGLang's sm90 keys (what vLLM's kernel can read)
    plain_latency_us: float | None
    measured: int
    reused: int
    rejected_wrong: int
    failed: int
    gpu_seconds: float



def _fits(config: KernelConfig) -> bool:
    """A/B tiles of fp8 in flight within the sm90 227 KiB of shared memory."""
    return (config.block_size_m + config.block_size_n) * config.block_size_k * max(config.num_stages - 1, 1) <= 232448


def sweep_gemm_batch(sweeper: BatchSweeper, plan: GemmPlan,
                     on_progress: Callable[[int], None] | None = None) -> GemmBatchResult:
    engine, default = plan.engine.config, default_config(plan.shape.block_shape)
    bases = [c.base for c in gemm_space(plan.shape.block_shape, hopper=False) if _fits(c.base)]
    max_block_m = max(16, min(BLOCK_M[-1], 1 << (max(plan.batch_size, 1) - 1).bit_length()))
    pruned = [c for c in bases if c.block_size_m <= max_block_m]
    seeds = [s.base for s in (engine, default, *plan.seeds)]
    strategy = (ExhaustiveSearch(bases) if plan.strategy == "exhaustive"
                else AdaptiveSearch(pruned, seeds, plan.budget, seed=plan.seed + plan.batch_size))
    compile_ahead(sweeper, [engine, default, *map(GemmConfig, strategy.upcoming())])
    for baseline in (engine, default):
        sweeper.measure(baseline)
    search(sweeper, strategy, GemmConfig, lambda g: None if g.hopper else g.base, on_progress)
    if plan.hopper:
        ranked = [GemmConfig.from_key(m.config_key) for m in fastest(list(sweeper.known.values()))]
        tops = [g.base for g in ranked if not g.hopper][:HOPPER_BASES]
        variants = [v for v in gemm_space(plan.shape.block_shape, hopper=True) if v.hopper and v.base in tops]
        variants += [s for s in plan.seeds if s.hopper]
        search(sweeper, ExhaustiveSearch(list(dict.fromkeys(variants))), lambda g: g,  # type: ignore[arg-type]
               lambda g: g if g.hopper else None, on_progress)
    return _conclude(sweeper, plan)


def refine_gemm_batch(sweeper: BatchSweeper, plan: GemmPlan, candidates: list[GemmConfig],
                      on_progress: Callable[[int], None] | None = None) -> GemmBatchResult:
    """The second pass at one batch size (as moe_batch.refine_batch_size): the other batch sizes' finalists are
    measured here too, then finals (all re-timed in one window) and the never-worse decision again."""
    usable = [c for c in dict.fromkeys(candidates) if _fits(c.base) and (plan.hopper or not c.hopper)]
    if sweeper.pool is not None:
        sweeper.pool.submit([c for c in usable if c not in sweeper.known])
    for config in (plan.engine.config, default_config(plan.shape.block_shape), *usable):
        sweeper.measure(config)
        if on_progress:
            on_progress(1)
    return _conclude(sweeper, plan, retime=True)


def cross_batch_gemm_candidates(db: Database, ctx: MeasurementContext, shape: GemmShape, batch_size: int,
                                per_batch_size: int = 2) -> list[GemmConfig]:
    """The other batch sizes' finalists, nearest first (batch.cross_batch_finalists)."""
    return cross_batch_finalists(db, ctx, shape.key, batch_size, GemmConfig.from_key, per_batch_size)


def _conclude(sweeper: BatchSweeper, plan: GemmPlan, retime: bool = False) -> GemmBatchResult:
    engine, default = plan.engine.config, default_config(plan.shape.block_shape)
    finalists = Finalists()
    for m in fastest(list(sweeper.known.values()))[:FINALISTS]:
        finalists.add(GemmConfig.from_key(m.config_key))
    plain_best = fastest([m for c, m in sweeper.known.items() if not c.hopper])
    if plain_best:  # the best plain config gets final replays too: it is what vLLM's file holds
        finalists.add(GemmConfig.from_key(plain_best[0].config_key))
    for baseline in (engine, default):
        if sweeper.known[baseline].status == "ok":
            finalists.add(baseline)
    finals = sweeper.finals(finalists.items, retime) if finalists.items else {}
    decision = decide(finals, engine, GemmConfig.from_key)
    plain = fastest([m for c, m in sweeper.known.items() if not c.hopper])
    return GemmBatchResult(
        plan.batch_size, decision.best, decision.best_latency_us, plan.engine, decision.engine_latency_us,
        finals[default].latency_us if default in finals else None, decision.kept_engine_choice, decision.noise_us,
        GemmConfig.from_key(plain[0].config_key) if plain else None, plain[0].latency_us if plain else None,
        sweeper.measured, sweeper.reused, sweeper.wrong, sweeper.failed, sweeper.gpu_seconds,
    )


def shipped_gemm_seeds(folder: Path | None, shape: GemmShape, batch_size: int) -> list[GemmConfig]:
    """The configs every shipped file for this (N, K, block) picks at `batch_size`, any device."""
    import json

    if folder is None or not folder.is_dir():
        return []
    bn, bk = shape.block_shape
    prefix, suffix = f"N={shape.n},K={shape.k},device_name=", f",dtype=fp8_w8a8,block_shape=[{bn}, {bk}].json"
    seeds: dict[GemmConfig, None] = {}
    # not glob: the "[bn, bk]" in the names would be read as a character class
    for path in sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith(suffix)):
        try:
            raw = {int(k): v for k, v in json.loads(path.read_text()).items() if k.isdigit()}
            seeds[GemmConfig.from_json_dict(nearest_entry(raw, batch_size))] = None
        except Exception as exc:  # noqa: BLE001 - a file we cannot read is no seed
            log.debug("GEMM seed file %s skipped: %s", path.name, exc)
    return list(seeds)


def neighbour_gemm_seeds(db: Database, ctx: MeasurementContext, shape: GemmShape, batch_size: int,
                         per_neighbour: int = 3) -> list[GemmConfig]:
    rows = [m for m in load_measurements(db, ctx, shape.key) if m.status == "ok" and m.batch_size != batch_size]
    sizes = sorted({m.batch_size for m in rows})
    near = [s for s in sizes if s < batch_size][-1:] + [s for s in sizes if s > batch_size][:1]
    return [GemmConfig.from_key(m.config_key) for s in near
            for m in fastest([r for r in rows if r.batch_size == s])[:per_neighbour]]


def gemm_best_row(r: GemmBatchResult) -> BestConfig | None:
    if r.best is None:
        return None
    return BestConfig(
        batch_size=r.batch_size, config=r.best.to_json_dict(), config_key=r.best.key,
        latency_us=float(r.best_latency_us or 0.0), default_latency_us=r.default_latency_us,
        engine_config={"config": r.engine.config.to_json_dict()}, engine_source=r.engine.source,
        engine_latency_us=r.engine_latency_us, kept_engine_choice=r.kept_engine_choice, noise_us=r.noise_us,
        single_config=r.plain.to_json_dict() if r.plain is not None else None, single_latency_us=r.plain_latency_us,
    )
