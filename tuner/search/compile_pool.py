"""Compile candidate configs ahead of timing, in parallel worker processes that fill Triton's disk cache.

Compilation dominates a sweep's cost. Each worker runs a config once on the real shape at the batch size being
swept (the engines' kernels specialise on top_k and on the divisibility of token and expert counts), so the
timing process later loads the compiled binary from the cache instead of compiling. A config that cannot compile or launch (out of
shared memory or registers) is reported here, before any timing.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import asdict

from tuner.kernels.base import MoeConfigs, MoeShape, Quant

_worker_state: dict[str, object] = {}


def _start_worker(initializer: Callable[..., None], *args: object) -> None:
    # Ctrl-C reaches the whole process group; the parent handles it and stops the workers (WorkerPool.close),
    # so a worker must not die mid-task with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initializer(*args)


class WorkerPool:
    """A spawned process pool whose workers ignore Ctrl-C and are always stopped by `close()`, even mid-task."""

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple = ()):
        self.workers = workers
        self._executor = cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("spawn"),
            initializer=_start_worker, initargs=(initializer, *initargs),
        )

    def submit(self, fn: Callable[..., object], *args: object) -> cf.Future:
        return self._executor.submit(fn, *args)

    def close(self, timeout_s: float = 5.0) -> None:
        """Cancel what has not started and stop every worker now; a compile in progress is abandoned."""
        procs = list((getattr(self._executor, "_processes", None) or {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout_s)
            if p.is_alive():
                p.kill()
                p.join(timeout_s)


# Above this many weight bytes a compile worker holds a reduced copy (fewer experts) instead of the real one;
# each of up to 16 workers holds its own copy.
FULL_WEIGHTS_MAX_BYTES = 3 * 2**30


def _init_worker(shape_fields: dict, backend_name: str, device_index: int) -> None:
    import torch

    from tuner.kernels.backends import get_backend
    from tuner.kernels.fused_moe import placeholder_weights
    from tuner.kernels.moe_problem import weight_bytes

    torch.cuda.set_device(device_index)
    shape = MoeShape(**{**shape_fields, "quant": Quant(shape_fields["quant"])})
    # The engines' kernels specialise on top_k and on the divisibility of sizes that depend on the expert count,
    # so the worker runs the real shape where its weights are small enough; otherwise just enough experts.
    small = shape
    if weight_bytes(shape) > FULL_WEIGHTS_MAX_BYTES:
        small = MoeShape(**{**shape_fields, "quant": shape.quant, "num_experts": shape.runtime_top_k + 1})
    weights = placeholder_weights(small, torch.bfloat16, "cuda")  # values do not matter for compiling
    _worker_state.update(shape=small, weights=weights, inputs={}, backend=get_backend(backend_name))


def _inputs(batch_size: int) -> tuple:
    import torch

    from tuner.kernels.fused_moe import random_routing

    s = _worker_state
    cache: dict = s["inputs"]  # type: ignore[assignment]
    if batch_size not in cache:
        shape: MoeShape = s["shape"]  # type: ignore[assignment]
        g = torch.Generator().manual_seed(batch_size)
        x = torch.randn((batch_size, shape.hidden_size), generator=g).to("cuda", torch.bfloat16)
        cache.clear()
        cache[batch_size] = (x, *random_routing(batch_size, shape, "cuda", g))
    return cache[batch_size]


def _compile_one(configs_key: str, batch_size: int) -> tuple[str, str, str]:
    import torch

    configs = MoeConfigs.from_key(configs_key)
    s = _worker_state
    try:
        x, tw, ti = _inputs(batch_size)
        s["backend"].run(x, s["weights"], tw, ti, s["shape"], configs)  # type: ignore[attr-defined]
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - any failure to build or launch is data about this config
        return configs_key, "compile_error", f"{type(exc).__name__}: {str(exc)[:300]}"
    return configs_key, "ok", ""


class CompilePool:
    """Parallel ahead-of-time compilation at the batch size being swept (`batch_size`). `submit(configs)` returns
    immediately; `wait(configs)` blocks."""

    def __init__(self, shape: MoeShape, backend_name: str, device_index: int = 0, workers: int | None = None):
        n = workers if workers is not None else max(1, min(16, (os.cpu_count() or 2) - 1))
        fields = {**asdict(shape), "quant": shape.quant.value}
        self._pool = WorkerPool(n, _init_worker, (fields, backend_name, device_index))
        self._futures: dict[tuple[MoeConfigs, int], cf.Future] = {}
        self.workers = n
        self.batch_size = 1

    def submit(self, configs: Iterable[MoeConfigs]) -> None:
        for c in configs:
            if (c, self.batch_size) not in self._futures:
                self._futures[(c, self.batch_size)] = self._pool.submit(_compile_one, c.key, self.batch_size)

    def wait(self, configs: MoeConfigs) -> tuple[str, str]:
        """(status, detail) of compiling `configs`; submits it first if needed."""
        self.submit([configs])
        try:
            _, status, detail = self._futures[(configs, self.batch_size)].result()
        except Exception as exc:  # noqa: BLE001 - a crashed worker (e.g. illegal memory access) is data too
            return "compile_error", f"compile worker failed: {type(exc).__name__}: {exc}"
        return status, detail

    def close(self) -> None:
        for f in self._futures.values():
            f.cancel()
        self._pool.close()
