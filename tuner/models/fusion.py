"""SGLang's shared-expert fusion rule: how many shared experts a model's fused-MoE kernel carries as extra experts.

Taken from SGLang 0.5.23: `resolve_shared_experts_config` asks each model class's
`shared_experts_fusion_disable_reason` and `num_fusable_shared_experts` (older releases named this
`determine_num_fused_shared_experts`). Only the checks that a config.json, --ep and the GPU decide are
encoded; runner/A2A backends (DeepEP, FlashInfer, TBO/SBO) are not tuner targets. Reads no files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tuner.models.families import FusionRule

__all__ = ["FusionDecision", "FusionDevice", "decide_fusion"]

SGLANG_VERSION = "0.5.23"
_DEEPSEEK_V3_ARCHITECTURE = "DeepseekV3ForCausalLM"
# n_routed_experts values SGLang 0.5.23 has validated for DeepSeek-V3-class fusion: 256 (DeepSeek-V3/R1), and
# 384 (Kimi-K2.x) only for Quark MXFP4 checkpoints, whose shared expert is stored pre-fused.
_DEEPSEEK_FUSABLE_ROUTED = (256, 384)
_QUARK_ONLY_ROUTED = 384

# Pre-Ampere NVIDIA GPUs, by a word of torch.cuda.get_device_name(); other NVIDIA names count as sm80 or newer.
_OLD_NVIDIA_CAPABILITY = {"P40": (6, 1), "P100": (6, 0), "V100": (7, 0), "T4": (7, 5), "TITAN V": (7, 0)}
# AMD Instinct generations: MI300-series is gfx942 (9.4), MI350-series gfx950 (9.5); earlier ones gfx90a.
_AMD_CAPABILITY = {"MI300": (9, 4), "MI308": (9, 4), "MI325": (9, 4), "MI350": (9, 5), "MI355": (9, 5)}


@dataclass(frozen=True)
class FusionDevice:
    """What SGLang's fusion checks ask of the GPU: vendor and compute capability (gfx942 is 9.4 on ROCm)."""

    vendor: Literal["nvidia", "amd"] = "nvidia"
    capability: tuple[int, int] = (9, 0)

    @classmethod
    def from_device_name(cls, device_name: str) -> FusionDevice:
        """Guess from a `torch.cuda.get_device_name()` string; unknown NVIDIA names are taken as sm80 or newer."""
        upper = device_name.upper()
        if "AMD" in upper or "INSTINCT" in upper:
            for marker, capability in _AMD_CAPABILITY.items():
                if marker in upper:
                    return cls("amd", capability)
            return cls("amd", (9, 0))
        for marker, capability in _OLD_NVIDIA_CAPABILITY.items():
            if marker in upper:
                return cls("nvidia", capability)
        return cls("nvidia", (9, 0))

    @property
    def sglang_fusion_capable(self) -> bool:
        """SGLang fuses only on NVIDIA sm80+ or AMD gfx942+."""
        return self.capability >= ((8, 0) if self.vendor == "nvidia" else (9, 4))

    @property
    def fuses_under_ep(self) -> bool:
        """SGLang keeps fusion under expert parallelism only on AMD gfx942+ (MI300-series)."""
        return self.vendor == "amd" and self.capability >= (9, 4)


@dataclass(frozen=True)
class FusionDecision:
    """How many shared experts SGLang folds into the kernel; `reason` says why none when it is 0."""

    fused_shared_experts: int
    reason: str = ""


def decide_fusion(
    rule: FusionRule,
    *,
    architecture: str,
    routed_experts: int,
    shared_experts: int,
    quant_method: str | None,
    ep: int,
    device: FusionDevice,
    enforce: bool = False,
) -> FusionDecision:
    """SGLang 0.5.23's fused shared-expert count for a model at expert parallelism `ep` on `device`.

    `enforce=True` is `--enforce-shared-experts-fusion`: DeepSeek-class models then skip every check below
    (the config, the GPU and EP); GLM classes have no such override. Kimi-K2-Instruct (DeepseekV3, 384 routed,
    block FP8) gives 0: only a Quark checkpoint with 384 routed experts is fused.
    """
    if shared_experts == 0 or rule is FusionRule.NEVER:
        return FusionDecision(0, _never_reason(rule, shared_experts))
    if rule is FusionRule.DEEPSEEK:
        if enforce:
            return FusionDecision(shared_experts)
        reason = _deepseek_reason(architecture, routed_experts, shared_experts, quant_method, ep, device)
    elif rule is FusionRule.GLM4_MOE:
        reason = _device_reason(device, ep, "GLM-4.5 (Glm4MoeForCausalLM)")
    else:  # GLM4V_MOE
        if device.vendor != "nvidia":
            reason = "SGLang fuses the shared expert of Glm4vMoeForConditionalGeneration only on CUDA GPUs"
        elif ep > 1:
            reason = f"SGLang does not fuse Glm4vMoeForConditionalGeneration's shared expert with expert parallelism (ep={ep})"
        else:
            reason = _device_reason(device, 1, "Glm4vMoeForConditionalGeneration")
    return FusionDecision(0, reason) if reason else FusionDecision(shared_experts)


def _never_reason(rule: FusionRule, shared_experts: int) -> str:
    if shared_experts == 0:
        return "the model has no shared expert"
    return "SGLang never fuses the shared expert of this architecture"


def _deepseek_reason(
    architecture: str, routed: int, shared: int, quant_method: str | None, ep: int, device: FusionDevice
) -> str:
    if architecture != _DEEPSEEK_V3_ARCHITECTURE:
        return f"SGLang fuses the shared expert only for {_DEEPSEEK_V3_ARCHITECTURE} checkpoints, not {architecture}"
    if routed not in _DEEPSEEK_FUSABLE_ROUTED or shared != 1:
        return (
            f"SGLang fuses {_DEEPSEEK_V3_ARCHITECTURE} only with 256 routed experts (or 384 in Quark format) and "
            f"1 shared expert; this model has {routed} routed and {shared} shared"
        )
    if routed == _QUARK_ONLY_ROUTED and quant_method != "quark":
        return (
            f"SGLang fuses a {_DEEPSEEK_V3_ARCHITECTURE} model with {routed} routed experts (Kimi-K2) only for Quark "
            f"MXFP4 checkpoints, not {quant_method or 'unquantized'} weights"
        )
    return _device_reason(device, ep, f"DeepSeek-V3/R1 ({_DEEPSEEK_V3_ARCHITECTURE})")


def _device_reason(device: FusionDevice, ep: int, what: str) -> str:
    if not device.sglang_fusion_capable:
        return f"SGLang fuses {what} only on NVIDIA sm80+ or AMD MI300-series GPUs"
    if ep > 1 and not device.fuses_under_ep:
        return f"SGLang turns {what} shared-expert fusion off with expert parallelism (ep={ep}) except on AMD MI300-series"
    return ""
