"""What the simulated model "says": a deterministic token stream per request, seeded by --seed and the
prompt, that repeats itself as much as the prompt does (copies of prompt spans, shared boilerplate
phrases) and is otherwise random words.

Speculative acceptance is measured against this stream, so suffix decoding wins exactly where the
text is repetitive. It must not depend on timing or on scheduling order.

With --sim-response-trace, a prompt found in a recorded trace is answered with its recorded response
first (the stream continues as above past it), so a trace served live meets the same responses as its
offline replay.
"""

from __future__ import annotations

import hashlib
import random
from array import array
from collections import deque
from collections.abc import Sequence
from functools import lru_cache
from itertools import accumulate
from pathlib import Path

from tuner.runtime.sim.tokenizer import VOCAB_SIZE
from tuner.suffix_decoding.traces import read_trace

COPY_RUN_MEAN_TOKENS = 24.0
FREE_RUN_MEAN_TOKENS = 12.0
TOOL_LIKE_BONUS = 0.35
MAX_REPETITIVENESS = 0.95


class PhraseBank:
    """Boilerplate phrases shared by all requests ("Let me ...", tool-call skeletons), Zipf-popular."""

    def __init__(self, seed: int, num_phrases: int = 256) -> None:
        rng = random.Random(f"phrases-{seed}")
        self.phrases: list[tuple[int, ...]] = [
            tuple(rng.randrange(VOCAB_SIZE) for _ in range(rng.randint(4, 24))) for _ in range(num_phrases)
        ]
        self._cum_weights = list(accumulate(1.0 / (i + 1) for i in range(num_phrases)))

    def choose(self, rng: random.Random) -> tuple[int, ...]:
        return rng.choices(self.phrases, cum_weights=self._cum_weights, k=1)[0]


def prompt_repetitiveness(ids: Sequence[int]) -> float:
    """Fraction of the prompt's 4-grams that already occurred earlier in the prompt."""
    n = len(ids)
    if n < 8:
        return 0.0
    seen: set[tuple[int, int, int, int]] = set()
    repeats = 0
    for i in range(3, n):
        gram = (ids[i - 3], ids[i - 2], ids[i - 1], ids[i])
        if gram in seen:
            repeats += 1
        else:
            seen.add(gram)
    return repeats / (n - 3)


def digest_seed(seed: int, ids: Sequence[int]) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(seed.to_bytes(8, "little", signed=True))
    try:
        h.update(array("q", ids).tobytes())
    except OverflowError:
        h.update(",".join(map(str, ids)).encode())
    return int.from_bytes(h.digest(), "little")


class RecordedResponses:
    """Recorded responses by prompt: a trace in the `tokens` format (JSONL of `prompt_token_ids` and
    `response_token_ids`, as `tuner suffix-replay` reads and writes). A prompt recorded twice keeps its
    first response."""

    def __init__(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> None:
        self._by_prompt: dict[bytes, tuple[int, ...]] = {}
        for prompt, response in pairs:
            self._by_prompt.setdefault(_prompt_key(prompt), tuple(int(t) for t in response))

    def __len__(self) -> int:
        return len(self._by_prompt)

    def response_for(self, prompt_ids: Sequence[int]) -> tuple[int, ...] | None:
        return self._by_prompt.get(_prompt_key(prompt_ids))


def _prompt_key(ids: Sequence[int]) -> bytes:
    return hashlib.blake2b(",".join(map(str, ids)).encode(), digest_size=16).digest()


@lru_cache(maxsize=4)
def load_recorded_responses(path: str) -> RecordedResponses:
    """The responses of a `tokens`-format trace file. Raises tuner.suffix_decoding.traces.TraceError (a
    missing or malformed file, naming the line)."""
    requests = read_trace(Path(path), "tokens")
    return RecordedResponses([(r.prompt_token_ids.tolist(), r.response_token_ids.tolist()) for r in requests])


class TokenGenerator:
    """The token stream of one request; peek() looks ahead without consuming (for speculative checks).
    `recorded`: tokens the stream starts with (a recorded response)."""

    def __init__(
        self, prompt_ids: Sequence[int], seed: int, phrases: PhraseBank, tool_like: bool = False,
        recorded: Sequence[int] = (),
    ) -> None:
        self._prompt = prompt_ids
        self._phrases = phrases
        base = prompt_repetitiveness(prompt_ids)
        self.repetitiveness = min(MAX_REPETITIVENESS, base + (TOOL_LIKE_BONUS if tool_like else 0.0))
        self._rng = random.Random(digest_seed(seed, prompt_ids))
        self._buffer: deque[int] = deque(recorded)

    def peek(self, n: int) -> list[int]:
        self._fill(n)
        return [self._buffer[i] for i in range(n)]

    def take(self, n: int) -> list[int]:
        self._fill(n)
        return [self._buffer.popleft() for _ in range(n)]

    def _fill(self, n: int) -> None:
        while len(self._buffer) < n:
            self._segment()

    def _run_length(self, mean: float) -> int:
        return 1 + int(self._rng.expovariate(1.0 / mean))

    def _segment(self) -> None:
        rng, r = self._rng, self.repetitiveness
        u = rng.random()
        if u < 0.6 * r and len(self._prompt) >= 8:
            start = rng.randrange(len(self._prompt) - 4)
            # repetitive prompts (agent loops, tool calls) get copied in longer stretches
            mean = COPY_RUN_MEAN_TOKENS * (0.5 + 2.0 * r * r)
            run = self._prompt[start : start + max(4, self._run_length(mean))]
            self._buffer.extend(t % VOCAB_SIZE if t >= VOCAB_SIZE and t < VOCAB_SIZE + 16 else t for t in run)
        elif u < r:
            self._buffer.extend(self._phrases.choose(rng))
        else:
            self._buffer.extend(
                rng.randrange(VOCAB_SIZE) for _ in range(self._run_length(FREE_RUN_MEAN_TOKENS))
            )
