"""The built-in catalog: Hugging Face config.json files shipped in `tuner/models/catalog/` and their index.

It only finds and describes catalog entries (names, aliases, provenance); it does not parse model fields.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Literal

Origin = Literal["verbatim", "constructed"]

_CATALOG_PACKAGE = "tuner.models"
_CATALOG_FOLDER = "catalog"
_INDEX_FILE = "index.json"


@dataclass(frozen=True)
class CatalogEntry:
    """One built-in model: its Hugging Face id, the short names that also find it, and where its file came from."""

    name: str  # the Hugging Face id, e.g. "zai-org/GLM-4.7-FP8"
    file: str  # file name inside tuner/models/catalog/
    origin: Origin  # "verbatim": a published config.json copied byte for byte; "constructed": assembled here
    source: str  # where the bytes (or the numbers) come from
    aliases: tuple[str, ...] = ()  # extra short names; the part after "/" is always an alias too
    derived_from: str | None = None  # for constructed entries: the verbatim entry it starts from
    changes: tuple[str, ...] = ()  # for constructed entries: what differs from `derived_from`
    notes: str = ""
    sha256: str | None = None  # for verbatim entries: digest of the copied file

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def all_names(self) -> tuple[str, ...]:
        """Every name that finds this entry (matched case-insensitively)."""
        names = [self.name, self.short_name, *self.aliases]
        return tuple(dict.fromkeys(names))

    def read_bytes(self) -> bytes:
        return resources.files(_CATALOG_PACKAGE).joinpath(_CATALOG_FOLDER, self.file).read_bytes()

    @property
    def location(self) -> str:
        """A readable location of the file inside the installed package (for messages)."""
        return str(resources.files(_CATALOG_PACKAGE).joinpath(_CATALOG_FOLDER, self.file))


@functools.cache
def _load_index() -> tuple[CatalogEntry, ...]:
    text = resources.files(_CATALOG_PACKAGE).joinpath(_CATALOG_FOLDER, _INDEX_FILE).read_text("utf-8")
    data = json.loads(text)
    entries = []
    for item in data["models"]:
        entries.append(
            CatalogEntry(
                name=item["name"],
                file=item["file"],
                origin=item["origin"],
                source=item["source"],
                aliases=tuple(item.get("aliases", ())),
                derived_from=item.get("derived_from"),
                changes=tuple(item.get("changes", ())),
                notes=item.get("notes", ""),
                sha256=item.get("sha256"),
            )
        )
    return tuple(entries)


def list_catalog() -> list[CatalogEntry]:
    """Every built-in model, in the catalog's order (GLM first, then DeepSeek/Kimi, Qwen, Mixtral)."""
    return list(_load_index())


def find_catalog_entry(name: str) -> CatalogEntry | None:
    """The entry whose id or alias equals `name`, ignoring case; None when there is none."""
    wanted = name.strip().casefold()
    for entry in _load_index():
        if any(wanted == candidate.casefold() for candidate in entry.all_names):
            return entry
    return None


def suggest_catalog_names(name: str, limit: int = 3) -> list[str]:
    """Catalog ids that look like `name` (for a 'did you mean' hint)."""
    by_folded: dict[str, str] = {}
    for entry in _load_index():
        for candidate in entry.all_names:
            by_folded.setdefault(candidate.casefold(), entry.name)
    wanted = name.strip().casefold()
    close = difflib.get_close_matches(wanted, list(by_folded), n=limit * 3, cutoff=0.6)
    # also offer entries that merely contain what was typed ("glm-4.7" -> GLM-4.7, GLM-4.7-FP8)
    contained = [folded for folded in by_folded if wanted and wanted in folded]
    suggestions = [by_folded[folded] for folded in [*close, *contained]]
    return list(dict.fromkeys(suggestions))[:limit]
