"""GPU and model profiles the simulator is built from: hardware numbers and model architecture,
plus the per-GPU sizes (weights, KV bytes per token, expert bytes) derived from them under tensor parallelism.

Pure data and arithmetic; the step-time roofline is in cost.py and the startup memory plan in memory.py.
Calibration: docs/parts/engine-sim.md and /work/shared/reference/calibration.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class GpuProfile:
    name: str
    memory_bytes: int  # total device memory as torch reports it
    hbm_bandwidth_bytes_per_s: float  # spec sheet
    bandwidth_efficiency: float  # achievable fraction of spec for weight/KV streaming
    fp8_flops_per_s: float  # dense tensor-core peak
    bf16_flops_per_s: float

    @property
    def achievable_bandwidth_bytes_per_s(self) -> float:
        return self.hbm_bandwidth_bytes_per_s * self.bandwidth_efficiency


GPU_PROFILES: dict[str, GpuProfile] = {
    # Same GH100 compute; H200 has more and faster HBM. 0.8 x spec matches the fused-MoE timings of
    # calibration.md (0.46 GB of experts at M=64 in ~175 us of memory time on an H100).
    "H100": GpuProfile("H100", int(79.11 * GIB), 3.35e12, 0.8, 1979e12, 989e12),
    "H200": GpuProfile("H200", int(139.81 * GIB), 4.8e12, 0.8, 1979e12, 989e12),
}


@dataclass(frozen=True)
class ModelProfile:
    """Architecture of one MoE model (whole model) and the kernel constants calibrated for it."""

    name: str
    num_layers: int
    num_dense_layers: int  # leading layers with a dense MLP instead of MoE
    hidden_size: int
    num_attention_heads: int
    attention: Literal["gqa", "mla"]
    num_kv_heads: int  # gqa only
    head_dim: int  # gqa only
    q_lora_rank: int  # mla only
    kv_lora_rank: int  # mla only
    qk_nope_head_dim: int  # mla only
    qk_rope_head_dim: int  # mla only
    v_head_dim: int  # mla only
    dense_intermediate_size: int
    moe_intermediate_size: int
    num_experts: int  # routed + fused shared experts
    experts_per_token: int  # top-k including the fused shared experts
    num_shared_experts: int  # experts every token touches
    vocab_size: int
    max_position_embeddings: int
    weight_bytes_per_param: float  # 1.0 for FP8 linear layers (embeddings/lm_head stay bf16)
    # kernel constants (seconds), calibrated against calibration.md and the seeds
    moe_layer_fixed_s: float  # launch/latency floor of one fused-MoE layer inside a CUDA graph
    moe_flops_efficiency: float  # achieved fraction of FP8 peak for the skinny per-GPU expert GEMMs
    layer_fixed_s: float  # norms, projections, attention launch, 2 all-reduces per layer (graph mode)
    eager_layer_overhead_s: float  # extra per layer when a forward runs without a CUDA graph
    activation_bytes_per_token: int  # peak activation memory per prefill token
    cuda_graph_bytes_per_token: int  # graph pool memory per captured token slot
    mtp_accept_prob: float  # per-token acceptance of the model's own MTP/EAGLE draft
    path_patterns: tuple[str, ...]  # lowercase substrings of --model-path that select this profile
    # FP8 block quantization's output block (128 for 128x128 blocks; 0: not block-quantized): each GPU's share
    # of an expert's intermediate size must be whole blocks or SGLang refuses to load the weights
    weight_block_n: int = 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers

    @property
    def num_routed_experts(self) -> int:
        return self.num_experts - self.num_shared_experts

    @property
    def routed_per_token(self) -> int:
        return self.experts_per_token - self.num_shared_experts

    # ---- per-GPU sizes under tensor parallelism -------------------------------------------------
    def heads_per_gpu(self, tp_size: int) -> float:
        return self.num_attention_heads / tp_size

    def attention_params_per_gpu(self, tp_size: int) -> float:
        h, nh = self.hidden_size, self.heads_per_gpu(tp_size)
        if self.attention == "gqa":
            kv_heads = max(1.0, self.num_kv_heads / tp_size)
            return 2 * h * nh * self.head_dim + 2 * h * kv_heads * self.head_dim
        qk_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        replicated = h * self.q_lora_rank + h * (self.kv_lora_rank + self.qk_rope_head_dim)
        split = (
            self.q_lora_rank * nh * qk_dim
            + self.kv_lora_rank * nh * (self.qk_nope_head_dim + self.v_head_dim)
            + nh * self.v_head_dim * h
        )
        return replicated + split

    def kv_elements_per_token_per_layer(self, tp_size: int) -> float:
        if self.attention == "gqa":
            return 2 * max(1.0, self.num_kv_heads / tp_size) * self.head_dim
        return float(self.kv_lora_rank + self.qk_rope_head_dim)  # latent cache, replicated on every GPU

    def kv_bytes_per_token(self, tp_size: int, kv_dtype_bytes: float, extra_layers: int = 0) -> float:
        """KV pool bytes one token takes on one GPU (all layers, plus `extra_layers` of a draft)."""
        per_layer = self.kv_elements_per_token_per_layer(tp_size) * kv_dtype_bytes
        return per_layer * (self.num_layers + extra_layers)

    def attention_flops_per_pair(self, tp_size: int, decode: bool) -> float:
        """FLOPs per (query, key) pair per layer on one GPU."""
        nh = self.heads_per_gpu(tp_size)
        if self.attention == "gqa":
            return nh * 4 * self.head_dim
        if decode:  # absorbed MLA attends over the latent cache
            return nh * (2 * (self.kv_lora_rank + self.qk_rope_head_dim) + 2 * self.kv_lora_rank)
        return nh * (2 * (self.qk_nope_head_dim + self.qk_rope_head_dim) + 2 * self.v_head_dim)

    def moe_split_error(self, tp_size: int, ep_size: int) -> str | None:
        """Why SGLang cannot split this model's experts over `tp_size` GPUs with expert parallelism
        `ep_size` (MoE TP = tp_size / ep_size), or None. SGLang's FP8 block-quantized MoE (fp8.py, 0.4.6 to
        0.5.x; aiconfigurator 0.12.0 applies the same rule) needs each GPU's share of an expert's
        intermediate size to be whole weight blocks."""
        if ep_size < 1 or tp_size % ep_size:
            return f"--ep-size {ep_size} must divide --tp-size {tp_size}"
        moe_tp = tp_size // ep_size
        share = self.moe_intermediate_size / moe_tp
        if self.weight_block_n and share % self.weight_block_n:
            return (f"{self.name}: moe_intermediate_size {self.moe_intermediate_size} / MoE TP {moe_tp} = "
                    f"{share:g} is not a multiple of the FP8 weight block {self.weight_block_n}, so SGLang "
                    f"refuses to load it; pass --ep-size {tp_size} (experts whole per GPU) or a smaller --tp-size")
        return None

    def expert_params_per_gpu(self, tp_size: int) -> float:
        return 3 * self.hidden_size * self.moe_intermediate_size / tp_size

    def expert_bytes_per_gpu(self, tp_size: int) -> float:
        return self.expert_params_per_gpu(tp_size) * self.weight_bytes_per_param

    def dense_mlp_params_per_gpu(self, tp_size: int) -> float:
        return 3 * self.hidden_size * self.dense_intermediate_size / tp_size

    def lm_head_bytes_per_gpu(self, tp_size: int) -> float:
        return self.vocab_size / tp_size * self.hidden_size * 2  # bf16

    def weight_bytes_per_gpu(self, tp_size: int) -> float:
        wb = self.weight_bytes_per_param
        attention = self.num_layers * self.attention_params_per_gpu(tp_size) * wb
        dense = self.num_dense_layers * self.dense_mlp_params_per_gpu(tp_size) * wb
        moe = self.num_moe_layers * self.num_experts * self.expert_bytes_per_gpu(tp_size)
        embeddings = 2 * self.lm_head_bytes_per_gpu(tp_size)  # vocab-parallel embedding + lm_head
        return attention + dense + moe + embeddings

    def mtp_layer_bytes_per_gpu(self, tp_size: int) -> float:
        """One extra decoder layer (MoE) used as the NEXTN/EAGLE draft."""
        wb = self.weight_bytes_per_param
        return self.attention_params_per_gpu(tp_size) * wb + self.num_experts * self.expert_bytes_per_gpu(
            tp_size
        )

    def expected_distinct_experts(self, tokens: float) -> float:
        """Experts touched by `tokens` tokens under uniform top-k routing (shared experts always)."""
        if tokens <= 0:
            return 0.0
        miss = (1.0 - self.routed_per_token / self.num_routed_experts) ** tokens
        return self.num_shared_experts + self.num_routed_experts * (1.0 - miss)


GLM_4_7_FP8 = ModelProfile(
    name="GLM-4.7-FP8",
    num_layers=92,
    num_dense_layers=3,
    hidden_size=5120,
    num_attention_heads=96,
    attention="gqa",
    num_kv_heads=8,
    head_dim=128,
    q_lora_rank=0,
    kv_lora_rank=0,
    qk_nope_head_dim=0,
    qk_rope_head_dim=0,
    v_head_dim=0,
    dense_intermediate_size=12288,
    moe_intermediate_size=1536,
    num_experts=161,
    experts_per_token=9,
    num_shared_experts=1,  # 160 routed top-8 + fused shared
    vocab_size=151552,
    max_position_embeddings=202752,
    weight_bytes_per_param=1.0,
    moe_layer_fixed_s=21e-6,
    moe_flops_efficiency=0.133,
    layer_fixed_s=70e-6,
    eager_layer_overhead_s=60e-6,
    activation_bytes_per_token=512 * 1024,
    cuda_graph_bytes_per_token=1 * MIB,
    mtp_accept_prob=0.72,
    path_patterns=("glm-4.7", "glm-4.6", "glm-4.5", "glm4", "glm-4"),
)

DEEPSEEK_V3 = ModelProfile(
    name="DeepSeek-V3",
    num_layers=61,
    num_dense_layers=3,
    hidden_size=7168,
    num_attention_heads=128,
    attention="mla",
    num_kv_heads=0,
    head_dim=0,
    q_lora_rank=1536,
    kv_lora_rank=512,
    qk_nope_head_dim=128,
    qk_rope_head_dim=64,
    v_head_dim=128,
    dense_intermediate_size=18432,
    moe_intermediate_size=2048,
    num_experts=257,
    experts_per_token=9,
    num_shared_experts=1,  # 256 routed top-8 + fused shared
    vocab_size=129280,
    max_position_embeddings=163840,
    weight_bytes_per_param=1.0,
    moe_layer_fixed_s=25e-6,
    moe_flops_efficiency=0.121,
    layer_fixed_s=85e-6,
    eager_layer_overhead_s=70e-6,
    activation_bytes_per_token=640 * 1024,
    cuda_graph_bytes_per_token=1 * MIB,
    mtp_accept_prob=0.8,
    path_patterns=("deepseek-v3", "deepseek-r1", "deepseek_v3", "deepseek-v3.1", "deepseek"),
    weight_block_n=128,
)

QWEN3_235B_A22B_FP8 = ModelProfile(
    # Qwen/Qwen3-235B-A22B-FP8 config.json (Qwen3MoeForCausalLM): 94 MoE layers, GQA 64 query / 4 KV heads of
    # 128 (fewer KV heads than GPUs at TP8, so each GPU keeps one KV head), 128 routed experts top-8, no shared
    # expert, FP8 e4m3 weights in 128x128 blocks (lm_head bf16).
    name="Qwen3-235B-A22B-FP8",
    num_layers=94,
    num_dense_layers=0,
    hidden_size=4096,
    num_attention_heads=64,
    attention="gqa",
    num_kv_heads=4,
    head_dim=128,
    q_lora_rank=0,
    kv_lora_rank=0,
    qk_nope_head_dim=0,
    qk_rope_head_dim=0,
    v_head_dim=0,
    dense_intermediate_size=12288,  # unused: mlp_only_layers is empty
    moe_intermediate_size=1536,
    num_experts=128,
    experts_per_token=8,
    num_shared_experts=0,
    vocab_size=151936,
    max_position_embeddings=40960,
    weight_bytes_per_param=1.0,
    # kernel constants fitted (one set for all points) to aiconfigurator 0.12.0's H200 SGLang estimates at TP8
    # with --ep-size 8 (docs/benchmarks/sim-fidelity.md): a lighter layer than GLM-4.7 (hidden 4096, 8 query
    # heads per GPU) and expert GEMMs that reach less of FP8 peak in prefill than GLM's calibration.md timings
    moe_layer_fixed_s=15e-6,
    moe_flops_efficiency=0.09,
    layer_fixed_s=50e-6,
    # eager forwards (every prefill) launch each layer's kernels from the CPU, and with --ep-size 8 the MoE layer
    # adds its token dispatch and combine: fitted to aiconfigurator's single short prefills (batch 1, 1k prompt),
    # where the fixed per-layer cost of 94 layers is most of the time
    eager_layer_overhead_s=120e-6,
    activation_bytes_per_token=512 * 1024,
    cuda_graph_bytes_per_token=1 * MIB,
    mtp_accept_prob=0.7,  # no MTP layer: an EAGLE3 draft head's per-token acceptance
    path_patterns=("qwen3-235b-a22b-fp8", "qwen3-235b-a22b-instruct-2507-fp8", "qwen3-235b-a22b-thinking-2507-fp8"),
    weight_block_n=128,
)

MODEL_PROFILES: dict[str, ModelProfile] = {p.name: p for p in (GLM_4_7_FP8, DEEPSEEK_V3, QWEN3_235B_A22B_FP8)}


def model_profile_for_path(model_path: str) -> ModelProfile | None:
    """The built-in profile whose name or pattern appears in the model path, or None."""
    lowered = model_path.rstrip("/").lower()
    for profile in MODEL_PROFILES.values():
        if profile.name.lower() in lowered:
            return profile
    for profile in MODEL_PROFILES.values():
        if any(pattern in lowered for pattern in profile.path_patterns):
            return profile
    return None


def lookup_gpu(name: str) -> GpuProfile | None:
    return GPU_PROFILES.get(name.upper())


def lookup_model(name: str) -> ModelProfile | None:
    for key, profile in MODEL_PROFILES.items():
        if key.lower() == name.lower():
            return profile
    return None
