"""The mechanisms behind flags the seeds measured move the simulated step times the way the seeds report:
CUDA graphs off 5-8x at batch 1, torch.compile -25% at batch 1, shared-experts fusion off slower (decode
~+25%), DP attention faster at large batch with long context and holding 8x the KV, the overlap scheduler
hiding CPU work. Each one is reached through the flags SGLang 0.5.23 spells it with."""

from __future__ import annotations

import pytest

from tuner.runtime.sim.args import parse_cli, resolve_args
from tuner.runtime.sim.cost import ForwardBatch, Mechanisms, RooflineCostModel
from tuner.runtime.sim.engine import Engine
from tuner.runtime.sim.profiles import DEEPSEEK_V3, GLM_4_7_FP8, GPU_PROFILES
from tuner.runtime.sim.server import plan_for

MODELS = {"DeepSeek-V3": ("deepseek-ai/DeepSeek-V3", DEEPSEEK_V3), "GLM-4.7-FP8": ("zai-org/GLM-4.7-FP8", GLM_4_7_FP8)}


def engine_for(model_path: str, *flags: str) -> Engine:
    args, plan = plan_for(resolve_args(parse_cli(["--model-path", model_path, "--tp-size", "8", *flags]), {}))
    return Engine(args, plan, None)


def decode_s(engine: Engine, batch: int, context: int = 1024) -> float:
    graph = bool(engine.graph_sizes) and not engine.args.disable_cuda_graph
    return engine.cost_model.forward_s(ForwardBatch(
        decode_seqs=batch, decode_context_tokens=batch * context, cuda_graph=graph,
        graph_padded_seqs=batch if graph else 0))


def prefill_s(engine: Engine, tokens: int = 4096) -> float:
    return engine.cost_model.forward_s(ForwardBatch(prefill_tokens=tokens, prefill_seqs=1,
                                                    prefill_attention_pairs=tokens * tokens / 2))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("flags", [("--cuda-graph-backend-decode", "disabled"), ("--disable-cuda-graph",),
                                   ("--disable-decode-cuda-graph",)])
def test_cuda_graphs_off_cost_5_to_8x_at_batch_1(name, flags):
    path, _ = MODELS[name]
    ratio = decode_s(engine_for(path, *flags), 1) / decode_s(engine_for(path), 1)
    assert 5.0 <= ratio <= 8.0  # seed 004: 228.9 ms vs 32.2 ms on DeepSeek-V3 (7.1x)


def test_torch_compile_speeds_small_decode_batches_only():
    plain, compiled = engine_for("deepseek-ai/DeepSeek-V3"), engine_for("deepseek-ai/DeepSeek-V3", "--enable-torch-compile")
    assert decode_s(compiled, 1) / decode_s(plain, 1) == pytest.approx(0.75, abs=0.03)  # seed 004: -25%
    assert decode_s(compiled, 64) == pytest.approx(decode_s(plain, 64))  # above --torch-compile-max-bs 32
    wide = engine_for("deepseek-ai/DeepSeek-V3", "--enable-torch-compile", "--torch-compile-max-bs", "128")
    assert decode_s(wide, 64) < decode_s(plain, 64)


def test_shared_experts_fusion_off_slows_decode_and_prefill():
    fused, unfused = engine_for("zai-org/GLM-4.7-FP8"), engine_for("zai-org/GLM-4.7-FP8",
                                                                   "--disable-shared-experts-fusion")
    itl = decode_s(unfused, 32, context=5000) / decode_s(fused, 32, context=5000)
    assert 1.15 <= itl <= 1.35  # seed 001: fusing cut ITL by 20.8% (unfused = 1.26x)
    assert prefill_s(unfused) > prefill_s(fused)  # seed 001: TTFT -23.7% from fusing (under load)


def test_dp_attention_pays_at_large_batch_and_holds_8x_the_latent_kv():
    tp, dp = engine_for("deepseek-ai/DeepSeek-V3"), engine_for("deepseek-ai/DeepSeek-V3", "--attn-dp-size", "8")
    seed_era = engine_for("deepseek-ai/DeepSeek-V3", "--enable-dp-attention", "--dp-size", "8")
    assert dp.args.attn_dp_size == seed_era.args.attn_dp_size == 8
    assert decode_s(dp, 512, context=4096) < 0.8 * decode_s(tp, 512, context=4096)
    assert decode_s(dp, 4) > decode_s(tp, 4)  # seed 004: at small batches the overhead outweighs it
    assert dp.plan.max_total_num_tokens == 8 * tp.plan.max_total_num_tokens
    assert dp.args.max_running_requests > tp.args.max_running_requests


def test_overlap_scheduling_hides_the_schedulers_cpu_time():
    on, off = engine_for("zai-org/GLM-4.7-FP8"), engine_for("zai-org/GLM-4.7-FP8", "--disable-overlap-schedule")
    assert decode_s(off, 1) > 1.05 * decode_s(on, 1)
    assert decode_s(off, 256) > decode_s(on, 256)


def test_mechanisms_default_to_sglangs_defaults():
    cost = RooflineCostModel(GLM_4_7_FP8, GPU_PROFILES["H200"], 8, 2)
    assert cost.mech == Mechanisms()
    args = engine_for("zai-org/GLM-4.7-FP8").args
    assert (args.enable_torch_compile, args.disable_shared_experts_fusion, args.attn_dp_size,
            args.disable_overlap_schedule) == (False, False, 1, False)
