"""The fused-MoE kernel sweep: for each batch size, search configs, check each against the reference, time
it, and write every measurement to the database as it arrives.

Re-running the same sweep resumes: configs already measured (same device, Triton, kernel source, timing
method, shape and batch size) are read back, never re-measured. GPUs, workers and resume live here; the
kernel, the search and the timing harness know nothing of them.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Self

from tuner.kernels.base import STANDARD_BATCH_SIZES, KernelConfig, MoeShape
from tuner.kernels.space import candidate_space, default_config, fits_device, full_space
from tuner.search.strategies import AdaptiveSearch, ExhaustiveSearch, SearchStrategy
from tuner.store.db import Database, open_database
from tuner.store.kernels import (
    Measurement,
    MeasurementContext,
    get_or_create_sweep,
    load_best_configs,
    load_measurements,
    mark_interrupted_sweeps,
    record_measurement,
    save_best_configs,
    set_sweep_status,
)

log = logging.getLogger(__name__)

QUICK_REPLAYS = 6
FINAL_REPLAYS = 30
FINALISTS = 4


@dataclass(frozen=True)
class SweepSpec:
    model: str
    tp: int
    ep: int
    shared_experts_fusion: bool
    shape: MoeShape
    batch_sizes: tuple[int, ...] = STANDARD_BATCH_SIZES
    strategy: str = "adaptive"  # or "exhaustive"
    budget: int = 48  # configs measured per batch size by the adaptive search
    kernel_source: str | None = None  # None: the engine's kernel if importable, else ours
    seed: int = 0
    routing_path: str | None = None


@dataclass(frozen=True)
class BatchResult:
    batch_size: int
    best: KernelConfig | None
    best_latency_us: float | None
    default_latency_us: float | None
    measured: int  # new measurements this run
    reused: int  # measurements read back from the database
    rejected_wrong: int
    failed: int
    gpu_seconds: float


@dataclass
class SweepReport:
    sweep_id: int
    device_name: str
    triton_version: str
    kernel_source: str
    results: list[BatchResult] = field(default_factory=list)


class _BatchSweeper:
    """Measures configs at one batch size: compile (in the pool), check, time, record."""

    def __init__(self, db, ctx, shape, problem, pool, batch_size):  # type: ignore[no-untyped-def]
        self.db, self.ctx, self.shape, self.problem, self.pool = db, ctx, shape, problem, pool
        self.batch_size = batch_size
        self.known: dict[KernelConfig, Measurement] = {
            KernelConfig.from_key(m.config_key): m for m in load_measurements(db, ctx, shape.key, batch_size)
        }
        self.measured = self.wrong = self.failed = 0
        self.gpu_seconds = 0.0

    def measure(self, config: KernelConfig, replays: int) -> Measurement:
        import torch

        prior = self.known.get(config)
        if prior is not None and (prior.status != "ok" or prior.replays >= replays):
            return prior
        t0 = time.perf_counter()
        status, detail = ("ok", "") if self.pool is None else self.pool.wait(config)
        err = latency = spread = None
        timed = 0
        if status == "ok":
            try:
                err = self.problem.check(config)
                if not self.problem.is_correct(err):
                    status, detail = "wrong", f"relative error {err:.3g} against the float32 reference"
                else:
                    timing = self.problem.time(config, replays)
                    latency, spread, timed = timing.median_us, timing.spread_us, timing.replays
                    detail = None
            except torch.cuda.OutOfMemoryError as exc:
                status, detail = "oom", str(exc)[:300]
            except Exception as exc:  # noqa: BLE001 - a config that fails to launch is recorded, not fatal
                status, detail = "launch_error", f"{type(exc).__name__}: {str(exc)[:300]}"
        elapsed = time.perf_counter() - t0
        m = Measurement(self.batch_size, config.key, status, latency, spread, err, detail or None, elapsed, timed)
        record_measurement(self.db, self.ctx, self.shape.key, m)  # written as it arrives
        self.known[config] = m
        self.measured += 1
        self.gpu_seconds += elapsed
        self.wrong += status == "wrong"
        self.failed += status not in ("ok", "wrong")
        return m


def neighbour_seeds(db: Database, ctx: MeasurementContext, shape: MoeShape, batch_size: int,
                    per_neighbour: int = 3) -> list[KernelConfig]:
    """The fastest configs measured at the closest smaller and larger batch sizes already in the database."""
    rows = [m for m in load_measurements(db, ctx, shape.key) if m.status == "ok" and m.batch_size != batch_size]
    sizes = sorted({m.batch_size for m in rows})
    lower = [s for s in sizes if s < batch_size][-1:]
    upper = [s for s in sizes if s > batch_size][:1]
    seeds: list[KernelConfig] = []
    for s in lower + upper:
        best = sorted((m for m in rows if m.batch_size == s), key=lambda m: m.latency_us or 0.0)
        seeds.extend(KernelConfig.from_key(m.config_key) for m in best[:per_neighbour])
    return seeds


def make_strategy(spec: SweepSpec, batch_size: int, seeds: list[KernelConfig]) -> SearchStrategy:
    if spec.strategy == "exhaustive":
        return ExhaustiveSearch([c for c in full_space(spec.shape) if fits_device(c, spec.shape)])
    candidates = candidate_space(spec.shape, batch_size)
    return AdaptiveSearch(candidates, seeds, spec.budget, seed=spec.seed + batch_size)


def sweep_batch_size(sweeper: _BatchSweeper, spec: SweepSpec, strategy: SearchStrategy, batch_size: int,
                     pool_width: int, on_progress: Callable[[int], None] | None = None) -> BatchResult:
    reused = 0
    for config, m in list(sweeper.known.items()):
        strategy.preload(config, m.latency_us if m.status == "ok" else None)
        reused += 1
    if sweeper.pool is not None:
        # Start compiling everything already known to be needed, so the workers run ahead of the timing instead
        # of idling while each batch is timed (the exhaustive search knows its whole list up front).
        sweeper.pool.submit(strategy.upcoming())
    while not strategy.finished():
        batch = strategy.ask(pool_width)
        if not batch:
            break
        if sweeper.pool is not None:
            sweeper.pool.submit(batch)
        for config in batch:
            m = sweeper.measure(config, QUICK_REPLAYS)
            strategy.tell(config, m.latency_us if m.status == "ok" else None)
            if on_progress:
                on_progress(1)
    # Finalists: re-time the fastest few with many replays, so the winner is not a lucky quick sample.
    ok = sorted((m for m in sweeper.known.values() if m.status == "ok"), key=lambda m: m.latency_us or 0.0)
    finals = [sweeper.measure(KernelConfig.from_key(m.config_key), FINAL_REPLAYS) for m in ok[:FINALISTS]]
    dflt = sweeper.measure(default_config(spec.shape, batch_size), FINAL_REPLAYS)
    finals = [m for m in finals + [dflt] if m.status == "ok"]
    best = min(finals, key=lambda m: m.latency_us or 0.0) if finals else None
    return BatchResult(
        batch_size=batch_size,
        best=KernelConfig.from_key(best.config_key) if best else None,
        best_latency_us=best.latency_us if best else None,
        default_latency_us=dflt.latency_us if dflt.status == "ok" else None,
        measured=sweeper.measured, reused=reused, rejected_wrong=sweeper.wrong, failed=sweeper.failed,
        gpu_seconds=sweeper.gpu_seconds,
    )


def run_sweep(spec: SweepSpec, database_url: str, device_index: int = 0, compile_workers: int | None = None,
              batch_sizes: tuple[int, ...] | None = None, progress: bool = True) -> SweepReport:
    """Sweep `batch_sizes` (default: all of the spec's) on one GPU. Safe to run again: it resumes."""
    import torch
    import triton

    from tuner.kernels.backends import get_backend
    from tuner.kernels.moe_problem import MoeProblem, load_routing_trace, make_weight_copies
    from tuner.kernels.timing import BENCH_METHOD, require_cuda
    from tuner.search.compile_pool import CompilePool

    require_cuda()
    torch.cuda.set_device(device_index)
    device = torch.device("cuda", device_index)
    routing = load_routing_trace(spec.routing_path, spec.shape) if spec.routing_path else None
    backend = get_backend(spec.kernel_source)
    db = open_database(database_url)
    device_name = torch.cuda.get_device_name(device)
    ctx = MeasurementContext("fused_moe", backend.name, device_name, triton.__version__, BENCH_METHOD)
    sweep_id = get_or_create_sweep(
        db, model=spec.model, tp=spec.tp, ep=spec.ep, shared_experts_fusion=spec.shared_experts_fusion,
        dtype=spec.shape.quant.value, kernel="fused_moe", kernel_source=backend.name, device_name=device_name,
        triton_version=triton.__version__, torch_version=torch.__version__, bench_method=BENCH_METHOD,
        shape={**asdict(spec.shape), "quant": spec.shape.quant.value}, shape_key=spec.shape.key,
        batch_sizes=list(spec.batch_sizes), strategy=spec.strategy,
        engine_version=backend.version if backend.name != "tuner" else None,
    )
    report = SweepReport(sweep_id, device_name, triton.__version__, backend.name)
    pool = CompilePool(spec.shape, backend.name, device_index, compile_workers)
    sizes = batch_sizes or spec.batch_sizes
    weights = make_weight_copies(spec.shape, device, seed=spec.seed)  # once: identical for every batch size
    try:
        with _Progress(progress, len(sizes), spec) as bar:
            for batch_size in sizes:
                seeds = [default_config(spec.shape, batch_size)] + neighbour_seeds(db, ctx, spec.shape, batch_size)
                strategy = make_strategy(spec, batch_size, seeds)
                problem = MoeProblem(spec.shape, batch_size, backend, device, seed=spec.seed, routing=routing,
                                     weights=weights)
                sweeper = _BatchSweeper(db, ctx, spec.shape, problem, pool, batch_size)
                bar.start_batch(batch_size, getattr(strategy, "budget", None) or len(getattr(strategy, "candidates", [])))
                result = sweep_batch_size(sweeper, spec, strategy, batch_size, pool.workers, bar.advance)
                report.results.append(result)
                _save_best(db, sweep_id, [result])
                set_sweep_status(db, sweep_id, "running", gpu_seconds_delta=result.gpu_seconds)
                bar.finish_batch(result)
                del problem
                torch.cuda.empty_cache()
        # With --gpus, each worker sweeps a share of the batch sizes: the last one to finish marks the sweep done.
        wanted = set(spec.batch_sizes)
        covered = set(sizes) >= wanted or set(load_best_configs(db, sweep_id)) >= wanted
        set_sweep_status(db, sweep_id, "finished" if covered else "running")
    except KeyboardInterrupt:
        set_sweep_status(db, sweep_id, "interrupted")
        raise
    except BaseException:
        set_sweep_status(db, sweep_id, "failed")
        raise
    finally:
        pool.close()
        db.dispose()
    return report


def _save_best(db: Database, sweep_id: int, results: list[BatchResult]) -> None:
    rows = [
        (r.batch_size, r.best.to_json_dict(), r.best.key, float(r.best_latency_us or 0.0), r.default_latency_us)
        for r in results if r.best is not None
    ]
    save_best_configs(db, sweep_id, rows)


class _Progress:
    """A rich progress bar with ETA over batch sizes and trials; a silent stand-in when disabled."""

    def __init__(self, enabled: bool, total_batches: int, spec: SweepSpec) -> None:
        self.enabled = enabled
        self._rich = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn())
            self._overall = self._rich.add_task(f"{spec.model} TP{spec.tp} {spec.shape.quant.value}", total=total_batches)
            self._batch = self._rich.add_task("batch size", total=1)

    def __enter__(self) -> Self:
        if self._rich:
            self._rich.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich:
            self._rich.__exit__(exc_type, exc, tb)

    def start_batch(self, batch_size: int, total: int) -> None:
        if self._rich:
            self._rich.reset(self._batch, total=total, description=f"  M={batch_size} configs")

    def advance(self, n: int) -> None:
        if self._rich:
            self._rich.advance(self._batch, n)

    def finish_batch(self, r: BatchResult) -> None:
        if self._rich:
            self._rich.advance(self._overall, 1)
            speedup = (r.default_latency_us / r.best_latency_us) if r.best_latency_us and r.default_latency_us else None
            self._rich.console.print(
                f"M={r.batch_size:5d} best {r.best.key if r.best else '-':<28} "
                f"{r.best_latency_us or float('nan'):9.1f} us  default {r.default_latency_us or float('nan'):9.1f} us"
                f"  x{speedup or float('nan'):.3f}  measured {r.measured} reused {r.reused} wrong {r.rejected_wrong}"
            )
        else:
            log.info("M=%d best %s %.1f us (default %.1f us)", r.batch_size, r.best and r.best.key,
                     r.best_latency_us or float("nan"), r.default_latency_us or float("nan"))



def _gpu_worker(spec: SweepSpec, database_url: str, device_index: int, sizes: tuple[int, ...],
                compile_workers: int) -> None:
    run_sweep(spec, database_url, device_index, compile_workers, batch_sizes=sizes, progress=False)


def run_sweep_multi_gpu(spec: SweepSpec, database_url: str, gpus: list[int]) -> None:
    """One worker process per GPU, batch sizes dealt round-robin; results merge in the database."""
    import os

    if len(gpus) == 1:
        run_sweep(spec, database_url, gpus[0])
        return
    db = open_database(database_url)
    mark_interrupted_sweeps(db)
    db.dispose()
    per_gpu_compile = max(1, ((os.cpu_count() or 2) - len(gpus)) // len(gpus))
    ctx = mp.get_context("spawn")
    procs = []
    for i, gpu in enumerate(gpus):
        sizes = tuple(spec.batch_sizes[i::len(gpus)])
        p = ctx.Process(target=_gpu_worker, args=(spec, database_url, gpu, sizes, per_gpu_compile), daemon=False)
        p.start()
        procs.append(p)
    try:
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    failed = [gpus[i] for i, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        from tuner.errors import TunerError

        raise TunerError(f"the sweep worker(s) on GPU {failed} failed; re-run the same command to resume")


__all__ = ["BatchResult", "SweepReport", "SweepSpec", "run_sweep", "run_sweep_multi_gpu"]
