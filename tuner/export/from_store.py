"""Export tuned fused-MoE configs from the results database into the files engines load.

Shared by `tuner export`, `tuner kernel-sweep --export` and the service. It picks the sweep(s) matching a
model / parallelism, turns each sweep's best config per batch size into a ConfigTable and hands it to the
engine exporters; it never measures anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import ExportError
from tuner.export.registry import get_exporter
from tuner.export.tables import ConfigTable, TunedTables
from tuner.kernels.base import KernelConfig
from tuner.store.db import Database
from tuner.store.kernels import SweepRecord, list_sweeps, load_best_configs


@dataclass(frozen=True)
class ExportedFile:
    path: Path
    engine: str
    sweep_id: int
    notes: tuple[str, ...] = ()


def shape_of(sweep: SweepRecord) -> Any:
    """The stored sweep's shape, read back by its kernel family."""
    from tuner.kernels.family import get_family

    return get_family(sweep.kernel).shape_from_json(dict(sweep.shape))


def find_sweeps(db: Database, model: str, tp: int, ep: int = 1, device_name: str | None = None,
                shape_key: str | None = None) -> list[SweepRecord]:
    """The newest sweep per (device, Triton version, shape, kernel source) with best configs stored."""
    sweeps = [s for s in list_sweeps(db, model=model, device_name=device_name) if s.tp == tp and s.ep == ep]
    if shape_key:
        sweeps = [s for s in sweeps if s.shape_key == shape_key]
    newest: dict[tuple, SweepRecord] = {}
    for s in sorted(sweeps, key=lambda s: s.updated_at):
        if load_best_configs(db, s.id):
            newest[(s.device_name, s.triton_version, s.shape_key, s.kernel_source)] = s
    return list(newest.values())


def tables_of(db: Database, sweep: SweepRecord) -> TunedTables:
    """The sweep's best configs as the tables the exporters write: up, `_down` (only when some M has a down
    config of its own; the up config stands in at the other M) and the best single config per M."""
    best = load_best_configs(db, sweep.id)
    up = {m: KernelConfig.from_json_dict(b.config) for m, b in best.items()}
    down = None
    if any(b.down_config for b in best.values()):
        down = ConfigTable.from_mapping({
            m: KernelConfig.from_json_dict(b.down_config) if b.down_config else up[m] for m, b in best.items()})
    single = None
    if any(b.single_config for b in best.values()):
        single = ConfigTable.from_mapping({
            m: KernelConfig.from_json_dict(b.single_config) if b.single_config else up[m] for m, b in best.items()})
    return TunedTables(ConfigTable.from_mapping(up), down, single)


def proxy_note(sweep: SweepRecord, engine: str) -> str | None:
    """A warning when the files for `engine` were tuned in another kernel than `engine`'s own."""
    if sweep.kernel_source == engine:
        return None
    proxy = (sweep.notes or {}).get("proxy_for")
    what = f"tuner's own kernel as a proxy for {proxy}'s" if sweep.kernel_source == "tuner" else f"{sweep.kernel_source}'s kernel"
    return (f"sweep {sweep.id} was timed in {what}, not in {engine}'s: its ranking may not carry over; "
            f"re-run `tuner kernel-sweep` where {engine} is importable")


def export_sweeps(db: Database, sweeps: list[SweepRecord], out_dir: str | Path, formats: list[str],
                  force: bool = False) -> list[ExportedFile]:
    if not sweeps:
        raise ExportError("no finished sweep with tuned configs matches; run `tuner kernel-sweep` first "
                          "(`tuner export --list` shows what the database holds)")
    exporters = [get_exporter(f) for f in formats]
    out = Path(out_dir)
    written: list[ExportedFile] = []
    for sweep in sweeps:
        if sweep.kernel == "fp8_gemm":
            written += _export_gemm(db, sweep, out, formats, force)
            continue
        shape, tables = shape_of(sweep), tables_of(db, sweep)
        for exporter in exporters:
            planned = exporter.plan(shape, sweep.device_name, sweep.triton_version, down=tables.down is not None)
            notes = tuple(dict.fromkeys(n for p in planned for n in p.notes))
            proxy = proxy_note(sweep, exporter.name)
            if proxy:
                notes = (proxy, *notes)
            for path in exporter.write(out, shape, sweep.device_name, sweep.triton_version, tables, force=force):
                written.append(ExportedFile(path, exporter.name, sweep.id, notes))
    return written


def _export_gemm(db: Database, sweep: SweepRecord, out: Path, formats: list[str], force: bool) -> list[ExportedFile]:
    from tuner.export.gemm import gemm_files, write_gemm_files

    files = gemm_files(load_best_configs(db, sweep.id), sweep.device_name, shape_of(sweep), formats)
    result = []
    for f in write_gemm_files(out, files, sweep.id, force):
        notes = [n for n in (proxy_note(sweep, f.engine),) if n]
        if f.engine == "sglang":
            notes.append("SGLang reads GEMM configs only from its package folder "
                         "(sglang/kernels/ops/gemm/configs/): `tuner export --install` copies them there")
        result.append(ExportedFile(f.path, f.engine, sweep.id, tuple(notes)))
    return result


def usage_hints(out_dir: str | Path, formats: list[str]) -> list[str]:
    return [get_exporter(f).usage_hint(Path(out_dir)) for f in formats]
