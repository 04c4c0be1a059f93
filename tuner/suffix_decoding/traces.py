"""Reading traces for the replay: (prompt, response) token-id pairs in arrival order.

Formats: `tokens` (JSONL, `prompt_token_ids` + `response_token_ids` per line), `text` (JSONL, `prompt` +
`response`), `openai` (JSONL, one conversation of OpenAI chat `messages` per line, tool calls included:
every assistant message is a request whose prompt is the conversation before it), `sharegpt` (a JSON
array or JSONL of `conversations` with `from`/`value`: every gpt turn is a request). Text is tokenized with
a local tokenizer folder (the `tokenizers` package; nothing is downloaded) or, without one, a word-level
stand-in. Every problem is a TraceError naming the file and line; nothing here replays.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuner.errors import TunerError

FORMATS = ("auto", "tokens", "text", "openai", "sharegpt")


class TraceError(TunerError):
    """A trace file that is missing, malformed or of an unknown format."""


class TokenizerError(TunerError):
    """A tokenizer folder that is missing or unreadable, or the `tokenizers` package missing."""


@dataclass(frozen=True)
class TraceRequest:
    """One request: prompt and recorded response as int32 token-id arrays (1-D)."""

    request_id: str
    prompt_token_ids: np.ndarray
    response_token_ids: np.ndarray


Tokenize = Callable[[str], list[int]]


def load_tokenizer(folder: str | Path) -> Tokenize:
    """`folder/tokenizer.json` (a Hugging Face tokenizer saved locally) -> text to token ids (no special
    tokens added). Raises TokenizerError."""
    path = Path(folder)
    if not path.is_dir():
        raise TokenizerError(f"tokenizer folder {path} does not exist")
    file = path / "tokenizer.json"
    if not file.is_file():
        raise TokenizerError(f"tokenizer folder {path} has no tokenizer.json (save one with "
                             "tokenizer.save_pretrained on a machine that has the model)")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TokenizerError("reading text traces with --tokenizer needs the Python package 'tokenizers': "
                             "pip install tokenizers") from None
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # noqa: BLE001 (the Rust side raises a bare Exception for any bad file)
        raise TokenizerError(f"cannot read {file}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids


_WORD = re.compile(r"\w+|[^\w\s]|\s+")


def word_tokenizer() -> Tokenize:
    """A stand-in when no tokenizer folder is given: words, single punctuation marks and runs of white space
    get ids in order of first appearance (repetition is kept; counts differ from a model's tokenizer)."""
    vocabulary: dict[str, int] = {}

    def tokenize(text: str) -> list[int]:
        return [vocabulary.setdefault(piece, len(vocabulary)) for piece in _WORD.findall(text)]

    return tokenize


def read_trace(path: str | Path, fmt: str = "auto", tokenize: Tokenize | None = None) -> list[TraceRequest]:
    """All requests of a trace file, in file order. Raises TraceError."""
    path = Path(path)
    if fmt not in FORMATS:
        raise TraceError(f"unknown trace format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise TraceError(f"trace file {path} does not exist")
    records = list(_records(path))
    if not records:
        raise TraceError(f"{path} holds no requests")
    if fmt == "auto":
        fmt = _detect(path, records[0][1], records[0][0])
    tokenize = tokenize or word_tokenizer()
    out: list[TraceRequest] = []
    for line_no, record in records:
        where = f"{path}:{line_no}"
        if not isinstance(record, Mapping):
            raise TraceError(f"{where}: expected a JSON object, got {type(record).__name__}")
        if fmt == "tokens":
            out.append(_token_request(record, where, len(out)))
        elif fmt == "text":
            out.append(_text_request(record, where, len(out), tokenize))
        elif fmt == "openai":
            out.extend(_conversation_requests(_openai_turns(record, where), where, len(out), tokenize))
        else:
            out.extend(_conversation_requests(_sharegpt_turns(record, where), where, len(out), tokenize))
    if not out:
        raise TraceError(f"{path} holds no requests (no assistant turns)")
    return out


def write_token_trace(path: str | Path, requests: Sequence[TraceRequest]) -> None:
    """Write requests in the `tokens` format (one JSON object per line)."""
    with open(path, "w") as f:
        f.writelines(json.dumps({"id": r.request_id, "prompt_token_ids": r.prompt_token_ids.tolist(),
                                "response_token_ids": r.response_token_ids.tolist()}) + "\n" for r in requests)


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) per JSONL line, or per element of a top-level JSON array."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read {path}: {exc}") from None
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        yield from ((i + 1, item) for i, item in enumerate(data))
        return
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{path}:{line_no}: malformed JSONL line ({exc.msg})") from None


def _detect(path: Path, first: Any, line_no: int) -> str:
    if isinstance(first, Mapping):
        if "prompt_token_ids" in first:
            return "tokens"
        if "messages" in first:
            return "openai"
        if "conversations" in first:
            return "sharegpt"
        if "prompt" in first and "response" in first:
            return "text"
    keys = ", ".join(sorted(first)) if isinstance(first, Mapping) else type(first).__name__
    raise TraceError(f"{path}:{line_no}: unknown trace format (keys: {keys}); expected prompt_token_ids, "
                     "prompt/response, messages or conversations, or pass --format")


def _token_ids(value: Any, key: str, where: str) -> np.ndarray:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                              for t in value):
        raise TraceError(f"{where}: {key!r} must be a list of non-negative integer token ids")
    return np.asarray(value, dtype=np.int32)


def _token_request(record: Mapping[str, Any], where: str, index: int) -> TraceRequest:
    for key in ("prompt_token_ids", "response_token_ids"):
        if key not in record:
            raise TraceError(f"{where}: missing {key!r}")
    return TraceRequest(str(record.get("id", index)), _token_ids(record["prompt_token_ids"], "prompt_token_ids",
                        where), _token_ids(record["response_token_ids"], "response_token_ids", where))


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise TraceError(f"{where}: {key!r} must be a string")
    return value


def _text_request(record: Mapping[str, Any], where: str, index: int, tokenize: Tokenize) -> TraceRequest:
    prompt = _text(record.get("prompt"), "prompt", where)
    response = _text(record.get("response"), "response", where)
    return TraceRequest(str(record.get("id", index)), np.asarray(tokenize(prompt), dtype=np.int32),
                        np.asarray(tokenize(response), dtype=np.int32))


def _openai_turns(record: Mapping[str, Any], where: str) -> list[tuple[str, str]]:
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise TraceError(f"{where}: 'messages' must be a list of chat messages")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise TraceError(f"{where}: message {i} needs a 'role'")
        content = m.get("content") or ""
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        text = str(content)
        for call in m.get("tool_calls") or []:
            fn = call.get("function", {}) if isinstance(call, Mapping) else {}
            text += f"\n<tool_call>{fn.get('name', '')}\n{fn.get('arguments', '')}</tool_call>"
        turns.append((str(m["role"]), text))
    return turns


def _sharegpt_turns(record: Mapping[str, Any], where: str) -> list[tuple[str, str]]:
    conversation = record.get("conversations")
    if not isinstance(conversation, list):
        raise TraceError(f"{where}: 'conversations' must be a list of turns")
    roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
             "system": "system", "tool": "tool", "function_call": "assistant", "observation": "tool"}
    turns = []
    for i, t in enumerate(conversation):
        if not isinstance(t, Mapping) or not isinstance(t.get("value"), str):
            raise TraceError(f"{where}: turn {i} needs 'from' and a string 'value'")
        turns.append((roles.get(str(t.get("from")), str(t.get("from"))), t["value"]))
    return turns


def _conversation_requests(turns: list[tuple[str, str]], where: str, index: int,
                           tokenize: Tokenize) -> list[TraceRequest]:
    """Every assistant turn is one request: the turns before it (rendered `<|role|>` + text) are its
    prompt. A role marker, not the model's chat template: prompts differ slightly in length."""
    out: list[TraceRequest] = []
    prompt_ids: list[int] = []
    for role, text in turns:
        header = tokenize(f"<|{role}|>\n")
        body = tokenize(text)
        if role == "assistant":
            out.append(TraceRequest(f"{where}#{len(out)}", np.asarray(prompt_ids + header, dtype=np.int32),
                                    np.asarray(body, dtype=np.int32)))
        prompt_ids = prompt_ids + header + body
    return out
