"""Our fused-MoE kernel under TRITON_INTERPRET=1 at tiny shapes, against the float32 reference."""

import pytest
import torch

from tuner.kernels.base import KernelConfig, MoeShape, Quant
from tuner.kernels.fused_moe.align import moe_align_block_size
from tuner.kernels.fused_moe.kernel import fused_moe, make_weights, random_routing, reference_fused_moe
from tuner.kernels.fused_moe.problem import MAX_REL_ERROR

SHAPES = {
    "bf16": MoeShape(6, 48, 64, 2, Quant.BF16),
    "bf16-fused-shared": MoeShape(7, 48, 64, 2, Quant.BF16, fused_shared_experts=1),
    "fp8-per-channel-fused": MoeShape(7, 48, 128, 3, Quant.FP8_PER_CHANNEL, fused_shared_experts=1),
    "fp8-block": MoeShape(5, 128, 256, 2, Quant.FP8_BLOCK, block_shape=(128, 128), fused_shared_experts=1),
}
CONFIGS = [KernelConfig(16, 32, 64, 1, 4, 2), KernelConfig(32, 64, 32, 16, 4, 3)]


def _problem(shape, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    # fp16, not bf16: the interpreter's bf16 arithmetic is wrong (kernels.md); the GPU runs bf16.
    w = make_weights(shape, torch.float16, "cpu", seed)
    x = torch.randn((m, shape.hidden_size), generator=g).half()
    tw, ti = random_routing(m, shape, "cpu", g)
    return x, w, tw, ti


def _rel_err(out, ref):
    return float((out.float() - ref).norm() / ref.norm())


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("m", [1, 5, 19])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.key)
def test_kernel_matches_float32_reference(name, m, config):
    shape = SHAPES[name]
    x, w, tw, ti = _problem(shape, m, seed=m)
    out = fused_moe(x, w, tw, ti, shape, config)
    assert out.shape == (m, shape.hidden_size)
    assert torch.isfinite(out).all()
    # bf16/fp16 lands near 5e-4; FP8 near 1e-3 at real sizes, up to ~1e-2 at these tiny N where one fp8
    # rounding flip of the activation moves a larger share of the norm. Half the production threshold.
    limit = 5e-3 if shape.quant is Quant.BF16 else MAX_REL_ERROR[shape.quant] / 2
    assert _rel_err(out, reference_fused_moe(x, w, tw, ti, shape)) < limit


def test_corrupted_output_is_rejected_by_the_same_check():
    shape = SHAPES["fp8-per-channel-fused"]
    x, w, tw, ti = _problem(shape, 5)
    out = fused_moe(x, w, tw, ti, shape, CONFIGS[0])
    ref = reference_fused_moe(x, w, tw, ti, shape)
    assert _rel_err(out, ref) <= MAX_REL_ERROR[shape.quant]
    out[2] = 0  # one token's output lost, as a wrong mask would do
    assert _rel_err(out, ref) > MAX_REL_ERROR[shape.quant]


def test_wrong_expert_weights_are_detected():
    shape = SHAPES["bf16"]
    x, w, tw, ti = _problem(shape, 7)
    out = fused_moe(x, w, tw, (ti + 1) % shape.num_experts, shape, CONFIGS[0])
    assert _rel_err(out, reference_fused_moe(x, w, tw, ti, shape)) > MAX_REL_ERROR[shape.quant]


def test_fused_shared_expert_sees_every_token():
    shape = SHAPES["fp8-per-channel-fused"]
    _, _, _, ti = _problem(shape, 11)
    assert (ti[:, -1] == shape.num_experts - 1).all()
    assert not (ti[:, :-1] == shape.num_experts - 1).any()


@pytest.mark.parametrize("block_m", [16, 64])
def test_alignment_groups_rows_by_expert_and_pads(block_m):
    e, m, k = 9, 13, 3
    g = torch.Generator().manual_seed(1)
    ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(m)]).to(torch.int32)
    r = moe_align_block_size(ids, e, block_m)
    total = int(r.num_tokens_post_padded)
    flat = ids.flatten()
    counts = torch.bincount(flat.long(), minlength=e)
    assert total == int(sum(-(-c // block_m) * block_m for c in counts.tolist()))
    sorted_ids = r.sorted_token_ids[:total]
    real = sorted_ids[sorted_ids < flat.numel()]
    assert sorted(real.tolist()) == list(range(flat.numel()))  # every (token, slot) exactly once
    for b in range(total // block_m):
        rows = sorted_ids[b * block_m:(b + 1) * block_m]
        rows = rows[rows < flat.numel()]
        assert (flat[rows.long()] == r.expert_ids[b]).all()  # a block never mixes experts
    assert (r.expert_ids[total // block_m:] == -1).all()
