"""Roofline step-time model: how long one forward pass (prefill chunk, decode step, speculative
draft + verify) takes for a model profile on a GPU profile at a given tensor-parallel size.

Each part of a layer takes hypot(memory time, compute time) plus a fixed latency: decode is bound by
weights and KV bytes, prefill by FLOPs. It knows nothing of scheduling or of wall-clock time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuner.runtime.sim.profiles import GpuProfile, ModelProfile

# Achieved fractions of peak for the non-MoE GEMMs (TP-sharded projections) and for attention.
GEMM_FLOPS_EFFICIENCY = 0.35
ATTENTION_FLOPS_EFFICIENCY = 0.4
# Scheduler + sampling per forward (mostly hidden by SGLang's overlap scheduler) and per sequence.
STEP_OVERHEAD_S = 0.6e-3
PER_SEQ_OVERHEAD_S = 4e-6
# Model-free drafting (suffix tree / n-gram lookups) runs on the CPU.
CPU_DRAFT_FIXED_S = 0.15e-3
CPU_DRAFT_PER_SEQ_S = 10e-6
# STANDALONE drafts with a small dense model: about 1.5B bf16 params in 28 layers.
STANDALONE_DRAFT_PARAMS = 1.5e9
STANDALONE_DRAFT_LAYERS = 28
STANDALONE_LAYER_FIXED_S = 20e-6


@dataclass(frozen=True)
class ForwardBatch:
    """What one forward pass computes. Decode sequences each contribute `query_tokens_per_decode_seq`
    query tokens (1, or the draft tokens verified in one speculative pass)."""

    decode_seqs: int = 0
    query_tokens_per_decode_seq: int = 1
    decode_context_tokens: int = 0  # sum of the context lengths decode attention reads
    graph_padded_seqs: int = 0  # CUDA-graph batch size the decode part is padded to (0: no padding)
    prefill_tokens: int = 0
    prefill_seqs: int = 0
    prefill_attention_pairs: float = 0.0  # sum over prefill sequences of (query, key) pairs
    cuda_graph: bool = False


class RooflineCostModel:
    def __init__(self, model: ModelProfile, gpu: GpuProfile, tp_size: int, kv_dtype_bytes: float) -> None:
        self.model = model
        self.gpu = gpu
        self.tp_size = tp_size
        self.kv_dtype_bytes = kv_dtype_bytes
        self._bw = gpu.achievable_bandwidth_bytes_per_s
        self._moe_flops = gpu.fp8_flops_per_s * model.moe_flops_efficiency
        self._gemm_flops = gpu.fp8_flops_per_s * GEMM_FLOPS_EFFICIENCY
        self._attn_flops = gpu.bf16_flops_per_s * ATTENTION_FLOPS_EFFICIENCY
        self._expert_bytes = model.expert_bytes_per_gpu(tp_size)
        self._kv_layer_bytes = model.kv_elements_per_token_per_layer(tp_size) * kv_dtype_bytes
        self._attn_params = model.attention_params_per_gpu(tp_size)

    # ---- building blocks ------------------------------------------------------------------------
    def moe_layer_s(self, tokens: float) -> float:
        """One fused-MoE layer: bytes of the distinct experts touched vs expert GEMM FLOPs."""
        if tokens <= 0:
            return 0.0
        m = self.model
        mem_s = m.expected_distinct_experts(tokens) * self._expert_bytes / self._bw
        flops = 2 * tokens * m.experts_per_token * m.expert_params_per_gpu(self.tp_size)
        return math.hypot(mem_s, flops / self._moe_flops) + m.moe_layer_fixed_s

    def _attention_layer_s(
        self, tokens: float, kv_tokens_read: float, decode_pairs: float, prefill_pairs: float
    ) -> float:
        m = self.model
        mem_s = (
            self._attn_params * m.weight_bytes_per_param + kv_tokens_read * self._kv_layer_bytes
        ) / self._bw
        comp_s = (
            2 * tokens * self._attn_params / self._gemm_flops
            + decode_pairs * m.attention_flops_per_pair(self.tp_size, decode=True) / self._attn_flops
            + prefill_pairs * m.attention_flops_per_pair(self.tp_size, decode=False) / self._attn_flops
        )
        return math.hypot(mem_s, comp_s) + m.layer_fixed_s

    def _dense_mlp_s(self, tokens: float) -> float:
        params = self.model.dense_mlp_params_per_gpu(self.tp_size)
        mem_s = params * self.model.weight_bytes_per_param / self._bw
        return math.hypot(mem_s, 2 * tokens * params / self._gemm_flops)

    def _lm_head_s(self, logits: float) -> float:
        if logits <= 0:
            return 0.0
        m = self.model
        mem_s = m.lm_head_bytes_per_gpu(self.tp_size) / self._bw
        comp_s = 2 * logits * m.vocab_size / self.tp_size * m.hidden_size / self._attn_flops
        return math.hypot(mem_s, comp_s)

    # ---- whole forward passes -------------------------------------------------------------------
    def forward_s(self, batch: ForwardBatch) -> float:
        """Seconds of one forward pass of the target model."""
        m = self.model
        padded = max(batch.graph_padded_seqs, batch.decode_seqs)
        decode_tokens = padded * batch.query_tokens_per_decode_seq
        tokens = decode_tokens + batch.prefill_tokens
        if tokens <= 0:
            return 0.0
        decode_pairs = batch.decode_context_tokens * batch.query_tokens_per_decode_seq
        total = m.num_moe_layers * self.moe_layer_s(tokens)
        total += m.num_dense_layers * self._dense_mlp_s(tokens)
        total += m.num_layers * self._attention_layer_s(
            tokens, batch.decode_context_tokens, decode_pairs, batch.prefill_attention_pairs
        )
        total += self._lm_head_s(decode_tokens + batch.prefill_seqs)
        total += STEP_OVERHEAD_S + PER_SEQ_OVERHEAD_S * (batch.decode_seqs + batch.prefill_seqs)
        if not batch.cuda_graph:
            total += m.num_layers * m.eager_layer_overhead_s
        return total

    def draft_s(
        self,
        algorithm: str,
        seqs: int,
        num_steps: int,
        topk: int,
        num_draft_tokens: int,
        context_tokens: int,
        cuda_graph: bool,
    ) -> float:
        """Seconds spent drafting for one speculative step of `seqs` sequences (before the verify)."""
        if seqs <= 0:
            return 0.0
        if algorithm in ("NGRAM", "SUFFIX"):
            return CPU_DRAFT_FIXED_S + CPU_DRAFT_PER_SEQ_S * seqs
        per_step = self._draft_forward_s(algorithm, seqs * topk, context_tokens)
        extend = self._draft_forward_s(algorithm, seqs * num_draft_tokens, context_tokens)
        total = num_steps * per_step + extend
        if not cuda_graph:
            layers = STANDALONE_DRAFT_LAYERS if algorithm == "STANDALONE" else 1
            total += (num_steps + 1) * layers * self.model.eager_layer_overhead_s
        return total

    def draft_prefill_s(self, algorithm: str, tokens: int) -> float:
        """The draft model's own prefill over newly computed prompt tokens (model-based drafting only)."""
        if tokens <= 0 or algorithm in ("NGRAM", "SUFFIX"):
            return 0.0
        return self._draft_forward_s(algorithm, tokens, 0)

    def _draft_forward_s(self, algorithm: str, tokens: int, context_tokens: int) -> float:
        if algorithm == "STANDALONE":
            weights = STANDALONE_DRAFT_PARAMS * 2 / self.tp_size
            mem_s = weights / self._bw
            comp_s = 2 * tokens * STANDALONE_DRAFT_PARAMS / self.tp_size / self._attn_flops
            return math.hypot(mem_s, comp_s) + STANDALONE_DRAFT_LAYERS * STANDALONE_LAYER_FIXED_S
        attention = self._attention_layer_s(tokens, context_tokens, context_tokens, 0.0)
        if algorithm == "EAGLE3":  # a single dense layer head
            body = self._dense_mlp_s(tokens)
        else:  # NEXTN / EAGLE on an MoE model: the MTP layer is a full MoE decoder layer
            body = self.moe_layer_s(tokens)
        return attention + body + self._lm_head_s(tokens)


def default_cuda_graph_batch_sizes(max_bs: int) -> list[int]:
    """Batch sizes captured when only --cuda-graph-max-bs is given: dense at small sizes, then coarser."""
    sizes = [1, 2, 4, 8, 12] + list(range(16, 257, 8)) + list(range(272, max(max_bs, 272) + 1, 16))
    sizes = [s for s in sizes if s <= max_bs]
    if max_bs not in sizes:
        sizes.append(max_bs)
    return sorted(set(sizes))


def padded_graph_batch_size(batch_size: int, captured: list[int]) -> int | None:
    """The captured CUDA-graph size a decode batch is padded to, or None if it must run eagerly."""
    for size in captured:
        if size >= batch_size:
            return size
    return None
