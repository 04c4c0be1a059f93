"""`tuner workload learn|show|list`: fit a workload model from an engine's metrics (Prometheus, `/metrics`
snapshots, a request log), store it by name, print it and plot it. Replay it with `--workload learned:NAME`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from tuner.errors import TunerError, WorkloadSourceError
from tuner.settings import Settings
from tuner.workload_model import WorkloadModel


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("workload", help="learn a workload from production metrics; show or list learned ones")
    wsub = p.add_subparsers(dest="workload_command", metavar="ACTION")
    wsub.required = True
    learn = wsub.add_parser("learn", help="fit a workload model from Prometheus, /metrics snapshots or a request log",
                            description="Fit arrival rate and burstiness, prompt/output length distributions, "
                            "prefix-cache hit ratio and speculative accept length from the engine's own series, "
                            "and store the model by name.")
    src = learn.add_mutually_exclusive_group(required=True)
    src.add_argument("--prometheus", metavar="URL", help="Prometheus server, e.g. http://prometheus:9090")
    src.add_argument("--snapshots", metavar="DIR", help="folder of scraped /metrics text files, one per scrape")
    src.add_argument("--request-log", metavar="FILE", help="JSONL, one request per line (timestamp, prompt_tokens, "
                     "completion_tokens[, cached_tokens, spec_accept_length])")
    learn.add_argument("--selector", help="PromQL label selector of the engine's series, e.g. '{job=\"sglang\"}' "
                       "(snapshots: label=\"value\" matchers only)")
    learn.add_argument("--window", default="24h", help="how far back from --end (default 24h)")
    learn.add_argument("--end", help="window end: Unix seconds or ISO time (default now)")
    learn.add_argument("--step", help="rate-profile step, e.g. 1m (default window / 240, at least 1s)")
    learn.add_argument("--engine", default="auto", choices=("auto", "sglang", "vllm"))
    learn.add_argument("--name", help="store it under this name (default learned-<window end>)")
    learn.add_argument("--replace", action="store_true", help="replace a stored workload of the same name")
    learn.set_defaults(func=run_learn)
    show = wsub.add_parser("show", help="print a learned workload and write its plots (PNG)")
    show.add_argument("name")
    show.add_argument("--out", help="folder for lengths.png and rate.png (default <data dir>/workloads/NAME)")
    show.add_argument("--json", action="store_true", help="print the model as JSON")
    show.set_defaults(func=run_show)
    lst = wsub.add_parser("list", help="learned workloads")
    lst.set_defaults(func=run_list)


def parse_time_s(text: str | None) -> float:
    if text is None:
        return time.time()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise WorkloadSourceError(f"--end {text!r} is neither Unix seconds nor an ISO time") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def learn_model(args: argparse.Namespace) -> tuple[WorkloadModel, str, str]:
    """(model, source kind, source reference) from the learn options."""
    from tuner.workload.files import fit_request_log, read_snapshots
    from tuner.workload.fit import ENGINES, fit_workload
    from tuner.workload.prometheus import learn_from_prometheus, parse_duration_s

    step_s = parse_duration_s(args.step, "--step") if args.step else None
    if args.prometheus:
        if not args.selector:
            raise WorkloadSourceError("--prometheus needs --selector, e.g. '{job=\"sglang\"}'")
        end_s = parse_time_s(args.end)
        start_s = end_s - parse_duration_s(args.window, "--window")
        model = learn_from_prometheus(args.prometheus, args.selector, start_s, end_s, step_s=step_s,
                                      engine=args.engine)
        return model, "prometheus", f"{args.prometheus} {args.selector}"
    if args.snapshots:
        window = read_snapshots(Path(args.snapshots).expanduser(), args.selector)
        return (fit_workload(window, None if args.engine == "auto" else ENGINES[args.engine]), "snapshots",
                str(Path(args.snapshots).expanduser().resolve()))
    path = Path(args.request_log).expanduser()
    return fit_request_log(path, step_s), "request-log", str(path.resolve())


def run_learn(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.store.db import open_database
    from tuner.store.workloads import save_workload

    model, source, ref = learn_model(args)  # fitted in full before anything is stored
    name = args.name or "learned-" + dt.datetime.fromtimestamp(model.window_end_s, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    db = open_database(settings.resolved_database_url)
    try:
        record = save_workload(db, name, model, source, ref, replace=args.replace)
    finally:
        db.dispose()
    for line in describe_lines(name, record.model, record.fingerprint):
        print(line)
    print(f"replay it with --workload learned:{name}; plots: tuner workload show {name}")
    return 0


def describe_lines(name: str, m, fingerprint: str) -> list[str]:  # type: ignore[no-untyped-def]
    start = dt.datetime.fromtimestamp(m.window_start_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    end = dt.datetime.fromtimestamp(m.window_end_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def opt(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    return [
        f"workload {name} ({m.engine}, fingerprint {fingerprint})",
        f"  window          {start} .. {end} ({m.window_s:.0f}s, step {m.step_s:g}s)",
        (f"  requests        {m.num_requests}  rate {m.rate_rps:.3f} req/s  peak {max(m.rate_profile_rps):.3f} req/s"
         f"  burstiness {m.burstiness:.2f} (Poisson 1)"),
        (f"  prompt tokens   mean {m.prompt_tokens.mean_tokens:.1f}  ({len(m.prompt_tokens.bins)} bins, "
         f"{m.prompt_tokens.origin})"),
        (f"  output tokens   mean {m.output_tokens.mean_tokens:.1f}  ({len(m.output_tokens.bins)} bins, "
         f"{m.output_tokens.origin})"),
        f"  prefix hit      {opt(m.prefix_cache_hit_ratio, '.3f')}",
        f"  accept length   {opt(m.spec_accept_length, '.2f')}",
    ]


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.store.db import open_database
    from tuner.store.workloads import load_workload
    from tuner.workload.plots import write_plots

    db = open_database(settings.resolved_database_url)
    try:
        record = load_workload(db, args.name)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps({"name": record.name, "source": record.source, "source_ref": record.source_ref,
                          "fingerprint": record.fingerprint, "model": record.model.to_json()}, indent=2))
        return 0
    for line in describe_lines(record.name, record.model, record.fingerprint):
        print(line)
    print(f"  learned from    {record.source}: {record.source_ref}")
    out = Path(args.out).expanduser() if args.out else Path(settings.data_dir) / "workloads" / record.name
    for path in write_plots(record.model, record.name, out):
        print(f"wrote {path}")
    return 0


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.store.db import open_database
    from tuner.store.workloads import list_workloads

    db = open_database(settings.resolved_database_url)
    try:
        records = list_workloads(db)
    finally:
        db.dispose()
    if not records:
        raise TunerError("no learned workloads yet; create one with `tuner workload learn`")
    for r in records:
        print(f"{r.name}\t{r.engine}\t{r.source}\t{r.window_start:%Y-%m-%d %H:%M}..{r.window_end:%H:%M}\t"
              f"{r.model.rate_rps:.3f} req/s\t{r.fingerprint}")
    return 0
