"""`tuner suffix-replay` as a user runs it: traces in each format, the outputs, and one clear line for bad
input (exit 2, no traceback)."""

from __future__ import annotations

import json

import pytest
import yaml

from tuner.cli import main

SMALL_GRID = ["--depths", "32,64", "--factors", "1,2", "--offsets", "0,4", "--min-probs", "0.1,0.3",
              "--draft-tokens", "4,8"]


def _one_error_line(capsys) -> str:  # type: ignore[no-untyped-def]
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("tuner: error: ")
    return line


def _run(tmp_path, *args: str) -> int:  # type: ignore[no-untyped-def]
    return main(["--data-dir", str(tmp_path), "suffix-replay", *args])


def test_synthetic_sweep_writes_ranking_and_handoff(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out, handoff, space = tmp_path / "r.json", tmp_path / "h.yaml", tmp_path / "s.yaml"
    assert _run(tmp_path, "--synthetic", "high", "--sessions", "2", "--turns", "3", "--response-tokens", "60",
                *SMALL_GRID, "--json", str(out), "--handoff", str(handoff), "--handoff-space", str(space)) == 0
    assert "est. speed-up" in capsys.readouterr().out
    ranked = json.loads(out.read_text())["ranked"]
    assert len(ranked) == 32  # the engine defaults are one of the 32 combinations: replayed once
    assert sum(r["engine_defaults"] for r in ranked) == 1
    sets = yaml.safe_load(handoff.read_text())["flag_sets"]
    assert sets[0]["flags"]["speculative-algorithm"] == "SUFFIX"
    assert yaml.safe_load(space.read_text())["preset"] == "sglang-suffix"


def _write_lines(path, records) -> None:  # type: ignore[no-untyped-def]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_openai_tool_call_and_sharegpt_traces_replay(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    call = {"type": "function", "function": {"name": "read_file", "arguments": '{"path": "src/main.py"}'}}
    convo = {"messages": [{"role": "system", "content": "You are a coding agent."},
                          {"role": "user", "content": "Fix the bug."}]}
    for i in range(4):
        convo["messages"] += [{"role": "assistant", "content": "Let me read the file.", "tool_calls": [call]},
                              {"role": "tool", "content": f"line {i}"}]
    openai = tmp_path / "agent.jsonl"
    _write_lines(openai, [convo, convo])
    assert _run(tmp_path, str(openai), *SMALL_GRID, "--json", str(tmp_path / "o.json")) == 0
    best = json.loads((tmp_path / "o.json").read_text())
    assert best["requests"] == 8 and best["ranked"][0]["acceptance_rate"] > 0.5
    sharegpt = tmp_path / "share.json"
    sharegpt.write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi"},
                                                        {"from": "gpt", "value": "Let me check that."}]}] * 3))
    assert _run(tmp_path, str(sharegpt), *SMALL_GRID, "--json", str(tmp_path / "s.json")) == 0
    assert json.loads((tmp_path / "s.json").read_text())["requests"] == 3


def test_text_trace_with_a_local_tokenizer_folder(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {w: i for i, w in enumerate(["[UNK]", "Let", "me", "check", "the", "tests", "."])}
    tok = tokenizers.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    folder = tmp_path / "tok"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    trace = tmp_path / "text.jsonl"
    _write_lines(trace, [{"prompt": "check", "response": "Let me check the tests ."}] * 3)
    assert _run(tmp_path, str(trace), "--tokenizer", str(folder), *SMALL_GRID,
                "--json", str(tmp_path / "t.json")) == 0
    assert json.loads((tmp_path / "t.json").read_text())["ranked"][0]["response_tokens"] == 18


@pytest.mark.parametrize(("content", "args", "words"), [
    (None, [], "does not exist"),
    ('{"prompt_token_ids": [1], "response_token_ids": [2]}\n{oops\n', [], ":2: malformed JSONL line"),
    ('{"question": "?"}\n', [], "unknown trace format"),
    ('{"prompt_token_ids": [1], "response_token_ids": ["a"]}\n', [], "non-negative integer token ids"),
    ('{"prompt": "a", "response": "b"}\n', ["--tokenizer", "/nonexistent/tok"], "tokenizer folder"),
    ('{"prompt": "a", "response": "b"}\n', ["--depths", "0"], "cache_max_depth must be >= 1"),
])
def test_bad_input_is_one_line(tmp_path, capsys, content, args, words) -> None:  # type: ignore[no-untyped-def]
    trace = tmp_path / "trace.jsonl"
    if content is not None:
        trace.write_text(content)
    assert _run(tmp_path, str(trace), *args) == 2
    assert words in _one_error_line(capsys)


def test_trace_or_synthetic_is_required(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert _run(tmp_path) == 2
    assert "--synthetic" in _one_error_line(capsys)
    assert _run(tmp_path, "--synthetic", "loud") == 2
    assert "low, medium, high" in _one_error_line(capsys)
