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

# Mechanisms behind flags the seeds measured (seed 004: DeepSeek-V3 on H200 TP8; seeds 000/001: GLM-4.7-FP8).
# Without CUDA graphs a decode step is bound by the CPU launching each layer's kernels: a floor per layer,
# set so batch 1 runs 5-8x slower than with graphs (seed 004: 228.9 ms vs 32.2 ms, 7.1x).
EAGER_DECODE_LAYER_FLOOR_S = 0.7e-3
# torch.compile fuses the small kernels of a captured decode graph: batch 1 -25% (seed 004: 32.2 -> 24.2 ms).
TORCH_COMPILE_DECODE_FACTOR = 0.75
# Shared experts run apart from the fused MoE kernel: their own GEMM at dense efficiency plus a launch and
# a reduction per MoE layer (seed 001: fusing cut TTFT up to -23.7% and ITL -20.8% on GLM-4.7-FP8 TP8).
UNFUSED_SHARED_EXPERT_FIXED_S = 60e-6
# DP attention: each rank attends only its own requests (its latent KV), then all-gathers hidden states.
DP_ATTENTION_ALLGATHER_S = 12e-6
# The scheduler's CPU work per step, hidden behind the GPU by the overlap scheduler and exposed without it.
SCHEDULE_CPU_S = 1.2e-3
SCHEDULE_CPU_PER_SEQ_S = 6e-6
# Prefill/decode disaggregation (--disaggregation-mode prefill|decode): the decode server receives each
# prompt's KV from the prefill server over RDMA, one NIC per GPU (seed 000 gives each TP8 server eight
# 400 Gb/s InfiniBand ports, --disaggregation-ib-device mlx5_ib7s400p0..7), at about 80% of line rate,
# after a bootstrap handshake and the wait for the prefill server's next launch (seed 001: without the
# fork's async transfer the send waits behind the next batch's kernel launches, which costs TTFT).
KV_TRANSFER_BYTES_PER_S_PER_GPU = 0.8 * 400e9 / 8
KV_TRANSFER_FIXED_S = 8e-3


@dataclass(frozen=True)
class Mechanisms:
    """The flags that change how a forward pass runs (SGLang 0.5.23 names; defaults are SGLang's)."""

    torch_compile_max_bs: int = 0  # 0: --enable-torch-compile off
    shared_experts_fused: bool = True  # False: --disable-shared-experts-fusion
    attn_dp_size: int = 1  # --attn-dp-size (seed era: --enable-dp-attention with --dp-size)
    overlap_schedule: bool = True  # False: --disable-overlap-schedule
    moe_ep_size: int = 1  # --ep-size: experts split whole over this many GPUs (MoE TP = tp_size / moe_ep_size)


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
    def __init__(self, model: ModelProfile, gpu: GpuProfile, tp_size: int, kv_dtype_bytes: float,
                 mechanisms: Mechanisms | None = None) -> None:
        self.mech = mechanisms or Mechanisms()
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
    def ep_busiest_rank_factor(self, tokens: float) -> float:
        """Expert parallelism: the busiest GPU's routed (token, expert) pairs over the mean GPU's, >= 1.
        All ranks meet at the all-reduce, so the layer takes the busiest rank's time. Uniform routing: a
        rank's pairs are ~Binomial(tokens * top-k, 1 / ep); the max of ep of them ~ mean + sqrt(2 ln ep) sd."""
        ep = self.mech.moe_ep_size
        pairs = tokens * self.model.routed_per_token
        if ep <= 1 or pairs <= 0:
            return 1.0
        mean = pairs / ep
        sd = math.sqrt(pairs * (1 / ep) * (1 - 1 / ep))
        return 1.0 + math.sqrt(2 * math.log(ep)) * sd / mean

    def moe_layer_s(self, tokens: float) -> float:
        """One fused-MoE layer: bytes of the distinct experts touched vs expert GEMM FLOPs. Under expert
        parallelism each GPU holds num_experts / ep whole experts (split over tp / ep GPUs) and the layer
        waits for the busiest GPU."""
        if tokens <= 0:
            return 0.0
        m = self.model
        ep = max(1, self.mech.moe_ep_size)
        if ep == 1:
            mem_s = m.expected_distinct_experts(tokens) * self._expert_bytes / self._bw
            flops = 2 * tokens * m.experts_per_token * m.expert_params_per_gpu(self.tp_size)
        else:
            moe_tp = max(1, self.tp_size // ep)
            skew = self.ep_busiest_rank_factor(tokens)
            experts_on_rank = min(m.num_experts / ep, m.expected_distinct_experts(tokens) / ep * skew)
            mem_s = experts_on_rank * m.expert_bytes_per_gpu(moe_tp) / self._bw
            flops = 2 * tokens * m.experts_per_token / ep * skew * m.expert_params_per_gpu(moe_tp)
        total = math.hypot(mem_s, flops / self._moe_flops) + m.moe_layer_fixed_s
        if not self.mech.shared_experts_fused and m.num_shared_experts:
            params = m.num_shared_experts * m.expert_params_per_gpu(self.tp_size)
            shared_s = math.hypot(params * m.weight_bytes_per_param / self._bw, 2 * tokens * params / self._gemm_flops)
            total += shared_s + UNFUSED_SHARED_EXPERT_FIXED_S
        return total

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
        total += m.num_layers * self._attention_s(
            tokens, batch.decode_context_tokens, decode_pairs, batch.prefill_attention_pairs
        )
        total += self._lm_head_s(decode_tokens + batch.prefill_seqs)
        total += STEP_OVERHEAD_S + PER_SEQ_OVERHEAD_S * (batch.decode_seqs + batch.prefill_seqs)
        decode_only = batch.prefill_tokens == 0
        if not batch.cuda_graph:
            if decode_only:  # the CPU launching every layer's kernels is the floor
                total = max(total, m.num_layers * EAGER_DECODE_LAYER_FLOOR_S)
            total += m.num_layers * m.eager_layer_overhead_s
        elif decode_only and 0 < batch.decode_seqs <= self.mech.torch_compile_max_bs:
            total *= TORCH_COMPILE_DECODE_FACTOR
        if not self.mech.overlap_schedule:
            total += SCHEDULE_CPU_S + SCHEDULE_CPU_PER_SEQ_S * (batch.decode_seqs + batch.prefill_seqs)
        return total

    def _attention_s(self, tokens: float, kv_tokens_read: float, decode_pairs: float,
                     prefill_pairs: float) -> float:
        """One attention layer; with DP attention each of attn_dp_size ranks takes its share of the
        requests at tp/attn_dp heads per GPU (all ranks in step), plus the all-gather."""
        dp = max(1, self.mech.attn_dp_size)
        if dp == 1:
            return self._attention_layer_s(tokens, kv_tokens_read, decode_pairs, prefill_pairs)
        attn_tp = max(1, self.tp_size // dp)
        m = self.model
        params = m.attention_params_per_gpu(attn_tp)
        kv_bytes = m.kv_elements_per_token_per_layer(attn_tp) * self.kv_dtype_bytes
        mem_s = (params * m.weight_bytes_per_param + kv_tokens_read / dp * kv_bytes) / self._bw
        comp_s = (
            2 * tokens / dp * params / self._gemm_flops
            + decode_pairs / dp * m.attention_flops_per_pair(attn_tp, decode=True) / self._attn_flops
            + prefill_pairs / dp * m.attention_flops_per_pair(attn_tp, decode=False) / self._attn_flops
        )
        return math.hypot(mem_s, comp_s) + m.layer_fixed_s + DP_ATTENTION_ALLGATHER_S

    def kv_transfer_s(self, prompt_tokens: int) -> float:
        """Seconds from a prefill server finishing a prompt of `prompt_tokens` tokens to its KV cache
        being usable on the decode server (PD disaggregation, SGLang 0.5.23 --disaggregation-mode):
        each GPU sends its own shard of every layer's KV (the latent KV, replicated per rank, for MLA)."""
        if prompt_tokens <= 0:
            return 0.0
        per_gpu_bytes = prompt_tokens * self.model.kv_bytes_per_token(self.tp_size, self.kv_dtype_bytes)
        return KV_TRANSFER_FIXED_S + per_gpu_bytes / KV_TRANSFER_BYTES_PER_S_PER_GPU

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
