"""The simulator's tokenizer: prompt lengths a load generator can predict exactly."""

import pytest

from tuner.runtime.sim import tokenizer


@pytest.mark.parametrize("n_tokens", [0, 1, 7, 100, 4096])
@pytest.mark.parametrize("repeat_fraction", [0.0, 0.5])
def test_make_text_encodes_to_exactly_the_requested_length(n_tokens: int, repeat_fraction: float) -> None:
    text = tokenizer.make_text(n_tokens, seed=3, repeat_fraction=repeat_fraction)
    assert len(tokenizer.encode(text)) == n_tokens


def test_make_text_is_deterministic_per_seed() -> None:
    assert tokenizer.make_text(50, seed=1) == tokenizer.make_text(50, seed=1)
    assert tokenizer.make_text(50, seed=1) != tokenizer.make_text(50, seed=2)


def test_vocabulary_text_round_trips_through_decode() -> None:
    ids = tokenizer.encode(tokenizer.make_text(200, seed=5))
    assert tokenizer.encode(tokenizer.decode(ids)) == ids


def test_long_words_count_one_token_per_8_characters() -> None:
    assert len(tokenizer.encode("a" * 8)) == 1
    assert len(tokenizer.encode("a" * 9)) == 2
    assert len(tokenizer.encode("x" * 20 + "  hello\tworld\n")) == 3 + 2


def test_chat_prompt_length_is_content_tokens_plus_one_per_message_plus_one() -> None:
    messages = [
        {"role": "system", "content": tokenizer.make_text(10, 1)},
        {"role": "user", "content": tokenizer.make_text(25, 2)},
    ]
    ids = tokenizer.chat_prompt_ids(messages)
    expected = (10 + 25) + len(messages) * tokenizer.CHAT_TOKENS_PER_MESSAGE + tokenizer.CHAT_REPLY_TOKENS
    assert len(ids) == expected
