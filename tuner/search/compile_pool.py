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
from typing import Any, Self

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


def warm_gpu_process(device_index: int, kernels: Iterable[tuple[str, str | None]]) -> dict[str, float]:
    """What a GPU worker and each of its compile processes do before any sweep exists: import torch, make the CUDA
    context on GPU `device_index`, import the engine kernels of `kernels` ((family, kernel source) pairs, see
    tuner.kernels.family). Returns the wall seconds of each phase. An engine kernel that cannot be imported is left
    to the sweep that needs it to report; a GPU that cannot be used raises (torch's error)."""
    took: dict[str, float] = {}
    t0 = time.perf_counter()
    import torch

    took["torch"] = time.perf_counter() - t0
    torch.cuda.set_device(device_index)
    torch.empty(1, device=f"cuda:{device_index}")  # the CUDA context now, not at the first unit or compile
    took["CUDA context"] = time.perf_counter() - t0 - sum(took.values())
    from tuner.kernels.family import get_family

    for family_name, kernel_source in kernels:
        with contextlib.suppress(Exception):
            get_family(family_name).get_backend(kernel_source)
    took["engine kernels"] = time.perf_counter() - t0 - sum(took.values())
    return took


def _init_worker(device_index: int, lock_dir: str | None, warm: tuple[tuple[str, str | None], ...]) -> None:
    """A compile process's start: what does not depend on the sweep (warm_gpu_process), so a pool can start before
    its job exists."""
    warm_gpu_process(device_index, warm)
    _worker_state["lock_dir"] = Path(lock_dir) if lock_dir else None


def _probe_for(target: tuple[str, str, str]) -> Any:
    """The compile probe of `target` (family, shape JSON, backend), built on first use; one target's placeholder
    tensors at a time, as a pool may serve one sweep after another (13 GEMM shapes)."""
    if _worker_state.get("target") != target:
        import json

        import torch

        from tuner.kernels.family import get_family

        _worker_state.pop("probe", None)
        _worker_state.pop("target", None)
        torch.cuda.empty_cache()
        family_name, shape_text, backend_name = target
        _worker_state["probe"] = get_family(family_name).compile_probe(json.loads(shape_text), backend_name)
        _worker_state["target"] = target
    return _worker_state["probe"]


def _compile_one(target: tuple[str, str, str], configs_key: str, batch_size: int) -> tuple[str, str, str]:
    probe = _probe_for(target)
    lock_dir = _worker_state.get("lock_dir")
    namespace = "/".join((target[0], target[2], target[1]))
    with (compile_lock(lock_dir, namespace, configs_key) if isinstance(lock_dir, Path)
          else contextlib.nullcontext()):
        status, detail = probe.compile(configs_key, batch_size)  # type: ignore[attr-defined]
    return configs_key, status, detail


class CompilePool:
    """Parallel ahead-of-time compilation on GPU `device_index`, at the batch size being swept (`batch_size`), for
    the sweep set with `target(...)`. Its processes start when it is made (torch, CUDA context and the engine
    kernels of `warm` imported then), so it can be made before the job is planned and serve every sweep of the job
    after it. `submit(configs)` returns immediately; `wait(configs)` blocks.

    `warm`: (family, kernel source) pairs whose modules each process imports at start (tuner.kernels.family)."""

    def __init__(self, device_index: int = 0, workers: int | None = None, lock_dir: Path | None = None,
                 warm: Iterable[tuple[str, str | None]] = ()) -> None:
        n = workers if workers is not None else max(1, min(16, (os.cpu_count() or 2) - 1))
        lock = str(lock_dir or host_lock_dir())
        self._pool = WorkerPool(n, _init_worker, (device_index, lock, tuple(warm)))
        self._pool.start_all()
        self._futures: dict[tuple[Any, Any, int], cf.Future] = {}
        self._target: tuple[str, str, str] | None = None
        self.workers = n
        self.batch_size = 1
        self.wait_s = 0.0  # seconds callers spent blocked in wait(): compilation the timing could not overlap

    def target(self, family_name: str, shape_json: dict, backend_name: str) -> None:
        """Compile for this sweep from now on: kernel family (tuner.kernels.family), its shape as the family stores
        it, and the backend whose kernel is compiled (e.g. "sglang")."""
        import json

        self._target = (family_name, json.dumps(shape_json, sort_keys=True), backend_name)

    def submit(self, configs: Iterable[Any]) -> None:
        """Start compiling each of `configs` (anything with a `.key` the family's probe parses) at `batch_size`."""
        if self._target is None:
            raise RuntimeError("CompilePool.target(...) must be set before configs are submitted")
        for c in configs:
            key = (self._target, c, self.batch_size)
            if key not in self._futures:
                self._futures[key] = self._pool.submit(_compile_one, self._target, c.key, self.batch_size)

    def wait(self, configs: Any) -> tuple[str, str]:
        """(status, detail) of compiling `configs`; submits it first if needed."""
        self.submit([configs])
        t0 = time.perf_counter()
        try:
            _, status, detail = self._futures[(self._target, configs, self.batch_size)].result()
        except Exception as exc:  # noqa: BLE001 - a crashed worker (e.g. illegal memory access) is data too
            return "compile_error", f"compile worker failed: {type(exc).__name__}: {exc}"
        finally:
            self.wait_s += time.perf_counter() - t0
        return status, detail

    def close(self) -> None:
        for f in self._futures.values():
            f.cancel()
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
