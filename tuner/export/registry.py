"""The exporters by name ("sglang", "vllm"); adding an engine is one module and one line here.

Nothing here writes files.
"""

from __future__ import annotations

from tuner.errors import ExportError
from tuner.export.base import Exporter
from tuner.export.sglang import SglangExporter
from tuner.export.vllm import VllmExporter

EXPORTERS: dict[str, Exporter] = {
    "sglang": SglangExporter(),
    "vllm": VllmExporter(),
}


def get_exporter(name: str) -> Exporter:
    """The exporter called `name` (case-insensitive); ExportError listing the valid names otherwise."""
    exporter = EXPORTERS.get(name.strip().lower())
    if exporter is None:
        raise ExportError(f"unknown export format {name!r}; valid formats: {', '.join(sorted(EXPORTERS))}")
    return exporter
