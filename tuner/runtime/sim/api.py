"""HTTP surface of the simulated server, shaped like SGLang's: /health, /generate (native),
/v1/completions and /v1/chat/completions (OpenAI, SSE streaming), /v1/models, /model_info,
/server_info, /flush_cache and /metrics.

Only translates HTTP to engine calls; startup, scheduling and metrics recording live elsewhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tuner.runtime.sim import tokenizer
from tuner.runtime.sim.args import SimServerArgs
from tuner.runtime.sim.engine import Delivery, Engine, RequestHandle, RequestRejected
from tuner.runtime.sim.memory import MemoryPlan
from tuner.runtime.sim.metrics import SimMetrics

DEFAULT_MAX_NEW_TOKENS = 128  # /generate and chat requests without a limit
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
HEALTH_TIMEOUT_S = 20.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Set by the simulated PD router (router.py) on requests it sends a decode server: the wall seconds the
# request spent on the prefill server, counted into the decode server's TTFT and E2E histograms.
PREFILL_ELAPSED_HEADER = "x-sim-prefill-elapsed-s"


@dataclass
class ServerState:
    args: SimServerArgs
    plan: MemoryPlan
    engine: Engine | None
    metrics: SimMetrics | None
    ready: bool = False
    exit_code: int = 0
    started_at: float = 0.0


# ---- request schemas ------------------------------------------------------------------------------
class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="allow")
    max_new_tokens: int | None = None
    ignore_eos: bool = False
    temperature: float | None = None


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str | list[str] | None = None
    input_ids: list[int] | list[list[int]] | None = None
    sampling_params: SamplingParams = Field(default_factory=SamplingParams)
    stream: bool = False
    rid: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    ignore_eos: bool = False
    n: int = 1


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[Any] | None = None
    tool_calls: list[Any] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Any] | None = None
    temperature: float | None = None
    ignore_eos: bool = False
    n: int = 1


# ---- helpers ----------------------------------------------------------------------------------------
def _error(status: int, message: str) -> JSONResponse:
    kind = "BadRequestError" if status == 400 else "ServiceUnavailableError" if status == 503 else "Error"
    return JSONResponse(
        {"object": "error", "message": message, "type": kind, "param": None, "code": status},
        status_code=status,
    )


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _text(ids: list[int], first: bool) -> str:
    text = tokenizer.decode(ids)
    return text[1:] if first and text.startswith(" ") else text


async def _deliveries(engine: Engine, handle: RequestHandle) -> AsyncIterator[Delivery]:
    """Token releases of one request; aborts it if the consumer stops early (client disconnect)."""
    done = False
    try:
        while True:
            delivery = await handle.queue.get()
            if delivery.finished:
                done = True
            yield delivery
            if done:
                return
    finally:
        if not done:
            engine.abort(handle)


async def _collect(engine: Engine, handle: RequestHandle) -> tuple[list[int], bool]:
    """All token ids of a non-streaming request, and whether it was aborted."""
    ids: list[int] = []
    aborted = False
    async for d in _deliveries(engine, handle):
        ids.extend(d.token_ids)
        aborted = d.aborted
    return ids, aborted


def _finish_reason_native(handle: RequestHandle, aborted: bool) -> dict[str, Any]:
    if aborted:
        return {"type": "abort", "message": "The server is shutting down."}
    return {"type": "length", "length": handle.req.max_new_tokens}


def _meta_info(state: ServerState, handle: RequestHandle, finished: bool, aborted: bool) -> dict[str, Any]:
    req = handle.req
    meta: dict[str, Any] = {
        "id": req.rid,
        "finish_reason": _finish_reason_native(handle, aborted) if finished else None,
        "prompt_tokens": len(req.prompt_ids),
        "completion_tokens": len(req.output_ids),
        "cached_tokens": req.cached_tokens,
    }
    if finished and handle.finished_s is not None:
        meta["e2e_latency"] = handle.finished_s - handle.arrival_s
    if state.args.speculative_algorithm:
        meta["spec_verify_ct"] = req.verify_ct
        meta["spec_accept_length"] = req.spec_tokens / req.verify_ct if req.verify_ct else 0.0
    return meta


def _usage(handle: RequestHandle) -> dict[str, Any]:
    req = handle.req
    return {
        "prompt_tokens": len(req.prompt_ids),
        "completion_tokens": len(req.output_ids),
        "total_tokens": len(req.prompt_ids) + len(req.output_ids),
        "prompt_tokens_details": {"cached_tokens": req.cached_tokens},
    }


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="tuner engine-sim (simulated SGLang)", docs_url=None, redoc_url=None)
    args = state.args

    def not_ready() -> JSONResponse | None:
        if not state.ready or state.engine is None:
            return _error(503, "The server is starting (loading weights, capturing CUDA graphs).")
        return None

    def submit(
        request: Request, prompt_ids: list[int], max_new: int, tool_like: bool, rid: str | None = None, *,
        streaming: bool,
    ) -> RequestHandle | JSONResponse:
        assert state.engine is not None
        raw = request.headers.get(PREFILL_ELAPSED_HEADER)
        try:
            elapsed = float(raw) if raw is not None else 0.0
        except ValueError:
            elapsed = -1.0
        if not 0.0 <= elapsed < float("inf"):
            return _error(400, f"{PREFILL_ELAPSED_HEADER} must be a number of seconds >= 0, got {raw!r}.")
        try:
            return state.engine.submit(prompt_ids, max_new, tool_like=tool_like, rid=rid, streaming=streaming,
                                       prefill_elapsed_s=elapsed)
        except RequestRejected as exc:
            return _error(400, str(exc))

    # ---- health and info ---------------------------------------------------------------------------
    async def health() -> Response:
        if not state.ready or state.engine is None:
            return Response(status_code=503)
        ok = await state.engine.health_generate(HEALTH_TIMEOUT_S)
        return Response(status_code=200 if ok else 503)

    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/health_generate", health, methods=["GET"])

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": args.served_model_name,
                    "object": "model",
                    "created": int(state.started_at),
                    "owned_by": "sglang",
                    "root": args.model_path,
                    "max_model_len": args.context_length,
                }
            ],
        }

    async def model_info() -> dict[str, Any]:
        return {
            "model_path": args.model_path,
            "tokenizer_path": args.tokenizer_path,
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": "default",
            "has_image_understanding": False,
            "has_audio_understanding": False,
            "model_type": None,
            "architectures": None,
            "simulated_profile": args.sim_model_profile,
        }

    app.add_api_route("/get_model_info", model_info, methods=["GET"])
    app.add_api_route("/model_info", model_info, methods=["GET"])

    async def server_info() -> dict[str, Any]:
        info = args.to_json()
        info["max_total_num_tokens"] = state.plan.max_total_num_tokens
        if state.engine is not None:
            info["cuda_graph_bs_captured"] = list(state.engine.graph_sizes)
            info["internal_states"] = [state.engine.internal_states()]
        else:
            info["internal_states"] = []
        info["version"] = "sim"
        return info

    app.add_api_route("/server_info", server_info, methods=["GET"])
    app.add_api_route("/get_server_info", server_info, methods=["GET"])

    async def flush_cache() -> Response:
        if state.engine is None or not state.ready:
            return Response("The server is starting.\n", status_code=503)
        if state.engine.flush_cache():
            return Response("Cache flushed.\n", status_code=200)
        return Response(
            "Cache not flushed. Please check for pending requests. (There are running or waiting "
            "requests.)\n",
            status_code=400,
        )

    app.add_api_route("/flush_cache", flush_cache, methods=["GET", "POST"])

    @app.get("/metrics")
    async def metrics() -> Response:
        if state.metrics is None:
            return Response(
                "Metrics are disabled; start the server with --enable-metrics.\n", status_code=404
            )
        return Response(state.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- native generate ------------------------------------------------------------------------
    @app.post("/generate")
    async def generate(body: GenerateRequest, request: Request) -> Response:
        if (err := not_ready()) is not None:
            return err
        if isinstance(body.text, list) or (body.input_ids and isinstance(body.input_ids[0], list)):
            return _error(
                400, "Batched /generate requests are not supported by the simulator; send one prompt."
            )
        if body.input_ids is not None:
            prompt_ids = [int(i) for i in body.input_ids]  # type: ignore[arg-type]
            tool_like = False
        elif body.text is not None:
            prompt_ids = tokenizer.encode(body.text)
            tool_like = tokenizer.looks_like_tool_call(body.text)
        else:
            return _error(400, "Either text or input_ids must be given.")
        max_new = body.sampling_params.max_new_tokens
        handle = submit(
            request, prompt_ids, DEFAULT_MAX_NEW_TOKENS if max_new is None else max_new, tool_like, body.rid,
            streaming=body.stream,
        )
        if isinstance(handle, JSONResponse):
            return handle
        assert state.engine is not None
        engine = state.engine

        if body.stream:

            async def stream() -> AsyncIterator[str]:
                text = ""
                streamed: list[int] = []
                async for d in _deliveries(engine, handle):
                    text += _text(d.token_ids, first=not streamed)
                    streamed.extend(d.token_ids)
                    if d.token_ids or d.finished:
                        yield _sse(
                            {
                                "text": text,
                                "output_ids": list(streamed),
                                "meta_info": _meta_info(state, handle, d.finished, d.aborted),
                            }
                        )
                yield "data: [DONE]\n\n"

            return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

        ids, aborted = await _collect(engine, handle)
        return JSONResponse(
            {
                "text": _text(ids, first=True),
                "output_ids": ids,
                "meta_info": _meta_info(state, handle, True, aborted),
            }
        )

    # ---- OpenAI-compatible ----------------------------------------------------------------------
    def finish_reason(aborted: bool) -> str:
        return "abort" if aborted else "length"

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        if (err := not_ready()) is not None:
            return err
        prompt: Any = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                return _error(400, "Batched prompts are not supported by the simulator; send one prompt.")
            prompt = prompt[0]
        if isinstance(prompt, str):
            prompt_ids, tool_like = tokenizer.encode(prompt), tokenizer.looks_like_tool_call(prompt)
        else:
            prompt_ids, tool_like = [int(i) for i in prompt], False
        if body.n != 1:
            return _error(400, "Only n=1 is supported by the simulator.")
        max_new = DEFAULT_COMPLETION_MAX_TOKENS if body.max_tokens is None else body.max_tokens
        handle = submit(request, prompt_ids, max_new, tool_like, streaming=body.stream)
        if isinstance(handle, JSONResponse):
            return handle
        assert state.engine is not None
        engine = state.engine
        rid, created, model = f"cmpl-{handle.rid}", int(time.time()), body.model or args.served_model_name

        def chunk(text: str, reason: str | None) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
            }

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def stream() -> AsyncIterator[str]:
                first = True
                async for d in _deliveries(engine, handle):
                    if d.token_ids:
                        yield _sse(chunk(_text(d.token_ids, first), None))
                        first = False
                    if d.finished:
                        yield _sse(chunk("", finish_reason(d.aborted)))
                if include_usage:
                    yield _sse({**chunk("", None), "choices": [], "usage": _usage(handle)})
                yield "data: [DONE]\n\n"

            return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

        ids, aborted = await _collect(engine, handle)
        body_out = chunk(_text(ids, True), finish_reason(aborted))
        body_out["usage"] = _usage(handle)
        return JSONResponse(body_out)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        if (err := not_ready()) is not None:
            return err
        if body.n != 1:
            return _error(400, "Only n=1 is supported by the simulator.")
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        prompt_ids = tokenizer.chat_prompt_ids(messages, body.tools)
        tool_like = bool(body.tools) or any(
            m.get("role") == "tool"
            or m.get("tool_calls")
            or tokenizer.looks_like_tool_call(tokenizer.message_text(m))
            for m in messages
        )
        limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        handle = submit(request, prompt_ids, DEFAULT_MAX_NEW_TOKENS if limit is None else limit, tool_like,
                        streaming=body.stream)
        if isinstance(handle, JSONResponse):
            return handle
        assert state.engine is not None
        engine = state.engine
        rid, created, model = f"chatcmpl-{handle.rid}", int(time.time()), body.model or args.served_model_name

        def chunk(delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
            }

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def stream() -> AsyncIterator[str]:
                first = True
                yield _sse(chunk({"role": "assistant", "content": ""}, None))
                async for d in _deliveries(engine, handle):
                    if d.token_ids:
                        yield _sse(chunk({"content": _text(d.token_ids, first)}, None))
                        first = False
                    if d.finished:
                        yield _sse(chunk({}, finish_reason(d.aborted)))
                if include_usage:
                    yield _sse({**chunk({}, None), "choices": [], "usage": _usage(handle)})
                yield "data: [DONE]\n\n"

            return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

        ids, aborted = await _collect(engine, handle)
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": _text(ids, True), "tool_calls": None},
                        "logprobs": None,
                        "finish_reason": finish_reason(aborted),
                    }
                ],
                "usage": _usage(handle),
            }
        )

    return app
