"""One suffix-decoding parameter set, in the SGLang fork's terms, and the engine defaults.

Facts from the Novita SGLang fork (glm_suffix branch) as documented in shared/reference/engines.md; the
speculation rules themselves follow arctic-inference 0.3.0. Data only.
"""

from __future__ import annotations

from dataclasses import dataclass

# Tokens of the verify width that are not speculated: SGLang lays out a verify pass as the last accepted
# token followed by the drafts (EAGLE: draft tokens = steps + 1; NGRAM likewise), so a SUFFIX draft holds
# at most num_draft_tokens - 1 speculated tokens. Assumed for the fork's SUFFIX too.
ROOT_TOKENS_PER_VERIFY = 1
DEFAULT_MAX_CACHED_REQUESTS = 10000  # --speculative-suffix-max-cached-requests


@dataclass(frozen=True, order=True)
class SuffixParams:
    """`cache_max_depth` (tokens): tree depth, bounds match length plus speculation length;
    `max_spec_factor`, `max_spec_offset` (tokens, may be negative): a draft holds at most
    factor x match_length + offset tokens; `min_token_prob`: tokens whose estimated probability is lower are not drafted;
    `num_draft_tokens`: the verify width every draft is padded to (speculated tokens <= width - 1)."""

    cache_max_depth: int = 64
    max_spec_factor: float = 1.0
    max_spec_offset: float = 0.0
    min_token_prob: float = 0.1
    num_draft_tokens: int = 8

    def __post_init__(self) -> None:
        if self.cache_max_depth < 1:
            raise ValueError(f"cache_max_depth must be >= 1, got {self.cache_max_depth}")
        if self.num_draft_tokens < ROOT_TOKENS_PER_VERIFY + 1:
            raise ValueError(f"num_draft_tokens must be >= {ROOT_TOKENS_PER_VERIFY + 1}, "
                             f"got {self.num_draft_tokens}")
        if self.max_spec_factor < 0:  # the offset may be negative (the engines take any float)
            raise ValueError(f"max_spec_factor must be >= 0, got {self.max_spec_factor}")
        if not 0.0 <= self.min_token_prob <= 1.0:
            raise ValueError(f"min_token_prob must be within [0, 1], got {self.min_token_prob}")

    @property
    def max_spec_tokens(self) -> int:
        """Speculated tokens one draft may hold."""
        return self.num_draft_tokens - ROOT_TOKENS_PER_VERIFY

    def label(self) -> str:
        return (f"depth={self.cache_max_depth} factor={self.max_spec_factor:g} "
                f"offset={self.max_spec_offset:g} min_prob={self.min_token_prob:g} "
                f"draft_tokens={self.num_draft_tokens}")


ENGINE_DEFAULTS = SuffixParams()  # depth 64, factor 1.0, offset 0, min prob 0.1, 8 draft tokens
