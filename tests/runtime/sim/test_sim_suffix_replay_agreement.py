"""One model of acceptance: a trace served live by the simulated engine (a subprocess, SUFFIX speculation, the
trace's recorded responses via --sim-response-trace) gets the accept length its offline replay computes.
One request at a time the two agree exactly; eight at a time within 10 %; a trace with nothing to repeat gets
none live either; /flush_cache forgets the cached responses, so a re-measurement does not replay them."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tuner.runtime.engines import get_engine
from tuner.runtime.launcher import launch
from tuner.runtime.sim.tokenizer import decode
from tuner.suffix.replay import replay
from tuner.suffix.synthetic import synthetic_agentic_trace
from tuner.suffix_decoding.params import SuffixParams
from tuner.suffix_decoding.traces import TraceRequest, write_token_trace

MODEL = "zai-org/GLM-4.7-FP8"
PARAMS = SuffixParams(cache_max_depth=32, max_spec_factor=2.0, max_spec_offset=1.0, min_token_prob=0.1,
                      num_draft_tokens=6)
CONCURRENT_TOLERANCE = 0.10  # relative, accept length served 8 at a time vs the one-at-a-time replay


def _flags(trace_path) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {"tp-size": 8, "startup-seconds": 2, "speculative-algorithm": "SUFFIX",
            "speculative-num-draft-tokens": PARAMS.num_draft_tokens,
            "speculative-suffix-cache-max-depth": PARAMS.cache_max_depth,
            "speculative-suffix-max-spec-factor": PARAMS.max_spec_factor,
            "speculative-suffix-max-spec-offset": PARAMS.max_spec_offset,
            "speculative-suffix-min-token-prob": PARAMS.min_token_prob,
            "sim-response-trace": str(trace_path)}


def _send(client: httpx.Client, request: TraceRequest) -> tuple[int, int]:
    """(response tokens after the first, verify passes) of one request; checks the recorded response came back."""
    r = client.post("/generate", json={"input_ids": request.prompt_token_ids.tolist(), "sampling_params": {
        "max_new_tokens": int(request.response_token_ids.size), "ignore_eos": True}}, timeout=120)
    r.raise_for_status()
    body = r.json()
    assert body["text"].split() == decode(request.response_token_ids.tolist()).split()
    return body["meta_info"]["completion_tokens"] - 1, body["meta_info"]["spec_verify_ct"]


def _serve(base_url: str, trace: Sequence[TraceRequest], concurrency: int = 1) -> float:
    """Accept length (tokens per verify pass) of the trace served `concurrency` requests at a time, in order."""
    with httpx.Client(base_url=base_url) as client:
        if concurrency == 1:
            results = [_send(client, r) for r in trace]
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                results = list(pool.map(lambda r: _send(client, r), trace))
    return sum(t for t, _ in results) / sum(v for _, v in results)


def _flush(base_url: str) -> None:
    assert httpx.post(base_url + "/flush_cache", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def traces(tmp_path_factory):  # type: ignore[no-untyped-def]
    repetitive = synthetic_agentic_trace(sessions=4, turns_per_session=5, repetition=0.8, response_tokens=120,
                                         seed=3)
    fresh = synthetic_agentic_trace(sessions=2, turns_per_session=4, repetition=0.0, response_tokens=120,
                                    seed=4)
    path = tmp_path_factory.mktemp("trace") / "trace.jsonl"
    write_token_trace(path, repetitive + fresh)
    return path, repetitive, fresh


def test_served_trace_gets_the_offline_replays_accept_length(traces, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, repetitive, fresh = traces
    offline = replay(repetitive, [PARAMS], first_token_from_prefill=True)[0].tokens_per_step
    offline_fresh = replay(fresh, [PARAMS], first_token_from_prefill=True)[0].tokens_per_step
    assert offline > 1.5 and offline_fresh < 1.05  # the trace is worth speculating on, the fresh one is not
    sim = get_engine("sim", time_scale=20, sglang="seed")  # SUFFIX exists only in the seeds' SGLang forks
    with launch(sim, MODEL, _flags(path), log_dir=tmp_path, ready_timeout_s=60) as engine:
        url = engine.base_url
        one_at_a_time = _serve(url, repetitive)
        assert one_at_a_time == pytest.approx(offline, rel=1e-9)
        # again without a flush: every response is in the global tree already, drafts run longer
        assert _serve(url, repetitive) > one_at_a_time + 0.3
        _flush(url)
        assert _serve(url, repetitive) == pytest.approx(offline, rel=1e-9)  # the flush forgot them
        _flush(url)
        concurrent = _serve(url, repetitive, concurrency=8)
        assert concurrent == pytest.approx(offline, rel=CONCURRENT_TOLERANCE)
        _flush(url)
        live_fresh = _serve(url, fresh)
        assert live_fresh == pytest.approx(offline_fresh, rel=1e-9) and live_fresh < 1.05
