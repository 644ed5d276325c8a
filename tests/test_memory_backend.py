"""MemoryBackend: per-entry TTL on a fake clock, exact eviction counts, LRU, threads (memory.py)."""

from __future__ import annotations

import random
import threading

import pytest

import cachekit as ck
from cachekit.backends.base import (
    MISSING,
    SupportsCompareAndSet,
    SupportsDropPrefix,
    SupportsEvictionCounts,
)
from tests.conftest import FakeClock

POLICIES = ("lru", "tinylfu")


def make(clock: FakeClock, maxsize: int = 100, **opts: object) -> ck.MemoryBackend:
    return ck.MemoryBackend(maxsize, timer=clock, **opts)  # type: ignore[arg-type]


def test_per_entry_ttl(clock: FakeClock) -> None:
    b = make(clock)
    b.set("short", 1, 5)
    b.set("long", 2, 50)
    b.set("forever", 3, None)
    clock.advance(4.999)
    assert (b.get("short"), b.get("long"), b.get("forever")) == (1, 2, 3)
    clock.advance(0.001)
    assert b.get("short") is MISSING
    assert b.get("long") == 2
    clock.advance(45)
    assert b.get("long") is MISSING
    clock.advance(10**9)
    assert b.get("forever") == 3
    assert b.eviction_counts() == (0, 2)


def test_overwrite_resets_ttl(clock: FakeClock) -> None:
    b = make(clock)
    b.set("k", 1, 10)
    clock.advance(8)
    b.set("k", 2, 10)
    clock.advance(8)
    assert b.get("k") == 2
    clock.advance(2)
    assert b.get("k") is MISSING


def test_zero_or_negative_ttl_drops_the_entry(clock: FakeClock) -> None:
    b = make(clock)
    b.set("k", 1, None)
    b.set("k", 2, 0)
    assert b.get("k") is MISSING
    b.set("j", 1, -5)
    assert b.get("j") is MISSING


def test_none_is_a_value(clock: FakeClock) -> None:
    b = make(clock)
    b.set("k", None, 10)
    assert b.get("k") is None
    assert b.get_many(["k", "x"]) == {"k": None}


def test_capacity_evictions_and_expirations_are_counted_separately_and_exactly(
    clock: FakeClock,
) -> None:
    b = make(clock, maxsize=10)
    for i in range(10):
        b.set(f"e{i}", i, 5)  # will expire
    assert b.eviction_counts() == (0, 0)
    clock.advance(6)
    # the 10 expired entries are swept (expirations), not evicted for capacity
    for i in range(10):
        b.set(f"k{i}", i, 100)
    assert b.eviction_counts() == (0, 10)
    # 7 more live keys force exactly 7 capacity evictions
    for i in range(10, 17):
        b.set(f"k{i}", i, 100)
    assert b.eviction_counts() == (7, 10)
    assert len(b) == 10
    # the oldest were the ones evicted
    assert [b.get(f"k{i}") for i in range(7)] == [MISSING] * 7
    assert [b.get(f"k{i}") for i in range(7, 17)] == list(range(7, 17))
    # expiry noticed only by eviction_counts' sweep
    clock.advance(200)
    assert b.eviction_counts() == (7, 20)
    assert len(b) == 0


def test_deleting_an_expired_entry_counts_it_as_expired_once(clock: FakeClock) -> None:
    b = make(clock)
    b.set("k", 1, 5)
    clock.advance(10)
    assert b.delete("k") is False
    assert b.eviction_counts() == (0, 1)
    assert b.delete("k") is False
    assert b.eviction_counts() == (0, 1)


def test_overwriting_a_live_key_is_not_an_eviction(clock: FakeClock) -> None:
    b = make(clock, maxsize=2)
    b.set("a", 1, None)
    b.set("b", 1, None)
    for i in range(5):
        b.set("a", i, None)
    assert b.eviction_counts() == (0, 0)
    assert b.delete("b") is True
    assert b.eviction_counts() == (0, 0)


def test_lru_order_respects_reads_applied_at_the_next_write(clock: FakeClock) -> None:
    b = make(clock, maxsize=3)
    b.set("a", 1, None)
    b.set("b", 2, None)
    b.set("c", 3, None)
    assert b.get("a") == 1  # buffered: "a" is not yet most recent in the LRU order
    b.set("d", 4, None)  # the write applies the buffered read, then evicts the LRU: "b"
    assert b.get("b") is MISSING
    assert (b.get("a"), b.get("c"), b.get("d")) == (1, 3, 4)
    assert b.eviction_counts() == (1, 0)


def test_without_reads_the_oldest_is_evicted(clock: FakeClock) -> None:
    b = make(clock, maxsize=3)
    for k in "abc":
        b.set(k, k, None)
    b.set("d", "d", None)
    assert b.get("a") is MISSING
    assert b.get("b") == "b"


def test_get_many_reads_count_as_recent(clock: FakeClock) -> None:
    b = make(clock, maxsize=3)
    for k in "abc":
        b.set(k, k, None)
    assert b.get_many(["a", "b"]) == {"a": "a", "b": "b"}
    b.set("d", "d", None)
    assert b.get("c") is MISSING
    assert b.get_many(["a", "b", "d"]) == {"a": "a", "b": "b", "d": "d"}


def test_an_expired_read_is_never_revived_by_the_read_buffer(clock: FakeClock) -> None:
    b = make(clock, maxsize=3)
    b.set("a", 1, 5)
    assert b.get("a") == 1
    clock.advance(6)
    b.set("b", 2, None)  # drains the buffered read of the now-expired "a"
    assert b.get("a") is MISSING
    assert b.eviction_counts() == (0, 1)


def test_add(clock: FakeClock) -> None:
    b = make(clock)
    assert b.add("k", 1, 5) is True
    assert b.add("k", 2, 5) is False
    assert b.get("k") == 1
    clock.advance(5)
    assert b.add("k", 3, 5) is True  # the expired entry does not block
    assert b.get("k") == 3


def test_delete_and_many_ops(clock: FakeClock) -> None:
    b = make(clock)
    b.set_many({f"k{i}": i for i in range(20)}, 10)
    assert b.get_many([f"k{i}" for i in range(25)]) == {f"k{i}": i for i in range(20)}
    assert b.delete("k0") is True
    assert b.delete("k0") is False
    assert b.delete_many([f"k{i}" for i in range(10)] + ["nope"]) == 9
    assert b.get_many([f"k{i}" for i in range(20)]) == {f"k{i}": i for i in range(10, 20)}
    clock.advance(10)
    assert b.get_many([f"k{i}" for i in range(20)]) == {}


def test_compare_and_set(clock: FakeClock) -> None:
    b = make(clock)
    assert isinstance(b, SupportsCompareAndSet)
    assert isinstance(b, SupportsEvictionCounts)
    assert b.compare_and_set("k", b"x", b"y", None) is False  # absent
    b.set("k", b"v1", 10)
    assert b.compare_and_set("k", b"other", b"v2", 10) is False
    assert b.get("k") == b"v1"
    assert b.compare_and_set("k", b"v1", b"v2", 10) is True
    assert b.get("k") == b"v2"
    clock.advance(10)
    assert b.compare_and_set("k", b"v2", b"v3", 10) is False  # expired
    assert b.get("k") is MISSING


def test_max_value_size(clock: FakeClock) -> None:
    b = make(clock, max_value_size=10)
    b.set("k", b"0123456789", None)
    with pytest.raises(ck.ValueTooLargeError) as info:
        b.set("k", b"01234567890", None)
    assert (info.value.size, info.value.limit) == (11, 10)
    assert b.get("k") == b"0123456789"
    with pytest.raises(ck.ValueTooLargeError):
        b.set_many({"a": b"1", "b": b"x" * 11}, None)
    assert b.get("a") is MISSING  # set_many is checked before anything is stored
    with pytest.raises(ck.ValueTooLargeError):
        b.add("n", b"x" * 11, None)


@pytest.mark.parametrize("policy", POLICIES)
def test_clear(clock: FakeClock, policy: str) -> None:
    b = make(clock, maxsize=300, policy=policy)
    for i in range(1000):
        b.set(f"k{i}", i, 60)
        b.get(f"k{i // 2}")
    b.clear()
    assert b.get("k999") is MISSING
    assert len(b) == 0
    assert (b._store.heap, b._store.data) == ([], {})
    evicted = b.eviction_counts()
    for i in range(300):  # the whole capacity is free again
        b.set(f"n{i}", i, None)
    assert b.eviction_counts() == evicted
    assert b.get("n0") == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_thread_safety_under_contention(policy: str) -> None:
    maxsize = 16
    b = ck.MemoryBackend(maxsize, policy=policy)
    errors: list[BaseException] = []
    sizes: list[int] = []
    start = threading.Barrier(8)

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait()
            for _ in range(3000):
                k = f"k{rng.randrange(64)}"
                op = rng.random()
                if op < 0.45:
                    b.set(k, k, rng.choice([None, 0.5, 100]))
                elif op < 0.85:
                    v = b.get(k)
                    assert v is MISSING or v == k
                elif op < 0.95:
                    b.delete(k)
                else:
                    b.set_many({k: k, k + "x": k + "x"}, None)
                    got = b.get_many([k, k + "x"])
                    assert all(v == kk for kk, v in got.items())
                sizes.append(len(b))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert max(sizes) <= maxsize
    capacity, expired = b.eviction_counts()
    assert capacity > 0
    assert len(b) <= maxsize
    # the mirror that lock-free readers use agrees with the store
    live = b.get_many([f"k{i}" for i in range(64)] + [f"k{i}x" for i in range(64)])
    assert len(live) == len(b)
    assert expired >= 0


def test_from_url() -> None:
    b = ck.backend_from_url("memory://?maxsize=5")
    assert isinstance(b, ck.MemoryBackend)
    assert b.maxsize == 5
    for i in range(7):
        b.set(str(i), i, None)
    assert len(b) == 5
    assert b.eviction_counts()[0] == 2
    b2 = ck.backend_from_url("memory://?maxsize=5&max_value_size=3")
    assert b2.max_value_size == 3
    assert ck.backend_from_url("memory://", maxsize=7).maxsize == 7  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "url",
    [
        "memory://?maxsize=abc",
        "memory://?maxsize=0",
        "memory://?bogus=1",
        "memory://?maxsize=-1",
        "memory://?maxsize=",
        "memory://?maxsize=1.5",
        "memory://?read_buffer=-1",
        "memory://?read_buffer=0",
        "memory://?max_value_size=-1",
        "memory://?policy=lfu",
        "memory://?policy=",
    ],
)
def test_bad_url_options_raise_configuration_error(url: str) -> None:
    with pytest.raises(ck.ConfigurationError, match=r"memory|MemoryBackend"):
        ck.backend_from_url(url)


@pytest.mark.parametrize(
    "options",
    [
        {"maxsize": 0},
        {"maxsize": None},
        {"maxsize": "10"},
        {"maxsize": 10.0},
        {"maxsize": True},
        {"maxsize": 10, "read_buffer": -1},
        {"maxsize": 10, "read_buffer": "4"},
        {"maxsize": 10, "max_value_size": -1},
        {"maxsize": 10, "timer": 5},
        {"maxsize": 10, "policy": "arc"},
        {"maxsize": 10, "policy": None},
    ],
)
def test_bad_constructor_options_raise_configuration_error(options: dict[str, object]) -> None:
    with pytest.raises(ck.ConfigurationError, match="MemoryBackend"):
        ck.MemoryBackend(**options)  # type: ignore[arg-type]


def test_bad_from_url_keywords_and_schemes() -> None:
    with pytest.raises(ck.ConfigurationError, match="bogus"):
        ck.MemoryBackend.from_url("memory://", bogus=1)
    with pytest.raises(ck.ConfigurationError):
        ck.backend_from_url("nosuchscheme://x")
    with pytest.raises(ck.ConfigurationError):
        ck.backend_from_url("no-scheme-here")


def test_policy_option() -> None:
    assert ck.MemoryBackend(5).policy == "lru"
    assert ck.backend_from_url("memory://?policy=tinylfu").policy == "tinylfu"  # type: ignore[attr-defined]
    assert ck.MemoryBackend(5, policy="TinyLFU").policy == "tinylfu"
    assert ck.backend_from_url("memory://", policy="lru").policy == "lru"  # type: ignore[attr-defined]


class RegisteredBackend(ck.MemoryBackend):
    schemes = ("mine",)

    @classmethod
    def from_url(cls, url: str, **options: object) -> RegisteredBackend:
        return cls(3)


def test_register_backend() -> None:
    ck.register_backend("mine-test", RegisteredBackend)
    b = ck.backend_from_url("mine-test://")
    assert type(b) is RegisteredBackend
    assert b.maxsize == 3
    ck.register_backend("mine-test2", "cachekit.backends.memory:MemoryBackend")
    assert isinstance(ck.backend_from_url("mine-test2://?maxsize=2"), ck.MemoryBackend)
    ck.register_backend("mine-test3", "cachekit.errors:CacheError")
    with pytest.raises(ck.ConfigurationError, match="not a cachekit Backend"):
        ck.backend_from_url("mine-test3://")
    ck.register_backend("mine-test4", "no_such_module_xyz:Backend")
    with pytest.raises(ck.ConfigurationError):
        ck.backend_from_url("mine-test4://")


# -- both policies: exact counts, TTL, compare-and-set, drop_prefix, a bounded heap


@pytest.mark.parametrize("policy", POLICIES)
def test_every_entry_is_accounted_for_exactly(clock: FakeClock, policy: str) -> None:
    """stored = held + evicted for capacity + expired + deleted + dropped, under random churn."""
    b = make(clock, maxsize=50, policy=policy)
    rng = random.Random(7)
    stored = deleted = dropped = 0
    for step in range(20_000):
        key = f"{rng.choice('ab')}:{rng.randrange(200)}"
        op = rng.random()
        if op < 0.55:
            if b.get(key) is MISSING:  # a miss, as cache-aside would see it
                stored += 1
            b.set(key, step, rng.choice([None, 1, 5, 50]))
        elif op < 0.85:
            b.get(key)
        elif op < 0.95:
            deleted += b.delete(key)
        elif op < 0.999:
            clock.advance(rng.random())
        else:
            dropped += b.drop_prefix(rng.choice("ab") + ":")
        assert len(b) <= 50
    capacity, expired = b.eviction_counts()
    assert capacity > 1000 and expired > 1000 and dropped > 0
    assert stored == len(b) + capacity + expired + deleted + dropped
    policy_keys = [
        key
        for part in ("order", "window", "probation", "protected")
        for key in getattr(b._store.policy, part, ())
    ]
    assert sorted(policy_keys) == sorted(b._store.data)  # the policy tracks exactly the entries


@pytest.mark.parametrize("policy", POLICIES)
def test_ttl_and_compare_and_set_under_each_policy(clock: FakeClock, policy: str) -> None:
    b = make(clock, maxsize=10, policy=policy)
    b.set("k", b"v1", 5)
    b.set("forever", 1, None)
    assert b.compare_and_set("k", b"v1", b"v2", 5) is True
    assert b.compare_and_set("k", b"v1", b"v3", 5) is False
    clock.advance(5)
    assert b.get("k") is MISSING
    assert b.compare_and_set("k", b"v2", b"v3", 5) is False
    assert b.get("forever") == 1
    assert b.eviction_counts() == (0, 1)


@pytest.mark.parametrize("policy", POLICIES)
def test_a_new_entry_is_readable_at_once_even_at_capacity(clock: FakeClock, policy: str) -> None:
    for maxsize in (1, 2, 3, 10):
        b = make(clock, maxsize=maxsize, policy=policy)
        for i in range(100):
            b.set(f"k{i}", i, None)
            assert b.get(f"k{i}") == i
            assert len(b) == min(i + 1, maxsize)
        assert b.eviction_counts() == (100 - maxsize, 0)


def test_tinylfu_keeps_a_hot_set_through_a_scan_that_flushes_lru(clock: FakeClock) -> None:
    hot = [f"hot{i}" for i in range(50)]
    survivors = {}
    for policy in POLICIES:
        b = make(clock, maxsize=100, policy=policy)
        for _ in range(5):
            for key in hot:
                if b.get(key) is MISSING:
                    b.set(key, 1, None)
        for i in range(1000):  # a one-off scan of ten times the capacity
            if b.get(f"scan{i}") is MISSING:
                b.set(f"scan{i}", 1, None)
        survivors[policy] = sum(b.get(key) is not MISSING for key in hot)
    assert survivors["lru"] == 0
    # a scan key whose four sketch counters all collide with hot keys' can win its place: rare
    assert survivors["tinylfu"] >= 48


@pytest.mark.parametrize("policy", POLICIES)
def test_drop_prefix(clock: FakeClock, policy: str) -> None:
    b = make(clock, maxsize=100, policy=policy)
    assert isinstance(b, SupportsDropPrefix)
    for i in range(30):
        b.set(f"old:{i}", i, 10 if i % 2 else None)
        b.set(f"keep:{i}", i, 10 if i % 2 else None)
    b.set("old:expired", 1, 1)
    b.set("older", 1, None)  # starts with "old" but not with "old:"
    b.get("old:3")  # a buffered read of a key about to be dropped
    clock.advance(2)
    assert b.drop_prefix("old:") == 30
    assert b.eviction_counts() == (0, 1)  # only old:expired, which had expired: not a drop
    assert b.get_many([f"old:{i}" for i in range(30)]) == {}
    assert b.get_many([f"keep:{i}" for i in range(30)]) == {f"keep:{i}": i for i in range(30)}
    assert b.get("older") == 1
    assert len(b) == 31
    assert b.drop_prefix("old:") == 0
    # the dropped keys left the policy too: the freed room takes 69 new keys without an eviction
    for i in range(69):
        b.set(f"new:{i}", i, None)
    assert b.eviction_counts() == (0, 1)
    b.set("one-more", 1, None)
    assert b.eviction_counts() == (1, 1)
    # and the heap: no item left for a dropped key
    assert all(not key.startswith("old:") for _, key in b._store.heap)
    clock.advance(100)
    assert b.eviction_counts()[1] == 1 + 15  # the keep:* entries with a TTL, counted once


@pytest.mark.parametrize("policy", POLICIES)
def test_the_expiry_heap_stays_within_twice_the_entries_under_churn(
    clock: FakeClock, policy: str
) -> None:
    """Keys that left (evicted, overwritten, deleted) never pile up in the heap."""
    maxsize = 1000
    b = make(clock, maxsize=maxsize, policy=policy)
    rng = random.Random(3)
    for i in range(3 * maxsize):  # fill, then churn three times the capacity
        b.set(f"k{i}", i, 300)
        if i % 3 == 0:
            b.set(f"k{rng.randrange(i + 1)}", i, rng.choice([60, 300, 900]))  # overwrite
        if i % 7 == 0:
            b.delete(f"k{rng.randrange(i + 1)}")
        if i % 100 == 0:
            clock.advance(1)
        assert len(b._store.heap) <= 2 * len(b._store.data) + 16
    assert len(b) <= maxsize
