"""Our block-FP8 GEMM under TRITON_INTERPRET=1 at tiny shapes, against the float32 reference."""

import pytest
import torch

from tuner.kernels.base import KernelConfig
from tuner.kernels.fp8_gemm.kernel import (
    block_fp8_gemm,
    quantize_per_token_group,
    quantize_weight_blocks,
    reference_block_fp8_gemm,
)

BLOCK = (128, 128)
CONFIGS = [KernelConfig(16, 32, 64, 1, 4, 2), KernelConfig(32, 64, 128, 8, 4, 3), KernelConfig(16, 128, 32, 1, 4, 2)]


def _operands(m, n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, a_s = quantize_per_token_group(torch.randn((m, k), generator=g), BLOCK[1])
    b, b_s = quantize_weight_blocks(torch.randn((n, k), generator=g) / k**0.5, BLOCK)
    return a, a_s, b, b_s


def _rel_err(out, ref):
    return float((out.float() - ref).norm() / ref.norm())


@pytest.mark.parametrize("m", [1, 5, 33])
@pytest.mark.parametrize("n,k", [(192, 256), (128, 320)])  # N not a multiple of the tile; K with a partial block
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.key)
def test_block_fp8_gemm_matches_the_float32_reference(m, n, k, config):
    a, a_s, b, b_s = _operands(m, n, k, seed=m + n)
    # fp16 out: the interpreter's bf16 arithmetic is wrong (kernels.md); the GPU runs bf16.
    out = block_fp8_gemm(a, a_s, b, b_s, BLOCK, config, out_dtype=torch.float16)
    assert out.shape == (m, n) and torch.isfinite(out).all()
    assert _rel_err(out, reference_block_fp8_gemm(a, a_s, b, b_s, BLOCK)) < 2e-3  # fp16 output rounding


def test_a_corrupted_tile_is_caught_by_the_same_check():
    a, a_s, b, b_s = _operands(5, 192, 256)
    out = block_fp8_gemm(a, a_s, b, b_s, BLOCK, CONFIGS[0], out_dtype=torch.float16)
    out[:, 32:64] = 0  # one N tile lost, as a wrong mask would do
    assert _rel_err(out, reference_block_fp8_gemm(a, a_s, b, b_s, BLOCK)) > 0.1


def test_a_block_k_that_does_not_divide_the_weight_block_is_refused():
    a, a_s, b, b_s = _operands(1, 128, 256)
    with pytest.raises(ValueError, match="must divide"):
        block_fp8_gemm(a, a_s, b, b_s, BLOCK, KernelConfig(16, 32, 96, 1, 4, 2))
