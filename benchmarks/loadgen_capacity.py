"""How fast can `tuner`'s load generator send before its own lateness passes 1 ms (p99)?

Launches the simulated engine with a high --time-scale (so the engine is not the limit), then offers Poisson
load at rising rates and reports, per rate: achieved request rate, send lag (actual - scheduled send time),
event-loop lag, failures. Next to it: a plain sequential client (one streaming request after another), the
naive baseline. The capacity is the highest offered rate whose p99 send lag and loop lag stay under 1 ms with
no failures and >= 95% of the offered rate achieved.

    python benchmarks/loadgen_capacity.py --rates 25,50,100,200,300,400 --seconds 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from tuner.runtime.engines import get_engine
from tuner.runtime.launcher import launch
from tuner.runtime.loadgen.arrivals import PoissonArrivals
from tuner.runtime.loadgen.client import LoadOptions, run_load_sync, run_warmup_sync
from tuner.runtime.loadgen.workloads import RandomWorkload


def sequential_client(base_url: str, workload: RandomWorkload, seconds: float) -> dict[str, float]:
    """One streaming /v1/completions request after another on one keep-alive connection (httpx, sync)."""
    sessions = workload.sessions(123)
    done, ttfts = 0, []
    t0 = time.perf_counter()
    with httpx.Client(timeout=60, trust_env=False) as client:
        while time.perf_counter() - t0 < seconds:
            turn = sessions[done % len(sessions)].turns[0]
            body = {"model": "m", "prompt": turn.text, "max_tokens": turn.output_len, "stream": True,
                    "ignore_eos": True, "temperature": 0}
            start = time.perf_counter()
            first = None
            with client.stream("POST", base_url + "/v1/completions", json=body) as r:
                for line in r.iter_lines():
                    if line.startswith("data:") and first is None:
                        first = time.perf_counter() - start
            ttfts.append(first or 0.0)
            done += 1
    elapsed = time.perf_counter() - t0
    return {"req_s": done / elapsed, "requests": done, "ttft_median_ms": statistics.median(ttfts) * 1e3}


async def _naive_open_loop(base_url: str, workload: RandomWorkload, rate: float, seed: int) -> np.ndarray:
    """A plain asyncio + httpx open-loop client (asyncio.sleep timers, client.stream + aiter_lines, no
    ticker): what a first attempt looks like. Returns its send lags in ms."""
    sessions = workload.sessions(seed)
    offsets = PoissonArrivals(rate).offsets_s(sessions, seed)
    lags: list[float] = []
    async with httpx.AsyncClient(timeout=60, trust_env=False,
                                 limits=httpx.Limits(max_connections=None)) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def one(turn, intended: float) -> None:
            lags.append(loop.time() - t0 - intended)
            body = {"model": "m", "prompt": turn.text, "max_tokens": turn.output_len, "stream": True,
                    "ignore_eos": True, "temperature": 0}
            async with client.stream("POST", base_url + "/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                        json.loads(line[5:])

        tasks = []
        for session, offset in zip(sessions, offsets, strict=True):
            delay = t0 + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session.turns[0], offset)))
        await asyncio.gather(*tasks)
    return np.abs(np.array(lags)) * 1e3


async def _timer_accuracy(n: int = 400, rate: float = 200.0) -> dict[str, tuple[float, float]]:
    """Lateness (p50, p99 ms) of waking at Poisson instants on an idle loop: the OS floor under any client."""
    from tuner.runtime.loadgen.client import _Ticker

    loop = asyncio.get_running_loop()
    ticker = _Ticker(loop)
    out = {}
    try:
        for name in ("asyncio.sleep", "ticker thread"):
            rng = np.random.default_rng(0)
            t0, t, lags = loop.time() + 0.01, 0.0, []
            for _ in range(n):
                t += rng.exponential(1 / rate)
                if name == "ticker thread":
                    await ticker.sleep_until(t0 + t)
                elif t0 + t > loop.time():
                    await asyncio.sleep(t0 + t - loop.time())
                lags.append(abs(loop.time() - t0 - t) * 1e3)
            out[name] = (float(np.median(lags)), float(np.percentile(lags, 99)))
    finally:
        ticker.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="25,50,100,200,300,400,600,800")
    p.add_argument("--seconds", type=float, default=6.0, help="load per rate (requests = rate x seconds)")
    p.add_argument("--model", default="zai-org/GLM-4.7-FP8")
    p.add_argument("--flags", nargs="*", default=["tp-size=8"], help="sim flags as key=value")
    p.add_argument("--time-scale", type=float, default=1000.0)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--endpoint", default="completions")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the engine and the load generator to separate CPU cores")
    p.add_argument("--nice", type=int, default=0,
                   help="scheduling priority of the load generator (negative needs root; the engine keeps 0)")
    args = p.parse_args()

    flags = {}
    for item in args.flags:
        key, _, value = item.partition("=")
        flags[key] = int(value) if value.lstrip("-").isdigit() else value
    engine = get_engine("sim", gpu="H200", time_scale=args.time_scale, seed=0)
    workload = RandomWorkload(10_000, input_len=args.input_len, output_len=args.output_len)
    opts = LoadOptions(endpoint=args.endpoint, num_warmup=8, model=args.model)
    rows = []
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    if pin:  # the engine inherits the last core; the load generator keeps the others
        os.sched_setaffinity(0, {cpus[-1]})
    with launch(engine, args.model, flags, log_dir=Path(tempfile.mkdtemp()), ready_timeout_s=120) as running:
        if pin:
            os.sched_setaffinity(0, set(cpus[:-1]))
        if args.nice:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # this thread and those it starts; not the engine
        run_warmup_sync(running.base_url, workload, opts)
        seq = sequential_client(running.base_url, workload, args.seconds)
        for rate in [float(r) for r in args.rates.split(",")]:
            n = max(50, int(rate * args.seconds))
            wl = RandomWorkload(n, input_len=args.input_len, output_len=args.output_len)
            res = run_load_sync(running.base_url, wl, PoissonArrivals(rate), opts)
            ok = [r for r in res.records if r.ok]
            send = np.abs(np.array(res.send_lags_s)) * 1e3
            loop = np.array(res.loop_lags_s) * 1e3
            # achieved rate: sends over the scheduled span (the offered Poisson process's own length)
            span = max(r.start_s for r in res.records) - min(r.start_s for r in res.records)
            achieved = (len(res.records) - 1) / span if span > 0 else 0.0
            offered = (n - 1) / max(r.intended_start_s or 0.0 for r in res.records)
            row = {
                "rate": rate, "offered": offered, "achieved": achieved, "completed": len(ok),
                "failed": len(res.records) - len(ok),
                "send_p50": float(np.median(send)), "send_p90": float(np.percentile(send, 90)),
                "send_p99": float(np.percentile(send, 99)),
                "loop_p99": float(np.percentile(loop, 99)) if len(loop) else 0.0,
                "ttft_p50": float(np.median([r.ttft_s for r in ok])) * 1e3 if ok else float("nan"),
            }
            row["sustained"] = (row["send_p99"] < 1.0 and row["loop_p99"] < 1.0 and row["failed"] == 0
                                and achieved >= 0.95 * offered)
            naive = asyncio.run(_naive_open_loop(running.base_url, wl, rate, seed=1))
            row["naive_p50"], row["naive_p99"] = float(np.median(naive)), float(np.percentile(naive, 99))
            rows.append(row)
            print(f"rate {rate:7.1f}/s achieved {achieved:7.1f}/s send p50/p99 {row['send_p50']:.3f}/"
                  f"{row['send_p99']:.3f} ms loop p99 {row['loop_p99']:.3f} ms failed {row['failed']} "
                  f"(naive client send p99 {row['naive_p99']:.3f} ms) "
                  f"ttft p50 {row['ttft_p50']:.1f} ms -> {'ok' if row['sustained'] else 'LAGGING'}",
                  flush=True)
    timers = asyncio.run(_timer_accuracy())
    sustained = [r["rate"] for r in rows if r["sustained"]]
    capacity = max(sustained) if sustained else 0.0
    p90_ok = [r["rate"] for r in rows if r["send_p90"] < 1.0 and r["failed"] == 0]
    naive_ok = [r["rate"] for r in rows if r["naive_p99"] < 1.0]
    naive_capacity = max(naive_ok) if naive_ok else 0.0
    print()
    print(f"machine: {platform.node()} {platform.machine()} {_cpu()} ({_ncpu()} cores), Python "
          f"{platform.python_version()}, load average {_loadavg()}; pinned: {pin}; nice: {args.nice}")
    for name, (p50, p99) in timers.items():
        print(f"idle-loop wake-up lateness with {name}: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    print(f"sequential client: {seq['req_s']:.1f} req/s ({seq['requests']} requests, TTFT median "
          f"{seq['ttft_median_ms']:.2f} ms)")
    print(f"load generator: sustains {capacity:g} req/s with p99 send lag and loop lag < 1 ms")
    print(f"load generator: p90 send lag < 1 ms up to {max(p90_ok) if p90_ok else 0:g} req/s")
    print(f"naive asyncio+httpx open-loop client: p99 send lag < 1 ms up to {naive_capacity:g} req/s")
    if seq["req_s"] > 0:
        print(f"ratio: {capacity / seq['req_s']:.2f}x the sequential client (p99 criterion), "
              f"{(max(p90_ok) if p90_ok else 0) / seq['req_s']:.2f}x (p90 criterion)")
    print("\n| offered req/s (nominal / this sample) | achieved req/s | completed | failed "
          "| send lag p50 / p90 / p99 (ms) | loop lag p99 (ms) | TTFT p50 (ms) | under 1 ms "
          "| naive client send lag p50 / p99 (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rate']:g} / {r['offered']:.1f} | {r['achieved']:.1f} | {r['completed']} | "
              f"{r['failed']} | "
              f"{r['send_p50']:.3f} / {r['send_p90']:.3f} / {r['send_p99']:.3f} | {r['loop_p99']:.3f} | "
              f"{r['ttft_p50']:.1f} | "
              f"{'yes' if r['sustained'] else 'no'} | {r['naive_p50']:.3f} / {r['naive_p99']:.3f} |")
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _ncpu() -> int:
    return os.cpu_count() or 0


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
