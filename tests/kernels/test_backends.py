"""Whose kernel is timed, and how candidates reach it: fake engine packages on disk, laid out and called as
SGLang 0.5.23, SGLang 0.4.x and vLLM 0.33 are (tests/kernels/fake_engines.py)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.kernels import fake_engines
from tuner.errors import TunerError
from tuner.kernels.base import KernelConfig, MoeConfigs, MoeShape, Quant
from tuner.kernels.fused_moe.backends import EngineBackend, TunerBackend, get_backend, load_engine_backend
from tuner.kernels.fused_moe.kernel import MoeWeights

FIXTURES = Path(__file__).parent.parent / "export" / "fixtures" / "sglang-moe-configs"
DSV3 = MoeShape(257, 256, 7168, 8, Quant.FP8_BLOCK, block_shape=(128, 128), fused_shared_experts=1)
GLM = MoeShape(161, 192, 5120, 8, Quant.FP8_PER_CHANNEL, fused_shared_experts=1)
UP = KernelConfig(16, 64, 128, 1, 4, 5)
DOWN = KernelConfig(16, 128, 128, 16, 4, 2, use_tma=True)


def _run(backend, shape, configs, tokens=3):
    w = MoeWeights(torch.zeros(2, 8, 4), torch.zeros(2, 4, 4), torch.ones(2, 8), torch.ones(2, 4))
    # the fakes read E and N from the weights' shapes, as the engines do
    e, n, k = shape.num_experts, shape.intermediate_size, shape.hidden_size
    w = MoeWeights(torch.zeros(e, 2 * n, 1).expand(e, 2 * n, k), torch.zeros(e, k, 1).expand(e, k, n),
                   w.w1_scale, w.w2_scale)
    k_top = shape.runtime_top_k
    return backend.run(torch.zeros(tokens, 4), w, torch.ones(tokens, k_top),
                       torch.zeros(tokens, k_top, dtype=torch.int32), shape, configs)


@pytest.fixture
def sglang_0523(tmp_path, monkeypatch):
    home = fake_engines.install(tmp_path / "site", "sglang-0.5.23", monkeypatch)
    return home


def test_current_sglang_is_found_in_its_0_5_2x_layout_and_reads_down_configs(sglang_0523):
    backend = get_backend(None)
    assert isinstance(backend, EngineBackend)
    assert backend.version == "sglang 0.5.23" and backend.layout.releases == "SGLang 0.5.2x"
    assert backend.style == "topk_output"
    assert backend.supports_down_config and backend.supports_tma


def test_up_and_down_configs_reach_sglangs_kernel_through_its_own_lookup(sglang_0523):
    backend = get_backend("sglang")
    _run(backend, DSV3, MoeConfigs(UP, DOWN))
    _run(backend, DSV3, MoeConfigs(UP))
    first, second = fake_engines.calls("sglang-0.5.23")
    assert first["up"] == UP.to_json_dict() and first["down"] == DOWN.to_json_dict()
    assert first["block_shape"] == [128, 128] and first["top_k"] == 9
    # no `_down` entry: the engine reuses the up config for the down GEMM, as with a file that has no twin
    assert second["up"] == UP.to_json_dict() and second["down"] == UP.to_json_dict()
    runner = first["runner"]
    assert runner.inplace is False and runner.num_experts == 257 and runner.num_fused_shared_experts == 1


def test_the_private_config_folder_never_leaks_into_the_users_lookup(sglang_0523, monkeypatch):
    backend = get_backend("sglang")
    _run(backend, GLM, MoeConfigs(UP, DOWN.with_block_m(16)))
    import os

    assert "SGLANG_MOE_CONFIG_DIR" not in os.environ
    choice = backend.engine_choice(GLM, 64)
    assert choice.source == "default"  # nothing shipped in the fake: the candidate above is not "the engine's"


def test_engine_choice_is_the_shipped_file_through_the_triton_folder_fallback(sglang_0523):
    # SGLang's shipped DeepSeek-V3 H200 files live in triton_3_5_1; the running Triton is 3.6.0
    shutil.copytree(FIXTURES / "triton_3_5_1", sglang_0523 / "configs" / "triton_3_5_1")
    backend = get_backend("sglang")
    choice = backend.engine_choice(DSV3, 1)
    name = "E=257,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128]"
    up = json.loads((FIXTURES / "triton_3_5_1" / f"{name}.json").read_text())["1"]
    down = json.loads((FIXTURES / "triton_3_5_1" / f"{name}_down.json").read_text())["1"]
    assert choice.configs.up == KernelConfig.from_json_dict(up)
    assert choice.configs.down == KernelConfig.from_json_dict(down).with_block_m(choice.configs.up.block_size_m)
    assert choice.configs.down.use_tma
    assert choice.source == f"triton_3_5_1/{name}.json + triton_3_5_1/_down"


def test_a_users_config_dir_is_what_the_engine_runs_today(sglang_0523, tmp_path, monkeypatch):
    mine = tmp_path / "mine" / "configs" / "triton_3_6_0"
    mine.mkdir(parents=True)
    name = "E=161,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8,per_channel_quant=True.json"
    (mine / name).write_text(json.dumps({"64": UP.to_json_dict()}))
    monkeypatch.setenv("SGLANG_MOE_CONFIG_DIR", str(tmp_path / "mine"))
    choice = get_backend("sglang").engine_choice(GLM, 50)
    assert choice.configs == MoeConfigs(UP) and choice.source == f"triton_3_6_0/{name}"


def test_older_sglang_gets_one_config_through_override_config(tmp_path, monkeypatch):
    fake_engines.install(tmp_path / "site", "sglang-0.4", monkeypatch)
    backend = get_backend("sglang")
    assert backend.layout.releases == "SGLang 0.4.x" and backend.style == "flat"
    assert not backend.supports_down_config and not backend.supports_tma
    _run(backend, GLM, MoeConfigs(UP))
    (call,) = fake_engines.calls("sglang-0.4")
    assert call["up"] == UP.to_json_dict() and call["per_channel_quant"] is True and call["fp8"] is True
    with pytest.raises(ValueError, match="no separate down config"):
        _run(backend, GLM, MoeConfigs(UP, DOWN.with_block_m(16)))


def test_vllm_gets_a_quant_config_and_one_config(tmp_path, monkeypatch):
    fake_engines.install(tmp_path / "site", "vllm-0.33", monkeypatch)
    backend = get_backend(None)
    assert backend.name == "vllm" and backend.style == "quant_config" and not backend.supports_down_config
    _run(backend, DSV3, MoeConfigs(UP))
    (call,) = fake_engines.calls("vllm-0.33")
    assert call["up"] == UP.to_json_dict() and call["block_shape"] == [128, 128]


def test_without_engines_ours_is_a_proxy_that_says_so(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "sglang", None)
    monkeypatch.setitem(__import__("sys").modules, "vllm", None)
    backend = get_backend(None)
    assert isinstance(backend, TunerBackend) and backend.proxy_for == "sglang"
    assert get_backend("tuner").proxy_for is None
    assert load_engine_backend("sglang") is None
    with pytest.raises(TunerError, match="not importable"):
        get_backend("vllm")
    with pytest.raises(TunerError, match="unknown --kernel-source"):
        get_backend("tensorrt")


def test_our_kernel_takes_a_separate_down_config_but_no_tma():
    backend = TunerBackend()
    assert backend.supports_down_config and not backend.supports_tma
    choice = backend.engine_choice(DSV3, 1)
    assert choice.configs == MoeConfigs(KernelConfig(64, 128, 128, 32, 4, 3)) and "default" in choice.source


def test_a_proxy_sweep_says_so_plainly_before_any_work(monkeypatch):
    from tuner.search.kernel_sweep import describe_kernel_source

    monkeypatch.setitem(__import__("sys").modules, "sglang", None)
    monkeypatch.setitem(__import__("sys").modules, "vllm", None)
    line = describe_kernel_source(get_backend(None))
    assert "sglang is not importable here" in line and "PROXY" in line and "may not carry over" in line


def test_the_engine_sweep_names_its_kernel_and_what_it_tunes(sglang_0523):
    from tuner.search.kernel_sweep import describe_kernel_source

    assert describe_kernel_source(get_backend(None)) == (
        "timing in sglang 0.5.23's own fused-MoE kernel (separate up and _down configs, USE_TMA)")
