"""Radix-tree prefix cache of token ids with reference counts and LRU eviction of unreferenced leaves.

It counts tokens only (the KV bytes live in kv_pool.TokenPool); matching and insertion work in whole
pages. It must not know about requests or scheduling.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence


def _common_prefix_len(key: tuple[int, ...], ids: Sequence[int], start: int, end: int) -> int:
    """Length of the common prefix of key and ids[start:end], by slice comparisons (C speed)."""
    n = min(len(key), end - start)
    if n <= 0:
        return 0
    if key[:n] == tuple(ids[start : start + n]):
        return n
    lo, hi = 0, n  # key[:lo] matches, key[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if key[:mid] == tuple(ids[start : start + mid]):
            lo = mid
        else:
            hi = mid
    return lo


class RadixNode:
    __slots__ = ("children", "key", "last_access", "lock_ref", "parent")

    def __init__(self, key: tuple[int, ...], parent: RadixNode | None) -> None:
        self.key = key
        self.children: dict[tuple[int, ...], RadixNode] = {}
        self.parent = parent
        self.lock_ref = 0
        self.last_access = 0


class RadixCache:
    def __init__(self, page_size: int = 1) -> None:
        self.page_size = max(1, page_size)
        self._clock = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        self.root = RadixNode((), None)
        self.root.lock_ref = 1
        self.total_tokens = 0
        self.locked_tokens = 0

    @property
    def evictable_tokens(self) -> int:
        return self.total_tokens - self.locked_tokens

    def _child_key(self, ids: Sequence[int], start: int) -> tuple[int, ...]:
        return tuple(ids[start : start + self.page_size])

    def _aligned(self, n: int) -> int:
        return n // self.page_size * self.page_size

    def _split(self, node: RadixNode, at: int) -> RadixNode:
        """Split node's edge after `at` tokens; returns the new upper node."""
        parent = node.parent
        assert parent is not None
        upper = RadixNode(node.key[:at], parent)
        upper.lock_ref = node.lock_ref
        upper.last_access = node.last_access
        parent.children[self._child_key(node.key, 0)] = upper
        node.key = node.key[at:]
        node.parent = upper
        upper.children[self._child_key(node.key, 0)] = node
        return upper

    def match_prefix(self, ids: Sequence[int]) -> tuple[int, RadixNode]:
        """Longest cached prefix of ids (whole pages) and the node ending exactly there."""
        now = next(self._clock)
        node, pos, limit = self.root, 0, self._aligned(len(ids))
        while pos < limit:
            child = node.children.get(self._child_key(ids, pos))
            if child is None:
                break
            n = self._aligned(_common_prefix_len(child.key, ids, pos, limit))
            if n <= 0:
                break
            child.last_access = now
            if n < len(child.key):
                child = self._split(child, n)
                pos += n
                node = child
                break
            pos += n
            node = child
        return pos, node

    def insert(self, ids: Sequence[int]) -> tuple[int, RadixNode]:
        """Store the whole pages of ids; returns (tokens newly stored, node ending the stored prefix)."""
        limit = self._aligned(len(ids))
        matched, node = self.match_prefix(ids[:limit])
        if matched >= limit:
            return 0, node
        leaf = RadixNode(tuple(ids[matched:limit]), node)
        leaf.last_access = next(self._clock)
        node.children[self._child_key(leaf.key, 0)] = leaf
        self.total_tokens += len(leaf.key)
        return len(leaf.key), leaf

    def inc_lock(self, node: RadixNode) -> None:
        while node is not self.root and node is not None:
            if node.lock_ref == 0:
                self.locked_tokens += len(node.key)
            node.lock_ref += 1
            node = node.parent  # type: ignore[assignment]

    def dec_lock(self, node: RadixNode) -> None:
        while node is not self.root and node is not None:
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self.locked_tokens -= len(node.key)
            node = node.parent  # type: ignore[assignment]

    def evict(self, num_tokens: int) -> int:
        """Drop least recently used unreferenced leaves until `num_tokens` are freed; returns tokens freed."""
        if num_tokens <= 0:
            return 0
        heap: list[tuple[int, int, RadixNode]] = []
        order = itertools.count()
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            elif node is not self.root and node.lock_ref == 0:
                heap.append((node.last_access, next(order), node))
        heapq.heapify(heap)
        freed = 0
        while heap and freed < num_tokens:
            _, _, node = heapq.heappop(heap)
            parent = node.parent
            assert parent is not None
            del parent.children[self._child_key(node.key, 0)]
            freed += len(node.key)
            self.total_tokens -= len(node.key)
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, (parent.last_access, next(order), parent))
        return freed
