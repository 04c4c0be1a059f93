"""The config files an engine already ships for a shape, for every device and Triton version it has them.

The sweep seeds its search with every shipped config for the shape (a config tuned for an H100, or for an
older Triton, is often a good start on an H200) and the report names the file the engine really loads.
Nothing here measures or writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tuner.export.naming import sglang_moe_file_name, vllm_moe_file_name
from tuner.export.tables import nearest_config, parse_config_file
from tuner.kernels.base import KernelConfig, MoeShape
from tuner.kernels.fused_moe.backends import ConfigRoot

log = logging.getLogger(__name__)

_DEVICE = "DEVICE"


@dataclass(frozen=True)
class ShippedTable:
    """One shipped file for the shape: `up` by batch size, and its `_down` twin's configs when it has one."""

    path: Path
    device_token: str
    up: dict[int, KernelConfig]
    down: dict[int, KernelConfig] | None = None

    def at(self, batch_size: int) -> tuple[KernelConfig, KernelConfig | None]:
        """(up, down) the engine would pick at `batch_size` from this file (nearest M, ties to the smaller)."""
        return (nearest_config(self.up, batch_size),
                nearest_config(self.down, batch_size) if self.down else None)


def _name_pattern(shape: MoeShape, layout: str, down: bool = False) -> tuple[str, str]:
    name = sglang_moe_file_name(shape, _DEVICE, down=down) if layout == "sglang" else vllm_moe_file_name(shape, _DEVICE)
    prefix, _, suffix = name.partition(f"device_name={_DEVICE}")
    return prefix + "device_name=", suffix


def _device_of(name: str, prefix: str, suffix: str) -> str | None:
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    token = name[len(prefix): len(name) - len(suffix)]
    return token if token and "," not in token and not token.endswith("_down") else None


def _read(path: Path) -> dict[int, KernelConfig] | None:
    try:
        return dict(parse_config_file(path))
    except Exception as exc:  # noqa: BLE001 - a malformed file in the engine's folder is skipped, not fatal
        log.warning("skipping unreadable config file %s: %s", path, exc)
        return None


def shipped_tables(shape: MoeShape, roots: list[ConfigRoot]) -> list[ShippedTable]:
    """Every file under `roots` for `shape` (any device, any `triton_*` folder), newest Triton folder first."""
    tables: list[ShippedTable] = []
    for root in roots:
        folders: list[Path]
        if root.layout == "sglang":
            base = root.path / "configs"
            folders = sorted((d for d in base.glob("triton_*") if d.is_dir()), key=lambda d: d.name, reverse=True) \
                if base.is_dir() else []
        else:
            folders = [root.path] if root.path.is_dir() else []
        prefix, suffix = _name_pattern(shape, root.layout)
        down_prefix, down_suffix = _name_pattern(shape, root.layout, down=True)
        for folder in folders:
            for path in sorted(folder.iterdir()):
                device = _device_of(path.name, prefix, suffix)
                if device is None:
                    continue
                up = _read(path)
                if not up:
                    continue
                down = None
                if root.layout == "sglang":
                    twin = folder / f"{down_prefix}{device}{down_suffix}"
                    down = _read(twin) if twin.is_file() else None
                tables.append(ShippedTable(path, device, up, down or None))
    return tables


def shipped_seeds(tables: list[ShippedTable], batch_size: int) -> tuple[list[KernelConfig], list[KernelConfig]]:
    """(up configs, down configs) the shipped files pick at `batch_size`, each list without repeats."""
    ups: dict[KernelConfig, None] = {}
    downs: dict[KernelConfig, None] = {}
    for table in tables:
        up, down = table.at(batch_size)
        ups[up] = None
        if down is not None:
            downs[down] = None
    return list(ups), list(downs)
