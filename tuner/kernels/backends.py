"""Whose fused-MoE kernel is timed: ours, or the engine's own entry point under each candidate config.

The JSON file's real consumer is the engine's kernel, so when `sglang` (or `vllm`) is importable its
`fused_experts` is timed under `override_config(config)`; engine-side behaviour (operand swapping at small M,
its own activation quantization) is then part of the timing. Ours is the fallback and the one CI tests.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from tuner.errors import TunerError
from tuner.kernels.base import KernelConfig, MoeShape, Quant
from tuner.kernels.fused_moe import MoeWeights, fused_moe


class MoeKernelBackend(Protocol):
    @property
    def name(self) -> str: ...  # "tuner" | "sglang" | "vllm": stored with every measurement
    @property
    def version(self) -> str: ...

    def run(
        self, x: torch.Tensor, weights: MoeWeights, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
        shape: MoeShape, config: KernelConfig,
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class TunerBackend:
    name: str = "tuner"
    version: str = "tuner-fused-moe-v1"

    def run(self, x, weights, topk_weights, topk_ids, shape, config):  # type: ignore[no-untyped-def]
        return fused_moe(x, weights, topk_weights, topk_ids, shape, config)


# Where each engine keeps its Triton fused-MoE entry point and its config override, newest layout first.
ENGINE_ENTRY_POINTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "sglang": (
        ("sglang.srt.layers.moe.fused_moe_triton.fused_moe", "fused_experts", "sglang.srt.layers.moe.fused_moe_triton"),
        ("sglang.srt.layers.fused_moe_triton.fused_moe", "fused_experts", "sglang.srt.layers.fused_moe_triton"),
    ),
    "vllm": (
        ("vllm.model_executor.layers.fused_moe.fused_moe", "fused_experts", "vllm.model_executor.layers.fused_moe"),
    ),
}


@dataclass(frozen=True)
class EngineBackend:
    """The engine's own `fused_experts`, called with our weights under `override_config`."""

    name: str
    version: str
    fused_experts: Callable[..., torch.Tensor]
    override_config: Callable[[dict[str, int]], contextlib.AbstractContextManager[Any]]

    def run(self, x, weights, topk_weights, topk_ids, shape, config):  # type: ignore[no-untyped-def]
        kwargs: dict[str, Any] = {}
        if shape.quant.is_fp8:
            kwargs.update(use_fp8_w8a8=True, w1_scale=weights.w1_scale, w2_scale=weights.w2_scale)
        if shape.quant is Quant.FP8_PER_CHANNEL:
            # Per-channel weights with per-token dynamic activation scales: the scales the model really uses.
            kwargs["per_channel_quant"] = True
        if shape.quant is Quant.FP8_BLOCK:
            kwargs["block_shape"] = list(shape.block_shape or ())
        with self.override_config(config.to_json_dict()):
            return self.fused_experts(x, weights.w1, weights.w2, topk_weights, topk_ids, **kwargs)


def _load_engine_backend(engine: str) -> EngineBackend | None:
    for module_name, fn_name, override_module in ENGINE_ENTRY_POINTS[engine]:
        try:
            module = importlib.import_module(module_name)
            override_mod = importlib.import_module(override_module)
        except ImportError:
            continue
        fn = getattr(module, fn_name, None)
        override = getattr(override_mod, "override_config", None) or getattr(module, "override_config", None)
        if fn is None or override is None:
            continue
        try:
            version = importlib.import_module(engine).__version__
        except (ImportError, AttributeError):
            version = "unknown"
        return EngineBackend(name=engine, version=f"{engine} {version}", fused_experts=fn, override_config=override)
    return None


def available_backends() -> list[str]:
    names = [e for e in ENGINE_ENTRY_POINTS if _load_engine_backend(e) is not None]
    return names + ["tuner"]


def get_backend(name: str | None) -> MoeKernelBackend:
    """`None`: the engine's kernel when one is importable (sglang first), else ours."""
    if name in (None, "auto"):
        for engine in ENGINE_ENTRY_POINTS:
            backend = _load_engine_backend(engine)
            if backend is not None:
                return backend
        return TunerBackend()
    if name == "tuner":
        return TunerBackend()
    if name not in ENGINE_ENTRY_POINTS:
        raise TunerError(f"unknown --kernel-source {name!r}; choose one of: auto, tuner, {', '.join(ENGINE_ENTRY_POINTS)}")
    backend = _load_engine_backend(name)
    if backend is None:
        raise TunerError(
            f"--kernel-source {name}: the {name} package (or its fused-MoE entry point) is not importable here; "
            f"install {name} in this environment or use --kernel-source tuner"
        )
    return backend
