"""The kernel protocol: families by name, and their shapes as the store keeps them."""

import pytest

from tuner.errors import TunerError
from tuner.kernels.base import MoeShape, Quant
from tuner.kernels.family import get_family
from tuner.search.runners import runner_for


def test_fused_moe_shapes_round_trip_through_the_stored_json():
    family = get_family("fused_moe")
    for shape in (MoeShape(257, 256, 7168, 8, Quant.FP8_BLOCK, (128, 128), 1),
                  MoeShape(161, 192, 5120, 8, Quant.FP8_PER_CHANNEL, fused_shared_experts=1),
                  MoeShape(128, 768, 2048, 8)):
        data = family.shape_to_json(shape)
        assert data["quant"] == shape.quant.value  # plain JSON, as the sweeps table stores it
        assert family.shape_from_json(data) == shape
        assert family.shape_key(shape) == shape.key


def test_unknown_kernels_are_named_with_the_known_ones():
    with pytest.raises(TunerError, match="fused_moe"):
        get_family("fp4_gemm")
    with pytest.raises(TunerError, match="no sweep runner"):
        runner_for("fp4_gemm", None, None, None, None, None)
