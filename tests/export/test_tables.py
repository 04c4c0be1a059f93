"""Config tables: byte-identical serialization of the files SGLang ships, the engines' nearest-M lookup,
and reading files with extra keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.errors import ExportError
from tuner.export.tables import (
    ConfigTable,
    nearest_config,
    parse_config_file,
    parse_config_text,
    read_config_file,
    to_json_text,
)
from tuner.kernels.base import KernelConfig

FIXTURES = Path(__file__).parent / "fixtures" / "sglang-moe-configs"
ALL_FIXTURES = sorted(FIXTURES.glob("*/*.json"))


DOWN_FIXTURES = [p for p in ALL_FIXTURES if p.name.endswith("_down.json")]


def test_fixtures_include_a_down_file_with_use_tma():
    assert [p.name for p in DOWN_FIXTURES] == [
        "E=257,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128]_down.json"
    ]
    assert '"USE_TMA": true' in DOWN_FIXTURES[0].read_text()
    assert len(ALL_FIXTURES) == 10


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=[f"{p.parent.name}/{p.name}" for p in ALL_FIXTURES])
def test_shipped_files_round_trip_byte_for_byte(path):
    # `_down` files included: USE_TMA is part of a KernelConfig and written back where it was.
    table = parse_config_file(path)
    assert to_json_text(table) == path.read_text(encoding="utf-8")
    assert to_json_text(table).encode() == path.read_bytes()


def test_use_tma_is_read_not_reported_as_an_unknown_key():
    path = DOWN_FIXTURES[0]
    parsed = read_config_file(path)
    raw = json.loads(path.read_text())
    assert {m for m, c in parsed.table.items() if c.use_tma} == {int(k) for k in raw if raw[k].get("USE_TMA")}
    assert parsed.entry_extras == {} and parsed.notes == []


def test_unknown_per_m_keys_are_tolerated_and_reported(caplog):
    text = json.dumps({"1": {**KernelConfig(16, 64, 128, 1, 4, 3).to_json_dict(), "SPLIT_K": 2}})
    parsed = parse_config_text(text)
    assert dict(parsed.entry_extras) == {1: {"SPLIT_K": 2}}
    assert any("SPLIT_K" in note for note in parsed.notes)


def test_vllm_triton_version_key_is_read_and_kept_aside():
    text = to_json_text(
        ConfigTable(((1, KernelConfig(16, 64, 128, 1, 4, 3)),)), extra={"triton_version": "3.4.0"}
    )
    assert text.startswith('{\n    "triton_version": "3.4.0",\n    "1": {\n')
    parsed = parse_config_text(text)
    assert dict(parsed.top_level_extras) == {"triton_version": "3.4.0"}
    assert list(parsed.table) == [1]


def test_keys_sort_numerically_not_as_strings():
    cfg = KernelConfig(16, 64, 64, 1, 4, 3)
    table = ConfigTable.from_mapping({1024: cfg, 2: cfg, 16: cfg, 128: cfg})
    assert list(json.loads(to_json_text(table))) == ["2", "16", "128", "1024"]
    assert list(table) == [2, 16, 128, 1024]


def test_empty_table_has_nothing_to_write():
    with pytest.raises(ExportError, match="nothing to write"):
        to_json_text(ConfigTable())


def test_table_is_immutable_and_rejects_bad_entries():
    cfg = KernelConfig(16, 64, 64, 1, 4, 3)
    table = ConfigTable.from_mapping({1: cfg})
    with pytest.raises(TypeError):
        table[2] = cfg  # type: ignore[index]
    with pytest.raises(ValueError, match="positive integer"):
        ConfigTable(((0, cfg),))
    with pytest.raises(ValueError, match="twice"):
        ConfigTable(((1, cfg), (1, cfg)))


def _table(*batch_sizes: int) -> ConfigTable:
    # each config's BLOCK_SIZE_M encodes its batch size so a lookup can be traced back
    return ConfigTable(tuple((m, KernelConfig(m, 64, 64, 1, 4, 3)) for m in batch_sizes))


@pytest.mark.parametrize(
    ("m", "chosen"),
    [
        (1, 1),
        (3, 2),
        (5, 4),
        (6, 4),
        (7, 8),
        (20, 16),
        (21, 24),
        (40, 32),
        (56, 48),
        (80, 64),
        (3000, 3072),
        (5000, 4096),
        (0, 1),
        (192, 128),
        (193, 256),
        (1280, 1024),
        (1281, 1536),
    ],
)
def test_nearest_batch_size_ties_go_to_the_smaller_key(m, chosen):
    table = _table(1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096)
    assert nearest_config(table, m).block_size_m == chosen


def test_nearest_on_a_shipped_file():
    path = (
        FIXTURES
        / "triton_3_5_1"
        / "E=257,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128].json"
    )
    table = parse_config_file(path)  # this one stops at 1024
    raw = json.loads(path.read_text())
    assert nearest_config(table, 4096).to_json_dict() == raw["1024"]
    assert nearest_config(table, 768).to_json_dict() == raw["512"]  # tie between 512 and 1024


def test_nearest_on_empty_table():
    with pytest.raises(ExportError, match="empty"):
        nearest_config(ConfigTable(), 8)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('{"1": {"BLOCK_SIZE_M": 16}', "not valid JSON: .* line 1, column"),
        ("[]", "JSON object"),
        (
            '{"1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64}}',
            "lacks BLOCK_SIZE_K, GROUP_SIZE_M, num_warps, num_stages",
        ),
        ('{"1": [16, 64]}', "must be an object"),
        ('{"triton_version": "3.4.0"}', "no batch-size entries"),
        (
            ('{"1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1, "num_warps": 4,'
            ' "num_stages": "3"}}'),
            "non-integer num_stages",
        ),
    ],
)
def test_malformed_files_are_reported(text, pattern):
    with pytest.raises(ExportError, match=pattern):
        parse_config_text(text, source="x.json")
