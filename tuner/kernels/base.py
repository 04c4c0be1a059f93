"""Types shared by every tunable kernel: the launch config, the quantization scheme, the problem shape.

A `KernelConfig` carries exactly the six keys the engines' JSON files carry, so a config means the same
thing in our kernel, in SGLang's and in vLLM's. Nothing here touches a GPU.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

CONFIG_KEYS: tuple[str, ...] = (
    "BLOCK_SIZE_M",
    "BLOCK_SIZE_N",
    "BLOCK_SIZE_K",
    "GROUP_SIZE_M",
    "num_warps",
    "num_stages",
)


@dataclass(frozen=True, order=True)
class KernelConfig:
    """One Triton launch config, as keyed in SGLang's / vLLM's tuned-config JSON files.

    `use_tma` is the optional `USE_TMA` key of SGLang's files (SGLang >= 0.5.x, sm90): in a `_down` file it
    makes the down GEMM read its operands through TMA descriptors; absent (False) in every other file.
    """

    block_size_m: int
    block_size_n: int
    block_size_k: int
    group_size_m: int
    num_warps: int
    num_stages: int
    use_tma: bool = False

    def to_json_dict(self) -> dict[str, int | bool]:
        """The engine keys, in the engines' order; `USE_TMA` only when set (as SGLang's tuner writes it)."""
        data: dict[str, int | bool] = {
            "BLOCK_SIZE_M": self.block_size_m,
            "BLOCK_SIZE_N": self.block_size_n,
            "BLOCK_SIZE_K": self.block_size_k,
            "GROUP_SIZE_M": self.group_size_m,
            "num_warps": self.num_warps,
            "num_stages": self.num_stages,
        }
        if self.use_tma:
            data["USE_TMA"] = True
        return data

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> KernelConfig:
        """Parse one M entry of an engine file; ValueError names a missing key."""
        missing = [k for k in CONFIG_KEYS if k not in data]
        if missing:
            raise ValueError(f"kernel config {data!r} lacks key(s) {', '.join(missing)}")
        m, n, k, g, w, st = (int(data[key]) for key in CONFIG_KEYS)
        return cls(m, n, k, g, w, st, use_tma=bool(data.get("USE_TMA", False)))

    @property
    def key(self) -> str:
        """A compact, stable identifier, e.g. 'M64_N128_K128_G1_w4_s3' ('..._tma' with USE_TMA)."""
        return (
            f"M{self.block_size_m}_N{self.block_size_n}_K{self.block_size_k}"
            f"_G{self.group_size_m}_w{self.num_warps}_s{self.num_stages}" + ("_tma" if self.use_tma else "")
        )

    @classmethod
    def from_key(cls, key: str) -> KernelConfig:
        parts = key.split("_")
        tma = parts[-1] == "tma"
        if tma:
            parts = parts[:-1]
        try:
            m, n, k, g, w, s = parts
            return cls(int(m[1:]), int(n[1:]), int(k[1:]), int(g[1:]), int(w[1:]), int(s[1:]), tma)
        except ValueError as exc:
            raise ValueError(f"not a kernel config key: {key!r}") from exc

    def with_block_m(self, block_size_m: int) -> KernelConfig:
        return dataclasses.replace(self, block_size_m=block_size_m)


DOWN_SEPARATOR = "/down:"


@dataclass(frozen=True)
class MoeConfigs:
    """What the fused MoE runs at one batch size: the up (gate+up) GEMM's config and, where the engine reads a
    separate one (SGLang's `_down` files), the down GEMM's.

    `down=None` means no `_down` entry: the engine runs the up config for both GEMMs, as every engine did
    before `_down` files existed. SGLang makes both GEMMs share one token alignment, so a down config always
    has the up config's BLOCK_SIZE_M (SGLang 0.5.23 `try_get_optimal_moe_config` overrides it otherwise).
    """

    up: KernelConfig
    down: KernelConfig | None = None

    def __post_init__(self) -> None:
        if self.down is not None and self.down.block_size_m != self.up.block_size_m:
            raise ValueError(
                f"down config {self.down.key} must share BLOCK_SIZE_M with up config {self.up.key} "
                "(both GEMMs use one token alignment)"
            )

    @property
    def key(self) -> str:
        """'<up key>' or '<up key>/down:<down key>' (a database key)."""
        return self.up.key if self.down is None else f"{self.up.key}{DOWN_SEPARATOR}{self.down.key}"

    @classmethod
    def from_key(cls, key: str) -> MoeConfigs:
        up, sep, down = key.partition(DOWN_SEPARATOR)
        return cls(KernelConfig.from_key(up), KernelConfig.from_key(down) if sep else None)

    @property
    def effective_down(self) -> KernelConfig:
        """The config the down GEMM really runs with."""
        return self.down if self.down is not None else self.up


class Quant(str, enum.Enum):
    """How the expert weights (and activations) are stored."""

    BF16 = "bf16"
    FP8_PER_CHANNEL = "fp8_w8a8_per_channel"  # per-output-channel weight scales, per-token act scales
    FP8_BLOCK = "fp8_w8a8_block"  # [bn, bk] weight-block scales, per-token-group act scales

    @property
    def is_fp8(self) -> bool:
        return self is not Quant.BF16


@dataclass(frozen=True)
class MoeShape:
    """The fused-MoE problem of one model at one parallelism, as the engine's kernel sees it.

    `num_experts` (E) counts the fused shared expert when `fused_shared_experts` is 1; then every token's
    top-k at run time has one extra slot that always routes to the last expert.
    w1 (gate+up) is [E, 2N, K]; w2 (down) is [E, K, N].
    """

    num_experts: int  # E, local, including a fused shared expert
    intermediate_size: int  # N, per shard, after the activation
    hidden_size: int  # K
    top_k: int  # routed experts per token, without the fused shared expert
    quant: Quant = Quant.BF16
    block_shape: tuple[int, int] | None = None  # (bn, bk) for FP8_BLOCK
    fused_shared_experts: int = 0

    def __post_init__(self) -> None:
        if self.quant is Quant.FP8_BLOCK and self.block_shape is None:
            raise ValueError("FP8 block quantization needs a block_shape")
        if self.quant is not Quant.FP8_BLOCK and self.block_shape is not None:
            raise ValueError(f"block_shape given for {self.quant.value}")

    @property
    def runtime_top_k(self) -> int:
        return self.top_k + self.fused_shared_experts

    @property
    def routed_experts(self) -> int:
        return self.num_experts - self.fused_shared_experts

    @property
    def key(self) -> str:
        """Stable identifier for the database, e.g. 'E=161,N=192,K=5120,topk=8+1,fp8_w8a8_per_channel'."""
        bs = f",block={self.block_shape[0]}x{self.block_shape[1]}" if self.block_shape else ""
        return (
            f"E={self.num_experts},N={self.intermediate_size},K={self.hidden_size},"
            f"topk={self.top_k}+{self.fused_shared_experts},{self.quant.value}{bs}"
        )


@dataclass(frozen=True, order=True)
class GemmShape:
    """One block-FP8 GEMM: N output features, K input features, the weight block [bn, bk]; `layers` names the
    layers that have it (a deduplicated shape serves several)."""

    n: int
    k: int
    block_shape: tuple[int, int] = (128, 128)
    layers: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"N={self.n},K={self.k},block={self.block_shape[0]}x{self.block_shape[1]}"


def nearest_entry(table: Mapping[int, T], m: int) -> T:
    """The engines' lookup rule for config files keyed by batch size: the entry whose key is nearest to M, ties
    going to the smaller key (SGLang 0.5.23 and vLLM 0.33 alike). KeyError-free only for a non-empty table."""
    return table[min(table, key=lambda key: (abs(key - m), key))]


# The batch sizes SGLang's and vLLM's tuners write, and that our sweep covers by default.
STANDARD_BATCH_SIZES: tuple[int, ...] = (
    1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096,
)
