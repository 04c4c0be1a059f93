"""Whose fused-MoE kernel is timed: ours, or the engine's own entry point under each candidate config.

The JSON file's real consumer is the engine's kernel, so when `sglang` (or `vllm`) is importable its
`fused_experts` is timed under `override_config(config)`; engine-side behaviour (operand swapping at small M,
its own activation quantization) is then part of the timing. Ours is the fallback and the one CI tests.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from tuner.errors import TunerError
from tuner.kernels.base import KernelConfig, MoeShape, Quant
from tuner.kernels.fused_moe import MoeWeights, fused_moe

log = logging.getLogger(__name__)


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
# The argument objects the newer entry points take instead of flat keyword arguments, where each engine keeps them.
SGLANG_RUNNER_CONFIG = ("sglang.srt.layers.moe.moe_runner", "MoeRunnerConfig")
SGLANG_TOPK_OUTPUT = ("sglang.srt.layers.moe.topk", "StandardTopKOutput")
VLLM_FP8_QUANT_CONFIG = ("vllm.model_executor.layers.fused_moe.config", "fp8_w8a8_moe_quant_config")

# How an entry point wants to be called, read from its signature (the engines changed it in 2025):
#   "flat":        fused_experts(x, w1, w2, topk_weights, topk_ids, use_fp8_w8a8=..., w1_scale=..., ...)
#   "topk_output": SGLang >= 0.5: fused_experts(x, w1, w2, topk_output, moe_runner_config, use_fp8_w8a8=..., ...)
#   "quant_config": vLLM >= 0.11: fused_experts(x, w1, w2, topk_weights, topk_ids, quant_config=...)
CALL_STYLES = ("flat", "topk_output", "quant_config")


def call_style(fn: Callable[..., Any]) -> str:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "flat"
    if "topk_output" in params:
        return "topk_output"
    if "quant_config" in params and "use_fp8_w8a8" not in params:
        return "quant_config"
    return "flat"


def _optional_attr(module_name: str, attr: str) -> Any:
    try:
        return getattr(importlib.import_module(module_name), attr, None)
    except ImportError:
        return None


def _accepted(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `fn` (or a dataclass) takes; others are dropped (fields differ between versions)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


@dataclass(frozen=True)
class EngineBackend:
    """The engine's own `fused_experts`, called with our weights under `override_config`."""

    name: str
    version: str
    fused_experts: Callable[..., torch.Tensor]
    override_config: Callable[[dict[str, int]], contextlib.AbstractContextManager[Any]]
    style: str = "flat"
    runner_config: Callable[..., Any] | None = None  # SGLang's MoeRunnerConfig
    topk_output: Callable[..., Any] | None = None  # SGLang's StandardTopKOutput
    quant_config: Callable[..., Any] | None = None  # vLLM's fp8_w8a8_moe_quant_config

    def _fp8_kwargs(self, weights: MoeWeights, shape: MoeShape) -> dict[str, Any]:
        if not shape.quant.is_fp8:
            return {}
        kwargs: dict[str, Any] = {"use_fp8_w8a8": True, "w1_scale": weights.w1_scale, "w2_scale": weights.w2_scale}
        if shape.quant is Quant.FP8_PER_CHANNEL:
            # Per-channel weights with per-token dynamic activation scales: the scales the model really uses.
            kwargs["per_channel_quant"] = True
        if shape.quant is Quant.FP8_BLOCK:
            kwargs["block_shape"] = list(shape.block_shape or ())
        return kwargs

    def run(self, x, weights, topk_weights, topk_ids, shape, config):  # type: ignore[no-untyped-def]
        fp8 = self._fp8_kwargs(weights, shape)
        with self.override_config(config.to_json_dict()):
            if self.style == "topk_output":
                topk = (self.topk_output or _triple)(topk_weights, topk_ids, None)
                assert self.runner_config is not None  # required at load time for this style
                runner = self.runner_config(**_accepted(self.runner_config, {
                    "num_experts": shape.num_experts, "num_local_experts": shape.num_experts,
                    "hidden_size": shape.hidden_size, "intermediate_size_per_partition": shape.intermediate_size,
                    "top_k": shape.runtime_top_k, "num_fused_shared_experts": shape.fused_shared_experts,
                    "params_dtype": x.dtype, "activation": "silu",
                    "inplace": False,  # the timed inputs are reused by every replay: never overwrite them
                }))
                return self.fused_experts(x, weights.w1, weights.w2, topk, runner, **fp8)
            if self.style == "quant_config":
                quant = None
                if fp8:
                    assert self.quant_config is not None  # required at load time for this style
                    per_channel = bool(fp8.get("per_channel_quant"))
                    quant = self.quant_config(**_accepted(self.quant_config, {
                        "w1_scale": fp8["w1_scale"], "w2_scale": fp8["w2_scale"], "per_act_token_quant": per_channel,
                        "per_out_ch_quant": per_channel, "block_shape": fp8.get("block_shape"),
                    }))
                return self.fused_experts(x, weights.w1, weights.w2, topk_weights, topk_ids, quant_config=quant)
            return self.fused_experts(x, weights.w1, weights.w2, topk_weights, topk_ids, **fp8)


def _triple(topk_weights: torch.Tensor, topk_ids: torch.Tensor, router_logits: None) -> tuple:
    return (topk_weights, topk_ids, router_logits)


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
        style = call_style(fn)
        extras: dict[str, Any] = {}
        if style == "topk_output":
            extras = {"runner_config": _optional_attr(*SGLANG_RUNNER_CONFIG),
                      "topk_output": _optional_attr(*SGLANG_TOPK_OUTPUT)}
        elif style == "quant_config":
            extras = {"quant_config": _optional_attr(*VLLM_FP8_QUANT_CONFIG)}
        needed = {"topk_output": ("runner_config", SGLANG_RUNNER_CONFIG),
                  "quant_config": ("quant_config", VLLM_FP8_QUANT_CONFIG)}.get(style)
        if needed is not None and extras[needed[0]] is None:
            log.warning("%s %s: %s.%s takes %s but %s.%s is not importable; not using this engine's kernel",
                        engine, version, module_name, fn_name, style, *needed[1])
            continue
        return EngineBackend(name=engine, version=f"{engine} {version}", fused_experts=fn, override_config=override,
                             style=style, **extras)
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
