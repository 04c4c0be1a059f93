"""Tuned-config tables (batch size M -> KernelConfig): the engines' lookup rule, and their JSON file format.

`to_json_text` writes byte for byte what SGLang's and vLLM's own tuners write (json.dumps, indent 4,
keys ascending by M, a trailing newline). Nothing here knows file names or folders.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import ExportError
from tuner.kernels.base import CONFIG_KEYS, KernelConfig, nearest_entry

__all__ = [
    "ConfigTable",
    "ParsedConfigFile",
    "TunedTables",
    "nearest_config",
    "parse_config_file",
    "parse_config_text",
    "read_config_file",
    "to_json_text",
]

log = logging.getLogger(__name__)

# Per-M keys a KernelConfig carries besides CONFIG_KEYS when present (SGLang's `_down` files).
OPTIONAL_CONFIG_KEYS: tuple[str, ...] = ("USE_TMA",)
# Top-level keys the engines' files may carry besides batch sizes.
KNOWN_TOP_LEVEL_EXTRAS: tuple[str, ...] = ("triton_version",)


@dataclass(frozen=True)
class ConfigTable(Mapping[int, KernelConfig]):
    """An immutable mapping batch size M -> KernelConfig, iterated in ascending M."""

    entries: tuple[tuple[int, KernelConfig], ...] = ()
    _index: Mapping[int, KernelConfig] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        ordered = sorted(self.entries, key=lambda item: item[0])
        index: dict[int, KernelConfig] = {}
        for batch_size, config in ordered:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
            if not isinstance(config, KernelConfig):
                raise TypeError(
                    f"config for M={batch_size} must be a KernelConfig, got {type(config).__name__}"
                )
            if batch_size in index:
                raise ValueError(f"batch size {batch_size} appears twice")
            index[batch_size] = config
        object.__setattr__(self, "entries", tuple(ordered))
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_mapping(cls, configs: Mapping[int, KernelConfig]) -> ConfigTable:
        return cls(tuple(configs.items()))

    def __getitem__(self, batch_size: int) -> KernelConfig:
        return self._index[batch_size]

    def __iter__(self) -> Iterator[int]:
        return (batch_size for batch_size, _ in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(batch_size for batch_size, _ in self.entries)


@dataclass(frozen=True)
class TunedTables:
    """What one sweep exports: the up table, the down GEMM's own table (SGLang `_down` files; an entry at every
    M of `up`, the up config itself where the down GEMM has none of its own), and the best single config per M
    for engines that read one config for both GEMMs (vLLM; the up table when not tuned separately)."""

    up: ConfigTable
    down: ConfigTable | None = None
    single: ConfigTable | None = None

    def __post_init__(self) -> None:
        for name in ("down", "single"):
            other = getattr(self, name)
            if other is not None and set(other) != set(self.up):
                raise ValueError(f"the {name} table must have the up table's batch sizes")

    def for_role(self, role: str) -> ConfigTable:
        """'up', 'down' or 'single': the table a planned file of that role is written from."""
        if role == "down":
            if self.down is None:
                raise ExportError("no down-GEMM configs were tuned for this sweep")
            return self.down
        if role == "single":
            return self.single or self.up
        return self.up


def nearest_config(table: Mapping[int, KernelConfig], m: int) -> KernelConfig:
    """The config the engines use for M tokens: the entry with the nearest key, ties going to the smaller key."""
    if not table:
        raise ExportError(
            "the config table is empty: there is no config to look up; tune some batch sizes first"
        )
    return nearest_entry(table, m)


def to_json_text(table: Mapping[int, KernelConfig], extra: Mapping[str, Any] | None = None) -> str:
    """The file text: `extra` top-level keys first (vLLM's "triton_version"), then M ascending as strings,
    each with exactly the six CONFIG_KEYS (plus "USE_TMA": true where set); 4-space indent and a trailing newline, as the engines' tuners write."""
    if not table:
        raise ExportError("nothing to write: the config table is empty")
    data: dict[str, Any] = {}
    for key, value in (extra or {}).items():
        if key.isascii() and key.isdigit():
            raise ValueError(f"extra key {key!r} would collide with a batch size")
        data[key] = value
    for batch_size in sorted(table):
        data[str(batch_size)] = table[batch_size].to_json_dict()
    return json.dumps(data, indent=4) + "\n"


@dataclass(frozen=True)
class ParsedConfigFile:
    """A config file read back: the table, and what it carried that a KernelConfig does not."""

    table: ConfigTable
    top_level_extras: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"triton_version": "3.4.0"}
    entry_extras: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)  # e.g. {1: {"USE_TMA": True}}

    @property
    def notes(self) -> list[str]:
        notes = [
            f"top-level key {key!r} = {value!r} kept aside" for key, value in self.top_level_extras.items()
        ]
        keys = sorted({key for extras in self.entry_extras.values() for key in extras})
        if keys:
            notes.append(
                f"extra per-M key(s) {', '.join(keys)} in {len(self.entry_extras)} entries ignored "
                f"(a KernelConfig carries only {', '.join(CONFIG_KEYS)})"
            )
        return notes


def parse_config_text(text: str, source: str = "<text>") -> ParsedConfigFile:
    """Parse engine-style config JSON; extra keys are tolerated and reported in the result."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    if not isinstance(data, dict):
        raise ExportError(f"{source} must hold a JSON object keyed by batch size, got {type(data).__name__}")
    entries: list[tuple[int, KernelConfig]] = []
    top_extras: dict[str, Any] = {}
    entry_extras: dict[int, dict[str, Any]] = {}
    for key, value in data.items():
        if not (key.isascii() and key.isdigit()):
            top_extras[key] = value
            continue
        batch_size = int(key)
        if not isinstance(value, dict):
            raise ExportError(f"{source}: entry {key!r} must be an object of {', '.join(CONFIG_KEYS)}")
        missing = [k for k in CONFIG_KEYS if k not in value]
        if missing:
            raise ExportError(f"{source}: entry {key!r} lacks {', '.join(missing)}")
        bad = [k for k in CONFIG_KEYS if isinstance(value[k], bool) or not isinstance(value[k], int)]
        if bad:
            raise ExportError(f"{source}: entry {key!r} has non-integer {', '.join(bad)}")
        entries.append((batch_size, KernelConfig.from_json_dict(value)))
        extras = {k: v for k, v in value.items() if k not in CONFIG_KEYS and k not in OPTIONAL_CONFIG_KEYS}
        if extras:
            entry_extras[batch_size] = extras
    if not entries:
        raise ExportError(f'{source} has no batch-size entries (keys like "1", "2", ... "4096")')
    try:
        table = ConfigTable(tuple(entries))
    except ValueError as exc:
        raise ExportError(f"{source}: {exc}") from exc
    return ParsedConfigFile(table=table, top_level_extras=top_extras, entry_extras=entry_extras)


def read_config_file(path: str | Path) -> ParsedConfigFile:
    """Read an engine-style config file, keeping what it carried besides the six keys."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    return parse_config_text(text, source=str(path))


def parse_config_file(path: str | Path) -> ConfigTable:
    """The ConfigTable in an engine-style file (USE_TMA kept); other extra keys are logged and dropped."""
    parsed = read_config_file(path)
    for note in parsed.notes:
        log.info("%s: %s", path, note)
    return parsed.table
