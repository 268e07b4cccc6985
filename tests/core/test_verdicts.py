"""The latest verdict per kind, read from the rows the enrichment's cache writes (Azurite): one key design for
the writer (enrichment/cache.py) and the readers (approvals, block-indicators)."""

from __future__ import annotations

import time
import uuid

import pytest

from core.state import StateStore
from core.verdicts import latest_verdict, latest_verdicts
from enrichment.cache import MemoryCache, VerdictCache
from enrichment.virustotal import Verdict


@pytest.fixture
def store(stack) -> StateStore:
    return StateStore(connection_string=stack.azurite.connection_string, prefix="vd" + uuid.uuid4().hex[:8])


def cached(store: StateStore, kind: str, value: str, verdict: str, malicious: int = 0, age: float = 0.0) -> None:
    """A verdict as the enrichment stores it (its own writer, its own key)."""
    cache = VerdictCache(store, ttl_seconds=3600, memory=MemoryCache())
    cache.put(Verdict(kind, value, verdict, malicious=malicious, harmless=50), fetched_at=time.time() - age)


def test_every_kind_is_read_by_kind_and_value(store):
    digest, url, name = uuid.uuid4().hex * 2, "https://evil.example/login/", f"evil-{uuid.uuid4().hex[:6]}.example"
    cached(store, "file", digest, "malicious", malicious=12)
    cached(store, "url", url, "suspicious")
    cached(store, "domain", name, "harmless", age=3 * 3600)
    cached(store, "ip", "203.0.113.45", "malicious", malicious=3)
    assert latest_verdict(store, digest, "file").verdict == "malicious"
    assert latest_verdict(store, digest, "domain") is None  # another kind, another row
    assert latest_verdict(store, "203.0.113.45").ip == "203.0.113.45"  # approvals' call, unchanged
    found = latest_verdicts(store, [("file", digest), ("url", url), ("domain", name), ("url", "https://other.example/")])
    assert {k: v.verdict for k, v in found.items()} == {("file", digest): "malicious", ("url", url): "suspicious",
                                                        ("domain", name): "harmless"}
    assert found[("domain", name)].age().endswith(" h") and found[("file", digest)].describe().startswith("malicious")


def test_many_values_are_read_in_batches_of_fifteen(store):
    names = [f"d{i}-{uuid.uuid4().hex[:6]}.example" for i in range(40)]
    for name in names[::2]:
        cached(store, "domain", name, "malicious", malicious=5)
    found = latest_verdicts(store, [("domain", n) for n in names])
    assert sorted(v for _, v in found) == sorted(names[::2])
