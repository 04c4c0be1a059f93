"""Sweep scaling: the same fused-MoE sweep with one worker on one GPU and with one worker per GPU on several,
sharing one database; wall time of each, the speed-up, and whether the exported files agree.

    python benchmarks/sweep_scaling.py run     --model GLM-4.7-FP8 --tp 8 --workdir W --gpus 0
    python benchmarks/sweep_scaling.py run     --model GLM-4.7-FP8 --tp 8 --workdir W --gpus 0,1
    python benchmarks/sweep_scaling.py compare --model GLM-4.7-FP8 --tp 8 --workdir W
    python benchmarks/sweep_scaling.py report  --workdir W --out docs/benchmarks/sweep-scaling-h200x2.md

`run` is `tuner kernel-sweep --kernel-source sglang --gpus G --export W/gpus-G-files` on its own database
(W/gpus-G.db) and its own empty Triton cache (so neither run reuses the other's compiled kernels), in its own process
group, wall time recorded in W/scaling.json; while it runs, the host's CPU busy fraction and each GPU's
utilisation are sampled once a second into W/<tag>-usage.csv (is the sweep bound by compiling or by timing?).
`compare` finds the M whose exported up or `_down` config differs between the runs and times the two folders there in SGLang's kernel through its own lookup (SGLANG_MOE_CONFIG_DIR),
interleaved, same process: a difference is within noise when the two latencies differ by less than their spreads.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Self

from _procs import run_interruptible


class UsageSampler:
    """Every `every_s` seconds while a run lasts: the host's CPU busy fraction (/proc/stat, all cores) and each GPU's
    utilisation (nvidia-smi, its own process group), written to a CSV as they arrive: whether a sweep is bound by
    compiling (CPU) or by timing (GPU). Either source missing is left out, never an error."""

    def __init__(self, path: Path, every_s: float = 1.0) -> None:
        import threading

        self.path, self.every_s = path, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._smi: str | None = None

    @staticmethod
    def _cpu() -> tuple[int, int] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields) - idle, sum(fields)

    def _loop(self) -> None:
        import time

        t0, last = time.perf_counter(), self._cpu()
        with self.path.open("w") as out:
            out.write("t_s,cpu_busy,gpu_util\n")
            while not self._stop.wait(self.every_s):
                now = self._cpu()
                busy = ""
                if now and last and now[1] > last[1]:
                    busy = f"{(now[0] - last[0]) / (now[1] - last[1]):.3f}"
                last = now
                gpu = ""
                if self._smi is not None:
                    gpu = self._smi_line()
                out.write(f"{time.perf_counter() - t0:.1f},{busy},{gpu}\n")
                out.flush()

    def _smi_line(self) -> str:
        import subprocess

        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=5, start_new_session=True, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return " ".join(r.stdout.split())

    def __enter__(self) -> Self:
        self._smi = shutil.which("nvidia-smi")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _tag(gpus: str) -> str:
    return "gpus-" + gpus.replace(",", "_")


def _load(work: Path) -> dict:
    path = work / "scaling.json"
    return json.loads(path.read_text()) if path.exists() else {"runs": {}}


def cmd_run(a: argparse.Namespace) -> None:
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tag = _tag(a.gpus)
    cache = work / f"triton-cache-{tag}"
    shutil.rmtree(cache, ignore_errors=True)
    (work / f"{tag}.db").unlink(missing_ok=True)
    args = [sys.executable, "-m", "tuner", "--database-url", f"sqlite:///{work / (tag + '.db')}",
            "kernel-sweep", "--model", a.model, "--tp", str(a.tp), "--kernel-source", "sglang", "--gpus", a.gpus,
            "--export", str(work / f"{tag}-files"), "--force", "--format", "sglang"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRITON_CACHE_DIR": str(cache)}
    with UsageSampler(work / f"{tag}-usage.csv"):
        wall_s, finished = run_interruptible(args, env, a.time_limit_s)
    data = _load(work)
    data["runs"][tag] = {"gpus": a.gpus, "wall_s": wall_s, "finished": finished, "model": a.model, "tp": a.tp,
                         "command": "tuner " + " ".join(args[3:]), "date": dt.date.today().isoformat()}
    (work / "scaling.json").write_text(json.dumps(data, indent=1))
    print(f"{tag}: {'finished' if finished else 'NOT finished'} in {wall_s:.1f} s")


def _tables(folder: Path) -> dict[str, dict]:
    """file name -> {M: entry} of every SGLang fused-MoE file under `folder` (up and `_down` alike)."""
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.rglob("E=*.json"))}


def _differing(a_dir: Path, b_dir: Path) -> list[int]:
    a, b = _tables(a_dir), _tables(b_dir)
    ms: set[int] = set()
    for name in set(a) | set(b):
        ta, tb = a.get(name, {}), b.get(name, {})
        ms |= {int(m) for m in set(ta) | set(tb) if ta.get(m) != tb.get(m)}
    return sorted(ms)


def cmd_compare(a: argparse.Namespace) -> None:
    import statistics

    import torch

    from tuner.kernels.fused_moe.backends import get_backend
    from tuner.kernels.fused_moe.engine_lookup import CONFIG_DIR_ENV
    from tuner.kernels.fused_moe.problem import MoeProblem, make_weight_copies
    from tuner.kernels.timing import time_calls
    from tuner.models.config import load_model_config
    from tuner.models.shapes import derive_moe_shape

    work = Path(a.workdir)
    data = _load(work)
    tags = sorted(data["runs"], key=lambda t: len(data["runs"][t]["gpus"]))
    if len(tags) != 2:
        raise SystemExit(f"compare needs exactly two runs in {work / 'scaling.json'}, found {tags}")
    folders = {t: work / f"{t}-files" for t in tags}
    differ = _differing(*folders.values())
    data["differing_m"] = differ
    data["compare"] = []
    engine = get_backend("sglang")
    shape = derive_moe_shape(load_model_config(a.model), tp=a.tp)
    device = torch.device("cuda", 0)
    weights = make_weight_copies(shape, device) if differ else None
    for m in differ:
        problem = MoeProblem(shape, m, engine, device, weights=weights)
        rounds: dict[str, list[float]] = {t: [] for t in tags}

        def call(i: int, problem: MoeProblem = problem) -> torch.Tensor:
            x, tw, ti = problem.inputs[i]
            return engine._call(x, problem.weights[i % len(problem.weights)], tw, ti, shape)  # type: ignore[attr-defined]

        for _ in range(a.rounds):
            for t in tags:
                os.environ[CONFIG_DIR_ENV] = str(folders[t])
                engine.get_moe_configs.cache_clear()  # type: ignore[attr-defined]
                rounds[t].append(time_calls(call, 10, 10, flusher=problem.flusher).median_us)
        row = {"M": m}
        for t, values in rounds.items():
            row[f"{t}_us"] = statistics.median(values)
            row[f"{t}_spread_us"] = (max(values) - min(values)) / 2
        one, two = tags
        gap = abs(row[f"{one}_us"] - row[f"{two}_us"])
        row["within_noise"] = gap <= row[f"{one}_spread_us"] + row[f"{two}_spread_us"]
        data["compare"].append(row)
        print(f"M={m}: {one} {row[f'{one}_us']:.1f} us, {two} {row[f'{two}_us']:.1f} us, "
              f"within noise: {row['within_noise']}", flush=True)
        del problem
    os.environ.pop(CONFIG_DIR_ENV, None)
    data["device"] = torch.cuda.get_device_name(0)
    data["engine"] = engine.version
    (work / "scaling.json").write_text(json.dumps(data, indent=1))
    print(f"{len(differ)} M differ between the exported folders: {differ}")


def cmd_report(a: argparse.Namespace) -> None:
    data = _load(Path(a.workdir))
    runs = sorted(data["runs"].values(), key=lambda r: len(r["gpus"]))
    one, many = runs[0], runs[-1]
    speedup = one["wall_s"] / many["wall_s"]
    n = len(many["gpus"].split(","))
    lines = [f"# Kernel-sweep scaling: {one['model']} TP{one['tp']} on 1 vs {n} GPUs ({data.get('device', '?')})", "",
             f"Date {one['date']}; {data.get('engine', '?')} kernel (engine-kernels stand-in); each run on its own "
             "empty Triton cache and its own SQLite database; one worker process per GPU sharing that database.", "",
             "Commands (`python benchmarks/sweep_scaling.py run --model "
             f"{one['model']} --tp {one['tp']} --workdir W --gpus G`, which runs):", ""]
    lines += [f"- `{r['command']}`" for r in runs]
    lines += ["", "| GPUs | wall time s | finished | speed-up vs 1 GPU |", "|---|---|---|---|"]
    lines += [f"| {r['gpus']} | {r['wall_s']:.1f} | {r['finished']} | x{one['wall_s'] / r['wall_s']:.2f} |"
              for r in runs]
    lines += ["", f"Speed-up x{speedup:.2f} on {n} GPUs (target x1.8: {'met' if speedup >= 1.8 else 'NOT met'}).", ""]
    differ = data.get("differing_m", [])
    if not differ:
        lines.append("The two runs exported byte-identical configs at every M.")
    else:
        lines += [f"Exported configs differ at M = {', '.join(map(str, differ))}. Both folders timed there in the same "
                  "process through SGLang's own lookup, interleaved rounds:", "",
                  "| M | 1 GPU us | spread | " + f"{n} GPUs us | spread | ratio | within noise |", "|---|---|---|---|---|---|---|"]
        tags = [_tag(one["gpus"]), _tag(many["gpus"])]
        for r in data.get("compare", []):
            a_us, b_us = r[f"{tags[0]}_us"], r[f"{tags[1]}_us"]
            lines.append(f"| {r['M']} | {a_us:.1f} | {r[f'{tags[0]}_spread_us']:.1f} | {b_us:.1f} | "
                         f"{r[f'{tags[1]}_spread_us']:.1f} | x{a_us / b_us:.3f} | {r['within_noise']} |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "compare"):
        s = sub.add_parser(name)
        s.add_argument("--model", required=True)
        s.add_argument("--tp", type=int, default=8)
        s.add_argument("--workdir", required=True)
        if name == "run":
            s.add_argument("--gpus", required=True)
            s.add_argument("--time-limit-s", type=float, default=540)
        else:
            s.add_argument("--rounds", type=int, default=5)
    r = sub.add_parser("report")
    r.add_argument("--workdir", required=True)
    r.add_argument("--out", required=True)
    a = p.parse_args()
    {"run": cmd_run, "compare": cmd_compare, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
