"""Compile candidate configs ahead of timing, in parallel worker processes that fill Triton's disk cache.

Compilation dominates a sweep's cost. Each worker runs a config once on a tiny problem with the same strides
as the real one (the GEMM kernel does not specialise on the token count), so the timing process later loads
the compiled binary from the cache instead of compiling. A config that cannot compile or launch (out of
shared memory or registers) is reported here, before any timing.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import asdict

from tuner.kernels.base import KernelConfig, MoeShape, Quant

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


def _init_worker(shape_fields: dict, backend_name: str, device_index: int) -> None:
    import torch

    from tuner.kernels.backends import get_backend
    from tuner.kernels.fused_moe import make_weights, random_routing

    torch.cuda.set_device(device_index)
    shape = MoeShape(**{**shape_fields, "quant": Quant(shape_fields["quant"])})
    # Two experts are enough: strides (which the kernel specialises on) do not depend on the expert count.
    small = MoeShape(**{**shape_fields, "quant": shape.quant, "num_experts": 2, "top_k": 1,
                        "fused_shared_experts": 1})
    weights = make_weights(small, torch.bfloat16, "cuda", 0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, shape.hidden_size), generator=g).to("cuda", torch.bfloat16)
    tw, ti = random_routing(1, small, "cuda", g)
    _worker_state.update(shape=shape, weights=weights, x=x, tw=tw, ti=ti, backend=get_backend(backend_name))


def _compile_one(config_key: str) -> tuple[str, str, str]:
    import torch

    config = KernelConfig.from_key(config_key)
    s = _worker_state
    try:
        s["backend"].run(s["x"], s["weights"], s["tw"], s["ti"], s["shape"], config)  # type: ignore[attr-defined]
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - any failure to build or launch is data about this config
        return config_key, "compile_error", f"{type(exc).__name__}: {str(exc)[:300]}"
    return config_key, "ok", ""


class CompilePool:
    """Parallel ahead-of-time compilation. `submit(configs)` returns immediately; `wait(config)` blocks."""

    def __init__(self, shape: MoeShape, backend_name: str, device_index: int = 0, workers: int | None = None):
        n = workers if workers is not None else max(1, min(16, (os.cpu_count() or 2) - 1))
        fields = {**asdict(shape), "quant": shape.quant.value}
        self._pool = WorkerPool(n, _init_worker, (fields, backend_name, device_index))
        self._futures: dict[KernelConfig, cf.Future] = {}
        self.workers = n

    def submit(self, configs: Iterable[KernelConfig]) -> None:
        for c in configs:
            if c not in self._futures:
                self._futures[c] = self._pool.submit(_compile_one, c.key)

    def wait(self, config: KernelConfig) -> tuple[str, str]:
        """(status, detail) of compiling `config`; submits it first if needed."""
        self.submit([config])
        try:
            _, status, detail = self._futures[config].result()
        except Exception as exc:  # noqa: BLE001 - a crashed worker (e.g. illegal memory access) is data too
            return "compile_error", f"compile worker failed: {type(exc).__name__}: {exc}"
        return status, detail

    def close(self) -> None:
        for f in self._futures.values():
            f.cancel()
        self._pool.close()
