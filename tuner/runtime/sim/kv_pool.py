"""The KV cache pool of the simulated server, counted in tokens (max_total_num_tokens of them).

Only bookkeeping: who may allocate and when to evict from the prefix cache is the scheduler's job.
"""

from __future__ import annotations


class TokenPool:
    def __init__(self, size_tokens: int) -> None:
        self.size_tokens = size_tokens
        self.free_tokens = size_tokens

    def alloc(self, n: int) -> bool:
        if n > self.free_tokens:
            return False
        self.free_tokens -= n
        return True

    def release(self, n: int) -> None:
        self.free_tokens += n
        if self.free_tokens > self.size_tokens:
            raise AssertionError(f"KV pool over-released: {self.free_tokens} > {self.size_tokens}")
