"""The kernel sweep as a job kind: a `KernelSweepRequest` (declared once; `tuner kernel-sweep`'s arguments and
the service's request body both derive from it) planned into one work unit per (sweep, batch size), claimed by
workers on GPUs of the device it is for.

The job's stored kind names the device (`kernel_sweep:NVIDIA H200`), so a worker only takes sweeps it can time:
the measurements are only valid on that device. Submitting the same request again returns the same job (its key
is the planned spec's hash), so a re-run resumes it; units that failed are queued again. One request may plan
several sweeps (`--kernel all`, or several GEMM shapes): one job, their units in order.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tuner.errors import NoGpuError, TunerError
from tuner.jobs import units
from tuner.jobs.context import WorkerContext
from tuner.jobs.fields import option, to_dict
from tuner.kernels.base import STANDARD_BATCH_SIZES
from tuner.kernels.family import get_family
from tuner.store.db import open_database

KIND = "kernel_sweep"
KERNELS = ("fused-moe", "fp8-gemm", "all")
KERNEL_SOURCES = ("auto", "tuner", "sglang", "vllm")
NO_GPU = ("no CUDA GPU is visible: kernel-sweep times kernels on an NVIDIA GPU. On this machine use "
          "`tuner kernel-sweep --model ... --interpret` for a correctness-only pass on the CPU.")


@dataclass(frozen=True, kw_only=True)
class KernelSweepRequest:
    """What a kernel sweep is asked for: the model and its parallelism, which kernel(s), the batch sizes and the
    search budget. `device_name` (torch.cuda.get_device_name(), e.g. "NVIDIA H200") is the GPU it is timed on;
    None means GPU 0 of the submitting host."""

    model: str = option(help="catalog name (see `tuner models list`), a config.json, or a folder holding one")
    tp: int = option(1, help="tensor-parallel size (default 1)")
    ep: int = option(1, help="expert-parallel size (default 1)")
    shared_experts_fusion: bool | None = option(
        None, help="fuse the shared expert into the MoE (E+1, top-k+1); default: what SGLang does",
        off_help="as SGLang's --disable-shared-experts-fusion")
    kernel: str = option("fused-moe", choices=KERNELS,
                         help="which kernel: the fused MoE (default), the dense layers' block-FP8 GEMM (one sweep "
                              "per (N, K) of the model, or --shapes), or both")
    shapes: str | None = option(None, help="with --kernel fp8-gemm: GEMM shapes as N,K pairs, e.g. "
                                "'576,7168 4096,512' (default: every block-FP8 dense layer of the model at --tp)")
    batch_sizes: str | None = option(None, help="comma-separated M values (default: the 18 standard ones)")
    exhaustive: bool = option(False, help="measure the whole config space of SGLang's tuner (slow; for comparison)")
    budget: int = option(32, help="up-GEMM configs measured per batch size by the adaptive search")
    down_budget: int = option(16, help="down-GEMM configs per batch size, and as many up configs given the best "
                                       "down, where the engine reads _down files")
    kernel_source: str = option("auto", choices=KERNEL_SOURCES,
                                help="whose kernel to time: the engine's own when importable (auto; else ours, as "
                                     "a proxy that the output flags), or ours")
    routing: str | None = option(None, help="a torch file with recorded top-k ids [T, k] to sample routing from")
    seed: int = option(0, help="seeds the search")
    device_name: str | None = None  # not a command-line option: the CLI sweeps on its own GPU


@dataclass(frozen=True)
class SweepPlan:
    """A request resolved: the sweeps to run (tuner.search.kernel_sweep.SweepSpec, one per kernel shape), the
    device they are for, and the lines worth telling the user (the shapes, notes)."""

    request: KernelSweepRequest
    device_name: str
    specs: tuple[Any, ...]
    lines: tuple[str, ...]


def parse_batch_sizes(text: str | None) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4), sorted and deduplicated; None or '' -> the 18 standard ones. TunerError if bad."""
    if not text:
        return STANDARD_BATCH_SIZES
    try:
        sizes = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise TunerError(f"--batch-sizes must be comma-separated positive integers, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise TunerError(f"--batch-sizes must be comma-separated positive integers, got {text!r}")
    return sizes


def _visible_device_name() -> str | None:
    """GPU 0's name here (torch.cuda.get_device_name(0)); None without a GPU."""
    import torch

    return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None


def sweep_shapes(request: KernelSweepRequest, device_name: str | None,
                 say: Callable[[str], None] = lambda _line: None) -> tuple[Any, Any, list[Any]]:
    """(model config, fused-MoE shape or None, GEMM shapes) of a request; everything a user can get wrong
    (model, batch sizes, --shapes, the routing file) is checked here, before any GPU work or database row."""
    from tuner.models.config import load_model_config
    from tuner.models.fusion import FusionDevice
    from tuner.models.shapes import derive_moe_shape

    cfg = load_model_config(request.model)
    parse_batch_sizes(request.batch_sizes)
    moe = request.kernel in ("fused-moe", "all")
    fusion_device = FusionDevice.from_device_name(device_name) if device_name else None
    shape = derive_moe_shape(cfg, tp=request.tp, ep=request.ep, shared_experts_fusion=request.shared_experts_fusion,
                             device=fusion_device) if moe else None
    if request.routing and shape is not None:
        from tuner.kernels.fused_moe.problem import load_routing_trace

        load_routing_trace(request.routing, shape)
    return cfg, shape, _gemm_shapes(request, cfg, say)


def _gemm_shapes(request: KernelSweepRequest, cfg: Any, say: Callable[[str], None]) -> list[Any]:
    """--shapes, else the model's block-FP8 dense layers; none for --kernel fused-moe. With --kernel all, a model
    that is not block-FP8 simply has none (said once)."""
    from tuner.errors import ModelConfigError
    from tuner.models.gemm_shapes import derive_gemm_shapes, parse_gemm_shapes, weight_block_shape

    if request.kernel == "fused-moe":
        if request.shapes:
            raise TunerError("--shapes is for --kernel fp8-gemm or all")
        return []
    if request.shapes:
        return parse_gemm_shapes(request.shapes, weight_block_shape(cfg) or (128, 128))
    try:
        return derive_gemm_shapes(cfg, tp=request.tp)
    except ModelConfigError as exc:
        if request.kernel == "all" and "not a block-FP8" in str(exc):
            say(f"note: {exc}")
            return []
        raise


def plan(request: KernelSweepRequest) -> SweepPlan:
    """The sweeps of `request` on its device (default: GPU 0 here, NoGpuError without one). TunerError with one
    line for a bad model, batch size list, shape list, routing file or budget."""
    for flag, value in (("--budget", request.budget), ("--down-budget", request.down_budget)):
        if value < 1:
            raise TunerError(f"{flag} must be a positive number of configs, got {value}")
    for flag, value in (("--tp", request.tp), ("--ep", request.ep)):
        if value < 1:
            raise TunerError(f"{flag} must be a positive number of GPUs, got {value}")
    notes: list[str] = []
    device_name = request.device_name or _visible_device_name()
    cfg, shape, gemm_shapes = sweep_shapes(request, device_name, notes.append)
    if device_name is None:
        raise NoGpuError(NO_GPU)
    from tuner.search.kernel_sweep import SweepSpec

    common: dict[str, Any] = {
        "model": cfg.name, "tp": request.tp, "ep": request.ep, "batch_sizes": parse_batch_sizes(request.batch_sizes),
        "strategy": "exhaustive" if request.exhaustive else "adaptive", "budget": request.budget,
        "down_budget": request.down_budget, "seed": request.seed,
        "kernel_source": None if request.kernel_source == "auto" else request.kernel_source}
    specs, lines = [], list(notes)
    if shape is not None:
        lines.append(f"{cfg.name} TP{request.tp} EP{request.ep}: {shape.key}")
        specs.append(SweepSpec(shared_experts_fusion=shape.fused_shared_experts > 0, shape=shape,
                               routing_path=request.routing, **common))
    for g in gemm_shapes:
        lines.append(f"{cfg.name} TP{request.tp}: FP8 GEMM {g.key} ({', '.join(g.layers)})")
        specs.append(SweepSpec(shared_experts_fusion=False, shape=g, kernel="fp8_gemm", **common))
    return SweepPlan(request, device_name, tuple(specs), tuple(lines))


def kind_for(device_name: str) -> str:
    """The stored job kind of a sweep timed on `device_name` (torch.cuda.get_device_name())."""
    return f"{KIND}:{device_name}"


def spec_to_json(spec: Any) -> dict[str, Any]:
    """A SweepSpec as stored: every field, the shape as its family stores it."""
    data = dataclasses.asdict(spec)
    data["shape"] = get_family(spec.kernel).shape_to_json(spec.shape)
    data["batch_sizes"] = list(spec.batch_sizes)
    return data


def spec_from_json(data: dict[str, Any]) -> Any:
    from tuner.search.kernel_sweep import SweepSpec

    fields = dict(data)
    fields["shape"] = get_family(fields.get("kernel", "fused_moe")).shape_from_json(fields["shape"])
    fields["batch_sizes"] = tuple(fields["batch_sizes"])
    return SweepSpec(**fields)


def sweep_units(specs: list[Any]) -> list[tuple[str, dict[str, Any], int]]:
    """The units of a job of `specs`: one search per (sweep, batch size) (stage 0) and, for an adaptive sweep of
    several batch sizes, a second pass per batch size (stage 1, claimed once every first pass of the job has ended)
    that also measures the other batch sizes' finalists there, so the result depends neither on the order nor on
    how many workers shared the batch sizes.

    Units are claimed in the order listed: largest batch size first within each stage, as a larger M takes longer
    (longer timing, more candidates pass the correctness check). Several GPU workers sharing a stage then end it
    on the short units, not with one GPU still on M=4096 while the others wait for the next stage (issue #16)."""
    several = len(specs) > 1
    first: list[tuple[str, dict[str, Any], int]] = []
    second: list[tuple[str, dict[str, Any], int]] = []
    for i, spec in enumerate(specs):
        label = f"{_sweep_label(spec)} " if several else ""
        largest_first = sorted(spec.batch_sizes, reverse=True)
        first += [(f"{label}M={m}", {"sweep": i, "batch_size": m}, 0) for m in largest_first]
        if spec.strategy == "adaptive" and len(spec.batch_sizes) > 1:
            second += [(f"{label}second pass M={m}", {"sweep": i, "batch_size": m, "phase": "refine"}, 1)
                       for m in largest_first]
    return first + second


def stored_specs(job: units.JobRecord) -> list[Any]:
    """The SweepSpecs of a stored job (a job stored before requests held several sweeps is one spec itself)."""
    sweeps = job.spec.get("sweeps")
    if isinstance(sweeps, list):
        return [spec_from_json(s) for s in sweeps]  # type: ignore[arg-type]
    return [spec_from_json(dict(job.spec))]


def _sweep_label(spec: Any) -> str:
    return "fused_moe" if spec.kernel == "fused_moe" else f"{spec.kernel} {spec.shape.key}"


def persist(database_url: str, sweep_plan: SweepPlan) -> units.JobRecord:
    """Create (or find) the job of a plan, its units as `sweep_units`; units a failed run left failed are queued
    again."""
    if not sweep_plan.specs:
        raise TunerError(f"nothing to sweep for {sweep_plan.request.model} with --kernel {sweep_plan.request.kernel}")
    spec_json = {"request": to_dict(sweep_plan.request), "device_name": sweep_plan.device_name,
                 "sweeps": [spec_to_json(s) for s in sweep_plan.specs]}
    db = open_database(database_url)
    try:
        job = units.create_job(db, kind_for(sweep_plan.device_name), spec_json,  # type: ignore[arg-type]
                               sweep_units(list(sweep_plan.specs)))
        if job.state == "failed":
            units.requeue_failed(db, job.id)
            job = units.get_job(db, job.id)
        return job
    finally:
        db.dispose()


# -------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class BatchOutcome:
    """The config a sweep exports at one batch size M, and the engine's choice and default there (us per call)."""

    batch_size: int
    config_key: str
    latency_us: float
    engine_latency_us: float | None
    default_latency_us: float | None
    kept_engine_choice: bool | None


@dataclass(frozen=True)
class SweepOutcome:
    kernel: str  # "fused_moe" or "fp8_gemm"
    model: str
    tp: int
    ep: int
    shape_key: str
    device_name: str
    sweep_id: int | None  # None while nothing is stored
    batches: tuple[BatchOutcome, ...]  # the batch sizes done so far, ascending


@dataclass(frozen=True)
class KernelSweepResult:
    job_id: int
    state: str
    sweeps: tuple[SweepOutcome, ...]


def _best_of(db: Any, spec: Any, device_name: str | None) -> tuple[int | None, dict[int, Any]]:
    from tuner.store.kernels import list_sweeps, load_best_configs

    key = get_family(spec.kernel).shape_key(spec.shape)
    sweeps = [s for s in list_sweeps(db, model=spec.model, device_name=device_name) if s.shape_key == key
              and s.tp == spec.tp and s.ep == spec.ep and s.kernel == spec.kernel]
    if not sweeps:
        return None, {}
    best = load_best_configs(db, sweeps[0].id)
    return sweeps[0].id, {m: b for m, b in best.items() if m in set(spec.batch_sizes)}


def sweep_result(database_url: str, job: units.JobRecord) -> KernelSweepResult | None:
    """What the job's sweeps have stored so far; None while no batch size is done."""
    device_name = job.spec.get("device_name") or job.kind.partition(":")[2] or None
    db = open_database(database_url)
    try:
        outcomes = []
        for spec in stored_specs(job):
            sweep_id, best = _best_of(db, spec, device_name)  # type: ignore[arg-type]
            outcomes.append(SweepOutcome(
                spec.kernel, spec.model, spec.tp, spec.ep, get_family(spec.kernel).shape_key(spec.shape),
                str(device_name), sweep_id,
                tuple(BatchOutcome(m, b.config_key, b.latency_us, b.engine_latency_us, b.default_latency_us,
                                   b.kept_engine_choice) for m, b in sorted(best.items()))))
    finally:
        db.dispose()
    if not any(o.batches for o in outcomes):
        return None
    return KernelSweepResult(job.id, job.state, tuple(outcomes))


def sweep_results(database_url: str, spec: Any, device_name: str | None = None) -> list[str]:
    """The closing summary of the newest stored sweep of `spec` (on `device_name`, or any device) (see
    tuner.search.report)."""
    from tuner.search.report import sweep_summary

    db = open_database(database_url)
    try:
        sweep_id, best = _best_of(db, spec, device_name)
        if sweep_id is None:
            return ["no sweep stored for this spec"]
        return sweep_summary(best)
    finally:
        db.dispose()


# ------------------------------------------------------------------------------------------------ the worker


class SweepHandler:
    """Runs a kernel-sweep job's units (one (sweep, batch size) each) on this worker's GPU, one `SweepSession`
    per sweep, opened when its first unit comes and kept across the job's units."""

    def __init__(self, job: units.JobRecord, context: WorkerContext) -> None:
        if context.device_index is None:
            raise TunerError(f"job #{job.id} is a kernel sweep: it runs on a GPU worker (`tuner worker --gpu N`)")
        self.specs = stored_specs(job)
        self.context = context
        self.sessions: dict[int, Any] = {}

    def run(self, unit: units.UnitRecord) -> dict[str, Any]:
        from tuner.search.kernel_sweep import SweepSession, batch_line

        t0 = time.perf_counter()
        index = int(unit.payload.get("sweep", 0))  # type: ignore[arg-type]
        session_start_s = 0.0
        if index not in self.sessions:
            # One session open at a time: each holds its weights and a compile pool whose processes each keep a
            # CUDA context, so a job of many sweeps (13 GEMM shapes) would run the GPU out of memory.
            self._close_sessions()
            ctx = self.context
            self.sessions[index] = SweepSession(self.specs[index], ctx.database_url, ctx.device_index or 0,
                                                ctx.compile_workers, ctx.print_fn, pool=ctx.compile_pool)
            session_start_s = time.perf_counter() - t0
        session = self.sessions[index]
        waited_before = session.pool.wait_s
        refine = unit.payload.get("phase") == "refine"
        result = session.run_batch(int(unit.payload["batch_size"]), refine=refine)  # type: ignore[arg-type]
        self.context.say(("second pass " if refine else "") + batch_line(result))
        # where the unit's time went (wall seconds), so a slow sweep can be explained from the database alone:
        # opening the session (engine kernel, weights, compile pool), waiting on compiles, timing on the GPU
        timing_s = {"unit": time.perf_counter() - t0, "session_start": session_start_s,
                    "compile_wait": session.pool.wait_s - waited_before, "gpu": result.gpu_seconds}
        if session_start_s:  # the unit that opened the session: its start-up's parts too
            timing_s |= {f"session_{k}": v for k, v in session.start_s.items()}
        return {"best": result.best.key if result.best else None, "latency_us": result.best_latency_us,
                "engine_latency_us": result.engine_latency_us, "default_latency_us": result.default_latency_us,
                "kept_engine_choice": result.kept_engine_choice, "measured": result.measured,
                "timing_s": {k: round(v, 3) for k, v in timing_s.items()}}

    def close(self) -> None:
        self._close_sessions()

    def _close_sessions(self) -> None:
        while self.sessions:
            _, session = self.sessions.popitem()
            try:
                session.mark("finished")
            finally:
                session.close()


class KernelSweepKind:
    """The kernel_sweep job kind (tuner.jobs.kinds)."""

    name = KIND
    title = "Kernel sweep"
    request_type = KernelSweepRequest

    def needs_gpu(self, job: units.JobRecord) -> bool:
        return True

    def claims(self, context: WorkerContext) -> list[str]:
        if context.device_index is None:
            return []
        import torch

        return [kind_for(torch.cuda.get_device_name(context.device_index))]

    def submit(self, database_url: str, request: Any) -> units.JobRecord:
        if not isinstance(request, KernelSweepRequest):
            raise TunerError(f"a kernel sweep is submitted with a KernelSweepRequest, not {type(request).__name__}")
        return persist(database_url, plan(request))

    def handler(self, job: units.JobRecord, context: WorkerContext) -> SweepHandler:
        return SweepHandler(job, context)

    def result(self, database_url: str, job: units.JobRecord) -> KernelSweepResult | None:
        return sweep_result(database_url, job)
