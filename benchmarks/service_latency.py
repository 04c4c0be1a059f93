"""API and page latency of `tuner serve` with 100 000 flag trials stored, on SQLite and on PostgreSQL.

Seeds a database (one study of --trials trials with a load search each, a kernel sweep with its measurements, a
few jobs), starts a real `tuner serve` (no workers) on it, and times --requests GETs of each endpoint over HTTP
from this process (sequential, after one warm-up call), reporting p50/p99 in ms. The Pareto endpoint's first
(cold) call reads every trial and is reported on its own; later calls are served from its cache, and
"pareto (after a new trial)" times the call right after this process adds one finished trial to the study (what
a running study does between two views: the cache reads only that trial). --only-pareto times the Pareto calls
alone. On PostgreSQL the seeded tables are vacuumed and analyzed first, as autovacuum soon would.

    .venv/bin/python benchmarks/service_latency.py --backend sqlite --backend postgresql --out docs/benchmarks/service-latency.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "service"))


def seed_database(url: str, n_trials: int) -> dict[str, int]:
    import seed

    from tuner.jobs import units
    from tuner.store.db import open_database

    db = open_database(url)
    try:
        t0 = time.monotonic()
        study = seed.seed_study(db, "bench-study", n_trials)
        sweep = seed.seed_sweep(db, n_configs=200)
        for i in range(20):
            units.create_job(db, "export", {"n": i}, [(f"u{k}", {}) for k in range(10)])
        if db.url.startswith("postgresql"):
            # what autovacuum does shortly after a bulk insert: planner statistics and the visibility map
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        print(f"seeded {n_trials} trials, a sweep of 200 configs x {len(seed.BATCH_SIZES)} batch sizes and 20 jobs "
              f"in {time.monotonic() - t0:.0f} s", flush=True)
        return {"study": study, "sweep": sweep}
    finally:
        db.dispose()


def endpoints(ids: dict[str, int], n_trials: int) -> dict[str, str]:
    s, w = "bench-study", ids["sweep"]
    return {
        "page /": "/",
        "page /static/app.js": "/static/app.js",
        "jobs list": "/api/jobs",
        "job detail": "/api/jobs/1",
        "job units": "/api/jobs/1/units",
        "studies list": "/api/studies",
        "study detail": f"/api/studies/{s}",
        "trials, first page": f"/api/studies/{s}/trials?limit=50",
        "trials, last page": f"/api/studies/{s}/trials?limit=50&offset={n_trials - 50}",
        "trials, best first (sort -goodput)": f"/api/studies/{s}/trials?limit=50&sort=-goodput_tok_s",
        "trials, filtered by status": f"/api/studies/{s}/trials?limit=50&status=ok",
        "pareto (cached)": f"/api/studies/{s}/pareto",
        "trial log tail": "/api/trials/50000/log" if n_trials > 50000 else "/api/trials/1/log",
        "sweep detail": f"/api/sweeps/{w}",
        "sweep measurements page": f"/api/sweeps/{w}/measurements?limit=50",
        "sweep heat map": f"/api/sweeps/{w}/heatmap",
        "config database": "/api/configs",
        "metrics": "/metrics",
    }


def _summary(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {"p50_ms": statistics.median(samples),
            "p99_ms": samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))], "n": len(samples)}


def time_pareto_after_new_trials(client: httpx.Client, url: str, path: str, study_id: int, n_trials: int,
                                 requests: int) -> dict[str, float]:
    """Add one finished trial (a 3-step load search, as the seed's) to the study, then time the Pareto call; again."""
    import random

    import seed

    from tuner.store import flags as flag_store
    from tuner.store.db import open_database

    rng = random.Random(1)
    db = open_database(url, upgrade=False)
    samples = []
    try:
        for k in range(requests):
            trial_id = flag_store.start_trial(db, study_id, n_trials + k)
            flag_store.finish_trial(db, trial_id, status="ok", goodput_tok_s=2500.0,
                                    searches=[seed._search(rng, 1500 + 1500 * rng.random())])
            t0 = time.perf_counter()
            r = client.get(path)
            samples.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            assert r.json()["total_points"] == 3 * (n_trials + k + 1), "the new trial is not in the answer"
    finally:
        db.dispose()
    return _summary(samples)


def time_endpoints(base: str, paths: dict[str, str], requests: int, url: str, ids: dict[str, int],
                   n_trials: int) -> dict[str, dict[str, float]]:
    out = {}
    with httpx.Client(base_url=base, timeout=120) as client:
        t0 = time.perf_counter()
        r = client.get(paths["pareto (cached)"])
        r.raise_for_status()
        out["pareto (cold, first call)"] = {"p50_ms": (time.perf_counter() - t0) * 1000,
                                            "p99_ms": (time.perf_counter() - t0) * 1000, "n": 1}
        for name, path in paths.items():
            client.get(path).raise_for_status()  # warm-up
            samples = []
            for _ in range(requests):
                t0 = time.perf_counter()
                r = client.get(path)
                samples.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
            out[name] = _summary(samples)
            print(f"  {name:40s} p50 {out[name]['p50_ms']:7.1f} ms  p99 {out[name]['p99_ms']:7.1f} ms", flush=True)
        name = "pareto (after a new trial)"
        out[name] = time_pareto_after_new_trials(client, url, paths["pareto (cached)"], ids["study"], n_trials,
                                                 requests)
        print(f"  {name:40s} p50 {out[name]['p50_ms']:7.1f} ms  p99 {out[name]['p99_ms']:7.1f} ms", flush=True)
    return out


def run_backend(backend: str, n_trials: int, requests: int, folder: Path,
                only_pareto: bool = False) -> dict[str, dict[str, float]]:
    import contextlib

    from test_serve_process import _free_port, serving

    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{folder / 'data' / 'tuner.db'}"
        else:
            from postgres_server import find_postgres_bin, running_postgres

            bin_dir = find_postgres_bin()
            if bin_dir is None:
                raise SystemExit("no PostgreSQL binaries (apt-get install postgresql)")
            url = stack.enter_context(running_postgres(bin_dir))
        ids = seed_database(url, n_trials)
        port = _free_port()
        import os

        os.environ["TUNER_DATABASE_URL"] = url
        try:
            stack.enter_context(serving(folder, port, "--cpu-workers", "0"))
        finally:
            del os.environ["TUNER_DATABASE_URL"]
        print(f"{backend}: timing {requests} requests per endpoint", flush=True)
        paths = endpoints(ids, n_trials)
        if only_pareto:
            paths = {"pareto (cached)": paths["pareto (cached)"]}
        return time_endpoints(f"http://127.0.0.1:{port}", paths, requests, url, ids, n_trials)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql"))
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--only-pareto", action="store_true", help="time the Pareto calls alone")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {}
    for backend in args.backend or ["sqlite"]:
        with tempfile.TemporaryDirectory(prefix=f"tuner-bench-{backend}-") as tmp:
            results[backend] = run_backend(backend, args.trials, args.requests, Path(tmp), args.only_pareto)
    report = {"trials": args.trials, "requests_per_endpoint": args.requests, "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()} {platform.processor() or ''} ({platform.node()}), "
                         f"Python {platform.python_version()}", "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
