"""File names: every file SGLang ships (tests/export/fixtures/sglang-moe-configs) is reproduced from a model's
shape; vLLM's variant, device tokens, Triton folders and FP8 GEMM names."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tuner.errors import ExportError
from tuner.export.naming import (
    describe_device_token,
    device_file_token,
    sglang_fp8_gemm_file_name,
    sglang_moe_file_name,
    triton_dir_name,
    vllm_fp8_gemm_file_name,
    vllm_moe_file_name,
)
from tuner.export.sglang import SglangExporter
from tuner.kernels.base import MoeShape, Quant
from tuner.models.config import load_model_config
from tuner.models.shapes import derive_moe_shape

FIXTURES = Path(__file__).parent / "fixtures" / "sglang-moe-configs"
H200 = "NVIDIA H200"
H100 = "NVIDIA H100 80GB HBM3"

# fixture path -> (model, tp, shared-experts fusion, device, triton, down, per_channel_quant override)
SHIPPED = {
    "triton_3_1_0/E=256,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128].json": (
        "DeepSeek-V3",
        8,
        False,
        H200,
        "3.1.0",
        False,
        None,
    ),
    "triton_3_2_0/E=257,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128].json": (
        "DeepSeek-V3",
        8,
        None,
        H200,
        "3.2.0",
        False,
        None,
    ),
    # an older per-tensor FP8 file for GLM without fusion (Quant has no per-tensor member: override the flag)
    "triton_3_3_1/E=160,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8.json": (
        "GLM-4.5-FP8",
        8,
        False,
        H200,
        "3.3.1",
        False,
        False,
    ),
    "triton_3_4_0/E=161,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8,per_channel_quant=True.json": (
        "GLM-4.5-FP8",
        8,
        None,
        H200,
        "3.4.0",
        False,
        None,
    ),
    "triton_3_4_0/E=257,N=128,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128, 128].json": (
        "DeepSeek-R1",
        16,
        None,
        H100,
        "3.4.0",
        False,
        None,
    ),
    "triton_3_5_1/E=161,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8,per_channel_quant=True.json": (
        "GLM-4.7-FP8",
        8,
        None,
        H200,
        "3.5.1",
        False,
        None,
    ),
    "triton_3_5_1/E=161,N=192,device_name=NVIDIA_H200.json": ("GLM-4.6", 8, None, H200, "3.5.1", False, None),
    "triton_3_5_1/E=161,N=384,device_name=NVIDIA_H200,dtype=fp8_w8a8,per_channel_quant=True.json": (
        "GLM-4.6-FP8",
        4,
        None,
        H200,
        "3.5.1",
        False,
        None,
    ),
    "triton_3_5_1/E=257,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128].json": (
        "DeepSeek-V3",
        8,
        None,
        H200,
        "3.5.1",
        False,
        None,
    ),
    "triton_3_5_1/E=257,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128]_down.json": (
        "DeepSeek-V3",
        8,
        None,
        H200,
        "3.5.1",
        True,
        None,
    ),
}


def test_every_shipped_fixture_is_covered():
    on_disk = {str(p.relative_to(FIXTURES)) for p in FIXTURES.glob("*/*.json")}
    assert on_disk == set(SHIPPED)


@pytest.mark.parametrize("relative", sorted(SHIPPED))
def test_shipped_sglang_names_are_reproduced_from_model_shapes(relative):
    model, tp, fusion, device, triton, down, per_channel = SHIPPED[relative]
    shape = derive_moe_shape(load_model_config(model), tp=tp, shared_experts_fusion=fusion)
    folder, name = relative.split("/")
    assert sglang_moe_file_name(shape, device, down=down, per_channel_quant=per_channel) == name
    assert triton_dir_name(triton) == folder


def test_sglang_exporter_places_the_file_where_sglang_ships_it():
    shape = derive_moe_shape(load_model_config("GLM-4.7-FP8"), tp=8)
    (planned,) = SglangExporter().plan(shape, H200, "3.5.1")
    relative = "triton_3_5_1/E=161,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8,per_channel_quant=True.json"
    assert str(planned.relative_path) == f"configs/{relative}"
    assert (FIXTURES / relative).is_file()


def test_bf16_names_carry_no_dtype():
    shape = MoeShape(8, 7168, 4096, 2)
    assert sglang_moe_file_name(shape, H100) == "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"
    assert vllm_moe_file_name(shape, H100) == "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"


@pytest.mark.parametrize(
    ("device", "token"),
    [
        (H100, "NVIDIA_H100_80GB_HBM3"),
        (H200, "NVIDIA_H200"),
        ("NVIDIA H200 NVL", "NVIDIA_H200_NVL"),
        ("NVIDIA H20-3e", "NVIDIA_H20-3e"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA_A100-SXM4-80GB"),
    ],
)
def test_device_token_only_replaces_spaces(device, token):
    assert device_file_token(device) == token
    assert not describe_device_token(device).changed


@pytest.mark.parametrize(
    ("device", "safe"),
    [("NVIDIA A100/X 80GB", "NVIDIA_A100_X_80GB"), ("GPU\\0", "GPU_0"), ("GPU:1", "GPU_1"), ("A\nB", "A_B")],
)
def test_unsafe_device_names_are_made_safe_and_reported(device, safe, caplog):
    with caplog.at_level(logging.WARNING, logger="tuner.export.naming"):
        assert device_file_token(device) == safe
    described = describe_device_token(device)
    assert described.changed and described.engine_token == device.replace(" ", "_")
    assert repr(described.engine_token) in caplog.text
    name = sglang_moe_file_name(MoeShape(8, 7168, 4096, 2), device)
    assert "/" not in name and "\\" not in name


@pytest.mark.parametrize(
    ("device", "vllm_token"),
    [
        ("NVIDIA  H100   80GB HBM3", "NVIDIA_H100_80GB_HBM3"),  # runs of spaces are one "_" for vLLM
        ("NVIDIA A100/X 80GB", "NVIDIA_A100_X_80GB"),
        ("NVIDIA A100 / X\t80GB", "NVIDIA_A100_X_80GB"),
        ("NVIDIA H20-3e", "NVIDIA_H20-3e"),
    ],
)
def test_vllm_device_token_collapses_whitespace_and_slashes_without_warning(device, vllm_token, caplog):
    shape = MoeShape(8, 7168, 4096, 2)
    with caplog.at_level(logging.WARNING, logger="tuner.export.naming"):
        assert vllm_moe_file_name(shape, device) == f"E=8,N=7168,device_name={vllm_token}.json"
        assert vllm_fp8_gemm_file_name(576, 7168, device, (128, 128)).startswith(f"N=576,K=7168,device_name={vllm_token},")
    assert caplog.text == ""  # vLLM finds these files: nothing to warn about
    assert not describe_device_token(device, "vllm").changed


def test_sglang_keeps_its_one_space_one_underscore_rule():
    assert device_file_token("NVIDIA  H100   80GB HBM3") == "NVIDIA__H100___80GB_HBM3"
    assert vllm_moe_file_name(MoeShape(8, 7168, 4096, 2), "NVIDIA  H200  NVL") == "E=8,N=7168,device_name=NVIDIA_H200.json"


def test_empty_device_name_is_refused():
    with pytest.raises(ExportError, match="empty device name"):
        device_file_token("  ")


def test_vllm_names_differ_where_vllm_differs():
    glm = derive_moe_shape(load_model_config("GLM-4.7-FP8"), tp=8)
    assert (
        vllm_moe_file_name(glm, "NVIDIA H200 NVL")
        == "E=160,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8.json"
    )
    assert sglang_moe_file_name(glm, "NVIDIA H200 NVL") == (
        "E=161,N=192,device_name=NVIDIA_H200_NVL,dtype=fp8_w8a8,per_channel_quant=True.json"
    )
    ds = derive_moe_shape(load_model_config("DeepSeek-V3"), tp=8)
    assert vllm_moe_file_name(ds, H100) == (
        "E=256,N=256,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json"
    )
    # only H200 variants collapse; GH200 is a different chip
    assert "device_name=NVIDIA_GH200_480GB" in vllm_moe_file_name(ds, "NVIDIA GH200 480GB")


@pytest.mark.parametrize(
    ("version", "folder"),
    [
        ("3.5.1", "triton_3_5_1"),
        ("3.1.0", "triton_3_1_0"),
        ("3.6.0+git9844da95", "triton_3_6_0"),
        ("3.6.0rc1", "triton_3_6_0"),
        ("3.4", "triton_3_4"),
        (" 3.3.1\n", "triton_3_3_1"),
    ],
)
def test_triton_dir_name(version, folder):
    assert triton_dir_name(version) == folder


@pytest.mark.parametrize("version", ["", "unknown", "+git"])
def test_unreadable_triton_version(version):
    with pytest.raises(ExportError, match="Triton version"):
        triton_dir_name(version)


def test_fp8_gemm_names():
    assert sglang_fp8_gemm_file_name(576, 7168, H200, (128, 128)) == (
        "N=576,K=7168,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128].json"
    )
    assert vllm_fp8_gemm_file_name(7168, 16384, H100, (128, 128)) == (
        "N=7168,K=16384,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json"
    )
    with pytest.raises(ExportError, match="N must be a positive integer"):
        sglang_fp8_gemm_file_name(0, 7168, H200, (128, 128))


def test_per_channel_flag_needs_fp8():
    assert "per_channel_quant" not in sglang_moe_file_name(
        MoeShape(8, 7168, 4096, 2, Quant.BF16), H100, per_channel_quant=True
    )
