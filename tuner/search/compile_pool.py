"""Compile candidate configs ahead of timing, in parallel worker processes that fill Triton's disk cache.

Compilation dominates a sweep's cost. Each worker runs a config once on the real shape at the batch size being
swept (the engines' kernels specialise on top_k and on the divisibility of token and expert counts), so the
timing process later loads the compiled binary from the cache instead of compiling. A config that cannot compile or launch (out of
shared memory or registers) is reported here, before any timing.

Workers of one host (one per GPU, each with its own pool) share Triton's cache and, through a file lock per config
beside it, never compile the same config at once: the second waits for the first and then loads its binary from the
cache (where the specialisation matches) instead of spending the same CPU time again. Compilation is CPU-bound and
the host's cores are shared, so duplicate compiles were what two GPU workers lost most to (issue #16).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import hashlib
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

_worker_state: dict[str, object] = {}


def _started() -> None:
    """A no-op task: submitted once per worker, it makes the pool start them all (WorkerPool.start_all)."""


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

    def start_all(self) -> None:
        """Start every worker now, in the background. A spawned pool otherwise starts one process per submit that
        finds none idle, so the first burst of compiles waited for 15 interpreters to import torch and build their
        probes *after* it was submitted; started here, that overlaps the caller's own start-up (weights, the first
        batch size's reference)."""
        for _ in range(self.workers):
            self._executor.submit(_started)

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


def host_lock_dir() -> Path:
    """The folder of this host's compile locks: inside Triton's disk cache (TRITON_CACHE_DIR, else Triton's default
    ~/.triton/cache), so exactly the workers that share compiled binaries share the locks."""
    cache = os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    return Path(cache) / "tuner-compile-locks"


@contextlib.contextmanager
def compile_lock(lock_dir: Path, namespace: str, configs_key: str) -> Iterator[None]:
    """Held while one process of this host compiles `configs_key` of the kernel and shape `namespace`; another
    process asking for the same pair waits (fcntl lock on a file per pair, released by the kernel if the holder
    dies). If the folder cannot be used the compile goes ahead unlocked: the lock only saves time."""
    name = hashlib.sha256(f"{namespace}\0{configs_key}".encode()).hexdigest()[:40]
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_dir / f"{name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _init_worker(family_name: str, shape_json: dict, backend_name: str, device_index: int,
                 lock_dir: str | None = None) -> None:
    import json

    import torch

    from tuner.kernels.family import get_family

    torch.cuda.set_device(device_index)
    _worker_state["probe"] = get_family(family_name).compile_probe(shape_json, backend_name)
    _worker_state["lock_dir"] = Path(lock_dir) if lock_dir else None
    _worker_state["namespace"] = f"{family_name}/{backend_name}/{json.dumps(shape_json, sort_keys=True)}"


def _compile_one(configs_key: str, batch_size: int) -> tuple[str, str, str]:
    probe = _worker_state["probe"]
    lock_dir = _worker_state.get("lock_dir")
    with (compile_lock(lock_dir, str(_worker_state["namespace"]), configs_key) if isinstance(lock_dir, Path)
          else contextlib.nullcontext()):
        status, detail = probe.compile(configs_key, batch_size)  # type: ignore[attr-defined]
    return configs_key, status, detail


class CompilePool:
    """Parallel ahead-of-time compilation at the batch size being swept (`batch_size`). `submit(configs)` returns
    immediately; `wait(configs)` blocks."""

    def __init__(self, family_name: str, shape_json: dict, backend_name: str, device_index: int = 0,
                 workers: int | None = None, lock_dir: Path | None = None):
        n = workers if workers is not None else max(1, min(16, (os.cpu_count() or 2) - 1))
        lock = str(lock_dir or host_lock_dir())
        self._pool = WorkerPool(n, _init_worker, (family_name, shape_json, backend_name, device_index, lock))
        self._pool.start_all()
        self._futures: dict[tuple[Any, int], cf.Future] = {}
        self.workers = n
        self.batch_size = 1
        self.wait_s = 0.0  # seconds callers spent blocked in wait(): compilation the timing could not overlap

    def submit(self, configs: Iterable[Any]) -> None:
        """Start compiling each of `configs` (anything with a `.key` the family's probe parses) at `batch_size`."""
        for c in configs:
            if (c, self.batch_size) not in self._futures:
                self._futures[(c, self.batch_size)] = self._pool.submit(_compile_one, c.key, self.batch_size)

    def wait(self, configs: Any) -> tuple[str, str]:
        """(status, detail) of compiling `configs`; submits it first if needed."""
        self.submit([configs])
        t0 = time.perf_counter()
        try:
            _, status, detail = self._futures[(configs, self.batch_size)].result()
        except Exception as exc:  # noqa: BLE001 - a crashed worker (e.g. illegal memory access) is data too
            return "compile_error", f"compile worker failed: {type(exc).__name__}: {exc}"
        finally:
            self.wait_s += time.perf_counter() - t0
        return status, detail

    def close(self) -> None:
        for f in self._futures.values():
            f.cancel()
        self._pool.close()
