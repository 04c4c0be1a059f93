"""Per-family batch runners: the part of a sweep that lives in the timing process on one GPU and searches one
batch size at a time. `runner_for(family, ...)` picks the family's runner; the sweep loop knows only the protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class BatchRunner(Protocol):
    def sweep(self, batch_size: int, pool: Any, on_progress: Callable[[int], None] | None) -> Any:
        """Search `batch_size`; returns the family's batch result (best configs beside the engine's choice)."""
        ...

    def refine(self, batch_size: int, pool: Any, on_progress: Callable[[int], None] | None) -> Any:
        """The second pass at `batch_size`, once every batch size had its first: the other batch sizes' finalists
        measured here too, finals and decision again; returns the same kind of result as `sweep`."""
        ...

    def best_row(self, result: Any) -> Any:
        """The store's `BestConfig` row for a batch result, or None when nothing ran correctly."""
        ...

    def budget(self) -> int:
        """Configs measured per batch size (for progress bars)."""
        ...


def runner_for(family: str, spec: Any, backend: Any, device: Any, db: Any, ctx: Any) -> BatchRunner:
    """The batch runner of kernel family `family` for one sweep on one GPU."""
    if family == "fused_moe":
        return MoeRunner(spec, backend, device, db, ctx)
    if family == "fp8_gemm":
        return GemmRunner(spec, backend, device, db, ctx)
    from tuner.errors import TunerError

    raise TunerError(f"no sweep runner for kernel {family!r}")


class MoeRunner:
    """One fused-MoE sweep on one GPU: weights made once, shipped files read once, then one batch size at a time."""

    def __init__(self, spec: Any, backend: Any, device: Any, db: Any, ctx: Any) -> None:
        from tuner.export.shipped import shipped_tables
        from tuner.kernels.fused_moe.problem import load_routing_trace, make_weight_copies

        self.spec, self.backend, self.device, self.db, self.ctx = spec, backend, device, db, ctx
        self.routing = load_routing_trace(spec.routing_path, spec.shape) if spec.routing_path else None
        self.tables = shipped_tables(spec.shape, backend.config_roots())
        self.weights = make_weight_copies(spec.shape, device, seed=spec.seed)  # identical for every batch size

    def budget(self) -> int:
        return self.spec.budget + (2 * self.spec.down_budget if self.backend.supports_down_config else 0)

    def sweep(self, batch_size: int, pool: Any, on_progress: Callable[[int], None] | None) -> Any:
        from tuner.search.moe_batch import sweep_batch_size

        return self._run(batch_size, pool, lambda sweeper, plan: sweep_batch_size(sweeper, plan, on_progress))

    def refine(self, batch_size: int, pool: Any, on_progress: Callable[[int], None] | None) -> Any:
        from tuner.search.moe_batch import cross_batch_candidates, refine_batch_size

        candidates = cross_batch_candidates(self.db, self.ctx, self.spec.shape, batch_size)
        return self._run(batch_size, pool,
                         lambda sweeper, plan: refine_batch_size(sweeper, plan, candidates, on_progress))

    def _run(self, batch_size: int, pool: Any, body: Callable[[Any, Any], Any]) -> Any:
        import torch

        from tuner.export.shipped import shipped_seeds
        from tuner.kernels.fused_moe.problem import MoeProblem
        from tuner.search.moe_batch import BatchPlan, BatchSweeper, neighbour_seeds

        spec, shape = self.spec, self.spec.shape
        shipped_up, shipped_down = shipped_seeds(self.tables, batch_size)
        near_up, near_down = neighbour_seeds(self.db, self.ctx, shape, batch_size)
        plan = BatchPlan(
            shape=shape, batch_size=batch_size, engine=self.backend.engine_choice(shape, batch_size),
            down_configs=self.backend.supports_down_config, tma=self.backend.supports_tma,
            up_seeds=tuple(shipped_up + near_up), down_seeds=tuple(shipped_down + near_down),
            strategy=spec.strategy, up_budget=spec.budget, down_budget=spec.down_budget, seed=spec.seed,
        )
        problem = MoeProblem(shape, batch_size, self.backend, self.device, seed=spec.seed, routing=self.routing,
                             weights=self.weights)
        try:
            return body(BatchSweeper(self.db, self.ctx, shape, problem, pool, batch_size), plan)
        finally:
            del problem
            torch.cuda.empty_cache()

    def best_row(self, result: Any) -> Any:
        from tuner.search.moe_batch import best_config_row

        return best_config_row(result) if result.best is not None else None




class GemmRunner:
    """One block-FP8 GEMM sweep (one (N, K)) on one GPU: weight copies made once, then one batch size at a time."""

    def __init__(self, spec: Any, backend: Any, device: Any, db: Any, ctx: Any) -> None:
        from tuner.kernels.fp8_gemm.problem import make_weight_copies

        self.spec, self.backend, self.device, self.db, self.ctx = spec, backend, device, db, ctx
        self.weights = make_weight_copies(spec.shape, device, seed=spec.seed)

    def budget(self) -> int:
        return self.spec.budget

    def sweep(self, batch_size: int, pool: Any, on_progress: Callable[[int], None] | None) -> Any:
        from tuner.search.gemm_batch import sweep_gemm_batch

        return self._run(batch_size, pool, lambda sweeper, plan: sweep_gemm_batch(sweeper, plan, on_progress))

    def refine(self, batch_size: int, pool: Any, on_progress: Callable[[int], None] | None) -> Any:
        from tuner.search.gemm_batch import cross_batch_gemm_candidates, refine_gemm_batch

        candidates = cross_batch_gemm_candidates(self.db, self.ctx, self.spec.shape, batch_size)
        return self._run(batch_size, pool,
                         lambda sweeper, plan: refine_gemm_batch(sweeper, plan, candidates, on_progress))

    def _run(self, batch_size: int, pool: Any, body: Callable[[Any, Any], Any]) -> Any:
        import torch

        from tuner.kernels.fp8_gemm.problem import GemmProblem
        from tuner.kernels.fp8_gemm.space import GemmConfig
        from tuner.search.batch import BatchSweeper
        from tuner.search.gemm_batch import GemmPlan, neighbour_gemm_seeds, shipped_gemm_seeds

        shape = self.spec.shape
        plan = GemmPlan(
            shape, batch_size, self.backend.engine_choice(shape.n, shape.k, shape.block_shape, batch_size),
            hopper=self.backend.hopper_keys,
            seeds=tuple(shipped_gemm_seeds(self.backend.config_folder(), shape, batch_size)
                        + neighbour_gemm_seeds(self.db, self.ctx, shape, batch_size)),
            strategy=self.spec.strategy, budget=self.spec.budget, seed=self.spec.seed,
        )
        problem = GemmProblem(shape, batch_size, self.backend, self.device, self.weights, seed=self.spec.seed)
        try:
            return body(BatchSweeper(self.db, self.ctx, shape, problem, pool, batch_size,
                                     parse_key=GemmConfig.from_key), plan)
        finally:
            del problem
            torch.cuda.empty_cache()

    def best_row(self, result: Any) -> Any:
        from tuner.search.gemm_batch import gemm_best_row

        return gemm_best_row(result)
