"""Derive the fused-MoE kernel problem (E, N, K, top-k, quantization) a model has at a given TP/EP.

The rules follow the engines (SGLang first): see docs/parts/models-export.md. Nothing here touches a GPU
or names files (that is tuner.export.naming).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuner.errors import ModelConfigError
from tuner.kernels.base import MoeShape, Quant
from tuner.models.config import ModelConfig
from tuner.models.families import MoeFamily
from tuner.models.fusion import SGLANG_VERSION, FusionDecision, FusionDevice, decide_fusion

__all__ = [
    "default_shared_experts_fusion",
    "derive_moe_shape",
    "dtype_label",
    "quant_of",
    "shared_experts_fusion_decision",
]


def derive_moe_shape(
    cfg: ModelConfig,
    tp: int = 1,
    ep: int = 1,
    shared_experts_fusion: bool | None = None,
    device: FusionDevice | None = None,
) -> MoeShape:
    """The fused-MoE shape one GPU runs for `cfg` under tensor parallelism `tp` and expert parallelism `ep`.

    E = routed experts / ep (+1 when the shared expert is fused); N = expert intermediate size / (tp / ep);
    K = hidden size. `shared_experts_fusion=None` follows SGLang 0.5.23's rule for the architecture, expert
    count, ep and `device` (default: an NVIDIA sm90 GPU); True is SGLang's `--enforce-shared-experts-fusion`.
    """
    _check_parallelism(tp, ep)
    family = cfg.family
    section = cfg.text
    hidden_size = _positive_int_field(cfg, section, family.hidden_field)
    routed_experts = _positive_int_field(cfg, section, family.experts_field)
    expert_intermediate = _positive_int_field(cfg, section, family.intermediate_field)
    top_k = _positive_int_field(cfg, section, family.top_k_field)
    quant, block_shape = quant_of(cfg)
    fused = _fused_shared_experts(cfg, ep, device, shared_experts_fusion)

    if routed_experts % ep:
        raise ModelConfigError(
            f"{cfg.name} has {routed_experts} routed experts ({family.experts_field}), which ep={ep} does not "
            f"divide; pick an --ep that divides {routed_experts}"
        )
    moe_tp = tp // ep
    if expert_intermediate % moe_tp:
        raise ModelConfigError(
            f"{cfg.name}'s expert intermediate size {expert_intermediate} ({family.intermediate_field}) is not "
            f"divisible by tp/ep = {tp}/{ep} = {moe_tp}; pick a --tp/--ep whose ratio divides {expert_intermediate}"
        )
    if block_shape is not None and (expert_intermediate // moe_tp) % block_shape[0]:
        raise ModelConfigError(
            f"{cfg.name} at tp={tp}, ep={ep} gives N={expert_intermediate // moe_tp}, which the FP8 weight block "
            f"{list(block_shape)} does not divide: the engines refuse this layout; use a smaller tp/ep ratio"
        )
    return MoeShape(
        num_experts=routed_experts // ep + fused,
        intermediate_size=expert_intermediate // moe_tp,
        hidden_size=hidden_size,
        top_k=top_k,
        quant=quant,
        block_shape=block_shape,
        fused_shared_experts=fused,
    )


def default_shared_experts_fusion(cfg: ModelConfig, ep: int = 1, device: FusionDevice | None = None) -> bool:
    """Whether SGLang 0.5.23 fuses the shared expert into the MoE kernel for this model by default."""
    return shared_experts_fusion_decision(cfg, ep, device).fused_shared_experts > 0


def shared_experts_fusion_decision(
    cfg: ModelConfig, ep: int = 1, device: FusionDevice | None = None, *, enforce: bool = False
) -> FusionDecision:
    """SGLang 0.5.23's default (or, with `enforce`, `--enforce-shared-experts-fusion`) fusion for `cfg`, with
    the reason when it does not fuse (see tuner.models.fusion)."""
    family = cfg.family
    section = cfg.text
    qc = cfg.raw.get("quantization_config") or section.get("quantization_config")
    return decide_fusion(
        family.fusion,
        architecture=cfg.architecture,
        routed_experts=_positive_int_field(cfg, section, family.experts_field),
        shared_experts=_shared_expert_count(cfg, section, family),
        quant_method=qc.get("quant_method") if isinstance(qc, Mapping) else None,
        ep=ep,
        device=device or FusionDevice(),
        enforce=enforce,
    )


def dtype_label(shape: MoeShape) -> str:
    """A short label for the weight format: 'bf16', 'fp8_w8a8_per_channel', 'fp8_w8a8_block128x128'."""
    if shape.quant is Quant.FP8_BLOCK:
        assert shape.block_shape is not None  # MoeShape guarantees it
        return f"fp8_w8a8_block{shape.block_shape[0]}x{shape.block_shape[1]}"
    return shape.quant.value


def quant_of(cfg: ModelConfig) -> tuple[Quant, tuple[int, int] | None]:
    """The expert-weight quantization from `quantization_config` (absent: BF16)."""
    qc = cfg.raw.get("quantization_config")
    if qc is None and cfg.text is not cfg.raw:
        qc = cfg.text.get("quantization_config")
    if qc is None:
        return Quant.BF16, None
    if not isinstance(qc, Mapping):
        raise ModelConfigError(f"{cfg.source}: quantization_config must be a JSON object, got {qc!r}")
    method = qc.get("quant_method")
    block = qc.get("weight_block_size")
    if block is not None:
        if method not in (None, "fp8"):
            raise ModelConfigError(
                f"{cfg.source}: quantization_config has weight_block_size but quant_method {method!r}; only "
                f"block FP8 (quant_method 'fp8') is supported"
            )
        return Quant.FP8_BLOCK, _block_shape(cfg, block, "quantization_config.weight_block_size")
    if method == "fp8":
        raise ModelConfigError(
            f"{cfg.source}: FP8 without weight_block_size (per-tensor FP8) is not supported; supported: block FP8 "
            f"(weight_block_size), compressed-tensors channel-wise FP8, and unquantized BF16"
        )
    if method == "compressed-tensors":
        return _compressed_tensors_quant(cfg, qc)
    raise ModelConfigError(
        f"{cfg.source}: quantization method {method!r} is not supported; supported: block FP8 (weight_block_size), "
        f"compressed-tensors channel-wise FP8, and unquantized BF16"
    )


# --- helpers -------------------------------------------------------------------------------------------------


def _check_parallelism(tp: int, ep: int) -> None:
    for flag, value in (("tp", tp), ("ep", ep)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelConfigError(f"--{flag} must be a positive integer, got {value!r}")
    if tp % ep:
        raise ModelConfigError(
            f"--tp {tp} is not divisible by --ep {ep}: expert parallelism splits the tensor-parallel group, "
            f"so ep must divide tp (e.g. --tp 8 --ep 1, 2, 4 or 8)"
        )


def _where(cfg: ModelConfig, section: Mapping[str, Any]) -> str:
    return f"{cfg.source} (in {cfg.text_path})" if section is not cfg.raw else cfg.source


def _positive_int_field(cfg: ModelConfig, section: Mapping[str, Any], name: str) -> int:
    if name not in section or section[name] is None:
        raise ModelConfigError(
            f"{_where(cfg, section)} lacks the field {name!r}, which a {cfg.family.name} model needs; "
            f"add it from the model's published config.json"
        )
    value = section[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelConfigError(
            f"{_where(cfg, section)}: field {name!r} must be a positive integer, got {value!r}"
        )
    return value


def _shared_expert_count(cfg: ModelConfig, section: Mapping[str, Any], family: MoeFamily) -> int:
    if family.shared_experts_field is None:
        return 0
    value = section.get(family.shared_experts_field)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelConfigError(
            f"{_where(cfg, section)}: field {family.shared_experts_field!r} must be a non-negative integer, "
            f"got {value!r}"
        )
    return value


def _fused_shared_experts(
    cfg: ModelConfig, ep: int, device: FusionDevice | None, requested: bool | None
) -> int:
    if requested is False:
        return 0
    decision = shared_experts_fusion_decision(cfg, ep, device, enforce=bool(requested))
    fused = decision.fused_shared_experts
    if requested and not fused:
        if _shared_expert_count(cfg, cfg.text, cfg.family) == 0:
            raise ModelConfigError(
                f"{cfg.name} has no shared expert, so there is nothing to fuse; drop --shared-experts-fusion"
            )
        hint = " or use --ep 1" if "expert parallelism" in decision.reason else ""
        raise ModelConfigError(
            f"{decision.reason} (SGLang {SGLANG_VERSION}, even with --enforce-shared-experts-fusion), so no engine "
            f"would load a fused file for {cfg.name}; drop --shared-experts-fusion{hint}"
        )
    if fused > 1:
        raise ModelConfigError(
            f"SGLang would fuse all {fused} shared experts of {cfg.name}; the tuner times a single fused shared "
            f"expert only: pass --no-shared-experts-fusion"
        )
    return fused


def _block_shape(cfg: ModelConfig, value: Any, field_name: str) -> tuple[int, int]:
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ModelConfigError(
        f"{cfg.source}: {field_name} must be two positive integers like [128, 128], got {value!r}"
    )


def _compressed_tensors_quant(
    cfg: ModelConfig, qc: Mapping[str, Any]
) -> tuple[Quant, tuple[int, int] | None]:
    groups = qc.get("config_groups")
    if not isinstance(groups, Mapping) or not groups:
        raise ModelConfigError(
            f"{cfg.source}: compressed-tensors quantization_config lacks config_groups; cannot tell the weight format"
        )
    found: set[tuple[Quant, tuple[int, int] | None]] = set()
    for group_name, group in groups.items():
        where = f"quantization_config.config_groups.{group_name}"
        if not isinstance(group, Mapping):
            raise ModelConfigError(f"{cfg.source}: {where} must be a JSON object")
        weights = group.get("weights")
        acts = group.get("input_activations")
        if not isinstance(weights, Mapping):
            raise ModelConfigError(f"{cfg.source}: {where} has no 'weights' scheme")
        w_type, w_bits, strategy = weights.get("type"), weights.get("num_bits"), weights.get("strategy")
        if w_type != "float" or w_bits != 8:
            raise ModelConfigError(
                f"{cfg.source}: compressed-tensors weights of type {w_type!r} with {w_bits} bits ({where}) are not "
                f"supported; only 8-bit float (FP8) weights are"
            )
        if not isinstance(acts, Mapping) or acts.get("type") != "float" or acts.get("num_bits") != 8:
            raise ModelConfigError(
                f"{cfg.source}: compressed-tensors FP8 weights without 8-bit float input activations ({where}) "
                f"are weight-only FP8, which the fused-MoE w8a8 kernel does not run; not supported"
            )
        if strategy == "channel":
            found.add((Quant.FP8_PER_CHANNEL, None))
        elif strategy == "block":
            found.add(
                (
                    Quant.FP8_BLOCK,
                    _block_shape(cfg, weights.get("block_structure"), f"{where}.weights.block_structure"),
                )
            )
        else:
            raise ModelConfigError(
                f"{cfg.source}: compressed-tensors FP8 with weight strategy {strategy!r} ({where}) is not supported; "
                f"supported strategies: 'channel' (per-channel) and 'block'"
            )
    if len(found) > 1:
        raise ModelConfigError(
            f"{cfg.source}: compressed-tensors config_groups mix weight formats ({sorted(q.value for q, _ in found)}); "
            f"cannot tell which one the MoE experts use"
        )
    return found.pop()
