"""The simulator's tokenizer: one token per whitespace-separated word, words longer than 8 characters
split into 8-character chunks, so clients can predict prompt lengths exactly.

Known words map to ids of a fixed synthetic vocabulary (decode(encode(t)) == t for vocabulary text);
other chunks hash into the same id range. It must stay deterministic and free of any real tokenizer.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

VOCAB_SIZE = 32000
CHUNK_CHARS = 8
SPECIAL_TOKENS: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
SYSTEM_TOKEN_ID, USER_TOKEN_ID, ASSISTANT_TOKEN_ID, TOOL_TOKEN_ID = (VOCAB_SIZE + i for i in range(4))
# A chat prompt is, per message, one role token followed by the content's tokens, then one assistant
# token that opens the reply: len(chat_prompt_ids(m)) == sum(1 + len(encode(c))) + CHAT_REPLY_TOKENS.
CHAT_TOKENS_PER_MESSAGE = 1
CHAT_REPLY_TOKENS = 1

_CONSONANTS = "bcdfghjklmnprstvwxyz"
_VOWELS = "aeiou"
_TOOL_MARKERS = ("<tool_call>", '"arguments"', '"function"', "function_call", '{"name"', "tool_calls")


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """VOCAB_SIZE distinct lowercase words of 2, 4 or 6 letters (syllable combinations)."""
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    words: list[str] = list(syllables)
    words.extend(a + b for a in syllables for b in syllables)
    for a in syllables:
        for b in syllables:
            for c in syllables:
                if len(words) >= VOCAB_SIZE:
                    return tuple(words)
                words.append(a + b + c)
    return tuple(words[:VOCAB_SIZE])


@lru_cache(maxsize=1)
def _word_ids() -> Mapping[str, int]:
    ids = {w: i for i, w in enumerate(vocabulary())}
    ids.update({tok: VOCAB_SIZE + i for i, tok in enumerate(SPECIAL_TOKENS)})
    return ids


def _chunk_id(chunk: str, table: Mapping[str, int]) -> int:
    found = table.get(chunk)
    if found is not None:
        return found
    return zlib.crc32(chunk.encode("utf-8")) % VOCAB_SIZE


def encode(text: str) -> list[int]:
    """Token ids of `text`: one per word, or per 8-character chunk of a longer word."""
    table = _word_ids()
    ids: list[int] = []
    for word in text.split():
        if len(word) <= CHUNK_CHARS or word in table:
            ids.append(_chunk_id(word, table))
        else:
            ids.extend(_chunk_id(word[i : i + CHUNK_CHARS], table) for i in range(0, len(word), CHUNK_CHARS))
    return ids


def count_tokens(text: str) -> int:
    return len(encode(text))


def token_text(token_id: int) -> str:
    """The text one generated token adds to the output: a space and its word."""
    if VOCAB_SIZE <= token_id < VOCAB_SIZE + len(SPECIAL_TOKENS):
        return " " + SPECIAL_TOKENS[token_id - VOCAB_SIZE]
    return " " + vocabulary()[token_id % VOCAB_SIZE]


def decode(ids: Iterable[int]) -> str:
    """Text of `ids`; the leading space of the first word is kept (outputs are concatenated deltas)."""
    return "".join(token_text(i) for i in ids)


def make_text(n_tokens: int, seed: int = 0, *, repeat_fraction: float = 0.0) -> str:
    """Text that encodes to exactly `n_tokens` tokens.

    repeat_fraction > 0 builds it partly from a small pool of phrases reused many times (like tool
    calls or agent boilerplate), which the simulated model then repeats in its output.
    """
    if n_tokens < 0:
        raise ValueError("n_tokens must be >= 0")
    rng = random.Random(seed)
    vocab = vocabulary()
    words: list[str] = []
    phrases = [[vocab[rng.randrange(VOCAB_SIZE)] for _ in range(rng.randint(8, 32))] for _ in range(6)]
    while len(words) < n_tokens:
        if repeat_fraction > 0 and rng.random() < repeat_fraction:
            words.extend(rng.choice(phrases))
        else:
            words.extend(vocab[rng.randrange(VOCAB_SIZE)] for _ in range(8))
    return " ".join(words[:n_tokens])


def _content_text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return str(content)


_ROLE_IDS = {
    "system": SYSTEM_TOKEN_ID,
    "developer": SYSTEM_TOKEN_ID,
    "user": USER_TOKEN_ID,
    "assistant": ASSISTANT_TOKEN_ID,
    "tool": TOOL_TOKEN_ID,
}


def message_text(message: Mapping[str, object]) -> str:
    """The text of one chat message that gets tokenized (content plus any tool calls as JSON)."""
    import json

    text = _content_text(message.get("content"))
    tool_calls = message.get("tool_calls")
    if tool_calls:
        text = (text + " " + json.dumps(tool_calls, separators=(",", ":"))).strip()
    return text


def chat_prompt_ids(messages: Sequence[Mapping[str, object]], tools: object = None) -> list[int]:
    """Token ids of a chat prompt: [role token + content tokens] per message, then an assistant token.

    `tools` (the OpenAI request field), when given, becomes one extra system message holding its JSON.
    """
    import json

    ids: list[int] = []
    if tools:
        ids.append(SYSTEM_TOKEN_ID)
        ids.extend(encode(json.dumps(tools, separators=(",", ":"))))
    for message in messages:
        ids.append(_ROLE_IDS.get(str(message.get("role", "user")), USER_TOKEN_ID))
        ids.extend(encode(message_text(message)))
    ids.append(ASSISTANT_TOKEN_ID)
    return ids


def looks_like_tool_call(text: str) -> bool:
    """Whether a prompt carries tool-call-like content (JSON function calls, tool tags)."""
    return any(marker in text for marker in _TOOL_MARKERS)
