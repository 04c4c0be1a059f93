"""Export as a job kind: write a kernel sweep's tuned configs (SGLang / vLLM files in each engine's folder
layout) or a flag study's best config (--config YAML, launch command, JSON, Pareto front) from the database into
a folder, as one work unit on any CPU worker. `export_archive` zips what a job wrote, paths relative to its
folder (so the engine's layout is kept), for the service to serve as a download.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import ExportError, TunerError
from tuner.jobs import units
from tuner.jobs.context import WorkerContext
from tuner.jobs.fields import from_dict, option, to_dict
from tuner.settings import Settings
from tuner.store.db import open_database

KIND = "export"
FORMATS = ("sglang", "vllm")


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """What to export: the kernel sweeps of `model` at `tp`/`ep` (optionally only those timed on `device_name`),
    or, with `flag_study`, that flag study's best config; `formats` (comma-separated) for sweeps; `out` the
    folder (default: <data dir>/exports/<a hash of the request> on the worker's host)."""

    model: str | None = option(None, help="model name as given to kernel-sweep (catalog name or path)")
    tp: int = option(1, help="tensor-parallel size (default 1)")
    ep: int = option(1, help="expert-parallel size (default 1)")
    device_name: str | None = option(None, help='only sweeps on this GPU, e.g. "NVIDIA H100 80GB HBM3"')
    flag_study: str | None = option(None, metavar="NAME", help="instead of kernel configs: a flag study's best config")
    formats: str = option("sglang,vllm", help="comma-separated: sglang, vllm (default both)")
    out: str | None = option(None, help="output folder")
    force: bool = option(False, help="overwrite existing files")

    def __post_init__(self) -> None:
        if not self.model and not self.flag_study:
            raise TunerError("an export needs --model (kernel configs) or --flag-study NAME")
        if self.model and self.flag_study:
            raise TunerError("give either --model (kernel configs) or --flag-study NAME, not both")
        bad = [f for f in self.format_list if f not in FORMATS]
        if bad or not self.format_list:
            raise TunerError(f"--formats {self.formats!r}: use a comma-separated list of {', '.join(FORMATS)}")

    @property
    def format_list(self) -> list[str]:
        return [f.strip() for f in self.formats.split(",") if f.strip()]


@dataclass(frozen=True)
class ExportResult:
    """The folder a job wrote and every file in it (absolute paths), with notes worth showing once each."""

    job_id: int
    state: str
    out_dir: str
    files: tuple[str, ...]
    notes: tuple[str, ...]


def out_dir_of(request: ExportRequest, settings: Settings) -> Path:
    if request.out:
        return Path(request.out).expanduser()
    digest = hashlib.sha256(json.dumps(to_dict(request), sort_keys=True).encode()).hexdigest()[:12]
    return settings.data_dir / "exports" / digest


def run_export(database_url: str, request: ExportRequest, out: Path) -> tuple[list[Path], list[str]]:
    """Write the files of `request` into `out`: (paths written, notes). ExportError when nothing matches or a
    file exists (without force)."""
    from tuner.paths import writable_folder

    writable_folder(str(out), "the export folder")
    db = open_database(database_url)
    try:
        if request.flag_study:
            from tuner.search.flags.export import export_flag_study

            return export_flag_study(db, request.flag_study, out, force=request.force), []
        from tuner.export.from_store import export_sweeps, find_sweeps, usage_hints
        from tuner.models.config import load_model_config

        name = load_model_config(str(request.model)).name
        sweeps = find_sweeps(db, name, request.tp, request.ep, device_name=request.device_name)
        written = export_sweeps(db, sweeps, out, request.format_list, request.force)
        notes = list(dict.fromkeys(n for f in written for n in f.notes))
        return [f.path for f in written], notes + usage_hints(out, request.format_list)
    finally:
        db.dispose()


def submit(database_url: str, request: ExportRequest) -> units.JobRecord:
    """Create (or find) the export job: one unit. A finished export submitted again is the same job (its files
    are written once); a failed one is queued again."""
    db = open_database(database_url)
    try:
        job = units.create_job(db, KIND, {"request": to_dict(request)}, [("export", {})])
        if job.state == "failed":
            units.requeue_failed(db, job.id)
            job = units.get_job(db, job.id)
        return job
    finally:
        db.dispose()


class ExportHandler:
    def __init__(self, job: units.JobRecord, context: WorkerContext) -> None:
        self.request = from_dict(ExportRequest, job.spec["request"])  # type: ignore[arg-type]
        self.context = context

    def run(self, unit: units.UnitRecord) -> dict[str, Any]:
        out = out_dir_of(self.request, Settings.from_env().with_overrides(database_url=self.context.database_url))
        paths, notes = run_export(self.context.database_url, self.request, out)
        for path in paths:
            self.context.say(f"wrote {path}")
        return {"out_dir": str(out.resolve()), "files": [str(Path(p).resolve()) for p in paths], "notes": notes}

    def close(self) -> None:
        pass


def result_of(database_url: str, job: units.JobRecord) -> ExportResult | None:
    """The files written; None until the unit is done."""
    db = open_database(database_url)
    try:
        done = [u for u in units.list_units(db, job.id) if u.state == "done" and u.result]
        state = units.get_job(db, job.id).state
    finally:
        db.dispose()
    if not done:
        return None
    r = done[0].result or {}
    return ExportResult(job.id, state, str(r["out_dir"]), tuple(map(str, r["files"])),  # type: ignore[arg-type]
                        tuple(map(str, r.get("notes") or ())))  # type: ignore[arg-type]


def export_archive(result: ExportResult) -> bytes:
    """A zip of the files an export wrote, named by their paths under its folder (the engine's layout:
    configs/triton_X/..., vllm/..., GEMM folders; for a flag study best-config.yaml for the engine's --config
    and launch-command.txt with the launch flags). ExportError naming a file that is gone."""
    base = Path(result.out_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in result.files:
            path = Path(name)
            if not path.is_file():
                raise ExportError(f"{path} (written by export job #{result.job_id}) is gone; run the export again")
            try:
                arcname = path.relative_to(base)
            except ValueError:
                arcname = Path(path.name)
            archive.write(path, arcname.as_posix())
        if result.notes:
            archive.writestr("NOTES.txt", "\n".join(result.notes) + "\n")
    return buffer.getvalue()


class ExportKind:
    """The export job kind (tuner.jobs.kinds): needs no GPU."""

    name = KIND
    title = "Export"
    request_type = ExportRequest

    def needs_gpu(self, job: units.JobRecord) -> bool:
        return False

    def claims(self, context: WorkerContext) -> list[str]:
        return [KIND] if context.device_index is None else []

    def submit(self, database_url: str, request: Any) -> units.JobRecord:
        if not isinstance(request, ExportRequest):
            raise TunerError(f"an export is submitted with an ExportRequest, not {type(request).__name__}")
        return submit(database_url, request)

    def handler(self, job: units.JobRecord, context: WorkerContext) -> ExportHandler:
        return ExportHandler(job, context)

    def result(self, database_url: str, job: units.JobRecord) -> ExportResult | None:
        return result_of(database_url, job)
