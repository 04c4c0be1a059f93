"""`tuner export` for flag searches: write a stored study's result files (best config YAML, launch command,
JSON, Pareto PNG/CSV/JSON, trials CSV) into a folder for deployments. Reads the database only.
"""

from __future__ import annotations

from pathlib import Path

from tuner.search.flags.report import load_report, write_report
from tuner.store.db import Database


def export_flag_study(db: Database, study_name: str, out_dir: str | Path, force: bool = False) -> list[Path]:
    """Write the files of study `study_name` into `out_dir`; ExportError when it has no result or files
    exist (without `force`). Returns the paths written."""
    return write_report(load_report(db, study_name), out_dir, force=force)
