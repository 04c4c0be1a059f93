"""One worker of `tuner serve`, as its own process: `python -m tuner.service.worker_process --database-url URL
(--gpu N | --cpu) [--lease-s S --heartbeat-s S --poll-s S]`.

The service starts one per GPU and its CPU workers (tuner.service.workers). A process, not a thread, so that an
engine a unit launches is torn down by the worker that launched it, and so that the worker dies with the service:
Linux sends it SIGTERM when its parent dies, even by SIGKILL; SIGTERM and SIGINT give the unit in hand back to the
queue and tear its engine down. Unit wall times go to the service's /metrics through prometheus_client's
multi-process mode (PROMETHEUS_MULTIPROC_DIR, set by the service).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

from tuner.service.metrics import UNIT_BUCKETS_S

PR_SET_PDEATHSIG = 1


def exit_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGTERM when the parent dies; if it already died (the race before the call), stop now."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the service stops its workers itself
        pass
    if os.getppid() != parent_pid:
        sys.exit(0)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class TimedHandler:
    """Wraps a kind's unit handler: observes each unit's wall time by kind and outcome."""

    def __init__(self, inner: Any, kind: str, histogram: Any) -> None:
        self.inner, self.kind, self.histogram = inner, kind.split(":", 1)[0], histogram

    def run(self, unit: Any) -> dict[str, Any]:
        started = time.monotonic()
        outcome = "failed"
        try:
            result: dict[str, Any] = self.inner.run(unit)
            outcome = "done"
            return result
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        finally:
            if self.histogram is not None:
                self.histogram.labels(kind=self.kind, outcome=outcome).observe(time.monotonic() - started)

    def close(self) -> None:
        self.inner.close()


def _histogram() -> Any:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    from prometheus_client import CollectorRegistry, Histogram

    return Histogram("tuner_unit_duration_seconds", "Wall time of work units run by this service's workers",
                     ["kind", "outcome"], buckets=UNIT_BUCKETS_S, registry=CollectorRegistry())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuner.service.worker_process")
    parser.add_argument("--database-url", required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--gpu", type=int)
    where.add_argument("--cpu", action="store_true")
    parser.add_argument("--lease-s", type=float, default=30.0)
    parser.add_argument("--heartbeat-s", type=float, default=5.0)
    parser.add_argument("--poll-s", type=float, default=1.0)
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    args = parser.parse_args(argv)
    exit_with_parent(args.parent_pid)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    logging.basicConfig(level=os.environ.get("TUNER_LOG_LEVEL", "INFO").upper(),
                        format="%(levelname)s worker: %(message)s")

    from tuner.jobs import kinds, units
    from tuner.jobs.context import WorkerContext
    from tuner.jobs.worker import work

    where_name = "cpu" if args.cpu else f"gpu{args.gpu}"
    say = lambda line: print(f"[{where_name}] {line}", flush=True)
    context = WorkerContext(args.database_url, None if args.cpu else args.gpu, None, say)
    handler_for = kinds.handler_for(context)
    histogram = _histogram()
    claimed = kinds.claimed_kinds(context)
    say(f"taking {', '.join(claimed) or 'nothing'}")
    try:
        work(args.database_url, lambda job: TimedHandler(handler_for(job), job.kind, histogram), kinds=claimed,
             worker_id=f"{units.new_worker_id()}/service-{where_name}", lease_s=args.lease_s,
             heartbeat_s=args.heartbeat_s, poll_s=args.poll_s, stay=True, print_fn=say)
    except KeyboardInterrupt:
        say("stopped; the unit in hand (if any) was given back to the queue")
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
