"""Benchmark of `tuner kernel-sweep` on a GPU: tuned vs SGLang-default config, adaptive vs exhaustive, roofline.

    python benchmarks/moe_sweep_benchmark.py sweep --model GLM-4.7-FP8 --tp 8 --workdir W [--exhaustive-m 8,128,2048]
    python benchmarks/moe_sweep_benchmark.py report --model GLM-4.7-FP8 --tp 8 --workdir W --out docs/benchmarks/x.md

`sweep` runs the default (adaptive) search over the 18 standard M, then `--exhaustive` on the given M, each
in its own process with its own empty Triton cache so compilation is paid by each, and records wall times.
`report` reads both databases: per-M tuned vs default latency (both measured in the same run, same kernel),
the adaptive-vs-exhaustive best-latency gap and GPU time, and the achieved fraction of the memory roofline
at small M (bytes of the experts actually touched over the measured copy bandwidth).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

from _procs import run_interruptible


def _run_cli(args: list[str], db: Path, cache: Path, time_limit_s: float) -> tuple[float, bool]:
    """`tuner ...` with its own Triton cache, interruptible at the time limit (see _procs.run_interruptible)."""
    env = {**os.environ, "TRITON_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    return run_interruptible([sys.executable, "-m", "tuner", "--database-url", f"sqlite:///{db}", *args], env,
                             time_limit_s)


def cmd_sweep(a: argparse.Namespace) -> None:
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    timings_path = work / f"{_slug(a)}-walltimes.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    deadline = time.perf_counter() + a.time_limit_s
    # Triton caches live outside the workdir (which may be copied around); one per search mode, so each
    # mode pays its own compilation. The exhaustive runs share one cache across their M, as one tuner
    # process would.
    cache_root = Path(os.environ.get("BENCH_CACHE_ROOT", "/tmp/tuner-bench-cache"))
    base = ["kernel-sweep", "--model", a.model, "--tp", str(a.tp), "--kernel-source", "tuner"]
    if a.phase in ("all", "adaptive") and not timings.get("adaptive_finished"):
        wall, done = _run_cli(
            base + (["--batch-sizes", a.batch_sizes] if a.batch_sizes else []) + ["--budget", str(a.budget)],
            work / f"{_slug(a)}-adaptive.db", cache_root / f"{_slug(a)}-adaptive", deadline - time.perf_counter())
        timings["adaptive_wall_s"] = timings.get("adaptive_wall_s", 0.0) + wall
        timings["adaptive_finished"] = done
        timings_path.write_text(json.dumps(timings, indent=1))
    if a.phase in ("all", "exhaustive"):
        for m in [int(v) for v in a.exhaustive_m.split(",")]:
            key = f"exhaustive_wall_s_M{m}"
            if timings.get(f"exhaustive_finished_M{m}"):
                continue
            wall, done = _run_cli(base + ["--exhaustive", "--batch-sizes", str(m)], work / f"{_slug(a)}-exhaustive.db",
                                  cache_root / f"{_slug(a)}-exhaustive", deadline - time.perf_counter())
            timings[key] = timings.get(key, 0.0) + wall
            timings[f"exhaustive_finished_M{m}"] = done
            timings_path.write_text(json.dumps(timings, indent=1))
            if not done:
                break


def _slug(a: argparse.Namespace) -> str:
    return f"{a.model.replace('/', '_')}-tp{a.tp}"


def _measurements(db: Path) -> list[dict]:
    import sqlite3

    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("select * from kernel_measurements")]
    con.close()
    return rows


def _final_best(rows: list[dict], m: int) -> tuple[float | None, str | None]:
    ok = [r for r in rows if r["batch_size"] == m and r["status"] == "ok"]
    # final (30-replay) timings: a column since schema 0003, the `detail` text in databases written before
    finals = [r for r in ok if r.get("replays") == 30 or (r["detail"] or "").startswith("replays=30")] or ok
    if not finals:
        return None, None
    best = min(finals, key=lambda r: r["latency_us"])
    return best["latency_us"], best["config_key"]


def cmd_report(a: argparse.Namespace) -> None:
    import torch

    from tuner.kernels.fused_moe.problem import touched_weight_bytes
    from tuner.kernels.fused_moe.space import default_config
    from tuner.kernels.timing import measure_copy_bandwidth_gbs
    from tuner.models.config import load_model_config
    from tuner.models.shapes import derive_moe_shape

    work = Path(a.workdir)
    shape = derive_moe_shape(load_model_config(a.model), tp=a.tp)
    adaptive = _measurements(work / f"{_slug(a)}-adaptive.db")
    exh_db = work / f"{_slug(a)}-exhaustive.db"
    exhaustive = _measurements(exh_db) if exh_db.exists() else []
    walls = json.loads((work / f"{_slug(a)}-walltimes.json").read_text())
    bw_gbs = measure_copy_bandwidth_gbs(torch.device("cuda"))
    device = torch.cuda.get_device_name()
    sizes = sorted({r["batch_size"] for r in adaptive})
    lines = ["| M | default config | default us | tuned config | tuned us | speed-up |", "|---|---|---|---|---|---|"]
    ratios, data = [], {"model": a.model, "tp": a.tp, "shape": shape.key, "device": device,
                        "copy_bandwidth_gbs": bw_gbs, "rows": []}
    for m in sizes:
        dkey = default_config(shape, m).key
        d = [r for r in adaptive if r["batch_size"] == m and r["config_key"] == dkey and r["status"] == "ok"]
        best_us, best_key = _final_best(adaptive, m)
        if not d or best_us is None:
            continue
        d_us = d[0]["latency_us"]
        ratios.append(d_us / best_us)
        lines.append(f"| {m} | {dkey} | {d_us:.1f} | {best_key} | {best_us:.1f} | {d_us / best_us:.3f}x |")
        data["rows"].append({"M": m, "default_key": dkey, "default_us": d_us, "tuned_key": best_key, "tuned_us": best_us})
    geo = math.exp(statistics.fmean(math.log(r) for r in ratios)) if ratios else float("nan")
    data["geomean_speedup"] = geo
    data["min_speedup"] = min(ratios) if ratios else None
    out = [
        f"# Fused-MoE kernel sweep: {a.model} TP{a.tp} ({shape.key})", "",
        f"- Device: {device}; date: {dt.date.today().isoformat()}; torch {torch.__version__}; "
        f"triton {__import__('triton').__version__}; kernel: tuner's own Triton fused MoE (`--kernel-source tuner`).",
        f"- Commands: `python benchmarks/moe_sweep_benchmark.py sweep --model {a.model} --tp {a.tp} --workdir W` "
        f"then `... report --model {a.model} --tp {a.tp} --workdir W --out <this file>` (`sweep` takes `--time-limit-s` and "
        "resumes from the databases, so it may span several device calls).",
        "- Timing: whole fused MoE per call (align, activation quant, up GEMM, SiLU-mul(+quant), down GEMM, top-k sum), "
        "CUDA graph of 10 calls with fresh random routing each (fused shared expert in every token's top-k) "
        "cycling over up to 4 weight copies, L2 flushed before each replay, median of 30 replays "
        "(6 replays while searching). Default and tuned are measured in the same run.", "",
        "## Tuned vs SGLang's default config (same kernel, same run)", "", *lines, "",
        f"Geometric-mean speed-up over {len(ratios)} M: **{geo:.3f}x**; smallest per-M ratio: "
        f"{(min(ratios) if ratios else float('nan')):.3f}x.", "",
    ]
    # adaptive vs exhaustive
    ex_sizes = sorted({r["batch_size"] for r in exhaustive})
    finished = [m for m in ex_sizes if walls.get(f"exhaustive_finished_M{m}")]
    if ex_sizes:
        out += ["## Default (adaptive) search vs `--exhaustive`", "",
                "| M | adaptive best us | exhaustive best us | gap | adaptive: configs / GPU s | "
                "exhaustive: configs / GPU s (process wall s) | GPU-time ratio |",
                "|---|---|---|---|---|---|---|"]
        data["exhaustive"] = []
        for m in finished:
            a_us, _ = _final_best(adaptive, m)
            e_us, _ = _final_best(exhaustive, m)
            a_rows = [r for r in adaptive if r["batch_size"] == m]
            e_rows = [r for r in exhaustive if r["batch_size"] == m]
            # same basis for both: the device time of the measurements at this M (compile waits, checks, timing)
            a_s = sum(r["gpu_seconds"] for r in a_rows)
            e_s = sum(r["gpu_seconds"] for r in e_rows)
            e_wall = walls.get(f"exhaustive_wall_s_M{m}", float("nan"))
            gap = (a_us / e_us - 1) * 100 if a_us and e_us else float("nan")
            out.append(f"| {m} | {a_us:.1f} | {e_us:.1f} | {gap:+.2f}% | {len(a_rows)} / {a_s:.0f} | "
                       f"{len(e_rows)} / {e_s:.0f} ({e_wall:.0f}) | {a_s / e_s:.3f} |")
            data["exhaustive"].append({"M": m, "adaptive_us": a_us, "exhaustive_us": e_us, "adaptive_gpu_s": a_s,
                                       "exhaustive_gpu_s": e_s, "exhaustive_wall_s": e_wall,
                                       "adaptive_n": len(a_rows), "exhaustive_n": len(e_rows)})
        if len(finished) > 1:
            rows = data["exhaustive"]
            a_tot, e_tot = sum(r["adaptive_gpu_s"] for r in rows), sum(r["exhaustive_gpu_s"] for r in rows)
            worst = max((r["adaptive_us"] / r["exhaustive_us"] - 1) * 100 for r in rows)
            out.append(f"| all {len(rows)} M | - | - | worst {worst:+.2f}% | {sum(r['adaptive_n'] for r in rows)} / "
                       f"{a_tot:.0f} | {sum(r['exhaustive_n'] for r in rows)} / {e_tot:.0f} | {a_tot / e_tot:.3f} |")
            data["exhaustive_total"] = {"adaptive_gpu_s": a_tot, "exhaustive_gpu_s": e_tot, "worst_gap_pct": worst}
        for m in ex_sizes:
            if m not in finished:
                n = len([r for r in exhaustive if r["batch_size"] == m])
                out.append(f"| {m} | - | - | - | - | not finished within the device budget: {n} configs measured | - |")
        out += ["", "A positive gap means the adaptive search's pick is slower than the exhaustive best. GPU s = the "
                "device time of the measurements at that M (compile waits, correctness checks, timing) for both; the "
                "exhaustive process wall time (its own empty Triton cache, weight generation, start-up) is in "
                f"parentheses. Whole adaptive run over all {len(sizes)} M: "
                f"{walls.get('adaptive_wall_s', float('nan')):.0f} s wall.", ""]
    # roofline at small M
    out += ["## Memory roofline at small M", "",
            f"Measured device-to-device copy bandwidth: {bw_gbs:.0f} GB/s (read + write).", "",
            "| M | expected experts touched | weight bytes touched (MB) | roofline us | tuned us | fraction of roofline |",
            "|---|---|---|---|---|---|"]
    from tuner.kernels.fused_moe.problem import expected_distinct_experts

    for row in data["rows"]:
        if row["M"] > 64:
            continue
        b = touched_weight_bytes(shape, row["M"])
        floor_us = b / (bw_gbs * 1e9) * 1e6
        out.append(f"| {row['M']} | {expected_distinct_experts(shape, row['M']):.1f} | {b / 1e6:.1f} | {floor_us:.1f} | "
                   f"{row['tuned_us']:.1f} | {floor_us / row['tuned_us']:.2f} |")
    Path(a.out).write_text("\n".join(out) + "\n")
    Path(a.out).with_suffix(".json").write_text(json.dumps(data, indent=1))
    print("\n".join(out))


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("sweep", "report"):
        s = sub.add_parser(name)
        s.add_argument("--model", required=True)
        s.add_argument("--tp", type=int, default=8)
        s.add_argument("--workdir", required=True)
        if name == "sweep":
            s.add_argument("--phase", choices=["all", "adaptive", "exhaustive"], default="all")
            s.add_argument("--batch-sizes")
            s.add_argument("--budget", type=int, default=48)
            s.add_argument("--exhaustive-m", default="8,128,2048")
            s.add_argument("--time-limit-s", type=float, default=1e9,
                           help="interrupt (resumably) after this long; run again to continue")
        else:
            s.add_argument("--out", required=True)
    a = p.parse_args()
    {"sweep": cmd_sweep, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
