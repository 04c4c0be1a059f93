"""The exporter protocol (one implementation per engine) and the careful file writing they share.

Writing refuses to overwrite unless forced, creates folders, and replaces files atomically. Exporters decide
names and layout (through tuner.export.naming); they never read the results database.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, runtime_checkable

from tuner.errors import ExportError
from tuner.export.tables import ConfigTable, TunedTables, to_json_text
from tuner.kernels.base import MoeShape

__all__ = ["Exporter", "PlannedFile", "PlannedFilesExporter", "write_planned_files", "write_text_atomically"]


@dataclass(frozen=True)
class PlannedFile:
    """One file an exporter would write: where (relative to the output folder), with which top-level extras,
    and anything the user should know (a device name made safe, a fused expert vLLM does not count, ...)."""

    engine: str
    relative_path: PurePosixPath
    extra: Mapping[str, Any] = field(
        default_factory=dict, hash=False
    )  # top-level JSON keys before the M keys
    notes: tuple[str, ...] = ()
    role: str = "up"  # which table it holds: "up", "down" (SGLang's `_down` twin) or "single" (one for both GEMMs)

    @property
    def file_name(self) -> str:
        return self.relative_path.name

    def target(self, out_dir: Path) -> Path:
        return Path(out_dir).joinpath(*self.relative_path.parts)


@runtime_checkable
class Exporter(Protocol):
    """Turns one tuned ConfigTable into the file(s) one engine loads."""

    name: str

    def plan(self, shape: MoeShape, device_name: str, triton_version: str, down: bool = False) -> list[PlannedFile]:
        """The files `write` would create, relative to the output folder (`down`: a separate down table exists);
        writes nothing."""
        ...

    def write(
        self,
        out_dir: Path,
        shape: MoeShape,
        device_name: str,
        triton_version: str,
        table: ConfigTable | TunedTables,
        force: bool = False,
    ) -> list[Path]:
        """Write the planned files under `out_dir`; return their paths. ExportError if one exists and not force."""
        ...

    def usage_hint(self, out_dir: Path) -> str:
        """How to point the engine at `out_dir` (an environment variable assignment)."""
        ...


def as_tuned_tables(table: ConfigTable | TunedTables) -> TunedTables:
    return table if isinstance(table, TunedTables) else TunedTables(up=table)


def write_planned_files(
    out_dir: Path, planned: Sequence[PlannedFile], table: ConfigTable | TunedTables, force: bool = False
) -> list[Path]:
    """Write each planned file from the table of its role: all targets are checked before anything is written."""
    tables = as_tuned_tables(table)
    texts = [(item.target(out_dir), to_json_text(tables.for_role(item.role), extra=item.extra)) for item in planned]
    for target, _ in texts:
        if target.is_dir():
            raise ExportError(f"{target} is a folder, not a file; move it away to export there")
    existing = [target for target, _ in texts if target.exists()]
    if existing and not force:
        listed = ", ".join(str(p) for p in existing)
        raise ExportError(f"refusing to overwrite existing file(s): {listed}; pass --force to replace them")
    written = []
    for target, text in texts:
        write_text_atomically(target, text)
        written.append(target)
    return written


def write_text_atomically(path: Path, text: str) -> None:
    """Create parent folders, write to a temporary file beside `path`, then rename it over `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create folder {path.parent}: {exc.strerror or exc}") from exc
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name[:80]}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)


class PlannedFilesExporter:
    """Shared `write` for exporters whose files are exactly what `plan` says: subclasses define name, plan and
    usage_hint."""

    name: str

    def plan(self, shape: MoeShape, device_name: str, triton_version: str, down: bool = False) -> list[PlannedFile]:
        raise NotImplementedError

    def write(
        self,
        out_dir: Path,
        shape: MoeShape,
        device_name: str,
        triton_version: str,
        table: ConfigTable | TunedTables,
        force: bool = False,
    ) -> list[Path]:
        tables = as_tuned_tables(table)
        planned = self.plan(shape, device_name, triton_version, down=tables.down is not None)
        return write_planned_files(Path(out_dir), planned, tables, force)

