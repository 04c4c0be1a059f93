"""The asyncio + httpx streaming client: sends sessions on the arrivals' schedule and times every token.

It measures its own lateness (send time against schedule, and event-loop lag) so a result produced by an
overloaded client can be told apart from a slow engine. It starts no engine and computes no summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tuner.errors import TunerError

try:
    import sniffio  # noqa: F401
except ImportError:
    # httpcore imports sniffio inside every connection hand-off; when it is not installed each attempt
    # searches sys.path again (~0.2 ms of CPU per request). Caching the miss makes it fail at once.
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

from tuner.runtime.loadgen.arrivals import Arrivals
from tuner.runtime.loadgen.workloads import Session, Turn, Workload, warmup_sessions

log = logging.getLogger(__name__)

ENDPOINTS: dict[str, str] = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "generate": "/generate",
}

_LOOP_PROBE_INTERVAL_S = 0.01
_ABORT_POLL_S = 0.25
_LOOKAHEAD_S = 0.05  # timed sessions become tasks this long before they are due (bounds pending tasks)
# identity: the stream is read raw, so it must not come compressed
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream",
                 "Accept-Encoding": "identity"}


@dataclass(frozen=True)
class LoadOptions:
    endpoint: str = "completions"  # chat | completions | generate
    model: str = "default"  # the "model" field of OpenAI-style requests
    num_warmup: int = 1
    request_timeout_s: float = 600.0
    max_duration_s: float | None = None  # stop sending and cancel what is in flight after this
    temperature: float = 0.0
    ignore_eos: bool = True  # generate exactly output_len tokens
    seed: int = 0

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise TunerError(f"unknown endpoint {self.endpoint!r}; choose one of {', '.join(ENDPOINTS)}")
        if self.num_warmup < 0:
            raise TunerError("num-warmup must not be negative")


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it; times are seconds from the start of the load."""

    request_id: int
    session_id: int
    turn: int
    intended_start_s: float | None  # None: not on a timed schedule (concurrency-gated, or untimed)
    start_s: float
    end_s: float
    ttft_s: float | None
    itl_s: tuple[float, ...]  # gaps between successive chunks that carried tokens
    e2e_s: float | None
    input_tokens: int
    output_tokens: int
    usage_from_server: bool
    cached_tokens: int | None = None
    spec_verify_ct: int | None = None
    error: str | None = None
    intended_input_tokens: int | None = None  # what the workload asked for (first turns only)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first (bench_serving's TPOT)."""
        if not self.ok or self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass(frozen=True)
class LoadResult:
    records: tuple[RequestRecord, ...]
    planned_sessions: int
    duration_s: float  # first send to last finish of the measured requests
    send_lags_s: tuple[float, ...]  # actual - intended send time, for timed sends
    loop_lags_s: tuple[float, ...]  # event-loop iteration delay probes
    aborted: str | None = None
    started_at_unix: float = 0.0


# ----------------------------------------------------------------------------------------------------
# Request bodies and stream chunks per endpoint

def _prompt_text(session: Session, history: Sequence[tuple[str, str]], turn: Turn) -> str:
    if not history:
        return f"{session.system}\n{turn.text}" if session.system else turn.text
    parts = [session.system] if session.system else []
    for user, assistant in history:
        parts.append(f"User: {user}\nAssistant: {assistant}")
    parts.append(f"User: {turn.text}\nAssistant:")
    return "\n\n".join(parts)


def build_request(endpoint: str, session: Session, history: Sequence[tuple[str, str]], turn: Turn,
                  opts: LoadOptions) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) for one streaming request."""
    if endpoint == "chat":
        messages: list[dict[str, str]] = []
        if session.system:
            messages.append({"role": "system", "content": session.system})
        for user, assistant in history:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": turn.text})
        body: dict[str, Any] = {
            "model": opts.model, "messages": messages, "max_tokens": turn.output_len,
            "temperature": opts.temperature, "stream": True, "stream_options": {"include_usage": True},
        }
        if opts.ignore_eos:
            body["ignore_eos"] = True
        return ENDPOINTS["chat"], body
    prompt = _prompt_text(session, history, turn)
    if endpoint == "completions":
        body = {
            "model": opts.model, "prompt": prompt, "max_tokens": turn.output_len,
            "temperature": opts.temperature, "stream": True, "stream_options": {"include_usage": True},
        }
        if opts.ignore_eos:
            body["ignore_eos"] = True
        return ENDPOINTS["completions"], body
    sampling: dict[str, Any] = {"max_new_tokens": turn.output_len, "temperature": opts.temperature}
    if opts.ignore_eos:
        sampling["ignore_eos"] = True
    return ENDPOINTS["generate"], {"text": prompt, "sampling_params": sampling, "stream": True}


@dataclass
class _StreamState:
    text: str = ""
    n_chunks_with_tokens: int = 0
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    spec_verify_ct: int | None = None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _absorb_usage(state: _StreamState, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    state.prompt_tokens = _int_or_none(usage.get("prompt_tokens")) or state.prompt_tokens
    ct = _int_or_none(usage.get("completion_tokens"))
    if ct is not None:
        state.completion_tokens = ct
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and _int_or_none(details.get("cached_tokens")) is not None:
        state.cached_tokens = _int_or_none(details.get("cached_tokens"))


def absorb_chunk(endpoint: str, obj: dict[str, Any], state: _StreamState) -> bool:
    """Fold one SSE JSON chunk into `state`; True when it carried generated tokens."""
    if "error" in obj and obj.get("error"):
        err = obj["error"]
        raise _StreamError(err.get("message", str(err)) if isinstance(err, dict) else str(err))
    if endpoint == "generate":
        meta = obj.get("meta_info") or {}
        text = obj.get("text")
        before = state.completion_tokens
        state.prompt_tokens = _int_or_none(meta.get("prompt_tokens")) or state.prompt_tokens
        ct = _int_or_none(meta.get("completion_tokens"))
        if ct is not None:
            state.completion_tokens = ct
        cached = _int_or_none(meta.get("cached_tokens"))
        if cached is not None:
            state.cached_tokens = cached
        verify = _int_or_none(meta.get("spec_verify_ct"))
        if verify is not None:
            state.spec_verify_ct = verify
        grew = False
        if isinstance(text, str) and text:
            # cumulative text in SGLang's stream; tolerate incremental pieces too
            if text.startswith(state.text):
                grew = len(text) > len(state.text)
                state.text = text
            else:
                state.text += text
                grew = True
        if ct is not None:
            grew = ct > (before or 0)
        return grew
    _absorb_usage(state, obj.get("usage"))
    choices = obj.get("choices") or []
    if not choices:
        return False
    choice = choices[0]
    piece = (choice.get("delta") or {}).get("content") if endpoint == "chat" else choice.get("text")
    if piece:
        state.text += piece
        return True
    return False


class _StreamError(Exception):
    pass


# ----------------------------------------------------------------------------------------------------

SPIN_WINDOW_S = 0.002


class _Ticker:
    """Wakes the event loop at scheduled instants from a helper thread.

    asyncio's timers go through epoll, whose timeout is whole milliseconds rounded up: sends would leave
    0-1 ms late plus jitter. A condition variable's timed wait (futex, high-resolution timer) is accurate
    to tens of microseconds, and call_soon_threadsafe wakes the loop at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="loadgen-ticker", daemon=True)
        self._thread.start()

    def sleep_until(self, when_monotonic: float) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        with self._cv:
            heapq.heappush(self._heap, (when_monotonic, next(self._seq), fut))
            self._cv.notify()
        return fut

    def close(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=5)

    @staticmethod
    def _wake(fut: asyncio.Future[None]) -> None:
        if not fut.done():
            fut.set_result(None)

    def _run(self) -> None:
        with self._cv:
            while not self._stopped:
                if not self._heap:
                    self._cv.wait()
                    continue
                target = self._heap[0][0]
                delay = target - time.monotonic()
                if delay > SPIN_WINDOW_S:
                    self._cv.wait(delay - SPIN_WINDOW_S)  # woken early when an earlier instant is pushed
                    continue
                if delay > 0:
                    # Timed waits on a virtual machine can wake ~1 ms late: spin through the last stretch,
                    # yielding the CPU (and the GIL) each turn so the event loop keeps running.
                    self._cv.release()
                    try:
                        while time.monotonic() < target and not self._stopped:
                            os.sched_yield()
                    finally:
                        self._cv.acquire()
                    continue
                _, _, fut = heapq.heappop(self._heap)
                try:
                    self._loop.call_soon_threadsafe(self._wake, fut)
                except RuntimeError:  # loop closed under us
                    return


class _Run:
    """One load run's shared state (so helpers need not pass ten arguments around)."""

    def __init__(self, base_url: str, opts: LoadOptions, client: httpx.AsyncClient,
                 ticker: _Ticker | None = None):
        self.base_url = base_url.rstrip("/")
        self.opts = opts
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()  # loop.time() is time.monotonic()
        self.ticker = ticker
        self.urls = {path: httpx.URL(self.base_url + path) for path in ENDPOINTS.values()}
        self.records: list[RequestRecord] = []
        self.send_lags: list[float] = []
        self.next_id = 0

    def now(self) -> float:
        return self.loop.time() - self.t0

    async def sleep_until(self, target_s: float) -> None:
        if target_s - self.now() <= 0:
            return
        if self.ticker is not None:
            await self.ticker.sleep_until(self.t0 + target_s)
        else:
            await asyncio.sleep(target_s - self.now())

    async def send(self, session: Session, history: list[tuple[str, str]], turn_index: int,
                   intended_s: float | None) -> RequestRecord:
        turn = session.turns[turn_index]
        path, body = build_request(self.opts.endpoint, session, history, turn, self.opts)
        state = _StreamState()
        request_id = self.next_id
        self.next_id += 1
        start = self.now()
        if intended_s is not None:
            self.send_lags.append(start - intended_s)
        ttft: float | None = None
        last_token_at: float | None = None
        gaps: list[float] = []
        error: str | None = None
        request = self.client.build_request("POST", self.urls[path], content=json.dumps(body).encode(),
                                            headers=_JSON_HEADERS)  # carries the client's timeouts
        try:
            resp = await self.client.send(request, stream=True)
            try:
                if resp.status_code != 200:
                    detail = (await resp.aread()).decode("utf-8", "replace")[:300]
                    raise _StreamError(f"HTTP {resp.status_code}: {detail}")
                pending = b""
                # Raw bytes split on SSE's blank-line separator: cheaper per event than httpx's text and
                # line decoders. The body is read to its end (a response closed early loses its keep-alive
                # connection, and the next request would pay for a new one).
                async for raw in resp.aiter_raw():
                    arrived = self.now()
                    pending += raw
                    if b"\r" in pending:  # SSE allows CRLF line ends
                        pending = pending.replace(b"\r\n", b"\n")
                    *events, pending = pending.split(b"\n\n")
                    for event in events:
                        for line in event.splitlines():
                            if not line.startswith(b"data:"):
                                continue
                            data = line[5:].strip()
                            if not data or data == b"[DONE]":
                                continue
                            try:
                                obj = json.loads(data)
                            except ValueError:
                                raise _StreamError(f"bad stream chunk {data[:120]!r}") from None
                            if absorb_chunk(self.opts.endpoint, obj, state):
                                if ttft is None:
                                    ttft = arrived - start
                                elif last_token_at is not None:
                                    gaps.append(arrived - last_token_at)
                                last_token_at = arrived
                                state.n_chunks_with_tokens += 1
            finally:
                await resp.aclose()
            if ttft is None:
                error = "no tokens in the response stream"
        except _StreamError as exc:
            error = str(exc)
        except httpx.TimeoutException:
            error = f"timed out after {self.opts.request_timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except asyncio.CancelledError:
            error = "cancelled"
        end = self.now()
        completion_tokens = state.completion_tokens
        record = RequestRecord(
            request_id=request_id, session_id=session.session_id, turn=turn_index,
            intended_start_s=intended_s, start_s=start, end_s=end, ttft_s=ttft, itl_s=tuple(gaps),
            e2e_s=end - start if error is None else None,
            input_tokens=state.prompt_tokens if state.prompt_tokens is not None
            else session.system_len * (turn_index == 0) + turn.input_len,
            output_tokens=completion_tokens if completion_tokens is not None else state.n_chunks_with_tokens,
            usage_from_server=completion_tokens is not None, cached_tokens=state.cached_tokens,
            spec_verify_ct=state.spec_verify_ct, error=error,
            intended_input_tokens=session.system_len + turn.input_len if turn_index == 0 else None,
        )
        history.append((turn.text, state.text))
        return record

    async def run_session(self, session: Session, intended_s: float | None,
                          sink: list[RequestRecord]) -> None:
        history: list[tuple[str, str]] = []
        for i in range(len(session.turns)):
            if i > 0:
                intended_s = self.now() + session.think_time_s
                await self.sleep_until(intended_s)
            record = await self.send(session, history, i, intended_s)
            sink.append(record)
            if not record.ok:
                break  # a conversation cannot go on without its previous answer


async def _probe_loop_lag(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0)  # resumes after every callback that was ready has run
        lags.append(loop.time() - t)
        await asyncio.sleep(_LOOP_PROBE_INTERVAL_S)


def _client(opts: LoadOptions) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(opts.request_timeout_s, connect=30.0)
    return httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False)


async def run_warmup(base_url: str, workload: Workload, opts: LoadOptions) -> tuple[RequestRecord, ...]:
    """Send `opts.num_warmup` single-turn requests (not from the measured set) at once and wait for them.

    Raises TunerError when every one of them fails: the engine is not serving.
    """
    sessions = warmup_sessions(workload, opts.num_warmup, opts.seed)
    if not sessions:
        return ()
    async with _client(opts) as client:
        run = _Run(base_url, opts, client)
        records: list[RequestRecord] = []
        await asyncio.gather(*(run.run_session(s, None, records) for s in sessions))
    if all(not r.ok for r in records):
        raise TunerError(f"every warm-up request to {base_url} failed: {records[0].error}")
    return tuple(records)


async def run_load(base_url: str, workload: Workload, arrivals: Arrivals, opts: LoadOptions, *,
                   abort_check: Callable[[], str | None] | None = None) -> LoadResult:
    """Send every session of `workload` on `arrivals`' schedule (no warm-up: see run_warmup).

    `abort_check` is polled while load runs; a non-None answer (e.g. "engine exited") cancels the rest, as
    does `opts.max_duration_s`.
    """
    sessions = workload.sessions(opts.seed)
    offsets = arrivals.offsets_s(sessions, opts.seed)
    async with _client(opts) as client:
        ticker = _Ticker(asyncio.get_running_loop())
        run = _Run(base_url, opts, client, ticker)
        started_unix = time.time()
        records: list[RequestRecord] = []
        stop_probe = asyncio.Event()
        loop_lags: list[float] = []
        probe = asyncio.create_task(_probe_loop_lag(loop_lags, stop_probe))
        tasks: set[asyncio.Task[None]] = set()
        aborted: list[str] = []
        sem = asyncio.Semaphore(arrivals.max_concurrency) if arrivals.max_concurrency else None

        async def session_task(session: Session, intended: float | None, holds_slot: bool) -> None:
            if intended is not None:
                await run.sleep_until(intended)  # the precise wait, in the task that sends
            if sem is not None and not holds_slot:
                if sem.locked():
                    intended = None  # held back by the cap: lateness is the engine's, not ours
                await sem.acquire()
            try:
                await run.run_session(session, intended, records)
            finally:
                if sem is not None:
                    sem.release()

        def spawn(coro: Any) -> None:
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def dispatch() -> None:
            for session, offset in zip(sessions, offsets, strict=True):
                if aborted:
                    return
                if arrivals.timed:
                    # Create each task a little ahead of its time and let it wait for the exact instant
                    # itself: on time it then sends at once instead of waiting for a task to be started.
                    delay = offset - _LOOKAHEAD_S - run.now()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    spawn(session_task(session, offset, holds_slot=False))
                else:
                    if sem is not None:
                        await sem.acquire()
                    spawn(session_task(session, None, holds_slot=True))

        async def watch() -> None:
            deadline = opts.max_duration_s
            while True:
                await asyncio.sleep(_ABORT_POLL_S)
                reason = abort_check() if abort_check else None
                if reason is None and deadline is not None and run.now() > deadline:
                    reason = f"time limit of {deadline:g} s reached"
                if reason:
                    aborted.append(reason)
                    dispatcher.cancel()
                    for t in list(tasks):
                        t.cancel()
                    return

        dispatcher = asyncio.create_task(dispatch())
        watcher = asyncio.create_task(watch())
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
            while tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)
        finally:
            ticker.close()
            watcher.cancel()
            stop_probe.set()
            for t in (probe, watcher):
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            for t in list(tasks):
                t.cancel()

    if aborted:
        records = [r if r.error != "cancelled" else _with_error(r, f"cancelled: {aborted[0]}")
                   for r in records]
    duration = (max(r.end_s for r in records) - min(r.start_s for r in records)) if records else 0.0
    return LoadResult(
        records=tuple(sorted(records, key=lambda r: r.request_id)),
        planned_sessions=len(sessions),
        duration_s=duration,
        send_lags_s=tuple(run.send_lags),
        loop_lags_s=tuple(loop_lags),
        aborted=aborted[0] if aborted else None,
        started_at_unix=started_unix,
    )


def _with_error(record: RequestRecord, error: str) -> RequestRecord:
    from dataclasses import replace

    return replace(record, error=error)


def run_load_sync(base_url: str, workload: Workload, arrivals: Arrivals, opts: LoadOptions, *,
                  abort_check: Callable[[], str | None] | None = None) -> LoadResult:
    """`run_load` on a fresh event loop (for callers that are not async). Ctrl-C raises KeyboardInterrupt."""
    return run_interruptibly(run_load(base_url, workload, arrivals, opts, abort_check=abort_check))


def run_warmup_sync(base_url: str, workload: Workload, opts: LoadOptions) -> tuple[RequestRecord, ...]:
    return run_interruptibly(run_warmup(base_url, workload, opts))


def run_interruptibly(coro: Any) -> Any:
    """`asyncio.run(coro)`, except that Ctrl-C (SIGINT) always ends in KeyboardInterrupt.

    asyncio.run turns SIGINT into a cancellation of the main task and raises KeyboardInterrupt only if that task
    ends cancelled; the load generator treats the cancellation of its requests as the end of a step and returns
    normally, so Ctrl-C during a load step was lost and a flag search went on. Here the interrupt is remembered
    and raised once the loop has wound down (requests cancelled, connections closed). Off the main thread, where
    no signal arrives, it is plain asyncio.run."""
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(coro)
    interrupted = threading.Event()
    main: dict[str, asyncio.Task[Any]] = {}

    async def wrapper() -> Any:
        main["task"] = asyncio.current_task()  # type: ignore[assignment]
        return await coro

    with asyncio.Runner() as runner:
        loop = runner.get_loop()

        def on_sigint(_signum: int, _frame: object) -> None:
            interrupted.set()
            if "task" in main:
                loop.call_soon_threadsafe(main["task"].cancel)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            result = runner.run(wrapper())
        except asyncio.CancelledError:
            if interrupted.is_set():
                raise KeyboardInterrupt from None
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        raise KeyboardInterrupt
    return result
