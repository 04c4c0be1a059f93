"""A kernel sweep on one GPU (`SweepSession`): its stored row, backend, compile pool and the family's runner,
one batch size at a time as a worker claims them (tuner.jobs.worker); every measurement is written as it
arrives.

Re-running the same sweep resumes: configs already measured (same device, Triton, kernel source, timing
method, shape and batch size) are read back, never re-measured. The kernel, the search and the timing harness
know nothing of workers or the queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tuner.kernels.base import STANDARD_BATCH_SIZES, MoeShape
from tuner.search.compile_pool import CompilePool
from tuner.search.moe_batch import BatchResult
from tuner.store.db import open_database
from tuner.store.kernels import (
    MeasurementContext,
    get_or_create_sweep,
    load_best_configs,
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


def describe_kernel_source(backend: object) -> str:
    """One line saying whose kernel is timed; for a proxy, plainly that the ranking may not carry over."""
    proxy = getattr(backend, "proxy_for", None)
    version = getattr(backend, "version", "?")
    if proxy:
        return (f"{proxy} is not importable here: timing tuner's own kernel ({version}) as a PROXY for {proxy}'s. "
                f"Its ranking of configs may not carry over to {proxy}'s kernel; install {proxy} for a sweep "
                "in the kernel that will read the files")
    if not hasattr(backend, "supports_down_config"):  # the block-FP8 GEMM
        hopper = " with its sm90 SWAP_AB / SPLIT_K variant" if getattr(backend, "hopper_keys", False) else ""
        return f"timing in {version}'s own block-FP8 GEMM{hopper}"
    down = "separate up and _down configs" if backend.supports_down_config else "one config for both GEMMs"
    tma = ", USE_TMA" if getattr(backend, "supports_tma", False) else ""
    return f"timing in {version}'s own fused-MoE kernel ({down}{tma})"


class SweepSession:
    """One sweep on one GPU: its backend, its row in the store, the per-GPU runner and the compile pool. Batch sizes
    are run one at a time (`run_batch`) as a worker claims them."""

    def __init__(self, spec: SweepSpec, database_url: str, device_index: int = 0,
                 compile_workers: int | None = None, print_fn: Callable[[str], None] | None = None,
                 pool: CompilePool | None = None) -> None:
        """`pool`: a compile pool on this GPU that outlives the session (a worker's, started before its job);
        without one the session starts its own first thing, so its processes start while the engine kernel is
        imported and the weights are made, and closes it with the session."""
        from tuner.kernels.family import get_family
        from tuner.kernels.timing import require_cuda

        require_cuda()
        t0 = time.perf_counter()
        self.start_s: dict[str, float] = {}  # where opening the session went (wall seconds), see SweepHandler
        self.spec = spec
        family = get_family(spec.kernel)
        self._owns_pool = pool is None
        self.pool = pool if pool is not None else CompilePool(device_index, compile_workers,
                                                              warm=[(family.name, spec.kernel_source)])
        self.start_s["compile_pool"] = time.perf_counter() - t0
        try:
            self._open(spec, family, database_url, device_index, print_fn, t0)
        except BaseException:
            if self._owns_pool:  # its processes must not outlive a session that failed to open
                self.pool.close()
            raise

    def _open(self, spec: SweepSpec, family: Any, database_url: str, device_index: int,
              print_fn: Callable[[str], None] | None, t0: float) -> None:
        import torch
        import triton

        from tuner.kernels.timing import BENCH_METHOD
        from tuner.search.runners import runner_for

        torch.cuda.set_device(device_index)
        device = torch.device("cuda", device_index)
        backend = family.get_backend(spec.kernel_source)
        self.start_s["engine_kernel"] = time.perf_counter() - t0 - sum(self.start_s.values())
        if print_fn is not None:
            print_fn(describe_kernel_source(backend))
        proxy_for = getattr(backend, "proxy_for", None)
        self.db = open_database(database_url)
        device_name = torch.cuda.get_device_name(device)
        ctx = MeasurementContext(family.name, backend.name, device_name, triton.__version__, BENCH_METHOD)
        shape_json = family.shape_to_json(spec.shape)
        self.sweep_id = get_or_create_sweep(
            self.db, model=spec.model, tp=spec.tp, ep=spec.ep, shared_experts_fusion=spec.shared_experts_fusion,
            dtype=shape_json["quant"], kernel=family.name, kernel_source=backend.name, device_name=device_name,
            triton_version=triton.__version__, torch_version=torch.__version__, bench_method=BENCH_METHOD,
            shape=shape_json, shape_key=family.shape_key(spec.shape),
            batch_sizes=list(spec.batch_sizes), strategy=spec.strategy,
            engine_version=backend.version if backend.name != "tuner" else None,
            notes={"kernel_version": backend.version, "proxy_for": proxy_for,
                   "down_configs": getattr(backend, "supports_down_config", False),
                   "use_tma": getattr(backend, "supports_tma", False)},
        )
        self.start_s["store"] = time.perf_counter() - t0 - sum(self.start_s.values())
        self.pool.target(family.name, shape_json, backend.name)
        self.runner = runner_for(family.name, spec, backend, device, self.db, ctx)
        self.start_s["weights"] = time.perf_counter() - t0 - sum(self.start_s.values())

    def run_batch(self, batch_size: int, on_progress: Callable[[int], None] | None = None,
                  refine: bool = False) -> BatchResult:
        """Search one batch size (or, with `refine`, run its second pass: see runners.BatchRunner.refine); its best
        config is stored before this returns."""
        self.pool.batch_size = batch_size
        result = (self.runner.refine if refine else self.runner.sweep)(batch_size, self.pool, on_progress)
        row = self.runner.best_row(result)
        save_best_configs(self.db, self.sweep_id, [row] if row is not None else [])
        set_sweep_status(self.db, self.sweep_id, "running", gpu_seconds_delta=result.gpu_seconds)
        return result

    def mark(self, status: str) -> None:
        """Set the stored sweep's status; "finished" only once every wanted batch size has a best config
        (with several workers, the last one to finish marks it)."""
        if status == "finished" and not set(load_best_configs(self.db, self.sweep_id)) >= set(self.spec.batch_sizes):
            status = "running"
        set_sweep_status(self.db, self.sweep_id, status)

    def close(self) -> None:
        if self._owns_pool:
            self.pool.close()
        self.db.dispose()


def batch_line(r: BatchResult) -> str:
    """One line per batch size: what is exported, and its gain over the engine's current choice and the default."""
    nan = float("nan")
    chosen = "engine's own (kept)" if r.kept_engine_choice else (r.best.key if r.best else "-")
    return (f"M={r.batch_size:5d} {chosen:<46} {r.best_latency_us or nan:9.1f} us | "
            f"engine [{r.engine.source}] {r.engine_latency_us or nan:9.1f} us x{r.gain_over_engine or nan:.3f} | "
            f"default {r.default_latency_us or nan:9.1f} us x{r.gain_over_default or nan:.3f} | "
            f"measured {r.measured} reused {r.reused} wrong {r.rejected_wrong}")


__all__ = ["BatchResult", "SweepSession", "SweepSpec", "batch_line", "describe_kernel_source"]
