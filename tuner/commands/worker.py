"""`tuner worker`: take work units from the database and run them on this host's GPU(s)."""

from __future__ import annotations

import argparse

from tuner.errors import TunerError
from tuner.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker", help="run queued kernel-sweep units from the database on a local GPU (many hosts may share it)",
        description="Claim work units (one batch size of a kernel sweep each) for this GPU's device from the "
        "database, keep their leases alive while they run, and record the results. Several workers on several "
        "hosts share one database (PostgreSQL via TUNER_DATABASE_URL for more than one host); a worker that dies "
        "leaves its unit to be taken over when its lease ends. Queue work with `tuner kernel-sweep`.",
    )
    p.add_argument("--gpu", type=int, default=0, help="local GPU index (default 0)")
    p.add_argument("--job", type=int, action="append", help="only units of this job id (repeatable)")
    p.add_argument("--stay", action="store_true", help="keep polling for new work instead of exiting when idle")
    p.add_argument("--compile-workers", type=int, help="parallel compile processes (default: cores - 1, at most 16)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from tuner.errors import NoGpuError
    from tuner.jobs.worker import gpu_work

    if not torch.cuda.is_available():
        raise NoGpuError("no CUDA GPU is visible: `tuner worker` runs kernel-sweep units on a local NVIDIA GPU")
    if not 0 <= args.gpu < torch.cuda.device_count():
        raise TunerError(f"--gpu {args.gpu}: this machine has GPUs 0..{torch.cuda.device_count() - 1}")
    summary = gpu_work(settings.resolved_database_url, args.gpu, job_ids=args.job,
                       compile_workers=args.compile_workers, stay=args.stay, print_fn=print)
    print(f"worker {summary.worker_id}: {len(summary.done)} units done, {len(summary.failed)} failed")
    return 1 if summary.failed else 0
