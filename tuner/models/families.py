"""The MoE model families we can derive kernel shapes for: which config.json fields hold what, per family.

Adding a model family is one entry in `FAMILIES`. Nothing here reads files or computes shapes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class FusionRule(enum.Enum):
    """Which SGLang model class decides whether the shared expert is folded into the fused-MoE kernel.

    The rules themselves are in tuner.models.fusion (SGLang 0.5.23).
    """

    NEVER = "never"  # no shared expert, or the model class never fuses it (Qwen2-MoE, Qwen3-MoE, Mixtral)
    DEEPSEEK = "deepseek"  # DeepseekV2ForCausalLM and its DeepseekV3 subclass (DeepSeek-V2/V3/R1, Kimi-K2)
    GLM4_MOE = "glm4_moe"  # Glm4MoeForCausalLM (GLM-4.5/4.6/4.7, incl. Air)
    GLM4V_MOE = "glm4v_moe"  # Glm4vMoeForConditionalGeneration (GLM-4.5V)


@dataclass(frozen=True)
class MoeFamily:
    """Where one architecture keeps its MoE numbers in config.json."""

    name: str
    architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    experts_field: str  # routed experts
    intermediate_field: str  # per-expert intermediate size (before tensor parallelism)
    shared_experts_field: str | None = None  # count of shared experts (None: the family has none)
    fusion: FusionRule = FusionRule.NEVER
    top_k_field: str = "num_experts_per_tok"
    hidden_field: str = "hidden_size"


FAMILIES: tuple[MoeFamily, ...] = (
    MoeFamily(
        name="deepseek_v3",
        architectures=("DeepseekV3ForCausalLM",),
        model_types=("deepseek_v3", "kimi_k2"),
        experts_field="n_routed_experts",
        intermediate_field="moe_intermediate_size",
        shared_experts_field="n_shared_experts",
        fusion=FusionRule.DEEPSEEK,
    ),
    MoeFamily(
        name="deepseek_v2",
        architectures=("DeepseekV2ForCausalLM",),
        model_types=("deepseek_v2",),
        experts_field="n_routed_experts",
        intermediate_field="moe_intermediate_size",
        shared_experts_field="n_shared_experts",
        fusion=FusionRule.DEEPSEEK,
    ),
    MoeFamily(
        name="glm4_moe",
        architectures=("Glm4MoeForCausalLM",),
        model_types=("glm4_moe",),
        experts_field="n_routed_experts",
        intermediate_field="moe_intermediate_size",
        shared_experts_field="n_shared_experts",
        fusion=FusionRule.GLM4_MOE,
    ),
    MoeFamily(
        # GLM-4.5V: MoE fields live in text_config.
        name="glm4v_moe",
        architectures=("Glm4vMoeForConditionalGeneration",),
        model_types=("glm4v_moe", "glm4v_moe_text"),
        experts_field="n_routed_experts",
        intermediate_field="moe_intermediate_size",
        shared_experts_field="n_shared_experts",
        fusion=FusionRule.GLM4V_MOE,
    ),
    MoeFamily(
        name="qwen3_moe",
        architectures=("Qwen3MoeForCausalLM",),
        model_types=("qwen3_moe",),
        experts_field="num_experts",
        intermediate_field="moe_intermediate_size",
    ),
    MoeFamily(
        name="qwen3_vl_moe",
        architectures=("Qwen3VLMoeForConditionalGeneration",),
        model_types=("qwen3_vl_moe", "qwen3_vl_moe_text"),
        experts_field="num_experts",
        intermediate_field="moe_intermediate_size",
    ),
    MoeFamily(
        # Qwen3-Omni: the language model is the "thinker" (thinker_config.text_config); the talker is not served
        name="qwen3_omni_moe",
        architectures=("Qwen3OmniMoeForConditionalGeneration",),
        model_types=("qwen3_omni_moe", "qwen3_omni_moe_thinker", "qwen3_omni_moe_text"),
        experts_field="num_experts",
        intermediate_field="moe_intermediate_size",
    ),
    MoeFamily(
        # Qwen2-MoE's shared expert has its own size (shared_expert_intermediate_size): it is never fused.
        name="qwen2_moe",
        architectures=("Qwen2MoeForCausalLM",),
        model_types=("qwen2_moe",),
        experts_field="num_experts",
        intermediate_field="moe_intermediate_size",
    ),
    MoeFamily(
        # Mixtral's experts are full-size MLPs: the expert width is intermediate_size.
        name="mixtral",
        architectures=("MixtralForCausalLM",),
        model_types=("mixtral",),
        experts_field="num_local_experts",
        intermediate_field="intermediate_size",
    ),
)

EXPERT_COUNT_FIELDS: tuple[str, ...] = ("n_routed_experts", "num_experts", "num_local_experts", "moe_num_experts")

# Where composite (multimodal, omni) configs keep their language model, most specific first. Any other nested
# "*_config" object holding an expert count is found too (see language_model_path).
_LANGUAGE_MODEL_PATHS: tuple[tuple[str, ...], ...] = (
    ("thinker_config", "text_config"),  # Qwen2.5/3-Omni
    ("text_config",),  # most VL models (Qwen3-VL, GLM-4.5V, Llama 4, Kimi-VL)
    ("language_config",),  # DeepSeek-VL2
    ("llm_config",),  # InternVL
)
_NOT_LANGUAGE_MODEL = ("vision", "audio", "talker", "quantization", "code2wav", "rope")


def _has_expert_count(section: Mapping[str, Any]) -> bool:
    return any(isinstance(section.get(f), int) and not isinstance(section.get(f), bool) for f in EXPERT_COUNT_FIELDS)


def _nested(raw: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    section: Any = raw
    for key in path:
        section = section.get(key) if isinstance(section, Mapping) else None
    return section if isinstance(section, Mapping) else None


def _search_sections(raw: Mapping[str, Any], prefix: tuple[str, ...], depth: int) -> tuple[str, ...] | None:
    """Breadth-first: the first nested '*_config' object (not vision/audio/talker) that has an expert count."""
    children = [
        (key, value)
        for key, value in raw.items()
        if key.endswith("_config") and isinstance(value, Mapping) and not any(w in key for w in _NOT_LANGUAGE_MODEL)
    ]
    for key, value in children:
        if _has_expert_count(value):
            return (*prefix, key)
    if depth > 1:
        for key, value in children:
            found = _search_sections(value, (*prefix, key), depth - 1)
            if found:
                return found
    return None


def language_model_path(raw: Mapping[str, Any]) -> tuple[str, ...]:
    """Keys leading to the language model's fields: () when they are top level, ('thinker_config',
    'text_config') for Qwen3-Omni, ('text_config',) for most VL models."""
    if _has_expert_count(raw):
        return ()
    for path in _LANGUAGE_MODEL_PATHS:
        section = _nested(raw, path)
        if section is not None and _has_expert_count(section):
            return path
    found = _search_sections(raw, (), depth=3)
    if found:
        return found
    return ("text_config",) if _nested(raw, ("text_config",)) is not None else ()


def text_section(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """The part of config.json that describes the language model, wherever a composite config puts it."""
    return _nested(raw, language_model_path(raw)) or raw


def architectures_of(raw: Mapping[str, Any]) -> list[str]:
    archs = raw.get("architectures")
    if isinstance(archs, str):
        return [archs]
    if isinstance(archs, list):
        return [a for a in archs if isinstance(a, str)]
    return []


def model_types_of(raw: Mapping[str, Any]) -> list[str]:
    found = []
    for section in (raw, text_section(raw)):
        value = section.get("model_type")
        if isinstance(value, str) and value not in found:
            found.append(value)
    return found


def find_family(raw: Mapping[str, Any]) -> MoeFamily | None:
    """The family named by `architectures` (first match), else by `model_type`; None when neither is known."""
    archs = architectures_of(raw)
    for arch in archs:
        for family in FAMILIES:
            if arch in family.architectures:
                return family
    for model_type in model_types_of(raw):
        for family in FAMILIES:
            if model_type in family.model_types:
                return family
    return None


def known_architectures() -> list[str]:
    return [arch for family in FAMILIES for arch in family.architectures]


def known_model_types() -> list[str]:
    return [mt for family in FAMILIES for mt in family.model_types]
