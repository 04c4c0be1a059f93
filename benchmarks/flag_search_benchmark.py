"""Flag-search benchmark: how many trials does `tuner flag-search` need to reach 97% of the best goodput
of a discretised space, against random search and a one-at-a-time sweep like SGLang's auto_benchmark?

Two phases:

    # 1. measure every point of the space once (real simulator launches + load searches); resumable:
    #    rows are appended as they arrive and points already in the CSV are skipped
    python benchmarks/flag_search_benchmark.py grid --out docs/benchmarks/flag-search-grid.csv

    # 2. replay the search methods against the recorded grid (a tabular benchmark: a "trial" looks up the
    #    measured result), 5 seeds each, and print/write the comparison
    python benchmarks/flag_search_benchmark.py compare --grid docs/benchmarks/flag-search-grid.csv \
        --json docs/benchmarks/flag-search-results.json

Docs: docs/benchmarks/flag-search.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_SPACE = HERE / "flag_search_space.yaml"
GRID_FIELDS = ("key", "params", "status", "failure_kind", "goodput_tok_s", "goodput_req_s", "max_rate_req_s",
               "ttft_p99_s", "tpot_p99_s", "steps", "stopped", "wall_s", "error")


# ----------------------------------------------------------------------------------------------------
# Phase 1: the grid

def _grid_settings(args: argparse.Namespace) -> Any:
    from tuner.runtime.loadgen.client import LoadOptions
    from tuner.runtime.loadgen.workloads import RandomWorkload
    from tuner.search.flags.load_search import LoadSearchConfig
    from tuner.search.flags.objective import Objective, parse_slo_text
    from tuner.search.flags.trial import TrialSettings

    return TrialSettings(
        engine="sim", model=args.model,
        workload_for=lambda n: RandomWorkload(n, args.input_len, args.output_len),
        workload={"name": "random", "input_len": args.input_len, "output_len": args.output_len},
        objective=Objective("goodput", parse_slo_text(args.slo)),
        load_search=LoadSearchConfig(mode="rate", strategy="bisect", low=args.rate_min, high=args.rate_max,
                                     requests_per_step=args.requests_per_step, max_steps=args.max_steps,
                                     tolerance=args.tolerance),
        load=LoadOptions(num_warmup=args.num_warmup),
        engine_options={"gpu": args.sim_gpu, "time_scale": args.time_scale, "seed": 0},
        log_dir=Path(args.log_dir), ready_timeout_s=120, check_flags=False, teardown_grace_s=5,
    )


def _done_keys(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    with open(path, newline="") as f:
        return {row["key"] for row in csv.DictReader(f)}


def run_grid(args: argparse.Namespace) -> int:
    from tuner.search.flags.space import baseline_candidate, grid, load_space
    from tuner.search.flags.trial import run_trial

    space = load_space(args.space)
    settings = _grid_settings(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    points = [*grid(space), baseline_candidate(space)]  # the engine's defaults: every method's trial 0
    done = _done_keys(out)
    todo = [c for c in points if c.key not in done]
    meta = {
        "space": str(args.space), "points": len(points) - 1, "plus": "the baseline (engine defaults)", "model": args.model, "gpu": args.sim_gpu,
        "time_scale": args.time_scale, "input_len": args.input_len, "output_len": args.output_len,
        "slo": args.slo, "requests_per_step": args.requests_per_step, "rate_min": args.rate_min,
        "rate_max": args.rate_max, "max_steps": args.max_steps, "tolerance": args.tolerance,
        "num_warmup": args.num_warmup, "machine": f"{platform.node()} {os.cpu_count()} CPUs",
        "python": platform.python_version(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    meta_path = Path(str(out) + ".meta.json")
    if meta_path.is_file() and done:
        old = json.loads(meta_path.read_text())
        meta = {**old, "resumed": [*old.get("resumed", []), meta["started"]]}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{len(points)} points, {len(done)} already measured, {len(todo)} to go", flush=True)
    new_file = not out.is_file()
    t_all = time.monotonic()
    with open(out, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=GRID_FIELDS)
        if new_file:
            writer.writeheader()
        for i, cand in enumerate(todo):
            t0 = time.monotonic()
            o = run_trial(settings, cand)
            s = o.search
            best = s.best if s else None
            row = {
                "key": cand.key, "params": json.dumps(cand.params, sort_keys=True), "status": o.status,
                "failure_kind": o.failure_kind or "",
                "goodput_tok_s": f"{best.figures.goodput_tok_s:.2f}" if best else "0",
                "goodput_req_s": f"{best.figures.goodput_req_s:.4f}" if best else "0",
                "max_rate_req_s": "" if s is None or s.max_load is None else
                ("inf" if math.isinf(s.max_load) else f"{s.max_load:g}"),
                "ttft_p99_s": f"{best.figures.latency_s['ttft_p99']:.4f}" if best else "",
                "tpot_p99_s": f"{best.figures.latency_s['tpot_p99']:.5f}" if best else "",
                "steps": len(s.steps) if s else 0, "stopped": s.stopped if s else "",
                "wall_s": f"{time.monotonic() - t0:.1f}", "error": (o.error or "")[:200],
            }
            writer.writerow(row)
            f.flush()
            print(f"[{len(done) + i + 1}/{len(points)}] {cand.display()}: {o.status} {o.failure_kind or ''} "
                  f"goodput {row['goodput_tok_s']} tok/s in {row['wall_s']} s "
                  f"(elapsed {time.monotonic() - t_all:.0f} s)", flush=True)
    return 0


# ----------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="phase", required=True)
    g = sub.add_parser("grid", help="measure every point of the space once (resumable)")
    g.add_argument("--space", default=str(DEFAULT_SPACE))
    g.add_argument("--out", default="docs/benchmarks/flag-search-grid.csv")
    g.add_argument("--model", default="zai-org/GLM-4.7-FP8")
    g.add_argument("--sim-gpu", default="H200")
    g.add_argument("--time-scale", type=float, default=10.0)
    g.add_argument("--input-len", type=int, default=4096)
    g.add_argument("--output-len", type=int, default=1000)
    g.add_argument("--slo", default="ttft_p99<=2s,tpot_p99<=50ms")
    g.add_argument("--requests-per-step", type=int, default=24)
    g.add_argument("--rate-min", type=float, default=1.0)
    g.add_argument("--rate-max", type=float, default=16.0)
    g.add_argument("--max-steps", type=int, default=3)
    g.add_argument("--tolerance", type=float, default=0.4)
    g.add_argument("--num-warmup", type=int, default=0)
    g.add_argument("--log-dir", default="/tmp/flag-search-grid-logs")
    g.set_defaults(func=run_grid)
    c = sub.add_parser("compare", help="replay the search methods against a recorded grid")
    c.add_argument("--grid", default="docs/benchmarks/flag-search-grid.csv")
    c.add_argument("--space", default=str(DEFAULT_SPACE))
    c.add_argument("--seeds", type=int, default=5)
    c.add_argument("--target", type=float, default=0.97)
    c.add_argument("--json", help="write the results here")
    c.set_defaults(func=run_compare)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return int(args.func(args))


# ----------------------------------------------------------------------------------------------------
# Phase 2: replay search methods against the recorded grid

class TargetReached(Exception):
    """Raised by the tabular evaluator once a method has found a good-enough config."""


class TabularEvaluator:
    """Looks a candidate's measured result up in the grid instead of launching (each distinct config
    counts as one trial, as it would cost one launch)."""

    def __init__(self, rows: dict[str, dict[str, str]], target: float,
                 baseline_server_info: dict[str, Any] | None = None):
        self.rows = rows
        self.target = target
        self.baseline_server_info = baseline_server_info
        self.trials: list[float] = []  # goodput per evaluation, in order

    def value(self, key: str) -> float:
        row = self.rows.get(key)
        if row is None:
            raise KeyError(f"candidate not in the grid: {key}")
        return float(row["goodput_tok_s"] or 0.0)

    def evaluate(self, candidate: Any, *, repeats: int = 1) -> Any:
        from tuner.search.flags.load_search import LoadSearchResult, LoadStep
        from tuner.search.flags.objective import StepFigures
        from tuner.search.flags.trial import TrialOutcome

        row = self.rows[candidate.key]
        goodput = self.value(candidate.key)
        self.trials.append(goodput)
        if goodput >= self.target:
            raise TargetReached
        if row["status"] == "infeasible" and row["failure_kind"] != "slo":
            return TrialOutcome(status="infeasible", candidate=candidate, failure_kind=row["failure_kind"],
                                error=row["error"] or row["failure_kind"])
        ok = goodput > 0
        ttft = float(row["ttft_p99_s"] or 9.9)
        tpot = float(row["tpot_p99_s"] or 9.9)
        latency = {"ttft_p99": ttft, "tpot_p99": tpot}
        fig = StepFigures(latency, goodput, 0.0, goodput, goodput / 1000, 1.0 if ok else 0.0,
                          {"ttft_p99": ttft / 2.0 if ok else 2.0, "tpot_p99": tpot / 0.05 if ok else 2.0}, ok)
        rate = float(row["max_rate_req_s"]) if row["max_rate_req_s"] not in ("", "inf") else 1.0
        steps = (LoadStep(0, rate, "rate", 24, 24, 0, 1.0, fig),)
        info = self.baseline_server_info if candidate.is_baseline else None
        return TrialOutcome(status="ok" if ok else "infeasible", candidate=candidate,
                            failure_kind=None if ok else "slo", searches=(LoadSearchResult(steps),),
                            server_info=info)


def baseline_server_info(space: Any, model: str, gpu: str) -> dict[str, Any]:
    """What the simulator's /server_info says for the baseline (its resolved arguments), computed the way
    the simulator computes it at startup."""
    from tuner.runtime.engines.base import flags_to_argv
    from tuner.runtime.sim.args import parse_cli, resolve_args
    from tuner.runtime.sim.server import plan_for
    from tuner.search.flags.space import baseline_candidate

    base = baseline_candidate(space)
    ns = parse_cli(["--model-path", model, "--gpu", gpu, *flags_to_argv(base.flags)])
    args, _ = plan_for(resolve_args(ns, dict(base.env)))
    return args.to_json()


def _trials_to_target(evaluator: TabularEvaluator, target: float) -> int | None:
    for i, g in enumerate(evaluator.trials, 1):
        if g >= target:
            return i
    return None


def replay_ours(space: Any, rows: dict[str, dict[str, str]], target: float, seed: int, sampler: str,
                budget: int, workdir: Path, server_info: dict[str, Any] | None = None,
                local_search: float | None = None) -> int | None:
    """Our study (the sampler, local search next to the best, crash learning, dedupe) with the tabular
    evaluator."""
    from tuner.search.flags.load_search import LoadSearchConfig
    from tuner.search.flags.objective import Objective, parse_slo_text
    from tuner.search.flags.study import StudyConfig, run_study
    from tuner.store.db import open_database

    ev = TabularEvaluator(rows, target, server_info)
    db = open_database(f"sqlite:///{workdir / f'{sampler}-{seed}-{local_search}.db'}")
    config = StudyConfig(name=f"replay-{sampler}-{seed}", engine="sim", model="zai-org/GLM-4.7-FP8", space=space,
                         objective=Objective("goodput", parse_slo_text("ttft_p99<=2s,tpot_p99<=50ms")),
                         load_search=LoadSearchConfig(), workload={}, sampler=sampler, n_trials=budget,
                         seed=seed, repeats=0, local_search=local_search)
    try:
        run_study(db, config, ev, out=lambda s: None)
    except TargetReached:
        pass
    finally:
        db.dispose()
    return _trials_to_target(ev, target)


def replay_random(space: Any, rows: dict[str, dict[str, str]], target: float, seed: int) -> int | None:
    """The baseline, then grid points in a random order (no repeats)."""
    import random

    from tuner.search.flags.space import baseline_candidate, grid

    ev = TabularEvaluator(rows, target)
    order = [c.key for c in grid(space)]
    random.Random(seed).shuffle(order)
    for key in [baseline_candidate(space).key, *order]:
        ev.trials.append(ev.value(key))
        if ev.trials[-1] >= target:
            break
    return _trials_to_target(ev, target)


def replay_one_at_a_time(space: Any, rows: dict[str, dict[str, str]], target: float, seed: int,
                         start: dict[str, Any]) -> int | None:
    """auto_benchmark's tier 2: from the engine's defaults (the grid point nearest them), sweep one
    parameter at a time over its values with the others fixed, keep the best value, go on to the next
    parameter (in a seeded order); repeat passes until a pass improves nothing."""
    import random

    from tuner.search.flags.space import active, baseline_candidate, candidate_from_values

    ev = TabularEvaluator(rows, target)
    measured: dict[str, float] = {}
    defaults = {"speculative-num-steps": 3}  # SGLang's when a speculative algorithm is switched on

    def complete(values: dict[str, Any]) -> dict[str, Any]:
        out = dict(values)
        for p in space.params:
            if active(p, out) and p.key not in out:
                out[p.key] = defaults.get(p.key, p.values()[0])
            elif not active(p, out):
                out.pop(p.key, None)
        return out

    def measure(values: dict[str, Any]) -> float:
        cand = candidate_from_values(space, values)
        if cand.key not in measured:
            measured[cand.key] = ev.value(cand.key)
            ev.trials.append(measured[cand.key])
        return measured[cand.key]

    ev.trials.append(ev.value(baseline_candidate(space).key))
    current = dict(start)
    best = measure(current)
    params = list(space.params)
    rng = random.Random(seed)
    while not ev.trials or max(ev.trials) < target:
        rng.shuffle(params)
        improved = False
        for p in params:
            if not active(p, current):
                continue
            for v in p.values():
                trial_values = complete({**current, p.key: v})
                if trial_values == current:
                    continue
                g = measure(trial_values)
                if max(ev.trials) >= target:
                    return _trials_to_target(ev, target)
                if g > best:
                    best, current, improved = g, trial_values, True
        if not improved:
            break
    return _trials_to_target(ev, target)


def run_compare(args: argparse.Namespace) -> int:
    import statistics
    import tempfile

    from tuner.search.flags.space import baseline_candidate, load_space, nearest_values

    logging.getLogger("tuner").setLevel(logging.ERROR)
    space = load_space(args.space)
    with open(args.grid, newline="") as f:
        rows = {row["key"]: row for row in csv.DictReader(f)}
    base_key = baseline_candidate(space).key
    if base_key not in rows:
        raise SystemExit("the grid has no baseline row: run the grid phase again to measure it")
    grid_rows = {k: r for k, r in rows.items() if k != base_key}
    optimum_key = max(grid_rows, key=lambda k: float(grid_rows[k]["goodput_tok_s"] or 0))
    optimum = float(grid_rows[optimum_key]["goodput_tok_s"])
    target = args.target * optimum
    n = len(grid_rows)
    near = sum(1 for r in grid_rows.values() if float(r["goodput_tok_s"] or 0) >= target)
    status = {}
    for r in grid_rows.values():
        label = r["status"] if r["status"] == "ok" else f"infeasible ({r['failure_kind']})"
        status[label] = status.get(label, 0) + 1
    # Every method starts from what the baseline launch tells: the engine's resolved defaults (/server_info),
    # mapped to the nearest point of the space.
    meta_path = Path(str(args.grid) + ".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    info = baseline_server_info(space, meta.get("model", "zai-org/GLM-4.7-FP8"), meta.get("gpu", "H200"))
    start = nearest_values(space, info)
    results: dict[str, list[int | None]] = {"ours": [], "tpe without local search": [], "random": [],
                                            "one-at-a-time": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            results["ours"].append(replay_ours(space, rows, target, seed, "tpe", n + 1, Path(tmp), info))
            results["tpe without local search"].append(
                replay_ours(space, rows, target, seed, "tpe", n + 1, Path(tmp), info, local_search=0.0))
            results["random"].append(replay_random(space, rows, target, seed))
            results["one-at-a-time"].append(replay_one_at_a_time(space, rows, target, seed, start))
            print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]}" for k, v in results.items()), flush=True)

    def med(values: list[int | None]) -> float:
        return statistics.median([v if v is not None else math.inf for v in values])

    steps = [int(r["steps"]) for r in grid_rows.values() if r["status"] == "ok" or r["failure_kind"] == "slo"]
    summary = {
        "grid": str(args.grid), "points": n, "optimum_goodput_tok_s": optimum,
        "optimum": json.loads(grid_rows[optimum_key]["params"]),
        "baseline_goodput_tok_s": float(rows[base_key]["goodput_tok_s"] or 0), "target_fraction": args.target,
        "target_goodput_tok_s": target, "points_at_target": near, "grid_status": status,
        "mean_load_steps_per_launch": statistics.mean(steps) if steps else None,
        "start": start, "seeds": args.seeds, "trials_to_target": results,
        "median": {k: med(v) for k, v in results.items()},
        "median_fraction_of_grid": {k: med(v) / n for k, v in results.items()},
        "machine": f"{platform.node()} {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(summary, indent=2, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
