"""The fused-MoE kernel sweep: for each batch size, search configs, check each against the reference, time
it, and write every measurement to the database as it arrives.

Re-running the same sweep resumes: configs already measured (same device, Triton, kernel source, timing
method, shape and batch size) are read back, never re-measured. GPUs, workers and resume live here; the
kernel, the search and the timing harness know nothing of them.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from tuner.kernels.base import STANDARD_BATCH_SIZES, MoeShape
from tuner.search.moe_batch import BatchResult
from tuner.store.db import open_database
from tuner.store.kernels import (
    MeasurementContext,
    get_or_create_sweep,
    load_best_configs,
    mark_interrupted_sweeps,
    save_best_configs,
    set_sweep_status,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepSpec:
    model: str
    tp: int
    ep: int
    shared_experts_fusion: bool
    shape: MoeShape
    batch_sizes: tuple[int, ...] = STANDARD_BATCH_SIZES
    strategy: str = "adaptive"  # or "exhaustive"
    budget: int = 32  # up-GEMM configs measured per batch size by the adaptive search
    down_budget: int = 16  # down-GEMM configs (and up configs given the best down), where the engine reads `_down` files
    kernel_source: str | None = None  # None: the engine's kernel if importable, else ours as a proxy
    seed: int = 0
    routing_path: str | None = None
    kernel: str = "fused_moe"  # the kernel family (tuner.kernels.family)


@dataclass
class SweepReport:
    sweep_id: int
    device_name: str
    triton_version: str
    kernel_source: str
    kernel_version: str = ""
    proxy_for: str | None = None
    results: list[BatchResult] = field(default_factory=list)


def describe_kernel_source(backend: object) -> str:
    """One line saying whose kernel is timed; for a proxy, plainly that the ranking may not carry over."""
    proxy = getattr(backend, "proxy_for", None)
    version = getattr(backend, "version", "?")
    if proxy:
        return (f"{proxy} is not importable here: timing tuner's own kernel ({version}) as a PROXY for {proxy}'s. "
                f"Its ranking of configs may not carry over to {proxy}'s kernel; install {proxy} for a sweep "
                "in the kernel that will read the files")
    down = "separate up and _down configs" if getattr(backend, "supports_down_config", False) else "one config for both GEMMs"
    tma = ", USE_TMA" if getattr(backend, "supports_tma", False) else ""
    return f"timing in {version}'s own fused-MoE kernel ({down}{tma})"


def run_sweep(spec: SweepSpec, database_url: str, device_index: int = 0, compile_workers: int | None = None,
              batch_sizes: tuple[int, ...] | None = None, progress: bool = True,
              print_fn: Callable[[str], None] | None = None) -> SweepReport:
    """Sweep `batch_sizes` (default: all of the spec's) on one GPU. Safe to run again: it resumes."""
    import torch
    import triton

    from tuner.kernels.family import get_family
    from tuner.kernels.timing import BENCH_METHOD, require_cuda
    from tuner.search.compile_pool import CompilePool
    from tuner.search.runners import runner_for

    require_cuda()
    family = get_family(spec.kernel)
    torch.cuda.set_device(device_index)
    device = torch.device("cuda", device_index)
    backend = family.get_backend(spec.kernel_source)
    if print_fn is not None:
        print_fn(describe_kernel_source(backend))
    proxy_for = getattr(backend, "proxy_for", None)
    db = open_database(database_url)
    device_name = torch.cuda.get_device_name(device)
    ctx = MeasurementContext(family.name, backend.name, device_name, triton.__version__, BENCH_METHOD)
    shape_json = family.shape_to_json(spec.shape)
    sweep_id = get_or_create_sweep(
        db, model=spec.model, tp=spec.tp, ep=spec.ep, shared_experts_fusion=spec.shared_experts_fusion,
        dtype=shape_json["quant"], kernel=family.name, kernel_source=backend.name, device_name=device_name,
        triton_version=triton.__version__, torch_version=torch.__version__, bench_method=BENCH_METHOD,
        shape=shape_json, shape_key=family.shape_key(spec.shape),
        batch_sizes=list(spec.batch_sizes), strategy=spec.strategy,
        engine_version=backend.version if backend.name != "tuner" else None,
        notes={"kernel_version": backend.version, "proxy_for": proxy_for,
               "down_configs": backend.supports_down_config, "use_tma": backend.supports_tma},
    )
    report = SweepReport(sweep_id, device_name, triton.__version__, backend.name, backend.version, proxy_for)
    runner = runner_for(family.name, spec, backend, device, db, ctx)
    pool = CompilePool(family.name, shape_json, backend.name, device_index, compile_workers)
    sizes = batch_sizes or spec.batch_sizes
    try:
        with _Progress(progress, len(sizes), spec) as bar:
            for batch_size in sizes:
                pool.batch_size = batch_size
                bar.start_batch(batch_size, runner.budget())
                result = runner.sweep(batch_size, pool, bar.advance)
                report.results.append(result)
                row = runner.best_row(result)
                save_best_configs(db, sweep_id, [row] if row is not None else [])
                set_sweep_status(db, sweep_id, "running", gpu_seconds_delta=result.gpu_seconds)
                bar.finish_batch(result)
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
            self._rich.console.print(batch_line(r))
        else:
            log.info("%s", batch_line(r))



def batch_line(r: BatchResult) -> str:
    """One line per batch size: what is exported, and its gain over the engine's current choice and the default."""
    nan = float("nan")
    chosen = "engine's own (kept)" if r.kept_engine_choice else (r.best.key if r.best else "-")
    return (f"M={r.batch_size:5d} {chosen:<46} {r.best_latency_us or nan:9.1f} us | "
            f"engine [{r.engine.source}] {r.engine_latency_us or nan:9.1f} us x{r.gain_over_engine or nan:.3f} | "
            f"default {r.default_latency_us or nan:9.1f} us x{r.gain_over_default or nan:.3f} | "
            f"measured {r.measured} reused {r.reused} wrong {r.rejected_wrong}")


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
