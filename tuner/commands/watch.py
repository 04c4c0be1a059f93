"""`tuner watch`: compare live traffic (Prometheus) with the workload a deployment was tuned for, on a
schedule; on drift record why and queue a flag-search re-tune with the live workload. Serves its own
metrics with `--metrics-port`."""

from __future__ import annotations

import argparse
import time

from tuner.errors import WorkloadSourceError
from tuner.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watch", help="detect drift of live traffic from a learned workload and queue re-tunes",
                       description="Every --interval, learn the last --window of traffic from Prometheus, compare "
                       "it with --baseline (a learned workload), record the check, and on drift queue a "
                       "flag_search job with the live workload (at most one per --cooldown).")
    p.add_argument("--prometheus", metavar="URL", required=True)
    p.add_argument("--selector", required=True, help="PromQL label selector, e.g. '{job=\"sglang\"}'")
    p.add_argument("--baseline", required=True, help="learned workload the deployed config was tuned for")
    p.add_argument("--deployment", help="name in records and metrics (default: the baseline's name)")
    p.add_argument("--interval", default="5m", help="time between checks (default 5m)")
    p.add_argument("--window", help="live traffic window per check (default: --interval)")
    p.add_argument("--step", help="rate-profile step (default window / 240, at least 1s)")
    p.add_argument("--once", action="store_true", help="one check, then exit (status 3 when it drifted)")
    p.add_argument("--cooldown", default="1h", help="no second re-tune within this (default 1h)")
    g = p.add_argument_group("drift thresholds (a score at or above one is drift)")
    g.add_argument("--max-length-js", type=float, default=0.2,
                   help="Jensen-Shannon divergence of prompt or output lengths (0..1, default 0.2)")
    g.add_argument("--max-rate-change", type=float, default=0.5, help="relative arrival-rate change (default 0.5)")
    g.add_argument("--max-prefix-hit-change", type=float, default=0.2,
                   help="absolute prefix-cache hit ratio change (default 0.2)")
    g.add_argument("--max-accept-drop", type=float, default=0.15,
                   help="relative drop of the speculative accept length (default 0.15)")
    g.add_argument("--ttft-slo", type=float, metavar="S", help="TTFT limit in seconds for the SLO attainment rule")
    g.add_argument("--itl-slo", type=float, metavar="S", help="ITL limit in seconds for the SLO attainment rule")
    g.add_argument("--min-slo-attainment", type=float, default=0.95, help="share within the limits (default 0.95)")
    p.add_argument("--retune-spec", metavar="JSON", help="extra fields of the queued job's spec, e.g. "
                   "'{\"engine\": \"sglang\", \"model\": \"zai-org/GLM-4.7-FP8\", \"slo\": \"ttft_p99<=2s\"}'")
    p.add_argument("--metrics-port", type=int, help="serve the watcher's metrics on this port")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from prometheus_client import start_http_server

    from tuner.store.db import open_database
    from tuner.store.workloads import load_workload
    from tuner.workload.drift import DriftThresholds
    from tuner.workload.prometheus import learn_from_prometheus, parse_duration_s
    from tuner.workload.watch import WatchConfig, run_watch, watch_metrics

    interval_s = parse_duration_s(args.interval, "--interval")
    window_s = parse_duration_s(args.window, "--window") if args.window else interval_s
    step_s = parse_duration_s(args.step, "--step") if args.step else None
    cooldown_s = parse_duration_s(args.cooldown, "--cooldown")
    spec = None
    if args.retune_spec:
        try:
            spec = json.loads(args.retune_spec)
        except json.JSONDecodeError as exc:
            raise WorkloadSourceError(f"--retune-spec is not JSON: {exc}") from None
        if not isinstance(spec, dict):
            raise WorkloadSourceError("--retune-spec must be a JSON object")
    thresholds = DriftThresholds(args.max_length_js, args.max_rate_change, args.max_prefix_hit_change,
                                 args.max_accept_drop, args.ttft_slo, args.itl_slo, args.min_slo_attainment)
    cfg = WatchConfig(args.deployment or args.baseline, args.baseline, thresholds, cooldown_s, spec)
    metrics = watch_metrics()
    db = open_database(settings.resolved_database_url)
    try:
        load_workload(db, args.baseline)  # a missing baseline is said before any waiting
        if args.metrics_port is not None:
            try:
                start_http_server(args.metrics_port, addr=args.metrics_host, registry=metrics.registry)
            except OSError as exc:
                raise WorkloadSourceError(f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: "
                                          f"{exc.strerror}") from None

        def learn_live():  # type: ignore[no-untyped-def]
            end_s = time.time()
            model = learn_from_prometheus(args.prometheus, args.selector, end_s - window_s, end_s, step_s=step_s)
            return model, f"{args.prometheus} {args.selector}"

        def report(check) -> None:  # type: ignore[no-untyped-def]
            state = "DRIFT" if check.drifted else "ok"
            extra = f"; re-tune job {check.job_id} queued with learned:{check.live_workload}" if check.job_id else (
                "; re-tune held by the cool-down" if check.held_by_cooldown else "")
            print(f"{check.checked_at:%Y-%m-%d %H:%M:%S} {cfg.deployment}: {state} score "
                  f"{check.drift_score:.2f}{extra}", flush=True)
            for reason in check.reasons:
                print(f"  - {reason}", flush=True)

        drifted = run_watch(db, cfg, learn_live, interval_s=interval_s, once=args.once, metrics=metrics,
                            report=report)
    finally:
        db.dispose()
    return 3 if args.once and drifted else 0
