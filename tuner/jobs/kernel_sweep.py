"""The kernel sweep as a job: one work unit per batch size, claimed by workers on GPUs of the device it is for.

The job's kind names the device (`kernel_sweep:NVIDIA H200`), so a worker only takes sweeps it can time: the
measurements are only valid on that device. Planning the same sweep again returns the same job (its key is the
spec's hash), so a re-run resumes it; units that failed are queued again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tuner.jobs import units
from tuner.kernels.family import get_family
from tuner.search.kernel_sweep import SweepSpec
from tuner.store.db import open_database

KIND = "kernel_sweep"


def kind_for(device_name: str) -> str:
    """The job kind of a sweep timed on `device_name` (torch.cuda.get_device_name())."""
    return f"{KIND}:{device_name}"


def spec_to_json(spec: SweepSpec) -> dict[str, Any]:
    """The job spec as stored: every SweepSpec field, the shape as its family stores it."""
    data = dataclasses.asdict(spec)
    data["shape"] = get_family(spec.kernel).shape_to_json(spec.shape)
    data["batch_sizes"] = list(spec.batch_sizes)
    return data


def spec_from_json(data: dict[str, Any]) -> SweepSpec:
    fields = dict(data)
    fields["shape"] = get_family(fields.get("kernel", "fused_moe")).shape_from_json(fields["shape"])
    fields["batch_sizes"] = tuple(fields["batch_sizes"])
    return SweepSpec(**fields)


def sweep_units(spec: SweepSpec) -> list[tuple[str, dict[str, Any], int]]:
    """The units of a sweep: one search per batch size (stage 0) and, for an adaptive sweep of several batch sizes,
    a second pass per batch size (stage 1, once every first pass has ended) that also measures the other batch
    sizes' finalists there, so the result does not depend on the order or on how many workers shared the M."""
    first = [(f"M={m}", {"batch_size": m}, 0) for m in spec.batch_sizes]
    if spec.strategy != "adaptive" or len(spec.batch_sizes) < 2:
        return first
    return first + [(f"refine M={m}", {"batch_size": m, "phase": "refine"}, 1) for m in spec.batch_sizes]


def plan_sweep(database_url: str, spec: SweepSpec, device_name: str | None = None) -> units.JobRecord:
    """Create (or find) the job for `spec` on `device_name` (default: GPU 0 here), its units as `sweep_units`;
    units a failed run left failed are queued again."""
    if device_name is None:
        import torch

        device_name = torch.cuda.get_device_name(0)
    db = open_database(database_url)
    try:
        job = units.create_job(db, kind_for(device_name), spec_to_json(spec), sweep_units(spec))
        if job.state == "failed":
            units.requeue_failed(db, job.id)
            job = units.get_job(db, job.id)
        return job
    finally:
        db.dispose()


def sweep_results(database_url: str, spec: SweepSpec) -> list[str]:
    """The closing summary of the newest stored sweep of `spec` on any device (see tuner.search.report)."""
    from tuner.search.report import sweep_summary
    from tuner.store.kernels import list_sweeps, load_best_configs

    db = open_database(database_url)
    try:
        key = get_family(spec.kernel).shape_key(spec.shape)
        sweeps = [s for s in list_sweeps(db, model=spec.model) if s.shape_key == key and s.tp == spec.tp
                  and s.ep == spec.ep and s.kernel == spec.kernel]
        if not sweeps:
            return ["no sweep stored for this spec"]
        best = load_best_configs(db, sweeps[0].id)
        return sweep_summary({m: b for m, b in best.items() if m in set(spec.batch_sizes)})
    finally:
        db.dispose()
