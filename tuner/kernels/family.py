"""The kernel protocol: what the sweep, its compile workers and the exporters need from one tunable kernel family.

A family (the fused MoE today; the FP8 block GEMM next) supplies its shape type and how it is stored, whose
kernel to time (the engine's own or ours) and the compile probe the compile pool runs. Its search at one batch
size is a `tuner.search.runners.BatchRunner`. The sweep (`tuner.search.kernel_sweep`), the compile pool and the
store are written against these protocols and know nothing of any family's internals.
"""

from __future__ import annotations

from typing import Any, Protocol


class CompileProbe(Protocol):
    """Lives in a compile worker: runs one config once so Triton's disk cache holds it before timing."""

    def compile(self, configs_key: str, batch_size: int) -> tuple[str, str]:
        """(status, detail): "ok" or "compile_error" with the reason."""
        ...


class KernelFamily(Protocol):
    name: str  # the store's `kernel` column, e.g. "fused_moe"

    def shape_to_json(self, shape: Any) -> dict[str, Any]: ...

    def shape_from_json(self, data: dict[str, Any]) -> Any: ...

    def shape_key(self, shape: Any) -> str: ...

    def get_backend(self, kernel_source: str | None) -> Any:
        """Whose kernel is timed (see each family's backends); raises TunerError for an unusable choice."""
        ...

    def compile_probe(self, shape_json: dict[str, Any], backend_name: str) -> CompileProbe: ...


def get_family(name: str) -> KernelFamily:
    """The kernel family called `name` ("fused_moe", "fp8_gemm"); TunerError listing the known ones otherwise."""
    from tuner.errors import TunerError
    from tuner.kernels.fp8_gemm.family import Fp8Gemm
    from tuner.kernels.fused_moe.family import FusedMoe

    families: dict[str, KernelFamily] = {FusedMoe.name: FusedMoe(), Fp8Gemm.name: Fp8Gemm()}
    if name not in families:
        raise TunerError(f"unknown kernel {name!r}; known kernels: {', '.join(sorted(families))}")
    return families[name]
