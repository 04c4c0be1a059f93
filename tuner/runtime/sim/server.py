"""Entry point of the simulated SGLang server: parse flags, plan memory, bind the HTTP port at once,
then play SGLang's startup (weights, KV cache, CUDA graph capture, warm-up) in scaled real time,
failing with SGLang-like OOM logs when the plan does not fit, and serve until SIGTERM/SIGINT.

Logs go to stdout (errors to stderr); "The server is fired up and ready to roll!" marks readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import FrameType

import uvicorn

from tuner.runtime.sim.api import ServerState, create_app
from tuner.runtime.sim.args import SimArgsError, SimServerArgs, parse_cli, resolve_args
from tuner.runtime.sim.engine import Engine, captured_graph_sizes
from tuner.runtime.sim.memory import MemoryInputs, MemoryPlan, default_mem_fraction_static, plan_memory
from tuner.runtime.sim.metrics import SimMetrics
from tuner.runtime.sim.profiles import GIB, lookup_gpu, lookup_model
from tuner.runtime.sim.speculative import EAGLE_FAMILY

READY_LINE = "The server is fired up and ready to roll!"
WEIGHT_LOAD_SHARE = 0.8  # of --startup-seconds; the rest is KV allocation and warm-up
CAPTURE_S_PER_GRAPH = 0.25
WARMUP_S = 1.0

log = logging.getLogger("tuner.runtime.sim")


def _setup_logging(level: str) -> None:
    log.handlers.clear()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(getattr(logging, level.upper(), logging.INFO))
    log.propagate = False


def _error(lines: Sequence[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr, flush=True)


def default_max_running_requests(max_total_num_tokens: int, context_length: int) -> int:
    """From KV capacity, like SGLang's request pool sizing: 2048-4096, never more than half the pool."""
    by_pool = int(max_total_num_tokens / max(1, context_length) * 512)
    return max(1, min(4096, max(2048, by_pool), max_total_num_tokens // 2))


def plan_for(args: SimServerArgs) -> tuple[SimServerArgs, MemoryPlan]:
    """Fill in mem-fraction-static and max-running-requests defaults and compute the memory plan."""
    model, gpu = lookup_model(args.sim_model_profile), lookup_gpu(args.gpu)
    assert model is not None and gpu is not None
    graph_max = 0 if args.disable_cuda_graph else args.cuda_graph_max_bs
    if args.max_running_requests is not None and graph_max:
        graph_max = max(captured_graph_sizes(args))
    fraction = args.mem_fraction_static
    if fraction is None:
        fraction = default_mem_fraction_static(
            model,
            gpu,
            args.chunked_prefill_size,
            args.max_prefill_tokens,
            graph_max,
            args.tokens_per_graph_seq,
            args.speculative_algorithm,
        )
    plan = plan_memory(
        MemoryInputs(
            model=model,
            gpu=gpu,
            tp_size=args.tp_size,
            kv_dtype_bytes=args.kv_dtype_bytes,
            mem_fraction_static=fraction,
            chunked_prefill_size=args.chunked_prefill_size,
            max_prefill_tokens=args.max_prefill_tokens,
            cuda_graph_max_bs=graph_max,
            tokens_per_graph_seq=args.tokens_per_graph_seq,
            speculative_algorithm=args.speculative_algorithm,
            page_size=args.page_size,
        )
    )
    if args.attn_dp_size > 1 and model.attention == "mla" and plan.failure is None:
        # DP attention: a rank keeps the latent KV of its own requests only, not a replica of everyone's
        plan = replace(plan, max_total_num_tokens=plan.max_total_num_tokens * args.attn_dp_size)
    max_running = args.max_running_requests
    if max_running is None:
        max_running = default_max_running_requests(plan.max_total_num_tokens, args.context_length)
    return replace(args, mem_fraction_static=fraction, max_running_requests=max_running), plan


class _SimServer(uvicorn.Server):
    """uvicorn.Server that also ends in-flight streams when a shutdown signal arrives."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._on_exit()


async def _startup(state: ServerState, server: uvicorn.Server) -> None:
    args, plan = state.args, state.plan
    scale = args.time_scale
    avail = float(plan.gpu_memory_bytes - plan.runtime_overhead_bytes)

    def fail(lines: Sequence[str]) -> None:
        _error(lines)
        state.exit_code = 1
        server.should_exit = True

    while not server.started:  # SGLang binds the port before loading anything
        if server.should_exit:
            return
        await asyncio.sleep(0.005)
    failure = plan.failure
    log.info(f"Load weight begin. avail mem={avail / GIB:.2f} GB")
    await asyncio.sleep(args.startup_seconds * WEIGHT_LOAD_SHARE / scale)
    if failure is not None and failure.phase == "load_weights":
        return fail(failure.log_lines)
    weights = plan.weight_bytes + plan.draft_weight_bytes
    avail -= weights
    log.info(
        f"Load weight end. type={args.sim_model_profile}, dtype=fp8, avail mem={avail / GIB:.2f} GB, "
        f"mem usage={weights / GIB:.2f} GB."
    )
    if failure is not None and failure.phase == "kv_cache":
        return fail(failure.log_lines)
    kv_bytes = plan.max_total_num_tokens * plan.kv_cell_bytes
    avail -= kv_bytes
    log.info(f"KV Cache is allocated. #tokens: {plan.max_total_num_tokens}, KV size: {kv_bytes / GIB:.2f} GB")
    sizes = captured_graph_sizes(args)
    if sizes:
        log.info(
            f"Capture cuda graph begin. This can take up to several minutes. avail mem={avail / GIB:.2f} GB"
        )
        per_graph = CAPTURE_S_PER_GRAPH * (2 if args.speculative_algorithm in EAGLE_FAMILY else 1)
        capture_s = len(sizes) * per_graph
        await asyncio.sleep(capture_s / scale)
        if failure is not None and failure.phase == "cuda_graph":
            return fail(failure.log_lines)
        avail -= plan.cuda_graph_bytes
        log.info(
            f"Capture cuda graph end. Time elapsed: {capture_s:.2f} s. mem usage="
            f"{plan.cuda_graph_bytes / GIB:.2f} GB. avail mem={avail / GIB:.2f} GB."
        )
    log.info(
        f"max_total_num_tokens={plan.max_total_num_tokens}, "
        f"chunked_prefill_size={args.chunked_prefill_size}, "
        f"max_prefill_tokens={args.max_prefill_tokens}, max_running_requests={args.max_running_requests}, "
        f"context_len={args.context_length}, available_gpu_mem={avail / GIB:.2f} GB"
    )
    await asyncio.sleep((args.startup_seconds * (1 - WEIGHT_LOAD_SHARE) + WARMUP_S) / scale)
    if failure is not None:  # warm-up prefill runs out of activation memory
        return fail(failure.log_lines)
    assert state.engine is not None
    if not await state.engine.health_generate(60.0):
        return fail(["RuntimeError: warm-up generation did not finish."])
    state.ready = True
    state.engine.ready = True
    log.info(READY_LINE)


async def _serve(args: SimServerArgs, plan: MemoryPlan) -> int:
    metrics = None
    if args.enable_metrics:
        metrics = SimMetrics(
            args.served_model_name,
            args.extra_metric_labels,
            args.bucket_time_to_first_token,
            args.bucket_inter_token_latency,
            args.bucket_e2e_request_latency,
            args.prompt_tokens_buckets,
            args.generation_tokens_buckets,
        )
    engine = Engine(args, plan, metrics) if plan.failure is None else None
    state = ServerState(args=args, plan=plan, engine=engine, metrics=metrics, started_at=time.time())
    loop = asyncio.get_running_loop()

    def on_exit() -> None:
        if engine is not None:
            loop.call_soon_threadsafe(engine.abort_all)
            loop.call_soon_threadsafe(engine.stop)

    config = uvicorn.Config(
        create_app(state),
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = _SimServer(config, on_exit)
    tasks = []
    if engine is not None:
        tasks.append(asyncio.create_task(engine.run()))
    tasks.append(asyncio.create_task(_startup(state, server)))
    try:
        await server.serve()
    finally:
        if engine is not None:
            engine.abort_all()
            engine.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if state.exit_code == 0:
        log.info("Shutdown complete.")
    return state.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tuner.runtime.sim` / `tuner engine-sim`: returns the process exit code."""
    ns = parse_cli(sys.argv[1:] if argv is None else argv)
    try:
        args = resolve_args(ns)
    except SimArgsError as exc:
        _error([f"ValueError: {exc}"])
        return 1
    _setup_logging(args.log_level)
    for warning in args.warnings:
        log.warning(f"WARNING {warning}")
    args, plan = plan_for(args)
    log.info(
        f"server_args: tp_size={args.tp_size}, gpu={args.gpu}, profile={args.sim_model_profile}, "
        f"mem_fraction_static={args.mem_fraction_static}, chunked_prefill_size={args.chunked_prefill_size}, "
        f"cuda_graph_max_bs={args.cuda_graph_max_bs}, max_running_requests={args.max_running_requests}, "
        f"speculative_algorithm={args.speculative_algorithm}, time_scale={args.time_scale}"
    )
    # uvicorn re-raises the shutdown signal after a graceful exit; make that a no-op so we exit 0.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return asyncio.run(_serve(args, plan))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
