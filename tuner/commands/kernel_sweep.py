"""`tuner kernel-sweep`: search fused-MoE / block-FP8 GEMM Triton configs for a model on the local GPU(s), then
export. Its options are tuner.jobs.kernel_sweep.KernelSweepRequest (the service's request body too) plus what
only a local run has (GPUs, compile processes, --interpret, --export); the work is the kernel_sweep job kind."""

from __future__ import annotations

import argparse
import contextlib

from tuner.errors import NoGpuError, TunerError
from tuner.jobs.fields import add_arguments, from_namespace
from tuner.jobs.kernel_sweep import NO_GPU, KernelSweepRequest
from tuner.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "kernel-sweep",
        help="tune fused-MoE Triton configs for a model on this GPU and export engine config files",
        description="Search BLOCK_SIZE_M/N/K, GROUP_SIZE_M, num_warps, num_stages of the fused-MoE kernel for "
        "every batch size; every config is checked against a float32 reference before it is timed; every "
        "measurement is stored as it arrives and a re-run resumes.",
    )
    add_arguments(p, KernelSweepRequest)
    p.add_argument("--gpus", help="comma-separated GPU indices; one worker process per GPU (default: 0)")
    p.add_argument("--compile-workers", type=int, help="parallel compile processes (default: CPU cores - 1, at most 16)")
    p.add_argument("--export", metavar="DIR", help="after the sweep, export config files into DIR")
    p.add_argument("--format", default="sglang,vllm", help="export formats, comma-separated (default: sglang,vllm)")
    p.add_argument("--force", action="store_true", help="with --export: overwrite existing files")
    p.add_argument("--interpret", action="store_true",
                   help="no GPU: correctness-only pass of our kernel at tiny shapes under TRITON_INTERPRET=1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.jobs import kernel_sweep

    request = from_namespace(KernelSweepRequest, args)
    if args.interpret:
        _, shape, _ = kernel_sweep.sweep_shapes(request, _local_device_name(), print)
        if shape is None:
            raise TunerError("--interpret checks the fused-MoE kernel; the GEMM's interpreter check is in the tests")
        # imported only now: the kernels must be defined after --interpret has switched Triton to its interpreter
        from tuner.search.interpret_check import run_interpret_check

        return run_interpret_check(shape, print_fn=print)
    url = settings.resolved_database_url
    if args.gpus:
        _gpu_indices(args.gpus)  # a malformed list is said first, on any host
    with contextlib.ExitStack() as stack:
        workers = None
        if args.gpus and "," in args.gpus and _nvidia_devices_present():
            # several GPUs: their workers start first, before this process imports torch and plans the job (an
            # index this host lacks is refused below, and the workers stopped)
            from tuner.jobs.worker import GpuWorkers, per_gpu_compile_workers

            gpus = _gpu_indices(args.gpus)
            if len(gpus) > 1:
                workers = stack.enter_context(GpuWorkers(
                    url, gpus, compile_workers=per_gpu_compile_workers(gpus, args.compile_workers),
                    kernels=_warm_kernels(request)))
        plan = kernel_sweep.plan(request)  # checks the request (one line per mistake), then that a GPU is here
        gpus = _parse_gpus(args.gpus)
        pool = None
        if workers is None:  # one GPU, this process: its compile processes start while the job is stored
            from tuner.search.compile_pool import CompilePool

            pool = stack.enter_context(CompilePool(gpus[0], args.compile_workers, warm=_warm_kernels(request)))
        for line in plan.lines:
            print(line)
        job = kernel_sweep.persist(url, plan)
        sizes = len(plan.specs[0].batch_sizes)
        print(f"job #{job.id}: {sizes} batch sizes x {len(plan.specs)} sweep(s) on {len(gpus)} GPU(s); "
              "re-running this command resumes it")
        if workers is not None:
            workers.start([job.id])
            failed = workers.join()
            if failed:
                raise TunerError(f"the sweep worker(s) on GPU {failed} failed; re-run the same command to resume")
        else:
            from tuner.jobs.worker import gpu_work

            gpu_work(url, gpus[0], job_ids=[job.id], compile_workers=args.compile_workers, print_fn=print,
                     compile_pool=pool)
    for spec in plan.specs:
        for line in kernel_sweep.sweep_results(url, spec, plan.device_name):
            print(("" if spec.kernel == "fused_moe" else f"FP8 GEMM {spec.shape.key}: ") + line)
    if args.export:
        from tuner.commands.export import export_latest, print_exported

        print_exported(export_latest(settings, model=plan.specs[0].model, tp=request.tp, ep=request.ep,
                                     out_dir=args.export, formats=args.format, force=args.force,
                                     shape_keys=[s.shape.key for s in plan.specs]))
    return _report_failed_units(url, job.id)


def _report_failed_units(url: str, job_id: int) -> int:
    """1 and one line per distinct error when units of the job failed (their batch sizes have no result), else 0."""
    from tuner.jobs import units
    from tuner.store.db import open_database

    db = open_database(url)
    try:
        failed = units.list_units(db, job_id, states=("failed",))
    finally:
        db.dispose()
    if not failed:
        return 0
    errors: dict[str, list[str]] = {}
    for unit in failed:
        errors.setdefault((unit.error or "unknown error").splitlines()[0], []).append(unit.key)
    for error, keys in errors.items():
        print(f"error: {len(keys)} unit(s) failed ({', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}): {error}")
    print(f"{len(failed)} unit(s) of job #{job_id} failed; re-run the same command to retry them")
    return 1


def _warm_kernels(request: KernelSweepRequest) -> list[tuple[str, str | None]]:
    """(family, kernel source) pairs the early-started GPU workers import while the job is planned."""
    families = {"fused-moe": ["fused_moe"], "fp8-gemm": ["fp8_gemm"]}.get(request.kernel, ["fused_moe", "fp8_gemm"])
    source = None if request.kernel_source == "auto" else request.kernel_source
    return [(f, source) for f in families]


def _local_device_name() -> str | None:
    """The local GPU's name (SGLang's shared-expert fusion rule depends on it); None (sm90) without one."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _nvidia_devices_present() -> bool:
    """Whether this host has NVIDIA device nodes (/dev/nvidia0, ...): a check that needs no torch import, so the
    GPU workers can start before this process pays for one."""
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*"))


def _gpu_indices(text: str) -> list[int]:
    """'0,1' -> [0, 1]; TunerError with one line if it is not a list of integers."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise TunerError(f"--gpus must be comma-separated GPU indices, got {text!r}") from None


def _parse_gpus(text: str | None) -> list[int]:
    import torch

    if not torch.cuda.is_available():
        raise NoGpuError(NO_GPU)
    count = torch.cuda.device_count()
    if not text:
        return [0]
    gpus = _gpu_indices(text)
    bad = [g for g in gpus if not 0 <= g < count]
    if bad or not gpus:
        raise TunerError(f"--gpus {text}: this machine has GPUs 0..{count - 1}")
    return gpus
