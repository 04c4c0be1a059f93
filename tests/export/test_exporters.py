"""Exporters writing real folders: SGLang's layout reproduces a shipped file, vLLM's flat folder, overwrite
refusal and --force, atomic writes, unsafe device names, the registry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tuner.errors import ExportError
from tuner.export import EXPORTERS, Exporter, get_exporter
from tuner.export.tables import parse_config_file, read_config_file
from tuner.models.config import load_model_config
from tuner.models.shapes import derive_moe_shape

FIXTURES = Path(__file__).parent / "fixtures" / "sglang-moe-configs"
GLM_H200 = "triton_3_5_1/E=161,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8,per_channel_quant=True.json"


@pytest.fixture
def glm_fp8_tp8():
    return derive_moe_shape(load_model_config("GLM-4.7-FP8"), tp=8)


def test_sglang_export_recreates_the_shipped_file(tmp_path, glm_fp8_tp8):
    table = parse_config_file(FIXTURES / GLM_H200)
    written = get_exporter("sglang").write(tmp_path, glm_fp8_tp8, "NVIDIA H200", "3.5.1", table)
    assert written == [tmp_path / "configs" / GLM_H200]
    assert written[0].read_bytes() == (FIXTURES / GLM_H200).read_bytes()
    assert get_exporter("sglang").usage_hint(tmp_path) == f"SGLANG_MOE_CONFIG_DIR={tmp_path.resolve()}"


def test_vllm_export_is_flat_with_triton_version(tmp_path, glm_fp8_tp8):
    table = parse_config_file(FIXTURES / GLM_H200)
    exporter = get_exporter("vllm")
    (planned,) = exporter.plan(glm_fp8_tp8, "NVIDIA H200 NVL", "3.5.1")
    assert any("E=160" in note and "top-k 8+1" in note for note in planned.notes)
    (path,) = exporter.write(tmp_path, glm_fp8_tp8, "NVIDIA H200 NVL", "3.5.1", table)
    assert path == tmp_path / "vllm" / "E=160,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8.json"
    data = json.loads(path.read_text())
    assert next(iter(data)) == "triton_version" and data["triton_version"] == "3.5.1"
    assert read_config_file(path).table == table
    assert exporter.usage_hint(tmp_path) == f"VLLM_TUNED_CONFIG_FOLDER={(tmp_path / 'vllm').resolve()}"


@pytest.mark.parametrize("engine", sorted(EXPORTERS))
def test_existing_file_is_not_overwritten_without_force(tmp_path, glm_fp8_tp8, engine):
    exporter = get_exporter(engine)
    first = parse_config_file(FIXTURES / GLM_H200)
    other = parse_config_file(FIXTURES / "triton_3_4_0" / GLM_H200.split("/")[1])
    assert first != other
    (path,) = exporter.write(tmp_path, glm_fp8_tp8, "NVIDIA H200", "3.5.1", first)
    before = path.read_bytes()
    with pytest.raises(ExportError) as info:
        exporter.write(tmp_path, glm_fp8_tp8, "NVIDIA H200", "3.5.1", other)
    assert str(path) in str(info.value) and "--force" in str(info.value)
    assert path.read_bytes() == before
    (again,) = exporter.write(tmp_path, glm_fp8_tp8, "NVIDIA H200", "3.5.1", other, force=True)
    assert again == path and read_config_file(path).table == other
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary files left behind


def test_a_folder_in_the_way_is_refused_even_with_force(tmp_path, glm_fp8_tp8):
    exporter = get_exporter("sglang")
    (planned,) = exporter.plan(glm_fp8_tp8, "NVIDIA H200", "3.5.1")
    planned.target(tmp_path).mkdir(parents=True)
    with pytest.raises(ExportError, match="is a folder"):
        exporter.write(
            tmp_path, glm_fp8_tp8, "NVIDIA H200", "3.5.1", parse_config_file(FIXTURES / GLM_H200), force=True
        )


@pytest.mark.parametrize("engine", sorted(EXPORTERS))
def test_unsafe_device_name_stays_inside_the_folder_and_is_reported(tmp_path, glm_fp8_tp8, engine):
    exporter = get_exporter(engine)
    (planned,) = exporter.plan(glm_fp8_tp8, "ACME GPU/2 ..", "3.5.1")
    # SGLang looks for 'ACME_GPU/2_..', which cannot be a file name; vLLM turns '/' into '_' itself
    assert any("ACME_GPU/2_.." in note for note in planned.notes) == (engine == "sglang")
    (path,) = exporter.write(
        tmp_path, glm_fp8_tp8, "ACME GPU/2 ..", "3.5.1", parse_config_file(FIXTURES / GLM_H200)
    )
    assert "device_name=ACME_GPU_2_.." in path.name
    assert path.parent == planned.target(tmp_path).parent and path.is_file()


def test_local_triton_build_notes_the_fallback(glm_fp8_tp8):
    (planned,) = get_exporter("sglang").plan(glm_fp8_tp8, "NVIDIA H200", "3.6.0+git9844da95")
    assert planned.relative_path.parts[:2] == ("configs", "triton_3_6_0")
    assert any("falls back" in note for note in planned.notes)


def test_registry():
    assert get_exporter("SGLang").name == "sglang"
    for exporter in EXPORTERS.values():
        assert isinstance(exporter, Exporter)
    with pytest.raises(ExportError, match="valid formats: sglang, vllm"):
        get_exporter("tensorrt-llm")


DSV3_H200 = "triton_3_5_1/E=257,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128]"


@pytest.fixture
def dsv3_tp8():
    return derive_moe_shape(load_model_config("DeepSeek-V3"), tp=8)


def test_sglang_export_writes_the_down_twin_byte_for_byte(tmp_path, dsv3_tp8):
    from tuner.export.tables import TunedTables

    up, down = parse_config_file(FIXTURES / f"{DSV3_H200}.json"), parse_config_file(FIXTURES / f"{DSV3_H200}_down.json")
    written = get_exporter("sglang").write(tmp_path, dsv3_tp8, "NVIDIA H200", "3.5.1", TunedTables(up, down))
    assert written == [tmp_path / "configs" / f"{DSV3_H200}.json", tmp_path / "configs" / f"{DSV3_H200}_down.json"]
    for path, fixture in zip(written, (f"{DSV3_H200}.json", f"{DSV3_H200}_down.json")):
        assert path.read_bytes() == (FIXTURES / fixture).read_bytes()


def test_vllm_gets_the_single_config_table_not_the_sglang_pair(tmp_path, dsv3_tp8):
    from tuner.export.tables import ConfigTable, TunedTables
    from tuner.kernels.base import KernelConfig

    up = parse_config_file(FIXTURES / f"{DSV3_H200}.json")
    down = parse_config_file(FIXTURES / f"{DSV3_H200}_down.json")
    single = ConfigTable.from_mapping({m: KernelConfig(64, 128, 128, 32, 4, 3) for m in up})
    exporter = get_exporter("vllm")
    (planned,) = exporter.plan(dsv3_tp8, "NVIDIA H200", "3.5.1", down=True)
    assert any("one config for both GEMMs" in n for n in planned.notes)
    (path,) = exporter.write(tmp_path, dsv3_tp8, "NVIDIA H200", "3.5.1", TunedTables(up, down, single))
    data = json.loads(path.read_text())
    assert path.name == "E=256,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json"
    assert data["1"] == single[1].to_json_dict() and all("USE_TMA" not in v for k, v in data.items() if k.isdigit())


def test_shipped_files_for_a_shape_are_found_in_every_triton_folder_with_their_down_twins(tmp_path, dsv3_tp8):
    import shutil

    from tuner.export.shipped import shipped_seeds, shipped_tables
    from tuner.kernels.fused_moe.backends import ConfigRoot

    shutil.copytree(FIXTURES, tmp_path / "configs")  # laid out as SGLang's package folder
    tables = shipped_tables(dsv3_tp8, [ConfigRoot(tmp_path, "sglang")])
    assert [(t.path.parent.name, t.device_token, t.down is not None) for t in tables] == [
        ("triton_3_5_1", "NVIDIA_H200", True), ("triton_3_2_0", "NVIDIA_H200", False)]
    ups, downs = shipped_seeds(tables, 1)
    assert ups[0] == tables[0].up[1] and downs == [tables[0].down[1]] and downs[0].use_tma
    # another shape finds only its own files (E=257,N=128 on the H100 is a different N)
    glm = derive_moe_shape(load_model_config("GLM-4.7-FP8"), tp=8)
    assert [t.path.parent.name for t in shipped_tables(glm, [ConfigRoot(tmp_path, "sglang")])] == [
        "triton_3_5_1", "triton_3_4_0"]
