"""Load a model's Hugging Face config.json from a file, a folder, or the built-in catalog.

It checks that the file is a JSON object describing a known MoE architecture; it derives no shapes
(that is tuner.models.shapes) and never downloads anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tuner.errors import ModelConfigError
from tuner.models.builtin import (
    CatalogEntry,
    find_catalog_entry,
    list_catalog,
    suggest_catalog_names,
)
from tuner.models.families import (
    EXPERT_COUNT_FIELDS,
    MoeFamily,
    architectures_of,
    find_family,
    known_architectures,
    known_model_types,
    language_model_path,
    model_types_of,
    text_section,
)

__all__ = ["CatalogEntry", "ModelConfig", "list_catalog", "load_model_config", "parse_model_config"]

CONFIG_FILE_NAME = "config.json"


@dataclass(frozen=True)
class ModelConfig:
    """A parsed config.json of a supported MoE model.

    `name` is the catalog id, or the folder (or file stem) the file came from; `source` says where the bytes
    were read, for error messages ("catalog:zai-org/GLM-4.7-FP8 (...)" or a file path).
    """

    name: str
    source: str
    raw: Mapping[str, Any] = field(hash=False)

    @property
    def family(self) -> MoeFamily:
        family = find_family(self.raw)
        if family is None:  # load_model_config never builds one of these; a hand-made one may
            raise ModelConfigError(_unknown_family_message(self.raw, self.source))
        return family

    @property
    def text(self) -> Mapping[str, Any]:
        """The language-model fields (inside `text_config` for VL models, `thinker_config.text_config` for Omni)."""
        return text_section(self.raw)

    @property
    def text_path(self) -> str:
        """Where `text` is in config.json ('' at the top level, else e.g. 'thinker_config.text_config')."""
        return ".".join(language_model_path(self.raw))

    @property
    def architecture(self) -> str:
        archs = architectures_of(self.raw)
        return archs[0] if archs else (model_types_of(self.raw) or ["?"])[0]


def load_model_config(spec: str | Path) -> ModelConfig:
    """Read a model config: `spec` is a config.json path, a folder holding config.json, or a catalog name.

    An existing path wins over a catalog name of the same spelling (a local snapshot folder named
    "zai-org/GLM-4.7-FP8" is read from disk). Raises ModelConfigError saying what to fix.
    """
    text_spec = str(spec).strip()
    if not text_spec:
        raise ModelConfigError(
            "no model given: pass a config.json path, a folder holding one, or a catalog name "
            "(see `tuner models list`)"
        )
    path = Path(text_spec).expanduser()
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as exc:  # e.g. a name longer than a file name can be (ENAMETOOLONG): no such file, no catalog name
        shown = text_spec if len(text_spec) <= 60 else f"{text_spec[:40]}...({len(text_spec)} characters)"
        raise ModelConfigError(
            f"{shown!r} is neither a file, a folder, nor a catalog name ({exc.strerror or exc}); pass a config.json "
            f"path, a folder holding one, or a catalog name (see `tuner models list`)"
        ) from exc
    if is_dir:
        config_path = path / CONFIG_FILE_NAME
        if not config_path.is_file():
            raise ModelConfigError(
                f"folder {path} has no {CONFIG_FILE_NAME}; point at the model's checkpoint "
                f"folder or at the config.json file itself"
            )
        return _load_file(config_path, name=path.resolve().name)
    if is_file:
        name = path.resolve().parent.name if path.name == CONFIG_FILE_NAME else path.stem
        return _load_file(path, name=name)

    entry = find_catalog_entry(text_spec)
    if entry is not None:
        return _load_catalog_entry(entry)

    if _looks_like_path(text_spec):
        raise ModelConfigError(
            f"no such file or folder: {path}; pass a config.json path, a folder holding one, "
            f"or a catalog name (see `tuner models list`)"
        )
    suggestions = suggest_catalog_names(text_spec)
    hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    raise ModelConfigError(
        f"{text_spec!r} is neither a file, a folder, nor a catalog name{hint} "
        f"(`tuner models list` shows the catalog)"
    )


def parse_model_config(text: str, *, name: str, source: str) -> ModelConfig:
    """Parse config.json text (already read) and check it describes a supported MoE model."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelConfigError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
            f"fix the file (a config.json is one JSON object)"
        ) from exc
    if not isinstance(data, dict):
        raise ModelConfigError(
            f"{source} holds a JSON {_json_kind(data)}, not an object; a Hugging Face "
            f'config.json is one JSON object such as {{"architectures": [...], ...}}'
        )
    if find_family(data) is None:
        raise ModelConfigError(_unknown_family_message(data, source))
    return ModelConfig(name=name, source=source, raw=MappingProxyType(data))


def _load_file(path: Path, name: str) -> ModelConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ModelConfigError(f"{path} is not UTF-8 text; is it really a config.json?") from exc
    except OSError as exc:
        raise ModelConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_model_config(text, name=name, source=str(path))


def _load_catalog_entry(entry: CatalogEntry) -> ModelConfig:
    text = entry.read_bytes().decode("utf-8")
    return parse_model_config(text, name=entry.name, source=f"catalog:{entry.name} ({entry.location})")


def _looks_like_path(spec: str) -> bool:
    return (
        spec.endswith(".json")
        or spec.startswith(("/", "./", "../", "~"))
        or "\\" in spec
        or spec.count("/") > 1
    )


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _unknown_family_message(raw: Mapping[str, Any], source: str) -> str:
    archs = architectures_of(raw)
    model_types = model_types_of(raw)
    path = ".".join(language_model_path(raw))
    section = text_section(raw)
    experts = {f: section[f] for f in EXPERT_COUNT_FIELDS if f in section}
    where = f"in {path}" if path else "at the top level"
    what = f"architectures {archs or 'absent'}, model_type {model_types[0] if model_types else 'absent'}"
    if not experts:
        why = (
            f"it has none of the expert-count fields {', '.join(EXPERT_COUNT_FIELDS)} (looked at the top level and "
            f"in every nested *_config), so it looks like a dense model: there is no fused-MoE kernel to tune"
        )
        return f"{source} is not a supported MoE model ({what}): {why}"
    counts = ", ".join(f"{name}={value}" for name, value in experts.items())
    return (
        f"{source}: architecture {archs[0] if archs else (model_types[0] if model_types else '?')} is not "
        f"supported ({what}); it is a MoE model ({counts} {where}) but the tuner does not know which fields hold "
        f"its expert sizes. Supported architectures: {', '.join(known_architectures())}; model types: "
        f"{', '.join(known_model_types())}"
    )
