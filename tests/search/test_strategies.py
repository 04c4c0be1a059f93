"""Search strategies on synthetic landscapes: they stay inside the pruned space and within budget."""

from tuner.kernels.base import MoeShape, Quant
from tuner.kernels.fused_moe.space import candidate_space
from tuner.search.strategies import AdaptiveSearch, ExhaustiveSearch

SHAPE = MoeShape(257, 256, 7168, 8, Quant.FP8_BLOCK, block_shape=(128, 128), fused_shared_experts=1)


def landscape(c):
    return 50 + abs(c.block_size_n - 64) / 8 + 2 * (c.num_warps == 8) + abs(c.num_stages - 3) + c.block_size_m / 64


def _drive(strategy, f):
    asked = []
    while not strategy.finished():
        batch = strategy.ask(8)
        if not batch:
            break
        for c in batch:
            asked.append(c)
            strategy.tell(c, f(c))
    return asked


def test_adaptive_stays_in_space_within_budget_and_finds_near_optimum():
    cands = candidate_space(SHAPE, 256)
    s = AdaptiveSearch(cands, seeds=[cands[0]], budget=40, seed=1)
    asked = _drive(s, landscape)
    assert len(asked) == 40 and len(set(asked)) == 40  # no config measured twice
    assert set(asked) <= set(cands)
    assert min(landscape(c) for c in asked) <= 1.03 * min(landscape(c) for c in cands)
    assert asked[0] == cands[0]  # seeds go first


def test_adaptive_beats_random_sampling_on_average():
    import random

    cands = candidate_space(SHAPE, 256)
    best_adaptive, best_random = [], []
    for seed in range(5):
        s = AdaptiveSearch(cands, seeds=[], budget=24, seed=seed)
        best_adaptive.append(min(landscape(c) for c in _drive(s, landscape)))
        best_random.append(min(landscape(c) for c in random.Random(seed).sample(cands, 24)))
    assert sum(best_adaptive) < sum(best_random)


def test_preloaded_results_count_against_the_budget_and_are_not_asked_again():
    cands = candidate_space(SHAPE, 8)
    s = AdaptiveSearch(cands, seeds=[], budget=10)
    for c in cands[:4]:
        s.preload(c, landscape(c))
    asked = _drive(s, landscape)
    assert len(asked) == 6 and not set(asked) & set(cands[:4])


def test_failed_configs_are_penalised_not_retried():
    cands = candidate_space(SHAPE, 8)
    s = AdaptiveSearch(cands, seeds=[], budget=30, seed=3)
    asked = _drive(s, lambda c: None if c.num_warps == 8 else landscape(c))
    assert len(set(asked)) == len(asked)


def test_exhaustive_covers_every_candidate_once():
    cands = candidate_space(SHAPE, 1)
    asked = _drive(ExhaustiveSearch(list(cands)), landscape)
    assert sorted(asked) == sorted(cands)
