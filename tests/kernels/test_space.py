"""The config space, SGLang's defaults, and pruning that happens before anything is compiled."""

from tuner.kernels.base import KernelConfig, MoeShape, Quant
from tuner.kernels.fused_moe.space import (
    DeviceLimits,
    candidate_space,
    default_config,
    fits_device,
    full_space,
    prune_for_batch,
    shared_memory_bytes,
)

GLM = MoeShape(161, 192, 5120, 8, Quant.FP8_PER_CHANNEL, fused_shared_experts=1)
DSV3 = MoeShape(257, 256, 7168, 8, Quant.FP8_BLOCK, block_shape=(128, 128), fused_shared_experts=1)
MIXTRAL = MoeShape(8, 7168, 4096, 2, Quant.BF16)


def test_full_space_matches_sglang_tuner_sizes():
    assert len(full_space(GLM)) == 1920
    assert len(full_space(DSV3)) == 1280  # only BLOCK_SIZE_K dividing 128
    assert all(128 % c.block_size_k == 0 for c in full_space(DSV3))


def test_defaults_are_what_sglang_runs_without_a_file():
    assert default_config(DSV3, 1) == KernelConfig(64, 128, 128, 32, 4, 3)
    assert default_config(DSV3, 4096) == KernelConfig(64, 128, 128, 32, 4, 3)
    assert default_config(GLM, 161) == KernelConfig(64, 128, 128, 1, 4, 4)  # M <= E
    assert default_config(GLM, 162) == KernelConfig(128, 256, 128, 32, 8, 4)
    assert default_config(MIXTRAL, 8).block_size_m == 16 and default_config(MIXTRAL, 9).block_size_m == 64


def test_configs_that_overflow_shared_memory_or_registers_are_dropped():
    big = KernelConfig(256, 256, 256, 1, 4, 5)
    assert shared_memory_bytes(big, MIXTRAL) > DeviceLimits().shared_memory_bytes
    assert not fits_device(big, MIXTRAL)
    assert fits_device(KernelConfig(64, 128, 128, 32, 4, 3), DSV3)
    # a small device limit prunes more
    small = DeviceLimits(shared_memory_bytes=48 * 1024)
    assert len([c for c in full_space(GLM) if fits_device(c, GLM, small)]) < len(
        [c for c in full_space(GLM) if fits_device(c, GLM)])


def test_small_batches_keep_only_block_m_that_can_help():
    at_1 = candidate_space(GLM, 1)
    assert {c.block_size_m for c in at_1} == {16}
    assert max(c.block_size_m for c in candidate_space(GLM, 64)) == 64
    assert max(c.block_size_m for c in candidate_space(GLM, 4096)) == 256
    assert len(at_1) < len(candidate_space(GLM, 4096)) / 5


def test_equivalent_group_sizes_collapse_to_one():
    # at M=1 there are at most ~10 row blocks: GROUP_SIZE_M 16, 32, 64 give the same order, keep 16 only
    groups = {c.group_size_m for c in candidate_space(GLM, 1)}
    assert groups == {1, 16}
    kept = prune_for_batch(full_space(GLM), GLM, 4096)
    assert {c.group_size_m for c in kept} == {1, 16, 32, 64}


def test_compile_placeholders_match_the_real_weights_in_dtype_shape_and_stride():
    import torch

    from tuner.kernels.fused_moe.kernel import make_weights, placeholder_weights

    for quant, block in ((Quant.BF16, None), (Quant.FP8_PER_CHANNEL, None), (Quant.FP8_BLOCK, (128, 128))):
        shape = MoeShape(3, 192, 320, 2, quant, block_shape=block)
        real, fake = make_weights(shape, torch.bfloat16, "cpu", 0), placeholder_weights(shape, torch.bfloat16, "cpu")
        for a, b in zip((real.w1, real.w2, real.w1_scale, real.w2_scale), (fake.w1, fake.w2, fake.w1_scale, fake.w2_scale)):
            assert (a is None) == (b is None)
            if a is not None:
                assert (a.dtype, a.shape, a.stride()) == (b.dtype, b.shape, b.stride())
