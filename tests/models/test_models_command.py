"""`tuner models list` / `tuner models shape` as a user runs them."""

from __future__ import annotations

import argparse
import json

import pytest

from tuner.commands import models as models_command
from tuner.errors import ModelConfigError
from tuner.models.builtin import list_catalog
from tuner.settings import Settings


def _run(argv: list[str], capsys) -> str:
    parser = argparse.ArgumentParser(prog="tuner")
    models_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    assert args.func(args, Settings()) == 0
    return capsys.readouterr().out


def test_list_shows_every_catalog_model_with_its_origin(capsys):
    out = _run(["models", "list"], capsys)
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for entry in list_catalog():
        assert entry.name in lines
        assert lines[entry.name][-1] == entry.origin
    assert lines["zai-org/GLM-4.7-FP8"][1:6] == ["161", "1536", "5120", "8+1", "fp8_w8a8_per_channel"]
    assert lines["mistralai/Mixtral-8x7B-v0.1"][1:6] == ["8", "14336", "4096", "2", "bf16"]


def test_list_json(capsys):
    rows = json.loads(_run(["models", "list", "--json"], capsys))
    by_name = {row["name"]: row for row in rows}
    assert by_name["deepseek-ai/DeepSeek-V3"]["E"] == 257
    assert by_name["deepseek-ai/DeepSeek-V3"]["quant"] == "fp8_w8a8_block128x128"


def test_shape_prints_the_file_sglang_ships_for_glm_on_h200(capsys):
    out = _run(
        [
            "models",
            "shape",
            "glm-4.7-fp8",
            "--tp",
            "8",
            "--device-name",
            "NVIDIA H200",
            "--triton-version",
            "3.5.1",
        ],
        capsys,
    )
    assert (
        "configs/triton_3_5_1/E=161,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8,per_channel_quant=True.json"
        in out
    )
    assert "vllm/E=160,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8.json" in out
    assert "8+1" in out


def test_shape_without_fusion_and_default_device(capsys):
    data = json.loads(
        _run(
            [
                "models",
                "shape",
                "DeepSeek-V3",
                "--tp",
                "8",
                "--no-shared-experts-fusion",
                "--triton-version",
                "3.1.0",
                "--json",
            ],
            capsys,
        )
    )
    assert (data["E"], data["N"], data["K"], data["runtime_top_k"]) == (256, 256, 7168, 8)
    assert data["sglang_path"] == (
        "configs/triton_3_1_0/E=256,N=256,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128, 128].json"
    )


def test_shape_reports_an_unsafe_device_name(capsys):
    data = json.loads(
        _run(
            [
                "models",
                "shape",
                "GLM-4.5",
                "--tp",
                "8",
                "--device-name",
                "Weird GPU/X",
                "--triton-version",
                "3.5.1",
                "--json",
            ],
            capsys,
        )
    )
    assert data["sglang_file"] == "E=161,N=192,device_name=Weird_GPU_X.json"
    assert data["notes"] and "Weird_GPU/X" in data["notes"][0]


def test_shape_errors_are_user_errors(capsys):
    with pytest.raises(ModelConfigError, match="not divisible by --ep"):
        _run(["models", "shape", "GLM-4.5", "--tp", "8", "--ep", "3"], capsys)


def test_shape_of_kimi_k2_is_unfused_and_says_why(capsys):
    out = _run(["models", "shape", "Kimi-K2", "--tp", "8", "--device-name", "NVIDIA H200", "--triton-version", "3.5.1"],
               capsys)
    assert "configs/triton_3_5_1/E=384,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128].json" in out
    assert "top-k        8\n" in out
    assert "note: shared expert not fused" in out and "Quark" in out


def test_shape_under_ep_on_mi300_keeps_deepseek_fusion(capsys):
    rows = json.loads(_run(["models", "shape", "DeepSeek-V3", "--tp", "8", "--ep", "8", "--device-name",
                            "AMD Instinct MI300X", "--json"], capsys))
    assert (rows["E"], rows["runtime_top_k"]) == (33, 9)
