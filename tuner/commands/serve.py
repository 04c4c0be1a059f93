"""`tuner serve`: the long-running tuning service (REST API, web UI, /metrics) with its workers."""

from __future__ import annotations

import argparse
import os

from tuner.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    from tuner.service.config import DEFAULT_LEASE_S, DEFAULT_PORT, TOKEN_ENV

    p = sub.add_parser(
        "serve", help="run the tuning service: web UI, REST API, /metrics, and workers for queued jobs",
        description="Serve the web UI and REST API (OpenAPI docs at /docs) over the results database, with one "
        "worker per --gpu and --cpu-workers CPU workers taking its queued jobs; external `tuner worker` processes "
        f"may share the database too. Mutating endpoints need the bearer token in ${TOKEN_ENV}; without it the "
        "service listens on localhost only. Jobs persist: a service started again carries on where it stopped.")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; another needs "
                   f"${TOKEN_ENV})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--gpu", type=int, action="append", default=[],
                   help="a local GPU given one worker (repeatable: --gpu 0 --gpu 1); default: none")
    p.add_argument("--cpu-workers", type=int, default=1,
                   help="workers for kinds that need no GPU: exports, simulated-engine flag searches (default 1)")
    p.add_argument("--lease-s", type=float, default=DEFAULT_LEASE_S,
                   help=f"a killed worker's unit is taken over this long after its last heartbeat (default "
                        f"{DEFAULT_LEASE_S:g})")
    p.set_defaults(func=run)


def service_config(args: argparse.Namespace, settings: Settings):  # type: ignore[no-untyped-def]
    from tuner.service.config import TOKEN_ENV, ServiceConfig

    return ServiceConfig(database_url=settings.resolved_database_url, host=args.host, port=args.port,
                         token=os.environ.get(TOKEN_ENV) or None, gpus=tuple(args.gpu),
                         cpu_workers=args.cpu_workers, lease_s=args.lease_s,
                         heartbeat_s=min(5.0, args.lease_s / 3))


def check_gpus(gpus: list[int]) -> None:
    """Each --gpu is a GPU of this machine (NoGpuError / TunerError in one line before anything starts)."""
    if not gpus:
        return
    import torch

    from tuner.errors import NoGpuError, TunerError

    if not torch.cuda.is_available():
        raise NoGpuError("--gpu: no CUDA GPU is visible here; serve without --gpu (CPU kinds only) or on a GPU host")
    for gpu in gpus:
        if not 0 <= gpu < torch.cuda.device_count():
            raise TunerError(f"--gpu {gpu}: this machine has GPUs 0..{torch.cuda.device_count() - 1}")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.service.server import serve

    config = service_config(args, settings)
    check_gpus(args.gpu)
    serve(config, log_dir=settings.data_dir / "logs" / "service")
    return 0
