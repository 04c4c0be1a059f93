"""The job-kind registry: what a job of each kind asks for, how it is planned into work units, how a worker runs
them, and what it returned. The CLI and the service are thin over these same functions.

A kind is registered once (`register`); `get_kind("kernel_sweep:NVIDIA H200")` finds it by the stored kind's
prefix; `handler_for(context)` is what `tuner.jobs.worker.work` dispatches through. The built-in kinds
(kernel_sweep, flag_search, export) register themselves the first time the registry is read.

Deviation from the first draft of the interface (see /work/notes/kinds-interface.md): whether a job needs a
GPU depends on the job (a flag search on the simulator does not), so `needs_gpu(job)` is a method, and
`claims(context)` says which stored kinds a worker of that context takes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from tuner.errors import TunerError
from tuner.jobs import units
from tuner.jobs.context import UnitHandler, WorkerContext

__all__ = ["JobKind", "UnitHandler", "WorkerContext", "all_kinds", "claimed_kinds", "get_kind", "handler_for",
           "register"]


@runtime_checkable
class JobKind(Protocol):
    name: str  # stored kind prefix: "kernel_sweep", "flag_search", "export" (a stored kind may add ":<device>")
    title: str  # human name ("Kernel sweep")
    request_type: type[Any]  # a frozen dataclass declared with tuner.jobs.fields.option()

    def needs_gpu(self, job: units.JobRecord) -> bool:
        """Whether the job's units run on a GPU (one unit per GPU at a time); CPU units run beside them."""
        ...

    def claims(self, context: WorkerContext) -> list[str]:
        """The stored kinds a worker with this context takes (a CPU worker: only those that need no GPU)."""
        ...

    def submit(self, database_url: str, request: Any) -> units.JobRecord:
        """Validate (TunerError with one clear line), plan units, persist; the same request gives the same job."""
        ...

    def handler(self, job: units.JobRecord, context: WorkerContext) -> UnitHandler: ...

    def result(self, database_url: str, job: units.JobRecord) -> Any:
        """A typed frozen dataclass (JSON-ready through dataclasses.asdict), or None while nothing is done."""
        ...


_KINDS: dict[str, JobKind] = {}
_LOCK = threading.Lock()
_BUILTINS_LOADED = False


def register(kind: JobKind) -> None:
    """Add (or replace) the kind named `kind.name`."""
    if not kind.name or ":" in kind.name:
        raise TunerError(f"a job kind's name must be non-empty and without ':', not {kind.name!r}")
    with _LOCK:
        _KINDS[kind.name] = kind


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from tuner.jobs.export_job import ExportKind
    from tuner.jobs.flag_search import FlagSearchKind
    from tuner.jobs.kernel_sweep import KernelSweepKind

    for kind in (KernelSweepKind(), FlagSearchKind(), ExportKind()):
        _KINDS.setdefault(kind.name, kind)


def get_kind(stored_kind: str) -> JobKind:
    """The kind of a stored job kind ("kernel_sweep:NVIDIA H200" -> the kernel_sweep kind); TunerError if none."""
    _load_builtins()
    name = stored_kind.split(":", 1)[0]
    try:
        return _KINDS[name]
    except KeyError:
        raise TunerError(f"unknown job kind {stored_kind!r}: known kinds are {', '.join(sorted(_KINDS))}") from None


def all_kinds() -> list[JobKind]:
    _load_builtins()
    return [_KINDS[name] for name in sorted(_KINDS)]


def claimed_kinds(context: WorkerContext) -> list[str]:
    """Every stored kind a worker with `context` takes, over all registered kinds."""
    return [stored for kind in all_kinds() for stored in kind.claims(context)]


def handler_for(context: WorkerContext) -> Callable[[units.JobRecord], UnitHandler]:
    """job -> the handler of its kind in this worker (what tuner.jobs.worker.work takes)."""

    def make(job: units.JobRecord) -> UnitHandler:
        return get_kind(job.kind).handler(job, context)

    return make
