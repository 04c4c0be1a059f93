"""Prefill/decode disaggregation, the seeds' production deployment (seed 000: GLM-4.7-FP8 TP8 prefill and
decode servers behind a router): separate servers remove the interference of prefill chunks with decode
steps (ITL), and every prompt's KV crosses the network (seed 001: TTFT gets worse than co-located at low
load, the cost the fork's async transfer attacks). Also the three processes a user runs, torn down."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.runtime.sim.test_sim_server import SimProcess, free_port, sim, sse_events
from tuner.runtime.sim.args import parse_cli, resolve_args
from tuner.runtime.sim.engine import Engine
from tuner.runtime.sim.pd_replay import LoadRequest, colocated, disaggregated
from tuner.runtime.sim.router import RouterArgsError, parse_router_args
from tuner.runtime.sim.server import plan_for

GLM = "zai-org/GLM-4.7-FP8"


def engine(*flags: str) -> Engine:
    args, plan = plan_for(resolve_args(parse_cli(["--model-path", GLM, "--tp-size", "8", *flags]), {}))
    return Engine(args, plan, None)


def poisson(rate_per_s: float, n: int, input_tokens: int, output_tokens: int) -> list[LoadRequest]:
    rng, t, load = random.Random(0), 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate_per_s)
        load.append(LoadRequest(t, input_tokens, output_tokens))
    return load


def test_decode_server_takes_transferred_kv_without_computing_the_prompt():
    decode = engine("--disaggregation-mode", "decode")
    assert decode.scheduler.cfg.kv_transferred and decode.scheduler.cache is None
    one = decode.cost_model.kv_transfer_s(4096)
    assert 0.0 < one < decode.cost_model.kv_transfer_s(8192)  # grows with the prompt's KV bytes
    colo = engine()
    assert not colo.scheduler.cfg.kv_transferred


def test_disaggregation_removes_prefill_interference_from_itl():
    load = poisson(4.0, 120, 4096, 300)  # seed 001's 4096-token prompts
    colo = colocated(engine(), load)
    pd = disaggregated(engine("--disaggregation-mode", "prefill"), engine("--disaggregation-mode", "decode"), load)
    assert pd.itl_p99_s < 0.7 * colo.itl_p99_s  # no decode step waits behind a 4096-token prefill
    assert pd.itl_mean_s < colo.itl_mean_s


def test_disaggregation_costs_ttft_at_low_load_by_the_kv_transfer():
    load = poisson(0.2, 20, 4096, 50)  # requests rarely overlap: no interference to remove
    colo = colocated(engine(), load)
    decode = engine("--disaggregation-mode", "decode")
    pd = disaggregated(engine("--disaggregation-mode", "prefill"), decode, load)
    transfer = decode.cost_model.kv_transfer_s(4096)
    assert pd.ttft_mean_s > colo.ttft_mean_s
    assert pd.ttft_mean_s - colo.ttft_mean_s == pytest.approx(transfer, rel=0.5)


def test_roles_must_match():
    with pytest.raises(ValueError, match="disaggregation-mode"):
        disaggregated(engine(), engine("--disaggregation-mode", "decode"), poisson(1.0, 2, 100, 5))


@pytest.mark.parametrize("argv, message", [
    (["--prefill", "http://127.0.0.1:1", "--decode", "http://127.0.0.1:2"], "--pd-disaggregation"),
    (["--pd-disaggregation", "--decode", "http://127.0.0.1:2"], "--prefill"),
    (["--pd-disaggregation", "--prefill", "localhost:1", "--decode", "http://127.0.0.1:2"], "server URL"),
    (["--pd-disaggregation", "--prefill", "http://a:1", "x", "--decode", "http://b:2"], "BOOTSTRAP_PORT"),
])
def test_router_refuses_bad_command_lines_with_one_line(argv, message):
    with pytest.raises(RouterArgsError, match=message):
        parse_router_args(argv)


def test_router_with_prefill_and_decode_processes(tmp_path: Path):
    port = free_port()
    flags = ("--time-scale", "20", "--startup-seconds", "0", "--enable-metrics")
    with sim(tmp_path, *flags, "--disaggregation-mode", "prefill") as prefill, \
            sim(tmp_path, *flags, "--disaggregation-mode", "decode") as decode:
        prefill.wait_ready()
        decode.wait_ready()
        log = tmp_path / "router.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tuner.runtime.sim.router", "--pd-disaggregation", "--prefill",
                 prefill.url, "8998", "--decode", decode.url, "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            router = SimProcess(proc, port, log)
            router.wait_ready()
            body = {"model": GLM, "prompt": "hello " * 300, "max_tokens": 20, "stream": True}
            with httpx.stream("POST", router.url + "/v1/completions", json=body, timeout=60) as resp:
                assert resp.status_code == 200
                events = sse_events(resp)
            assert events[-1] == "[DONE]" and len(events) > 5
            answer = httpx.post(router.url + "/generate", json={"text": "hi there", "sampling_params": {
                "max_new_tokens": 8}}, timeout=60).json()
            assert answer["meta_info"]["completion_tokens"] == 8  # the decode server's whole answer
            metrics = httpx.get(router.url + "/metrics", timeout=10).text
            assert "sglang:time_to_first_token_seconds_count" in metrics
            bad = httpx.post(decode.url + "/generate", json={"text": "x"},
                             headers={"x-sim-prefill-elapsed-s": "soon"}, timeout=10)
            assert bad.status_code == 400 and "x-sim-prefill-elapsed-s" in bad.text
            assert httpx.post(router.url + "/flush_cache", timeout=10).status_code == 200
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=15) == 0, log.read_text()
