"""Engine registry: `get_engine("sglang" | "vllm" | "sim", **options)` -> an `Engine` description.

Adding an engine is a new module here plus one line in ENGINES; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tuner.errors import TunerError
from tuner.runtime.engines.base import (
    Engine,
    FlagValue,
    GaugeName,
    MetricNames,
    UnknownFlagError,
    flags_to_argv,
    normalize_flag,
    parse_help_flags,
    validate_flags,
)
from tuner.runtime.engines.sglang import SGLangEngine
from tuner.runtime.engines.sim import SimEngine
from tuner.runtime.engines.surface import FlagSurface, FlagValueError, bundled_surface
from tuner.runtime.engines.vllm import VllmEngine

ENGINES: dict[str, Callable[..., Engine]] = {
    "sglang": SGLangEngine,
    "vllm": VllmEngine,
    "sim": SimEngine,
}


def get_engine(name: str, **options: Any) -> Engine:
    """The engine called `name`; options go to its constructor (e.g. sim: gpu, time_scale, seed)."""
    try:
        factory = ENGINES[name]
    except KeyError:
        raise TunerError(f"unknown engine {name!r}; choose one of {', '.join(sorted(ENGINES))}") from None
    try:
        return factory(**options)
    except TypeError as exc:
        raise TunerError(f"engine {name!r} does not take option(s) {sorted(options)}: {exc}") from None


__all__ = [
    "ENGINES", "Engine", "FlagSurface", "FlagValue", "FlagValueError", "GaugeName", "MetricNames", "SGLangEngine", "SimEngine",
    "UnknownFlagError", "VllmEngine", "bundled_surface", "flags_to_argv", "get_engine", "normalize_flag",
    "parse_help_flags", "validate_flags",
]
