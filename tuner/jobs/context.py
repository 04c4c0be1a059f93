"""What a worker tells a job kind's handler (`WorkerContext`) and what a handler is (`UnitHandler`).

Kept apart from `kinds` (the registry) and `worker` (the loop) so that the job kinds, the registry and the loop
all import it without importing each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tuner.jobs import units


@dataclass(frozen=True)
class WorkerContext:
    """The worker a unit runs in: its database, its GPU (None for a CPU worker), how many compile processes it
    may start, where its progress lines go, the event that asks a running handler to stop (cancel), and the compile
    pool the worker started on its GPU before its job existed (tuner.search.compile_pool.CompilePool; None: each
    kernel sweep starts its own)."""

    database_url: str
    device_index: int | None = None
    compile_workers: int | None = None
    print_fn: Callable[[str], None] | None = None
    stop: threading.Event | None = None
    compile_pool: Any = None

    def say(self, line: str) -> None:
        if self.print_fn is not None:
            self.print_fn(line)

    @property
    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()


class UnitHandler(Protocol):
    """Runs the units of one job in this worker (state such as a GPU session lives here between units)."""

    def run(self, unit: units.UnitRecord) -> dict[str, Any]:
        """Do the unit's work; returns its result (a JSON object). Raise to fail the unit."""
        ...

    def close(self) -> None: ...
