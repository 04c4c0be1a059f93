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
from typing import Any

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


def _init_worker(family_name: str, shape_json: dict, backend_name: str, device_index: int) -> None:
    import torch

    from tuner.kernels.family import get_family

    torch.cuda.set_device(device_index)
    _worker_state["probe"] = get_family(family_name).compile_probe(shape_json, backend_name)


def _compile_one(configs_key: str, batch_size: int) -> tuple[str, str, str]:
    status, detail = _worker_state["probe"].compile(configs_key, batch_size)  # type: ignore[attr-defined]
    return configs_key, status, detail


class CompilePool:
    """Parallel ahead-of-time compilation at the batch size being swept (`batch_size`). `submit(configs)` returns
    immediately; `wait(configs)` blocks."""

    def __init__(self, family_name: str, shape_json: dict, backend_name: str, device_index: int = 0,
                 workers: int | None = None):
        n = workers if workers is not None else max(1, min(16, (os.cpu_count() or 2) - 1))
        self._pool = WorkerPool(n, _init_worker, (family_name, shape_json, backend_name, device_index))
        self._futures: dict[tuple[Any, int], cf.Future] = {}
        self.workers = n
        self.batch_size = 1

    def submit(self, configs: Iterable[Any]) -> None:
        """Start compiling each of `configs` (anything with a `.key` the family's probe parses) at `batch_size`."""
        for c in configs:
            if (c, self.batch_size) not in self._futures:
                self._futures[(c, self.batch_size)] = self._pool.submit(_compile_one, c.key, self.batch_size)

    def wait(self, configs: Any) -> tuple[str, str]:
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
