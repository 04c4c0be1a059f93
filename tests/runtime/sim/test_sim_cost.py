"""Roofline step costs: shape of decode/prefill times and agreement with the measured fused-MoE timings."""

import itertools

import pytest

from tuner.runtime.sim.cost import ForwardBatch, RooflineCostModel
from tuner.runtime.sim.profiles import DEEPSEEK_V3, GLM_4_7_FP8, GPU_PROFILES, ModelProfile

# calibration.md: M, GLM "H200 file" us, DSV3 "H200 file" us, distinct experts GLM, DSV3 (one H100)
CALIBRATION = [
    (1, 29.9, 45.9, 9, 9),
    (2, 38.7, 59.1, 17, 17),
    (4, 55.1, 86.8, 31, 31),
    (8, 85.3, 143.9, 55, 58),
    (16, 119.7, 225.2, 91, 103),
    (24, 146.0, 311.5, 114, 138),
    (32, 164.1, 389.5, 130, 164),
    (48, 182.8, 443.0, 147, 201),
    (64, 195.2, 476.2, 155, 223),
    (96, 203.0, 503.5, 160, 245),
    (128, 211.3, 528.5, 161, 253),
    (256, 237.9, 572.5, 161, 257),
    (512, 271.0, 660.8, 161, 257),
    (1024, 326.4, 807.2, 161, 257),
    (2048, 474.3, 1081.2, 161, 257),
    (4096, 838.2, 1691.9, 161, 257),
]


def model(profile: ModelProfile = GLM_4_7_FP8, gpu: str = "H200") -> RooflineCostModel:
    return RooflineCostModel(profile, GPU_PROFILES[gpu], tp_size=8, kv_dtype_bytes=2)


def decode_s(cost: RooflineCostModel, batch: int, graph: bool = True, context: int = 4096) -> float:
    return cost.forward_s(
        ForwardBatch(decode_seqs=batch, decode_context_tokens=batch * context, cuda_graph=graph)
    )


def test_decode_step_time_grows_with_batch() -> None:
    cost = model()
    times = [decode_s(cost, b) for b in (1, 8, 32, 64, 128, 256)]
    assert all(a < b for a, b in itertools.pairwise(times))


@pytest.mark.parametrize("profile", [GLM_4_7_FP8, DEEPSEEK_V3])
def test_memory_bound_decode_is_slower_on_h100_than_h200(profile: ModelProfile) -> None:
    h100, h200 = decode_s(model(profile, "H100"), 64), decode_s(model(profile, "H200"), 64)
    assert h100 > 1.15 * h200


def test_eager_decode_pays_launch_overhead() -> None:
    cost = model()
    assert decode_s(cost, 32, graph=False) > decode_s(cost, 32, graph=True) + 3e-3


def test_prefill_is_compute_bound() -> None:
    cost = model()

    def prefill_s(tokens: int) -> float:
        return cost.forward_s(
            ForwardBatch(prefill_tokens=tokens, prefill_seqs=1, prefill_attention_pairs=tokens * tokens / 2)
        )

    assert 1.7 < prefill_s(8192) / prefill_s(4096) < 2.5  # time follows FLOPs, not bytes
    assert prefill_s(8192) > 20 * decode_s(cost, 1)


@pytest.mark.parametrize("profile,column", [(GLM_4_7_FP8, 1), (DEEPSEEK_V3, 2)])
def test_fused_moe_layer_time_matches_calibration_on_h100(profile: ModelProfile, column: int) -> None:
    cost = model(profile, "H100")
    for row in CALIBRATION:
        measured_s = row[column] * 1e-6
        assert cost.moe_layer_s(row[0]) == pytest.approx(measured_s, rel=0.2), row


@pytest.mark.parametrize("profile,column", [(GLM_4_7_FP8, 3), (DEEPSEEK_V3, 4)])
def test_distinct_experts_match_calibration(profile: ModelProfile, column: int) -> None:
    for row in CALIBRATION:
        assert profile.expected_distinct_experts(row[0]) == pytest.approx(row[column], abs=3), row


def test_glm_h200_decode_is_in_the_seed_deployments_tpot_range() -> None:
    cost = model()
    for batch in (32, 48, 64):
        assert 0.020 <= decode_s(cost, batch, context=4600) <= 0.035


def test_expert_parallel_waits_for_the_busiest_gpu_at_small_batch_and_evens_out_at_large() -> None:
    from tuner.runtime.sim.cost import Mechanisms, RooflineCostModel
    from tuner.runtime.sim.profiles import GPU_PROFILES, QWEN3_235B_A22B_FP8

    h200 = GPU_PROFILES["H200"]
    tp = RooflineCostModel(QWEN3_235B_A22B_FP8, h200, 8, 2)
    ep = RooflineCostModel(QWEN3_235B_A22B_FP8, h200, 8, 2, Mechanisms(moe_ep_size=8))
    # batch 1: 8 experts over 8 GPUs land unevenly, so the busiest GPU streams more than TP's even slices
    assert ep.moe_layer_s(1) > 1.5 * tp.moe_layer_s(1) - QWEN3_235B_A22B_FP8.moe_layer_fixed_s
    # a 16k-token prefill chunk spreads evenly: within 5% of TP
    assert abs(ep.moe_layer_s(16384) / tp.moe_layer_s(16384) - 1) < 0.05


def test_qwen3_profile_keeps_one_kv_head_per_gpu_at_tp8() -> None:
    from tuner.runtime.sim.profiles import QWEN3_235B_A22B_FP8, model_profile_for_path

    assert model_profile_for_path("Qwen/Qwen3-235B-A22B-FP8") is QWEN3_235B_A22B_FP8
    # 4 KV heads over 8 GPUs: each GPU keeps a whole KV head (2 x 128 bf16 values per token per layer)
    assert QWEN3_235B_A22B_FP8.kv_bytes_per_token(8, 2) == 94 * 2 * 128 * 2
    assert QWEN3_235B_A22B_FP8.moe_split_error(8, 1) is not None
    assert QWEN3_235B_A22B_FP8.moe_split_error(8, 8) is None
    assert QWEN3_235B_A22B_FP8.moe_split_error(4, 2) is None  # 1536 / 2 = 768 = 6 blocks
