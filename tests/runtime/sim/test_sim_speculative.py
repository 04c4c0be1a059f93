"""Speculative decoding: acceptance follows the text (suffix) or a geometric draft model (EAGLE/NEXTN)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tuner.runtime.sim.cost import RooflineCostModel
from tuner.runtime.sim.generation import PhraseBank, TokenGenerator
from tuner.runtime.sim.profiles import GLM_4_7_FP8, GPU_PROFILES
from tuner.runtime.sim.scheduler import Scheduler, SchedulerConfig, SimRequest
from tuner.runtime.sim.speculative import GeometricSpeculator, TreeSpeculator
from tuner.runtime.sim.tokenizer import encode, make_text
from tuner.suffix_decoding.params import SuffixParams

COST = RooflineCostModel(GLM_4_7_FP8, GPU_PROFILES["H200"], 8, 2.0)
PHRASES = PhraseBank(0)
SUFFIX = SuffixParams(num_draft_tokens=8)


def accept_length(speculator, repeat_fraction: float, n_requests: int = 12) -> float:
    cfg = SchedulerConfig(
        max_running_requests=8,
        max_total_num_tokens=500_000,
        chunked_prefill_size=8192,
        max_prefill_tokens=16384,
        speculative_algorithm=speculator.algorithm,
        speculative_num_steps=3,
        speculative_num_draft_tokens=speculator.num_draft_tokens,
    )
    s = Scheduler(cfg, COST, speculator)
    for i in range(n_requests):
        ids = encode(make_text(1500, seed=i, repeat_fraction=repeat_fraction))
        s.submit(SimRequest(f"r{i}", ids, 200, TokenGenerator(ids, 0, PHRASES)))
    while s.has_work():
        step = s.schedule()
        assert step is not None
        s.complete(step)
    return s.avg_spec_accept_length


def test_suffix_decoding_accepts_more_on_repetitive_text() -> None:
    random_text = accept_length(TreeSpeculator("SUFFIX", SUFFIX), 0.0)
    repetitive = accept_length(TreeSpeculator("SUFFIX", SUFFIX), 0.8)
    assert random_text < 1.2
    assert repetitive > random_text + 1.0


@pytest.mark.parametrize(
    "bound", [{"cache_max_depth": 8}, {"max_spec_factor": 0.3}, {"max_spec_offset": -3.0}, {"num_draft_tokens": 2}]
)
def test_suffix_flags_bound_the_speculation(bound: dict) -> None:
    default = accept_length(TreeSpeculator("SUFFIX", SUFFIX), 0.8)
    bounded = accept_length(TreeSpeculator("SUFFIX", replace(SUFFIX, **bound)), 0.8)
    assert bounded < default - 0.2


def test_a_high_min_token_prob_never_accepts_more() -> None:
    default = accept_length(TreeSpeculator("SUFFIX", SUFFIX), 0.5)
    strict = accept_length(TreeSpeculator("SUFFIX", replace(SUFFIX, min_token_prob=0.95)), 0.5)
    assert strict <= default + 1e-9


def test_outputs_are_remembered_across_requests() -> None:
    """The same prompt twice: the second answer is drafted from the first one's cached output."""
    spec = TreeSpeculator("SUFFIX", SUFFIX)
    cfg = SchedulerConfig(
        max_running_requests=8,
        max_total_num_tokens=500_000,
        chunked_prefill_size=8192,
        max_prefill_tokens=16384,
        speculative_algorithm="SUFFIX",
        speculative_num_draft_tokens=8,
    )
    s = Scheduler(cfg, COST, spec)
    ids = encode(make_text(300, seed=4))
    reqs = [SimRequest(f"r{i}", ids, 100, TokenGenerator(ids, 0, PHRASES)) for i in range(2)]
    for r in reqs:
        s.submit(r)
        while s.has_work():
            step = s.schedule()
            assert step is not None
            s.complete(step)
    assert reqs[0].output_ids == reqs[1].output_ids
    assert reqs[1].verify_ct < reqs[0].verify_ct / 3


def test_geometric_acceptance_matches_the_sum_of_powers() -> None:
    spec = GeometricSpeculator("NEXTN", 0.7, num_steps=3, topk=1, num_draft_tokens=4, seed=0)
    p = spec.accept_prob(0.0)
    ids = encode(make_text(20, 1))
    req = SimRequest("r", ids, 10**6, TokenGenerator(ids, 0, PHRASES))
    samples = [spec.accepted_drafts(req, 100) + 1 for _ in range(20000)]
    assert sum(samples) / len(samples) == pytest.approx(sum(p**i for i in range(4)), abs=0.05)
    assert max(samples) == 4  # never more than num_steps drafts + the bonus token


def test_wider_draft_trees_accept_more() -> None:
    chain = GeometricSpeculator("EAGLE", 0.7, num_steps=3, topk=1, num_draft_tokens=4, seed=0)
    tree = GeometricSpeculator("EAGLE", 0.7, num_steps=3, topk=4, num_draft_tokens=12, seed=0)
    assert tree.accept_prob(0.0) > chain.accept_prob(0.0)
