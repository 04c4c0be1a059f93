"""Startup memory plan: what fits on a GPU and which flags make SGLang run out of memory."""

from dataclasses import replace

from tuner.runtime.sim.memory import MemoryInputs, default_mem_fraction_static, plan_memory
from tuner.runtime.sim.profiles import DEEPSEEK_V3, GLM_4_7_FP8, GPU_PROFILES

H100, H200 = GPU_PROFILES["H100"], GPU_PROFILES["H200"]


def glm_inputs(fraction: float | None = None, **overrides: object) -> MemoryInputs:
    base = MemoryInputs(
        model=GLM_4_7_FP8,
        gpu=H200,
        tp_size=8,
        kv_dtype_bytes=2.0,
        mem_fraction_static=0.0,
        chunked_prefill_size=8192,
        max_prefill_tokens=16384,
        cuda_graph_max_bs=512,
    )
    base = replace(base, **overrides)  # type: ignore[arg-type]
    if fraction is None:
        fraction = default_mem_fraction_static(
            base.model,
            base.gpu,
            base.chunked_prefill_size,
            base.max_prefill_tokens,
            base.cuda_graph_max_bs,
            base.tokens_per_graph_seq,
            base.speculative_algorithm,
        )
    return replace(base, mem_fraction_static=fraction)


def test_default_fraction_fits_with_a_large_kv_pool() -> None:
    for gpu in (H100, H200):
        plan = plan_memory(glm_inputs(gpu=gpu))
        assert plan.failure is None
        assert plan.max_total_num_tokens > 300_000


def test_too_high_fraction_runs_out_of_memory() -> None:
    for fraction in (0.95, 0.99):
        failure = plan_memory(glm_inputs(fraction)).failure
        assert failure is not None and failure.phase in ("cuda_graph", "warmup")
        assert any("CUDA out of memory" in line for line in failure.log_lines)


def test_too_low_fraction_leaves_no_room_after_weights() -> None:
    failure = plan_memory(glm_inputs(0.25)).failure
    assert failure is not None and failure.phase == "kv_cache"
    assert "Not enough memory" in failure.log_lines[0]


def test_huge_cuda_graph_batch_fails_capture() -> None:
    failure = plan_memory(glm_inputs(0.9, cuda_graph_max_bs=16384)).failure
    assert failure is not None and failure.phase == "cuda_graph"
    assert failure.log_lines[0].startswith("Exception: Capture cuda graph failed")


def test_big_chunks_need_a_smaller_fraction() -> None:
    failure = plan_memory(glm_inputs(0.9, chunked_prefill_size=32768)).failure
    assert failure is not None and failure.phase == "warmup"
    assert plan_memory(glm_inputs(chunked_prefill_size=32768)).failure is None


def test_default_fraction_shrinks_with_graph_size_and_chunk() -> None:
    small = glm_inputs(cuda_graph_max_bs=64).mem_fraction_static
    big_graph = glm_inputs(cuda_graph_max_bs=4096).mem_fraction_static
    big_chunk = glm_inputs(cuda_graph_max_bs=64, chunked_prefill_size=32768).mem_fraction_static
    assert big_graph < small and big_chunk < small


def test_deepseek_v3_tp8_needs_h200() -> None:
    on_h100 = plan_memory(glm_inputs(model=DEEPSEEK_V3, gpu=H100)).failure
    assert on_h100 is not None and on_h100.phase == "load_weights"
    assert any("torch.OutOfMemoryError" in line for line in on_h100.log_lines)
    assert plan_memory(glm_inputs(model=DEEPSEEK_V3, gpu=H200)).failure is None


def test_seed_deployments_fit() -> None:
    mtp = glm_inputs(
        0.9,
        chunked_prefill_size=16384,
        cuda_graph_max_bs=256,
        tokens_per_graph_seq=4,
        speculative_algorithm="NEXTN",
        kv_dtype_bytes=1.0,
        page_size=128,
    )
    suffix = glm_inputs(
        0.8,
        chunked_prefill_size=32768,
        cuda_graph_max_bs=128,
        tokens_per_graph_seq=8,
        speculative_algorithm="SUFFIX",
        kv_dtype_bytes=1.0,
        page_size=128,
    )
    for inputs in (mtp, suffix):
        plan = plan_memory(inputs)
        assert plan.failure is None
        assert plan.max_total_num_tokens % 128 == 0


def test_fp8_kv_cache_holds_twice_the_tokens() -> None:
    bf16 = plan_memory(glm_inputs(0.9)).max_total_num_tokens
    fp8 = plan_memory(glm_inputs(0.9, kv_dtype_bytes=1.0)).max_total_num_tokens
    assert abs(fp8 - 2 * bf16) <= 2
