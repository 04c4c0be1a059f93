"""Startup memory plan of the simulated server: weights, KV pool, CUDA graphs and activations on one
GPU, the default --mem-fraction-static, and the failure (with SGLang-like log lines) when they don't fit.

Static memory (weights + KV pool) is GPU memory x mem-fraction-static; everything else (CUDA context,
NCCL, graph pools, prefill activations) must fit in the remainder. Pure arithmetic, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tuner.runtime.sim.cost import STANDALONE_DRAFT_PARAMS
from tuner.runtime.sim.profiles import GIB, GpuProfile, ModelProfile

RUNTIME_OVERHEAD_BYTES = int(3.5 * GIB)  # CUDA context, NCCL buffers, allocator slack
CUDA_GRAPH_BASE_BYTES = int(0.5 * GIB)
DEFAULT_HEADROOM_BYTES = int(1.5 * GIB)  # what the default fraction leaves spare
DRAFT_MODEL_ALGORITHMS = ("EAGLE", "EAGLE3", "NEXTN", "STANDALONE")

FailurePhase = Literal["load_weights", "kv_cache", "cuda_graph", "warmup"]


@dataclass(frozen=True)
class MemoryInputs:
    model: ModelProfile
    gpu: GpuProfile
    tp_size: int
    kv_dtype_bytes: float
    mem_fraction_static: float
    chunked_prefill_size: int  # -1: chunking disabled
    max_prefill_tokens: int
    cuda_graph_max_bs: int  # largest captured batch size; 0 when CUDA graphs are disabled
    tokens_per_graph_seq: int = 1  # draft tokens verified per sequence under speculative decoding
    speculative_algorithm: str | None = None
    page_size: int = 1


@dataclass(frozen=True)
class MemoryFailure:
    phase: FailurePhase
    log_lines: tuple[str, ...]


@dataclass(frozen=True)
class MemoryPlan:
    gpu_memory_bytes: int
    weight_bytes: int
    draft_weight_bytes: int
    static_budget_bytes: int
    kv_cell_bytes: float  # per token on one GPU, draft layers included
    kv_pool_bytes: int
    max_total_num_tokens: int
    cuda_graph_bytes: int
    activation_bytes: int
    runtime_overhead_bytes: int
    failure: MemoryFailure | None

    @property
    def non_static_budget_bytes(self) -> int:
        return self.gpu_memory_bytes - self.static_budget_bytes


def draft_weight_bytes(model: ModelProfile, tp_size: int, algorithm: str | None) -> int:
    if algorithm in ("EAGLE", "NEXTN"):
        return int(model.mtp_layer_bytes_per_gpu(tp_size))
    if algorithm == "EAGLE3":
        params = model.attention_params_per_gpu(tp_size) + model.dense_mlp_params_per_gpu(tp_size)
        return int(params * 2)
    if algorithm == "STANDALONE":
        return int(STANDALONE_DRAFT_PARAMS * 2 / tp_size)
    return 0


def draft_kv_layers(algorithm: str | None) -> int:
    """Target-layer equivalents of KV the draft model keeps per token."""
    if algorithm in ("EAGLE", "EAGLE3", "NEXTN"):
        return 1
    if algorithm == "STANDALONE":
        return 2
    return 0


def cuda_graph_bytes(model: ModelProfile, max_bs: int, tokens_per_seq: int, algorithm: str | None) -> int:
    if max_bs <= 0:
        return 0
    draft_factor = 1.5 if algorithm in DRAFT_MODEL_ALGORITHMS else 1.0  # draft + verify graphs
    return int(
        CUDA_GRAPH_BASE_BYTES + max_bs * tokens_per_seq * model.cuda_graph_bytes_per_token * draft_factor
    )


def activation_bytes(model: ModelProfile, chunked_prefill_size: int, max_prefill_tokens: int) -> int:
    tokens = chunked_prefill_size if chunked_prefill_size > 0 else max_prefill_tokens
    return tokens * model.activation_bytes_per_token


def default_mem_fraction_static(
    model: ModelProfile,
    gpu: GpuProfile,
    chunked_prefill_size: int,
    max_prefill_tokens: int,
    cuda_graph_max_bs: int,
    tokens_per_graph_seq: int,
    algorithm: str | None,
) -> float:
    """Leave room for the runtime, the CUDA graphs and the prefill activations, plus some headroom:
    larger graphs or chunks give a smaller fraction."""
    reserved = (
        RUNTIME_OVERHEAD_BYTES
        + DEFAULT_HEADROOM_BYTES
        + cuda_graph_bytes(model, cuda_graph_max_bs, tokens_per_graph_seq, algorithm)
        + activation_bytes(model, chunked_prefill_size, max_prefill_tokens)
    )
    fraction = (gpu.memory_bytes - reserved) / gpu.memory_bytes
    return round(min(0.95, max(0.5, fraction)) - 0.0005, 3)


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def _oom_line(tried: float, total: int, in_use: float) -> str:
    free = max(0.0, total - in_use)
    return (
        f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {_gib(tried)}. GPU 0 has a total "
        f"capacity of {_gib(total)} of which {_gib(free)} is free. Including non-PyTorch memory, this "
        f"process has {_gib(in_use)} memory in use."
    )


def plan_memory(inputs: MemoryInputs) -> MemoryPlan:
    m, total = inputs.model, inputs.gpu.memory_bytes
    weights = int(m.weight_bytes_per_gpu(inputs.tp_size))
    draft = draft_weight_bytes(m, inputs.tp_size, inputs.speculative_algorithm)
    static_budget = int(total * inputs.mem_fraction_static)
    cell = m.kv_bytes_per_token(
        inputs.tp_size, inputs.kv_dtype_bytes, extra_layers=draft_kv_layers(inputs.speculative_algorithm)
    )
    kv_pool = max(0, static_budget - weights - draft)
    page = max(1, inputs.page_size)
    max_tokens = int(kv_pool // cell) // page * page
    graphs = cuda_graph_bytes(
        m, inputs.cuda_graph_max_bs, inputs.tokens_per_graph_seq, inputs.speculative_algorithm
    )
    activations = activation_bytes(m, inputs.chunked_prefill_size, inputs.max_prefill_tokens)
    non_static = total - static_budget
    failure: MemoryFailure | None = None

    if weights + draft + RUNTIME_OVERHEAD_BYTES > total:
        layer = m.num_experts * m.expert_bytes_per_gpu(inputs.tp_size)
        loaded = max(0.0, total - RUNTIME_OVERHEAD_BYTES - layer / 2)
        failure = MemoryFailure(
            "load_weights",
            (
                _oom_line(layer, total, RUNTIME_OVERHEAD_BYTES + loaded),
                (f"[sim] {m.name} needs {_gib(weights + draft)} of weights per GPU at --tp-size "
                f"{inputs.tp_size} on a {inputs.gpu.name} ({_gib(total)}); use a larger --tp-size."),
            ),
        )
    elif max_tokens <= 0:
        failure = MemoryFailure(
            "kv_cache",
            (
                "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.",
                (f"[sim] static memory {_gib(static_budget)} (--mem-fraction-static "
                f"{inputs.mem_fraction_static}) does not cover the weights ({_gib(weights + draft)}) "
                "plus a KV cache."),
            ),
        )
    elif RUNTIME_OVERHEAD_BYTES + graphs > non_static:
        failure = MemoryFailure(
            "cuda_graph",
            (
                "Exception: Capture cuda graph failed: "
                + _oom_line(graphs, total, static_budget + RUNTIME_OVERHEAD_BYTES),
                "Possible solutions:",
                "1. set --mem-fraction-static to a smaller value (e.g., 0.8 or 0.7)",
                "2. set --cuda-graph-max-bs to a smaller value (e.g., 16)",
                "3. disable CUDA graph by --disable-cuda-graph. (Not recommended. Huge performance loss)",
            ),
        )
    elif RUNTIME_OVERHEAD_BYTES + graphs + activations > non_static:
        in_use = static_budget + RUNTIME_OVERHEAD_BYTES + graphs
        prefill_tokens = (
            inputs.chunked_prefill_size if inputs.chunked_prefill_size > 0 else inputs.max_prefill_tokens
        )
        left = non_static - RUNTIME_OVERHEAD_BYTES - graphs
        failure = MemoryFailure(
            "warmup",
            (
                _oom_line(activations, total, in_use),
                (f"[sim] a prefill of {prefill_tokens} tokens needs {_gib(activations)} of activations but "
                f"only {_gib(left)} is left outside the static pool; lower --mem-fraction-static or "
                "--chunked-prefill-size."),
            ),
        )
    return MemoryPlan(
        gpu_memory_bytes=total,
        weight_bytes=weights,
        draft_weight_bytes=draft,
        static_budget_bytes=static_budget,
        kv_cell_bytes=cell,
        kv_pool_bytes=kv_pool,
        max_total_num_tokens=max(0, max_tokens),
        cuda_graph_bytes=graphs,
        activation_bytes=activations,
        runtime_overhead_bytes=RUNTIME_OVERHEAD_BYTES,
        failure=failure,
    )
