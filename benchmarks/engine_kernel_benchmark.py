"""Tuned files vs the engine's shipped files vs its default, timed in the engine's own fused-MoE kernel.

    python benchmarks/engine_kernel_benchmark.py sweep   --model GLM-4.7-FP8 --tp 8 --workdir W [--time-limit-s 600]
    python benchmarks/engine_kernel_benchmark.py compare --model GLM-4.7-FP8 --tp 8 --workdir W
    python benchmarks/engine_kernel_benchmark.py exhaustive --model DeepSeek-V3 --tp 8 --workdir W --batch-sizes 256,1024 [--gpus 0,1]
    python benchmarks/engine_kernel_benchmark.py report  --workdir W --out docs/benchmarks/x.md [--device-note ...]

`sweep` runs `tuner kernel-sweep --kernel-source sglang --export W/<model>-files` in its own process group (at
the time limit it is interrupted like Ctrl-C; running it again resumes) and records the wall time.
`exhaustive` runs `tuner kernel-sweep --exhaustive` (the engine's whole space for the up GEMM, then for the down
GEMM given the best up) at a few M into its own database and folder; it resumes the same way, across GPU sessions.
When its files exist, `compare` times them too at those M (a fourth column, same interleaved rounds), and `report`
sets the default search against it: latency and GPU time.
`compare` then times, per M and in the same process, the whole MoE layer as SGLang runs it with
SGLANG_MOE_CONFIG_DIR at (a) an empty folder: its default, (b) unset: its shipped files through its own lookup
(Triton-folder fallback included), (c) the exported folder: the tuned files, exactly as a user would deploy
them. The three are timed in interleaved rounds (CUDA graph of 10 calls, fresh routing per call, L2 flushed,
median of round medians), each output checked against the float32 reference. It also times tuner's own kernel
at SGLang's default config, for the ratio of the two kernels. Needs SGLang (or the engine-kernels stand-in)
importable and a GPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _procs import run_interruptible

ROUNDS = 3
ROUND_REPLAYS = 10


def _slug(a: argparse.Namespace) -> str:
    return f"{a.model.replace('/', '_')}-tp{a.tp}"


def _run_kernel_sweep(a: argparse.Namespace, name: str, sweep_args: list[str]) -> dict:
    """`tuner kernel-sweep` into W/<slug><name>.db in its own process group, stopped like Ctrl-C at the time limit
    (a re-run resumes); wall time accumulated across runs in W/<slug><name or -sweep>.json, which is returned."""
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    timings_path = work / f"{_slug(a)}{name or '-sweep'}.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {"wall_s": 0.0}
    args = [sys.executable, "-m", "tuner", "--database-url", f"sqlite:///{work / (_slug(a) + name + '.db')}",
            "kernel-sweep", "--model", a.model, "--tp", str(a.tp), "--kernel-source", a.kernel_source,
            *sweep_args, "--force", *a.extra]
    wall_s, finished = run_interruptible(args, {**os.environ, "PYTHONUNBUFFERED": "1"}, a.time_limit_s)
    timings["wall_s"] += wall_s
    timings["finished"] = finished
    timings["command"] = " ".join(args[1:])
    timings_path.write_text(json.dumps(timings, indent=1))
    return timings


def cmd_sweep(a: argparse.Namespace) -> None:
    timings = _run_kernel_sweep(a, "", ["--export", str(Path(a.workdir) / f"{_slug(a)}-files")])
    print(f"sweep {'finished' if timings['finished'] else 'stopped'} after {timings['wall_s']:.0f} s in all")


def cmd_exhaustive(a: argparse.Namespace) -> None:
    files = Path(a.workdir) / f"{_slug(a)}-exhaustive-files"
    timings = _run_kernel_sweep(a, "-exhaustive", [
        "--exhaustive", "--batch-sizes", a.batch_sizes, "--export", str(files), "--format", "sglang",
        *(["--gpus", a.gpus] if a.gpus else [])])
    timings["batch_sizes"] = [int(v) for v in a.batch_sizes.split(",")]
    (Path(a.workdir) / f"{_slug(a)}-exhaustive.json").write_text(json.dumps(timings, indent=1))
    print(f"exhaustive sweep {'finished' if timings['finished'] else 'stopped'} after {timings['wall_s']:.0f} s in all")


def _exhaustive_batch_sizes(a: argparse.Namespace) -> set[int]:
    """The M the exhaustive sweep finished (its files hold only those M: SGLang would use the nearest for others)."""
    path = Path(a.workdir) / f"{_slug(a)}-exhaustive.json"
    files = Path(a.workdir) / f"{_slug(a)}-exhaustive-files"
    if not path.exists() or not files.exists():
        return set()
    info = json.loads(path.read_text())
    return set(info["batch_sizes"]) if info.get("finished") else set()


def cmd_compare(a: argparse.Namespace) -> None:
    import torch
    import triton

    from tuner.kernels.base import STANDARD_BATCH_SIZES, MoeConfigs
    from tuner.kernels.fused_moe.backends import TunerBackend, get_backend
    from tuner.kernels.fused_moe.engine_lookup import CONFIG_DIR_ENV
    from tuner.kernels.fused_moe.problem import MoeProblem, make_weight_copies
    from tuner.kernels.fused_moe.space import default_config
    from tuner.kernels.timing import time_calls
    from tuner.models.config import load_model_config
    from tuner.models.shapes import derive_moe_shape

    engine = get_backend(a.kernel_source)
    shape = derive_moe_shape(load_model_config(a.model), tp=a.tp)
    device = torch.device("cuda", 0)
    files = Path(a.workdir) / f"{_slug(a)}-files"
    empty = Path(tempfile.mkdtemp(prefix="no-configs-"))
    (empty / "configs").mkdir()  # SGLang lists configs/ for its Triton-folder fallback
    modes = {"default": str(empty), "shipped": None, "tuned": str(files)}
    weights = make_weight_copies(shape, device)
    ours = TunerBackend()
    sizes = [int(v) for v in a.batch_sizes.split(",")] if a.batch_sizes else list(STANDARD_BATCH_SIZES)
    exhaustive_at = _exhaustive_batch_sizes(a)
    all_modes = dict(modes)
    rows = []
    for m in sizes:
        modes = {**all_modes, **({"exhaustive": str(Path(a.workdir) / f"{_slug(a)}-exhaustive-files")}
                                 if m in exhaustive_at else {})}
        problem = MoeProblem(shape, m, engine, device, weights=weights)

        def lookup_call(mode: str, i: int, problem: MoeProblem = problem) -> torch.Tensor:
            x, tw, ti = problem.inputs[i]
            return engine._call(x, problem.weights[i % len(problem.weights)], tw, ti, shape)  # type: ignore[attr-defined]

        def under(mode: str, modes: dict = modes):  # the engine's own lookup, SGLANG_MOE_CONFIG_DIR as a user sets it
            if modes[mode] is None:
                os.environ.pop(CONFIG_DIR_ENV, None)
            else:
                os.environ[CONFIG_DIR_ENV] = modes[mode]
            engine.get_moe_configs.cache_clear()  # type: ignore[attr-defined]

        row: dict = {"M": m, "errors": {}}
        rounds: dict[str, list[float]] = {k: [] for k in modes}
        for mode in modes:  # correctness first, in the kernel, against the float32 reference
            under(mode)
            x, tw, ti = problem.check_input
            out = engine._call(x, problem.weights[0], tw, ti, shape)  # type: ignore[attr-defined]
            row["errors"][mode] = float((out.float() - problem.reference).norm() / problem.reference.norm())
            row.setdefault("configs", {})[mode] = engine.engine_choice(shape, m).configs.key \
                if mode != "default" else MoeConfigs(default_config(shape, m)).key
        for _ in range(ROUNDS):
            for mode in modes:
                under(mode)
                rounds[mode].append(time_calls(lambda i, mode=mode: lookup_call(mode, i), 10, ROUND_REPLAYS,
                                               flusher=problem.flusher).median_us)
        os.environ.pop(CONFIG_DIR_ENV, None)
        for mode, values in rounds.items():
            row[f"{mode}_us"] = statistics.median(values)
            row[f"{mode}_spread_us"] = (max(values) - min(values)) / 2
        ours_problem = MoeProblem(shape, m, ours, device, weights=weights)
        row["ours_at_default_us"] = ours_problem.time(MoeConfigs(default_config(shape, m)), ROUND_REPLAYS * ROUNDS).median_us
        rows.append(row)
        print(f"M={m:5d} default {row['default_us']:8.1f} shipped {row['shipped_us']:8.1f} tuned {row['tuned_us']:8.1f} "
              + (f"exhaustive {row['exhaustive_us']:8.1f} " if "exhaustive_us" in row else "")
              + f"us  tuned/shipped x{row['shipped_us'] / row['tuned_us']:.3f}  tuned/default x{row['default_us'] / row['tuned_us']:.3f}"
              f"  ours@default/engine@default {row['ours_at_default_us'] / row['default_us']:.2f}", flush=True)
        del problem, ours_problem
        torch.cuda.empty_cache()
    result = {
        "model": a.model, "tp": a.tp, "shape": shape.key, "device": torch.cuda.get_device_name(0),
        "engine": engine.version, "triton": triton.__version__, "torch": torch.__version__,
        "date": dt.date.today().isoformat(), "rows": rows,
        "command": "python benchmarks/engine_kernel_benchmark.py compare " + " ".join(sys.argv[2:]),
    }
    out = Path(a.workdir) / f"{_slug(a)}-compare.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


def _geomean(values: list[float]) -> float:
    from tuner.search.report import geomean

    return geomean(values) or math.nan


def cmd_report(a: argparse.Namespace) -> None:
    work = Path(a.workdir)
    lines = [f"# Tuned vs shipped vs default in SGLang's own fused-MoE kernel ({a.title})", ""]
    for compare in sorted(work.glob("*-compare.json")):
        r = json.loads(compare.read_text())
        sweep = json.loads((work / compare.name.replace("-compare.json", "-sweep.json")).read_text())
        rows = r["rows"]
        vs_shipped = [x["shipped_us"] / x["tuned_us"] for x in rows]
        vs_default = [x["default_us"] / x["tuned_us"] for x in rows]
        ours = [x["ours_at_default_us"] / x["default_us"] for x in rows]
        lines += [
            f"## {r['model']} TP{r['tp']} ({r['shape']})", "",
            f"Device: {r['device']}; {r['engine']} kernel; Triton {r['triton']}; torch {r['torch']}; date {r['date']}.",
            (f"Sweep: `python benchmarks/engine_kernel_benchmark.py sweep --model {r['model']} --tp {r['tp']} --workdir W` "
             f"(runs `tuner kernel-sweep --kernel-source sglang` with the default budgets) — wall time "
             f"{sweep['wall_s']:.0f} s ({'finished' if sweep['finished'] else 'NOT finished'})."),
            f"Comparison: `python benchmarks/engine_kernel_benchmark.py compare --model {r['model']} --tp {r['tp']} --workdir W`.",
            "",
            (f"Geometric mean over {len(rows)} M: tuned vs shipped **x{_geomean(vs_shipped):.3f}** "
             f"(worst x{min(vs_shipped):.3f} at M={rows[vs_shipped.index(min(vs_shipped))]['M']}), tuned vs default "
             f"**x{_geomean(vs_default):.3f}**; shipped vs default "
             f"x{_geomean([x['default_us'] / x['shipped_us'] for x in rows]):.3f}. Tuner's own kernel at SGLang's "
             f"default config takes x{_geomean(ours):.2f} SGLang's time (geomean)."), "",
            ("| M | default us | shipped us | tuned us | tuned vs shipped | tuned vs default | spread (tuned) us | "
             "rel. err tuned | ours@default / SGLang@default | tuned configs |"),
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for x, s, d, o in zip(rows, vs_shipped, vs_default, ours):
            lines.append(f"| {x['M']} | {x['default_us']:.1f} | {x['shipped_us']:.1f} | {x['tuned_us']:.1f} | x{s:.3f} | "
                         f"x{d:.3f} | {x['tuned_spread_us']:.1f} | {x['errors']['tuned']:.1e} | {o:.2f} | "
                         f"`{x['configs']['tuned']}` |")
        lines.append("")
        lines += _exhaustive_section(work, compare.name.replace("-compare.json", ""), rows)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


def _gpu_seconds_at(db: Path, batch_size: int) -> float:
    import sqlite3

    with sqlite3.connect(db) as conn:
        (value,) = conn.execute("select coalesce(sum(gpu_seconds), 0) from kernel_measurements where batch_size = ?",
                                (batch_size,)).fetchone()
    return float(value)


def _exhaustive_section(work: Path, slug: str, rows: list[dict]) -> list[str]:
    """Default search vs the exhaustive one at the M both ran, from the same comparison run."""
    compared = [x for x in rows if "exhaustive_us" in x]
    if not compared:
        return []
    info = json.loads((work / f"{slug}-exhaustive.json").read_text())
    lines = [
        "### Default search vs exhaustive (same interleaved rounds)", "",
        (f"Exhaustive: `python benchmarks/engine_kernel_benchmark.py exhaustive --workdir W --batch-sizes "
         f"{','.join(map(str, info['batch_sizes']))}` (= `{info['command']}`), wall time {info['wall_s']:.0f} s. "
         "GPU time: the device seconds of every measurement at that M (compilation waits included) in each sweep's "
         "database."), "",
        ("| M | default search us | exhaustive us | default search / exhaustive | within 3% | GPU s default search | "
         "GPU s exhaustive | share | exhaustive configs |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in compared:
        ratio = x["tuned_us"] / x["exhaustive_us"]
        ours, full = _gpu_seconds_at(work / f"{slug}.db", x["M"]), _gpu_seconds_at(work / f"{slug}-exhaustive.db", x["M"])
        lines.append(f"| {x['M']} | {x['tuned_us']:.1f} | {x['exhaustive_us']:.1f} | x{ratio:.3f} | "
                     f"{'yes' if ratio <= 1.03 else '**no**'} | {ours:.0f} | {full:.0f} | "
                     f"{100 * ours / full if full else math.nan:.1f}% | `{x['configs']['exhaustive']}` |")
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("sweep", "compare", "exhaustive"):
        s = sub.add_parser(name)
        s.add_argument("--model", required=True)
        s.add_argument("--tp", type=int, default=8)
        s.add_argument("--workdir", required=True)
        s.add_argument("--kernel-source", default="sglang")
        if name in ("sweep", "exhaustive"):
            s.add_argument("--time-limit-s", type=float, default=900)
            s.add_argument("extra", nargs="*", help="more kernel-sweep arguments, after --")
        if name == "exhaustive":
            s.add_argument("--batch-sizes", required=True)
            s.add_argument("--gpus", help="as kernel-sweep's --gpus: one worker per GPU, each takes an M")
        if name == "compare":
            s.add_argument("--batch-sizes")
    r = sub.add_parser("report")
    r.add_argument("--workdir", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--title", default="")
    a = p.parse_args()
    {"sweep": cmd_sweep, "compare": cmd_compare, "exhaustive": cmd_exhaustive, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
