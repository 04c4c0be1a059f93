"""Learned-workload benchmark (issue #14): flags tuned on a workload learned from production metrics vs flags
tuned on the default synthetic workload, both then measured under the production-like workload on the
simulated engine, beside the engine's defaults.

    python benchmarks/learned_workload_benchmark.py --out docs/benchmarks/learned-workload.json

Steps (each result is written as it arrives into --work-dir; re-running resumes: finished steps are skipped,
flag-search studies resume from the database):
1. production: the production-like workload (long shared-prefix prompts, long answers) runs on the simulated
   engine at its production rate while a real Prometheus (Debian's `prometheus`, loopback, private data
   folder; tests/workload/prometheus_server.py) scrapes it; without the binary, /metrics is scraped into a
   snapshot folder instead. Either way the benchmark says which.
2. learn: `tuner workload learn` over that window stores it as `learned:prod`.
3. two `tuner flag-search` runs, same space, budget, SLOs and seed: one on `learned:prod`, one on the default
   synthetic workload (random, 1024 prompt / 128 output tokens).
4. measure: `tuner bench` under the production-like workload itself (new prompts: other seeds) at its
   production rate and at 1.5x it, for the engine defaults and both winners, --repeats times each,
   interleaved (`tuner bench --time-scale` takes rates and SLOs and reports figures in engine time); goodput (output tok/s of requests meeting every SLO) and SLO attainment (share of requests
   meeting every SLO), mean and min..max over the repeats.

Docs: docs/benchmarks/learned-workload.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "workload"))

from _procs import run_interruptible

MODEL = "zai-org/GLM-4.7-FP8"
BASE_FLAGS = {"tp-size": "8", "startup-seconds": "2"}
SPACE = {
    "name": "learned-workload-benchmark",
    "params": [
        {"name": "chunked-prefill-size", "type": "categorical", "choices": [1024, 2048, 4096, 8192, 16384]},
        {"name": "max-running-requests", "type": "int", "low": 8, "high": 256, "log": True},
        {"name": "schedule-policy", "type": "categorical", "choices": ["fcfs", "lpm"]},
        {"name": "schedule-conservativeness", "type": "categorical", "choices": [0.3, 0.6, 1.0]},
    ],
}


def _tuner() -> list[str]:
    return [sys.executable, "-m", "tuner"]


def _done(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _write(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _run(argv: list[str], limit_s: float) -> None:
    wall, ok = run_interruptible(argv, os.environ, limit_s)
    if not ok:
        raise SystemExit(f"failed after {wall:.0f} s: {' '.join(argv)}")


# ---- 1. production traffic, scraped --------------------------------------------------------------------

@contextlib.contextmanager
def _scraper(folder: Path, target: str) -> Iterator[tuple[str, str]]:
    """('prometheus', url) with a real Prometheus, else ('snapshots', folder) filled by a background thread."""
    import prometheus_server

    if prometheus_server.find_prometheus() is not None:
        with prometheus_server.running_prometheus(folder, [target], scrape_interval="500ms") as url:
            yield "prometheus", url
        return
    import threading

    import httpx

    snaps = folder / "snapshots"
    snaps.mkdir(exist_ok=True)
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                text = httpx.get(f"http://{target}/metrics", timeout=5).text
                (snaps / f"{time.time():.3f}.prom").write_text(text)
            stop.wait(0.5)

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    try:
        yield "snapshots", str(snaps)
    finally:
        stop.set()
        thread.join()


def production(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run the production-like workload on the default-flag simulator and learn it; returns what was learned."""
    done = _done(work / "learned.json")
    if done is not None:
        return done  # type: ignore[no-any-return]
    from tuner.runtime.engines import get_engine
    from tuner.runtime.launcher import launch
    from tuner.runtime.loadgen.arrivals import PoissonArrivals
    from tuner.runtime.loadgen.client import LoadOptions, run_load_sync

    folder = work / "production"
    folder.mkdir(exist_ok=True)
    sim = get_engine("sim", time_scale=args.time_scale)
    flags = {k: int(v) for k, v in BASE_FLAGS.items()}
    name = "prod"
    with launch(sim, MODEL, flags, log_dir=folder, ready_timeout_s=120) as engine:
        target = engine.base_url.split("//", 1)[1]
        with _scraper(folder, target) as (source, where):
            start = time.time()
            # rates are engine time; the simulator runs --time-scale times faster
            result = run_load_sync(engine.base_url, _production_workload(args, args.production_requests),
                                   PoissonArrivals(args.production_rate * args.time_scale),
                                   LoadOptions(num_warmup=0, seed=101))
            time.sleep(1.5)  # the last scrapes
            end = time.time()
            learn = _tuner() + ["--database-url", args.database_url, "workload", "learn", "--name", name,
                                "--replace", "--window", f"{end - start + 0.5:.3f}s", "--end", f"{end:.3f}",
                                "--step", "0.5s"]
            if source == "prometheus":
                learn += ["--prometheus", where, "--selector", '{job="sglang"}']
            else:
                learn += ["--snapshots", where]
            _run(learn, 300)  # while the scraper is up
    failed = sum(not r.ok for r in result.records)
    info = {"source": source, "requests": len(result.records), "failed": failed, "window_s": end - start,
            "workload": name}
    _write(work / "learned.json", info)
    return info


def _production_workload(args: argparse.Namespace, n: int) -> Any:
    from tuner.runtime.loadgen.workloads import SharedPrefixWorkload

    return SharedPrefixWorkload(n, input_len=args.input_len, output_len=args.output_len,
                                prefix_fraction=args.prefix_fraction, num_groups=args.num_groups)


# ---- 3. the two searches -------------------------------------------------------------------------------

def search(args: argparse.Namespace, work: Path, label: str, workload: list[str]) -> dict[str, Any]:
    out = work / f"search-{label}"
    best = out / "best.json"
    if not best.is_file():
        space = work / "space.yaml"
        space.write_text(json.dumps(SPACE))  # YAML is a superset of JSON
        argv = _tuner() + ["--database-url", args.database_url, "--data-dir", str(work), "flag-search",
                           "--engine", "sim", "--model", MODEL, "--space", str(space), *workload,
                           "--slo", args.slo, "--trials", str(args.trials), "--repeats", str(args.search_repeats),
                           "--top-k", "2", "--seed", str(args.seed), "--time-scale", str(args.time_scale),
                           "--requests-per-step", str(args.requests_per_step), "--max-load-steps", "4",
                           "--rate-min", "0.25", "--rate-max", str(args.rate_max), "--study", f"lwb-{label}-{args.seed}",
                           "--no-check-flags", "--out", str(out)]
        for k, v in BASE_FLAGS.items():
            argv += ["--base-flag", f"{k}={v}"]
        t0 = time.perf_counter()
        _run(argv, args.search_limit_s)
        _write(work / f"search-{label}-wall.json", {"wall_s": time.perf_counter() - t0})
    doc = json.loads(best.read_text())
    return {"flags": {k: v for k, v in doc["best"]["flags"].items() if k not in BASE_FLAGS},
            "search_goodput_tok_s": doc["best"].get("goodput_tok_s"), "gain": doc.get("gain")}


# ---- 4. measurement ------------------------------------------------------------------------------------

def measure(args: argparse.Namespace, work: Path, configs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows_path = work / "measurements.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.is_file() else []
    seen = {(r["config"], r["load"], r["repeat"]) for r in rows}
    for repeat in range(args.repeats):
        for load, factor in (("production", 1.0), ("peak 1.5x", 1.5)):
            for name, flags in configs.items():
                if (name, load, repeat) in seen:
                    continue
                out = work / f"bench-{name}-{load.split()[0]}-{repeat}.json"
                argv = _tuner() + ["bench", "--no-store", "--engine", "sim", "--model", MODEL,
                                   "--workload", "shared-prefix", "--input-len", str(args.input_len),
                                   "--output-len", str(args.output_len), "--prefix-fraction",
                                   str(args.prefix_fraction), "--num-groups", str(args.num_groups),
                                   "--num-prompts", str(args.measure_requests),
                                   "--request-rate", str(args.production_rate * factor),
                                   "--seed", str(1000 + repeat), "--slo", args.slo,
                                   "--time-scale", str(args.time_scale), "--json", str(out)]
                for k, v in {**BASE_FLAGS, **flags}.items():
                    argv += ["--flag", f"{k}={v}"]
                _run(argv, 600)
                client = json.loads(out.read_text())["client"]
                row = {"config": name, "load": load, "repeat": repeat,
                       "goodput_tok_s": client["goodput_output_tok_s"], "slo_attainment": client["slo_attainment"],
                       "completed": client["completed"], "failed": client["failed"]}
                rows.append(row)
                with open(rows_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"  {name:<22} {load:<10} repeat {repeat}: goodput {row['goodput_tok_s']:.0f} tok/s, "
                      f"SLO attainment {row['slo_attainment']:.1%}", flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for load in dict.fromkeys(r["load"] for r in rows):
        base = [r for r in rows if r["load"] == load and r["config"] == "engine defaults"]
        base_mean = statistics.fmean(r["goodput_tok_s"] for r in base) if base else None
        for config in dict.fromkeys(r["config"] for r in rows):
            sel = [r for r in rows if r["load"] == load and r["config"] == config]
            g = [r["goodput_tok_s"] for r in sel]
            a = [r["slo_attainment"] for r in sel]
            out.append({"load": load, "config": config, "repeats": len(sel),
                        "goodput_tok_s_mean": statistics.fmean(g), "goodput_tok_s_min": min(g),
                        "goodput_tok_s_max": max(g), "slo_attainment_mean": statistics.fmean(a),
                        "slo_attainment_min": min(a), "slo_attainment_max": max(a),
                        "goodput_vs_defaults": statistics.fmean(g) / base_mean if base_mean else None})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", default=str(REPO / "out" / "learned-workload"))
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "learned-workload.json"))
    p.add_argument("--time-scale", type=float, default=10.0)
    p.add_argument("--slo", default="ttft_p99<=3s,tpot_p99<=60ms")
    p.add_argument("--input-len", type=int, default=3000)
    p.add_argument("--output-len", type=int, default=384)
    p.add_argument("--prefix-fraction", type=float, default=0.8)
    p.add_argument("--num-groups", type=int, default=4)
    p.add_argument("--production-rate", type=float, default=1.0, help="req/s, engine time")
    p.add_argument("--production-requests", type=int, default=150)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--search-repeats", type=int, default=0)
    p.add_argument("--requests-per-step", type=int, default=32)
    p.add_argument("--search-limit-s", type=float, default=480)
    p.add_argument("--rate-max", type=float, default=4.0,
                   help="highest load the searches try, req/s (engine time); above the production rate, or every "
                        "config that meets the SLOs there ties at the ceiling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--measure-requests", type=int, default=40)
    args = p.parse_args()
    work = Path(args.work_dir).resolve()  # Prometheus runs in its data folder: relative paths would break
    work.mkdir(parents=True, exist_ok=True)
    args.database_url = f"sqlite:///{work / 'tuner.db'}"
    t0 = time.perf_counter()
    print("1-2. production traffic on the simulator, learned ...", flush=True)
    learned = production(args, work)
    print(f"   learned from {learned['source']} over {learned['window_s']:.0f} s ({learned['requests']} requests)")
    print("3. flag searches ...", flush=True)
    tuned_learned = search(args, work, "learned", ["--workload", f"learned:{learned['workload']}"])
    tuned_default = search(args, work, "default", ["--workload", "random", "--input-len", "1024",
                                                   "--output-len", "128"])
    print(f"   on learned:prod  -> {tuned_learned['flags']}\n   on random 1024/128 -> {tuned_default['flags']}")
    configs = {"engine defaults": {}, "tuned on default": tuned_default["flags"],
               "tuned on learned": tuned_learned["flags"]}
    print("4. measuring under the production-like workload ...", flush=True)
    rows = measure(args, work, configs)
    summary = summarise(rows)
    doc = {"date": datetime.date.today().isoformat(), "device": f"{platform.node()} ({os.cpu_count()} CPUs)",
           "python": platform.python_version(), "settings": {k: v for k, v in vars(args).items()
                                                             if k not in ("database_url",)},
           "learned": learned, "configs": configs, "search": {"learned": tuned_learned, "default": tuned_default},
           "rows": rows, "summary": summary, "wall_s": time.perf_counter() - t0}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\n{'load':<11} {'config':<18} {'goodput tok/s (min..max)':>30} {'vs defaults':>12} "
          f"{'SLO attainment (min..max)':>28}")
    for s in summary:
        ratio = f"{s['goodput_vs_defaults']:.2f}x" if s["goodput_vs_defaults"] else "-"
        print(f"{s['load']:<11} {s['config']:<18} {s['goodput_tok_s_mean']:>10.0f} "
              f"({s['goodput_tok_s_min']:.0f}..{s['goodput_tok_s_max']:.0f}){'':>4} {ratio:>12} "
              f"{s['slo_attainment_mean']:>12.1%} ({s['slo_attainment_min']:.1%}..{s['slo_attainment_max']:.1%})")
    print(f"wall time {doc['wall_s']:.0f} s; written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
