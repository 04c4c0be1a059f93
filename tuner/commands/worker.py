"""`tuner worker`: take work units from the database and run them on this host's GPU (or, with --cpu, the kinds
that need none)."""

from __future__ import annotations

import argparse

from tuner.errors import TunerError
from tuner.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker", help="run queued work units from the database on a local GPU, or --cpu (many hosts may share it)",
        description="Claim work units from the database (a batch size of a kernel sweep for this GPU's device, an "
        "engine launch of a flag search, an export), keep their leases alive while they run, and record the "
        "results. Several workers on several hosts share one database (PostgreSQL via TUNER_DATABASE_URL for "
        "more than one host); a worker that dies leaves its unit to be taken over when its lease ends. With "
        "--cpu the worker takes only what needs no GPU: exports and flag searches of the simulated engine. "
        "Queue work with `tuner kernel-sweep` (or the service).",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--gpu", type=int, help="local GPU index (default 0)")
    where.add_argument("--cpu", action="store_true", help="no GPU: take only the job kinds that need none")
    p.add_argument("--job", type=int, action="append", help="only units of this job id (repeatable)")
    p.add_argument("--stay", action="store_true", help="keep polling for new work instead of exiting when idle")
    p.add_argument("--compile-workers", type=int, help="parallel compile processes (default: cores - 1, at most 16)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.jobs.worker import cpu_work, gpu_work

    if args.cpu:
        summary = cpu_work(settings.resolved_database_url, job_ids=args.job, stay=args.stay, print_fn=print)
    else:
        import torch

        from tuner.errors import NoGpuError

        gpu = 0 if args.gpu is None else args.gpu
        if not torch.cuda.is_available():
            raise NoGpuError("no CUDA GPU is visible: `tuner worker` runs kernel-sweep units on a local NVIDIA GPU; "
                             "`tuner worker --cpu` takes the work that needs no GPU")
        if not 0 <= gpu < torch.cuda.device_count():
            raise TunerError(f"--gpu {gpu}: this machine has GPUs 0..{torch.cuda.device_count() - 1}")
        summary = gpu_work(settings.resolved_database_url, gpu, job_ids=args.job,
                           compile_workers=args.compile_workers, stay=args.stay, print_fn=print)
    print(f"worker {summary.worker_id}: {len(summary.done)} units done, {len(summary.failed)} failed")
    return 1 if summary.failed else 0
