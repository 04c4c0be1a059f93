"""Synthetic agentic traces for demos and tests, in token ids, deterministic by seed.

Sessions of several turns share a system prompt, a bank of stock phrases ("Let me ...") and tool-call
templates; each turn's prompt is the session so far (user messages, earlier responses, tool results).
`repetition` (0..1) is the share of response segments drawn from the banks (and of tool arguments reused)
instead of fresh tokens: 0 gives responses with nothing to predict, 1 almost nothing but stock structure.
"""

from __future__ import annotations

import numpy as np

from tuner.suffix_decoding.traces import TraceRequest

REPETITION_LEVELS = {"low": 0.2, "medium": 0.5, "high": 0.8}


def synthetic_agentic_trace(*, sessions: int = 20, turns_per_session: int = 8, repetition: float = 0.5,
                            response_tokens: int = 200, vocab_size: int = 32000,
                            seed: int = 0) -> list[TraceRequest]:
    """`sessions` x `turns_per_session` requests; responses of about `response_tokens` tokens."""
    if not 0.0 <= repetition <= 1.0:
        raise ValueError(f"repetition must be within [0, 1], got {repetition}")
    rng = np.random.default_rng(seed)

    def fresh(low: int, high: int) -> list[int]:
        return rng.integers(0, vocab_size, int(rng.integers(low, high + 1))).tolist()

    system = fresh(200, 400)
    phrases = [fresh(4, 12) for _ in range(24)]
    # a tool call: fixed pieces (name, JSON punctuation) around argument slots
    templates = [[fresh(3, 8), fresh(2, 4), fresh(2, 4), fresh(3, 6)] for _ in range(8)]
    out: list[TraceRequest] = []
    for s in range(sessions):
        arguments = [fresh(3, 8) for _ in range(12)]
        history = list(system)
        for t in range(turns_per_session):
            history += fresh(10, 60)  # the user's message or the last tool result's head
            response: list[int] = []
            while len(response) < response_tokens:
                if rng.random() >= repetition:
                    response += fresh(5, 25)
                elif rng.random() < 0.5:
                    response += phrases[int(rng.integers(len(phrases)))]
                else:
                    pieces = templates[int(rng.integers(len(templates)))]
                    for piece in pieces:
                        response += piece
                        reuse = rng.random() < repetition
                        response += arguments[int(rng.integers(len(arguments)))] if reuse else fresh(3, 8)
            out.append(TraceRequest(f"s{s}t{t}", np.asarray(history, dtype=np.int32),
                                    np.asarray(response, dtype=np.int32)))
            history += response + fresh(20, 120)  # the response, then the tool's output
    return out
