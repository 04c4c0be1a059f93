"""Simulator fidelity: every published figure of the seeds the simulated engine can express, with the
simulator's value beside it, as docs/benchmarks/sim-fidelity.md.

    .venv/bin/python benchmarks/sim_fidelity.py [--out docs/benchmarks/sim-fidelity.md]

The simulator's values come from its own step-time model and memory plan, reached through the same SGLang
0.5.23 flags a user passes (no server is started, so the numbers do not depend on this machine's load).
aiconfigurator's estimates are added when the `aiconfigurator` package imports (see AICONFIGURATOR_NOTE).
"""

from __future__ import annotations

import argparse
import datetime
import platform
from dataclasses import dataclass
from pathlib import Path

from tuner.runtime.sim.args import parse_cli, resolve_args
from tuner.runtime.sim.cost import ForwardBatch
from tuner.runtime.sim.engine import Engine
from tuner.runtime.sim.server import plan_for

DSV3 = "deepseek-ai/DeepSeek-V3"
GLM = "zai-org/GLM-4.7-FP8"

AICONFIGURATOR_NOTE = (
    "aiconfigurator 0.12.0 (PyPI) was tried in a separate virtualenv on this CPU machine; see the section "
    "below for what happened. Without it, the matched-configuration targets of issue 11 (TPOT and TTFT "
    "within 20%, Kendall tau >= 0.9) are not checked here.")


def engine(model_path: str, *flags: str) -> Engine:
    args, plan = plan_for(resolve_args(parse_cli(["--model-path", model_path, "--tp-size", "8", *flags]), {}))
    return Engine(args, plan, None)


def decode_s(e: Engine, batch: int, context: int) -> float:
    graph = bool(e.graph_sizes) and not e.args.disable_cuda_graph and batch <= max(e.graph_sizes or (0,))
    return e.cost_model.forward_s(ForwardBatch(
        decode_seqs=batch, decode_context_tokens=batch * context, cuda_graph=graph,
        graph_padded_seqs=batch if graph else 0))


def prefill_s(e: Engine, tokens: int) -> float:
    return e.cost_model.forward_s(ForwardBatch(prefill_tokens=tokens, prefill_seqs=1,
                                               prefill_attention_pairs=tokens * tokens / 2))


def decode_throughput(e: Engine, prompts: int, context: int) -> float:
    """Output tok/s with everything sent at once: as many requests as the engine runs at a time."""
    batch = min(prompts, e.args.max_running_requests or prompts,
                e.plan.max_total_num_tokens // max(1, context))
    return batch / decode_s(e, batch, context)


@dataclass(frozen=True)
class Row:
    seed: str
    what: str
    published: str
    published_value: float
    simulated_value: float
    unit: str

    def sign_matches(self) -> bool:
        return (self.published_value - 1.0) * (self.simulated_value - 1.0) > 0 if self.unit == "ratio" else True


def seed_rows() -> list[Row]:
    rows: list[Row] = []
    base, eager = engine(DSV3), engine(DSV3, "--cuda-graph-backend-decode", "disabled")
    compiled = engine(DSV3, "--enable-torch-compile")
    rows.append(Row("004", "DeepSeek-V3 TP8 H200, decode latency at batch 1 with CUDA graphs (ms)",
                    "32.2 ms (SGLang of 2025-02)", 32.2, decode_s(base, 1, 256) * 1e3, "ms"))
    rows.append(Row("004", "CUDA graphs off / on, decode latency at batch 1",
                    "228.9 / 32.2 ms", 228.9 / 32.2, decode_s(eager, 1, 256) / decode_s(base, 1, 256), "ratio"))
    rows.append(Row("004", "torch.compile + graphs / graphs, decode latency at batch 1",
                    "24.2 / 32.2 ms", 24.2 / 32.2, decode_s(compiled, 1, 256) / decode_s(base, 1, 256), "ratio"))
    dp = engine(DSV3, "--enable-dp-attention", "--dp-size", "8", "--sim-sglang", "seed")
    rows.append(Row("004", "DP attention / TP, decode throughput, input 1, output 512, 10000 prompts at once",
                    "8949 / 5508 tok/s", 8949 / 5508, decode_throughput(dp, 10000, 257)
                    / decode_throughput(base, 10000, 257), "ratio"))
    no_overlap = engine(DSV3, "--disable-overlap-schedule")
    rows.append(Row("004", "overlap off / on, output throughput, input 256, output 32, 10000 prompts at once",
                    "1090 / 1052 tok/s", 1090 / 1052, decode_throughput(no_overlap, 10000, 272)
                    / decode_throughput(base, 10000, 272), "ratio"))
    glm, unfused = engine(GLM), engine(GLM, "--disable-shared-experts-fusion")
    # seed 001: 4096 in / 1000 out at 14 req/s: about 14 x 20 s = 280 requests decoding at ~4.6k context
    rows.append(Row("001", "GLM-4.7-FP8 TP8 H200: fused / unfused shared experts, ITL at ~256 running",
                    "-20.8% ITL from fusing", 1 - 0.208, decode_s(glm, 256, 4600) / decode_s(unfused, 256, 4600),
                    "ratio"))
    rows.append(Row("001", "fused / unfused shared experts, prefill of a 4096-token prompt (TTFT at 14 req/s "
                    "also holds queueing)", "up to -23.7% TTFT from fusing", 1 - 0.237,
                    prefill_s(glm, 4096) / prefill_s(unfused, 4096), "ratio"))
    return rows


def try_aiconfigurator() -> str:
    """What importing aiconfigurator here gave (its estimates are not wired in yet)."""
    try:
        import aiconfigurator  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as exc:
        return f"`import aiconfigurator` in the project's environment: {exc}."
    return "aiconfigurator imports in this environment; its estimates are not wired into this script yet."


def render(rows: list[Row]) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        "# Simulator fidelity: the seeds' published figures vs the simulated engine",
        "",
        f"Generated by `benchmarks/sim_fidelity.py` on {today} ({platform.machine()} CPU, Python "
        f"{platform.python_version()}); the simulator's values come from its step-time model and memory plan "
        "reached through SGLang 0.5.23 flags (no server started, so they do not depend on machine load).",
        "",
        "| seed | what | published | published value | simulated | sim / published | same sign |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fmt = "{:.2f}" if r.unit == "ratio" else "{:.1f}"
        lines.append(f"| {r.seed} | {r.what} | {r.published} | {fmt.format(r.published_value)} | "
                     f"{fmt.format(r.simulated_value)} | {r.simulated_value / r.published_value:.2f}x | "
                     f"{'yes' if r.sign_matches() else '**no**'} |")
    lines += [
        "",
        "Reading it:",
        "- Ratios are the flag's effect (1.00 = none). The absolute batch-1 latency of seed 004 was measured with "
        "the SGLang of February 2025; the simulator is calibrated to today's kernels "
        "(`/work/shared/reference/calibration.md`), hence its lower absolute value.",
        "- DP attention: the seed's gain at 10000 prompts comes mostly from the KV pool no longer being "
        "replicated (8x the tokens, so more requests decode at once) and attention reading only each rank's "
        "own requests; both are modelled.",
        "- Overlap scheduling: the seed's saturated run measured overlap *off* 3.6% faster (within the noise of "
        "one run); the simulator models what the overlap scheduler is for (hiding the scheduler's CPU time per "
        "step), so it shows overlap on as faster. The sign differs; left as measured.",
        "- Not expressible: prefill/decode disaggregation (a router in front of separate prefill and decode "
        "servers); the simulator parses `--disaggregation-mode` but serves both phases in one process.",
        "",
        "## aiconfigurator",
        "",
        AICONFIGURATOR_NOTE,
        "",
        try_aiconfigurator(),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/benchmarks/sim-fidelity.md")
    args = parser.parse_args()
    text = render(seed_rows())
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
