"""Export tuned kernel configs as the JSON files SGLang and vLLM load (names, tables, writers).

The `tuner export` command (which reads the database) lives in tuner/commands/export.py, not here.
"""

from tuner.export.base import Exporter, PlannedFile
from tuner.export.registry import EXPORTERS, get_exporter
from tuner.export.tables import ConfigTable, nearest_config, parse_config_file, to_json_text

__all__ = [
    "EXPORTERS",
    "ConfigTable",
    "Exporter",
    "PlannedFile",
    "get_exporter",
    "nearest_config",
    "parse_config_file",
    "to_json_text",
]
