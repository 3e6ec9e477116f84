"""app/lru.py: the bounded in-process cache behind label-set vectors and prepared labels."""

from __future__ import annotations

import pytest

from app.lru import LruCache


def test_least_recently_used_goes_first() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.keys() == ["a", "c"] and cache.get("b") is None
    cache.put("a", 10)
    assert cache.keys() == ["c", "a"] and cache.get("a") == 10
    with pytest.raises(ValueError):
        LruCache(0)
