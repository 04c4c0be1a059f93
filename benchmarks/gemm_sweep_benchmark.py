"""FP8 block GEMM sweep in the engine's own kernel: tuned vs SGLang's shipped file vs its default, and the default
(adaptive) search vs `--exhaustive` on chosen shapes.

    python benchmarks/gemm_sweep_benchmark.py sweep      --workdir W [--gpus 0,1] [--time-limit-s 540]
    python benchmarks/gemm_sweep_benchmark.py exhaustive --workdir W --shapes "576,7168 7168,2048" --batch-sizes 16,1024 [--gpus 0,1]
    python benchmarks/gemm_sweep_benchmark.py report     --workdir W --out docs/benchmarks/fp8-gemm-h200.md

`sweep` runs `tuner kernel-sweep --model DeepSeek-V3 --tp 8 --kernel fp8-gemm --kernel-source sglang` over the
model's 13 dense block-FP8 (N, K) pairs at M = 1, 16, 128, 1024, 4096 (W/gemm-adaptive.db, files in W/gemm-files);
at every (shape, M) the same run measures SGLang's current choice (its shipped H200 file, else its default), its
default and the tuned config, interleaved. `exhaustive` measures SGLang's whole GEMM tuner space (with the sm90
SWAP_AB / SPLIT_K variants) on its own database, so nothing is shared with the adaptive run; the report then reads,
in that one exhaustive run, the latency of the adaptive pick beside the fastest config (same run, same method).
Both commands run in their own process group, stop like Ctrl-C at the time limit and resume when run again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
from pathlib import Path

from _procs import run_interruptible

MODEL = "DeepSeek-V3"
BATCH_SIZES = "1,16,128,1024,4096"


def _timings(work: Path) -> dict:
    path = work / "gemm.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save(work: Path, data: dict) -> None:
    (work / "gemm.json").write_text(json.dumps(data, indent=1))


def _run(a: argparse.Namespace, phase: str, extra: list[str]) -> None:
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "tuner", "--database-url", f"sqlite:///{work / f'gemm-{phase}.db'}",
            "kernel-sweep", "--model", MODEL, "--tp", "8", "--kernel", "fp8-gemm", "--kernel-source", "sglang",
            "--batch-sizes", a.batch_sizes, "--gpus", a.gpus, *extra]
    if a.compile_workers:
        args += ["--compile-workers", str(a.compile_workers)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRITON_CACHE_DIR": str(work / f"triton-cache-{phase}")}
    wall_s, finished = run_interruptible(args, env, a.time_limit_s)
    data = _timings(work)
    entry = data.setdefault(phase, {"wall_s": 0.0})
    entry["wall_s"] += wall_s
    entry["finished"] = finished
    entry["command"] = "tuner " + " ".join(args[5:])
    entry["gpus"] = a.gpus
    entry["date"] = dt.date.today().isoformat()
    _save(work, data)
    print(f"{phase}: {'finished' if finished else 'stopped (run again to resume)'} after {entry['wall_s']:.0f} s in all")


def cmd_sweep(a: argparse.Namespace) -> None:
    _run(a, "adaptive", ["--export", str(Path(a.workdir) / "gemm-files"), "--force"])


def cmd_exhaustive(a: argparse.Namespace) -> None:
    _run(a, "exhaustive", ["--exhaustive", "--shapes", a.shapes])


def _db(path: Path):  # type: ignore[no-untyped-def]
    from tuner.store.db import open_database

    return open_database(f"sqlite:///{path}")


def _sweeps(path: Path) -> list[dict]:
    """Per stored GEMM sweep: its record, best configs by M and measurements by M."""
    from tuner.store.kernels import MeasurementContext, list_sweeps, load_best_configs, load_measurements

    db = _db(path)
    try:
        out = []
        for s in list_sweeps(db):
            if s.kernel != "fp8_gemm":
                continue
            ctx = MeasurementContext(s.kernel, s.kernel_source, s.device_name, s.triton_version, s.bench_method)
            by_m: dict[int, list] = {}
            for m in load_measurements(db, ctx, s.shape_key):
                by_m.setdefault(m.batch_size, []).append(m)
            out.append({"sweep": s, "best": load_best_configs(db, s.id), "measurements": by_m})
        return out
    finally:
        db.dispose()


def _geomean(values: list[float]) -> float:
    from tuner.search.report import geomean

    return geomean(values) or math.nan


def _vs_choice(adaptive_best: object, exhaustive_best: object) -> str:
    """"xA / xB": each run's winner vs SGLang's own config, both from that run's interleaved final rounds."""
    def ratio(b: object) -> str:
        engine = getattr(b, "engine_latency_us", None)
        latency = getattr(b, "latency_us", None)
        return f"x{engine / latency:.3f}" if engine and latency else "-"

    return f"{ratio(adaptive_best)} / {ratio(exhaustive_best)}"


def cmd_report(a: argparse.Namespace) -> None:
    work = Path(a.workdir)
    timings = _timings(work)
    adaptive = _sweeps(work / "gemm-adaptive.db")
    if not adaptive:
        raise SystemExit(f"no GEMM sweep in {work / 'gemm-adaptive.db'}")
    first = adaptive[0]["sweep"]
    ad = timings.get("adaptive", {})
    lines = [f"# FP8 block GEMM: tuned vs SGLang's shipped file vs its default, in SGLang's own kernel ({first.device_name})",
             "",
             f"Date {ad.get('date', '?')}; {first.engine_version or first.kernel_source} kernel (engine-kernels "
             f"stand-in: SGLang 0.5.23's `w8a8_block_fp8_matmul_triton`, sm90 SWAP_AB / SPLIT_K variant included); "
             f"Triton {first.triton_version}; torch {first.torch_version}.", "",
             f"Command: `python benchmarks/gemm_sweep_benchmark.py sweep --workdir W --gpus {ad.get('gpus', '?')}`, "
             f"which runs `{ad.get('command', '?')}` — wall time {ad.get('wall_s', math.nan):.0f} s "
             f"({'finished' if ad.get('finished') else 'NOT finished'}).", "",
             "All three latencies of a row come from the same run: SGLang's current choice (its shipped H200 file "
             "through its own lookup, else its default), its default, and the tuned config, timed in interleaved "
             "final rounds (CUDA graph of 10 calls, fresh activations, rotating weight copies, L2 flushed). "
             "The tuned config is exported only where it beats SGLang's current choice beyond the measured noise; "
             "elsewhere SGLang's own is kept (x1.000).", "",
             "| (N, K) | M | shipped/default source | default us | shipped us | tuned us | tuned vs shipped | "
             "tuned vs default | tuned config |", "|---|---|---|---|---|---|---|---|---|"]
    vs_shipped: list[float] = []
    vs_default: list[float] = []
    slower = []
    for entry in sorted(adaptive, key=lambda e: e["sweep"].shape_key):
        s = entry["sweep"]
        nk = f"{s.shape.get('n')}, {s.shape.get('k')}"
        for m, b in sorted(entry["best"].items()):
            shipped = b.engine_latency_us or math.nan
            default = b.default_latency_us or math.nan
            r_s, r_d = shipped / b.latency_us, default / b.latency_us
            vs_shipped.append(r_s)
            vs_default.append(r_d)
            if r_s < 0.98:
                slower.append(f"{nk} M={m}")
            lines.append(f"| {nk} | {m} | {b.engine_source or '?'} | {default:.1f} | {shipped:.1f} | {b.latency_us:.1f} | "
                         f"x{r_s:.3f} | x{r_d:.3f} | `{'kept' if b.kept_engine_choice else b.config_key}` |")
    lines[6:6] = [f"Over {len(vs_shipped)} (shape, M): geometric mean tuned vs shipped **x{_geomean(vs_shipped):.3f}** "
                  f"(worst x{min(vs_shipped):.3f}, best x{max(vs_shipped):.3f}), tuned vs default "
                  f"**x{_geomean(vs_default):.3f}**; rows slower than shipped beyond 2%: "
                  f"{', '.join(slower) if slower else 'none'}.", ""]
    ex_path = work / "gemm-exhaustive.db"
    if ex_path.exists():
        ex = timings.get("exhaustive", {})
        picks = {(e["sweep"].shape_key, m): b.config_key for e in adaptive for m, b in e["best"].items()}
        finals = {(e["sweep"].shape_key, m): b for e in adaptive for m, b in e["best"].items()}
        gpu_adaptive = {(e["sweep"].shape_key, m): sum(x.gpu_seconds for x in ms)
                        for e in adaptive for m, ms in e["measurements"].items()}
        lines += ["", "## Default (adaptive) search vs `--exhaustive`", "",
                  f"Command: `python benchmarks/gemm_sweep_benchmark.py exhaustive --workdir W ...`, which runs "
                  f"`{ex.get('command', '?')}` — wall time {ex.get('wall_s', math.nan):.0f} s "
                  f"({'finished' if ex.get('finished') else 'NOT finished: the rows say how much of the space was measured'}).",
                  "", "The exhaustive run measures SGLang's own GEMM tuning space (its tuner's grid with the sm90 "
                  "SWAP_AB / SPLIT_K variants). \"gap\": the adaptive pick vs the space's fastest config, both from "
                  "the exhaustive run (one timing each, same method), where the pick is in that space. The adaptive "
                  "search also reaches configs outside it (e.g. SPLIT_K 16); for every row, \"vs SGLang's choice\" "
                  "gives each run's winner against SGLang's own config timed in that run's interleaved final rounds "
                  "(adaptive / exhaustive): the reference cancels the run-to-run difference.", "",
                  "| (N, K) | M | configs measured (ok) | exhaustive best us | adaptive pick us | gap | "
                  "vs SGLang's choice: adaptive / exhaustive | GPU s adaptive / exhaustive |",
                  "|---|---|---|---|---|---|---|---|"]
        for entry in sorted(_sweeps(ex_path), key=lambda e: e["sweep"].shape_key):
            s = entry["sweep"]
            for m, ms in sorted(entry["measurements"].items()):
                ok = [x for x in ms if x.status == "ok" and x.latency_us]
                if not ok:
                    continue
                best = min(ok, key=lambda x: x.latency_us)
                pick = picks.get((s.shape_key, m))
                pick_us = next((x.latency_us for x in ok if x.config_key == pick), None)
                gap = f"{(pick_us / best.latency_us - 1) * 100:+.2f}%" if pick_us else "outside the space"
                g_a = gpu_adaptive.get((s.shape_key, m), math.nan)
                g_e = sum(x.gpu_seconds for x in ms)
                lines.append(f"| {s.shape.get('n')}, {s.shape.get('k')} | {m} | {len(ms)} ({len(ok)}) | "
                             f"{best.latency_us:.1f} | {pick_us if pick_us is None else f'{pick_us:.1f}'} | {gap} | "
                             f"{_vs_choice(finals.get((s.shape_key, m)), entry['best'].get(m))} | "
                             f"{g_a:.0f} / {g_e:.0f} = {g_a / g_e:.3f} |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("sweep", "exhaustive"):
        s = sub.add_parser(name)
        s.add_argument("--workdir", required=True)
        s.add_argument("--gpus", default="0")
        s.add_argument("--batch-sizes", default=BATCH_SIZES)
        s.add_argument("--time-limit-s", type=float, default=540)
        s.add_argument("--compile-workers", type=int, help="per GPU (default: the sweep's own)")
        if name == "exhaustive":
            s.add_argument("--shapes", required=True, help="N,K pairs, e.g. '576,7168 7168,2048'")
    r = sub.add_parser("report")
    r.add_argument("--workdir", required=True)
    r.add_argument("--out", required=True)
    a = p.parse_args()
    {"sweep": cmd_sweep, "exhaustive": cmd_exhaustive, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
