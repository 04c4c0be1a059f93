"""GEMM configs as SGLang's H200 GEMM files carry them (SWAP_AB / SPLIT_K), the space and the default."""

import json

import pytest

from tuner.kernels.fp8_gemm.space import GemmConfig, default_config, gemm_space


def test_hopper_keys_round_trip_in_sglangs_order():
    entry = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 1, "num_warps": 4,
             "num_stages": 3, "SWAP_AB": True, "SPLIT_K": 16}
    config = GemmConfig.from_json_dict(entry)
    assert config.hopper and config.to_json_dict() == entry
    assert json.dumps(config.to_json_dict()) == json.dumps(entry)  # same key order
    assert GemmConfig.from_key(config.key) == config and config.key.endswith("_swap_k16")
    plain = default_config((128, 128))
    assert not plain.hopper and GemmConfig.from_key(plain.key) == plain
    assert plain.to_json_dict() == {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128,
                                    "GROUP_SIZE_M": 32, "num_warps": 4, "num_stages": 3}


def test_split_k_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        GemmConfig(default_config((128, 128)).base, split_k=3)


def test_the_hopper_variants_are_searched_only_on_sm90():
    plain, hopper = gemm_space((128, 128), hopper=False), gemm_space((128, 128), hopper=True)
    assert all(not c.hopper and c.base.block_size_k == 128 for c in plain)
    assert set(plain) < set(hopper) and any(c.swap_ab for c in hopper) and any(c.split_k == 16 for c in hopper)
    assert len(set(hopper)) == len(hopper)
