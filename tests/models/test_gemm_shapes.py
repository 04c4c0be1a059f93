"""Dense block-FP8 GEMM shapes from real config.json files (shared/fixtures/hf-configs via the catalog)."""

import pytest

from tuner.errors import ModelConfigError
from tuner.models.config import load_model_config
from tuner.models.gemm_shapes import derive_gemm_shapes, parse_gemm_shapes

# shared/reference/kernels.md: SGLang's tuning list for DeepSeek-V3 at TP8
DSV3_TP8 = {(576, 7168), (24576, 7168), (32768, 512), (7168, 16384), (7168, 18432), (4608, 7168), (3072, 7168),
            (4096, 512), (3072, 1536), (512, 7168), (7168, 2304), (7168, 2048), (7168, 256)}


def test_deepseek_v3_at_tp8_gives_exactly_sglangs_13_shapes():
    shapes = derive_gemm_shapes(load_model_config("DeepSeek-V3"), tp=8)
    assert {(s.n, s.k) for s in shapes} == DSV3_TP8 and len(shapes) == 13
    assert all(s.block_shape == (128, 128) for s in shapes)
    by_pair = {(s.n, s.k): s.layers for s in shapes}
    assert by_pair[(576, 7168)] == ("kv_a_proj_with_mqa",)
    assert by_pair[(7168, 256)] == ("shared_expert down_proj/tp",)
    assert set(by_pair[(3072, 7168)]) == {"q_proj/tp"}


def test_gqa_models_keep_one_kv_head_per_rank_when_tp_exceeds_them():
    # Qwen3-235B-A22B-FP8: 64 query heads, 4 KV heads, head_dim 128, hidden 4096
    shapes = {(s.n, s.k) for s in derive_gemm_shapes(load_model_config("Qwen/Qwen3-235B-A22B-FP8"), tp=8)}
    assert shapes == {((8 + 2 * 1) * 128, 4096), (4096, 64 * 128 // 8)}


def test_non_block_fp8_models_have_no_block_gemm_to_tune():
    with pytest.raises(ModelConfigError, match="not a block-FP8 checkpoint"):
        derive_gemm_shapes(load_model_config("GLM-4.7-FP8"), tp=8)  # per-channel FP8


def test_sizes_that_do_not_split_are_named():
    with pytest.raises(ModelConfigError, match="does not split over --tp 7"):
        derive_gemm_shapes(load_model_config("DeepSeek-V3"), tp=7)


def test_shapes_given_by_hand():
    assert [(s.n, s.k) for s in parse_gemm_shapes("576,7168 4096,512;576,7168")] == [(576, 7168), (4096, 512)]
    for bad in ("576x7168", "0,7168", ""):
        with pytest.raises(ModelConfigError, match="--shapes"):
            parse_gemm_shapes(bad)
