"""Wall time per stage of one engine run (validate, launch, warm-up, load, scrape, teardown, ...)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class StageTimer:
    """`with timer("launch"): ...` adds the block's wall time to `seconds["launch"]`; `add` records a span
    measured elsewhere. Repeated stages accumulate."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 4)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - t0)
