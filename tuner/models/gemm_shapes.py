"""The dense FP8 block-GEMM shapes (N, K) of a model at a tensor-parallel size, from its config.json.

C[M, N] = A[M, K] x B[N, K]^T for every block-quantized linear layer outside the routed experts: attention
projections (MLA's kv_a / q_a / q_b / kv_b / o, or q / k / v / o), the dense MLP layers before the first MoE layer,
and the shared expert. SGLang's block-GEMM tuner (`tuning_block_wise_kernel.py`, SGLang 0.5.x) tunes, for an
MLA model at TP t, the layers TP splits (N / t for column-parallel, K / t for row-parallel) plus the attention and
dense-down layers whole (they run unsplit with DP attention); the shared expert is listed whether or not it is
fused (`--disable-shared-experts-fusion` makes it a dense GEMM). For DeepSeek-V3 at TP8 that is exactly the 13
pairs in shared/reference/kernels.md. Only models whose checkpoints are block-FP8 have such GEMMs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuner.errors import ModelConfigError
from tuner.kernels.base import GemmShape
from tuner.models.config import ModelConfig


def weight_block_shape(cfg: ModelConfig) -> tuple[int, int] | None:
    """The checkpoint's FP8 weight block ([bn, bk] from quantization_config.weight_block_size), or None."""
    quant = cfg.raw.get("quantization_config") or cfg.text.get("quantization_config") or {}
    block = quant.get("weight_block_size") if isinstance(quant, Mapping) else None
    if not block:
        return None
    if len(block) != 2 or not all(isinstance(b, int) and b > 0 for b in block):
        raise ModelConfigError(f"{cfg.source}: quantization_config.weight_block_size must be two positive "
                               f"integers like [128, 128], got {block!r}")
    return int(block[0]), int(block[1])


def _int(text: Mapping[str, Any], key: str, cfg: ModelConfig, default: int | None = None) -> int:
    value = text.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ModelConfigError(f"{cfg.source}: {key} must be a non-negative integer for the GEMM shapes, got {value!r}")
    return value


def _split(value: int, tp: int, what: str, cfg: ModelConfig) -> int:
    if value % tp:
        raise ModelConfigError(f"{cfg.source}: {what} = {value} does not split over --tp {tp}")
    return value // tp


def derive_gemm_shapes(cfg: ModelConfig, tp: int = 1) -> list[GemmShape]:
    """The model's block-FP8 dense GEMM shapes at `tp`, deduplicated, sorted by (N, K).

    Raises ModelConfigError when the checkpoint is not block-FP8 (no such GEMM to tune) or a size does not split.
    """
    if tp < 1:
        raise ModelConfigError(f"--tp must be at least 1, got {tp}")
    block = weight_block_shape(cfg)
    if block is None:
        raise ModelConfigError(f"{cfg.name} is not a block-FP8 checkpoint (no quantization_config.weight_block_size): "
                               "it has no block FP8 GEMM to tune")
    t = cfg.text
    hidden = _int(t, "hidden_size", cfg)
    heads = _int(t, "num_attention_heads", cfg)
    pairs: dict[tuple[int, int], list[str]] = {}

    def add(layer: str, n: int, k: int) -> None:
        if n and k:
            pairs.setdefault((n, k), []).append(layer)

    def column(layer: str, n: int, k: int) -> None:  # split along N
        add(f"{layer}/tp", _split(n, tp, f"{layer} N", cfg), k)

    def row(layer: str, n: int, k: int) -> None:  # split along K
        add(f"{layer}/tp", n, _split(k, tp, f"{layer} K", cfg))

    if t.get("kv_lora_rank"):  # MLA (DeepSeek-V2/V3, Kimi-K2)
        kv_lora, rope = _int(t, "kv_lora_rank", cfg), _int(t, "qk_rope_head_dim", cfg)
        nope, v_dim = _int(t, "qk_nope_head_dim", cfg), _int(t, "v_head_dim", cfg)
        q_lora = t.get("q_lora_rank") or 0
        q_out = heads * (nope + rope)
        add("kv_a_proj_with_mqa", kv_lora + rope, hidden)
        add("q_proj", q_out, hidden)  # unsplit (DP attention); the MLA list tunes it for LoRA-free q too
        add("kv_b_proj", heads * (nope + v_dim), kv_lora)
        add("o_proj", hidden, heads * v_dim)
        column("q_proj", q_out, hidden)
        if q_lora:
            column("q_b_proj", q_out, _int(t, "q_lora_rank", cfg))
        column("kv_b_proj", heads * (nope + v_dim), kv_lora)
        row("o_proj", hidden, heads * v_dim)
    else:  # GQA attention
        head_dim = _int(t, "head_dim", cfg, hidden // heads)
        kv_heads = _int(t, "num_key_value_heads", cfg, heads)
        # SGLang replicates KV heads when TP exceeds their count: each rank keeps at least one
        q_per_rank = _split(heads, tp, "num_attention_heads", cfg)
        kv_per_rank = max(1, kv_heads // tp)
        add("qkv_proj/tp", (q_per_rank + 2 * kv_per_rank) * head_dim, hidden)
        row("o_proj", hidden, heads * head_dim)
    dense_layers = t.get("first_k_dense_replace", 0) or 0
    if dense_layers:
        inter = _int(t, "intermediate_size", cfg)
        add("dense down_proj", hidden, inter)
        column("dense gate_up_proj", 2 * inter, hidden)
        row("dense down_proj", hidden, inter)
    shared = t.get("n_shared_experts") or 0
    if shared:
        shared_inter = _int(t, "moe_intermediate_size", cfg) * int(shared)
        column("shared_expert gate_up_proj", 2 * shared_inter, hidden)
        row("shared_expert down_proj", hidden, shared_inter)
    return [GemmShape(n, k, block, tuple(layers)) for (n, k), layers in sorted(pairs.items())]


def parse_gemm_shapes(text: str, block_shape: tuple[int, int] = (128, 128)) -> list[GemmShape]:
    """`--shapes 576,7168 4096,512 ...` (or ';'-separated) as GemmShapes; TunerError-style one line when malformed."""
    shapes = []
    for item in text.replace(";", " ").split():
        try:
            n, k = (int(v) for v in item.split(","))
        except ValueError:
            raise ModelConfigError(f"--shapes wants N,K pairs like 576,7168 separated by spaces, got {item!r}") from None
        if n < 1 or k < 1:
            raise ModelConfigError(f"--shapes: N and K must be positive, got {item!r}")
        shapes.append(GemmShape(n, k, block_shape, ("--shapes",)))
    if not shapes:
        raise ModelConfigError("--shapes needs at least one N,K pair")
    return sorted(set(shapes))
