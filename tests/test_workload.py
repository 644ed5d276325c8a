"""The workload engine: Zipf sampler, op generator, stale-read detector, replayer on real SQLite."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachekit.advisor.workload import (
    BYPASS,
    READ,
    STRATEGIES,
    WRITE,
    Op,
    SimClock,
    StaleReadDetector,
    ZipfSampler,
    generate_ops,
    percentile,
    run_scenario,
    summarize,
)
from cachekit.advisor.workload_db import SqlUserStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlUserStore]:
    with SqlUserStore(f"sqlite:///{tmp_path / 'w.db'}", rows=50) as s:
        yield s


def _zipf_share(n: int, skew: float, k: int) -> float:
    """Theoretical share of the k most probable of n Zipf ranks, computed independently."""
    weights = [1.0 / r**skew for r in range(1, n + 1)]
    return sum(weights[:k]) / sum(weights)


# ---------------------------------------------------------------- Zipf sampler


@pytest.mark.parametrize("skew", [0.0, 0.7, 1.0, 1.3])
def test_zipf_top_share_matches_theory(skew: float) -> None:
    n, k, draws = 1000, 10, 60_000
    sampler = ZipfSampler(n, skew, random.Random(7))
    counts = Counter(sampler.sample_many(draws))
    top = sampler.hottest(k)
    observed = sum(counts[key] for key in top) / draws
    expected = _zipf_share(n, skew, k)
    assert sampler.expected_top_share(k) == pytest.approx(expected, rel=1e-9)
    # 4 binomial standard deviations: fails on a wrong distribution, not on noise
    sigma = (expected * (1 - expected) / draws) ** 0.5
    assert abs(observed - expected) < 4 * sigma + 1e-9, (observed, expected)


def test_zipf_skew_concentrates_traffic() -> None:
    shares = []
    for skew in (0.0, 0.5, 1.0, 1.5):
        sampler = ZipfSampler(1000, skew, random.Random(3))
        counts = Counter(sampler.sample_many(20_000))
        shares.append(sum(c for _, c in counts.most_common(10)) / 20_000)
    assert shares == sorted(shares)
    assert shares[0] < 0.02  # uniform: 10 keys of 1000 get about 1 %
    assert shares[-1] > 0.6


def test_zipf_single_draws_follow_the_same_distribution() -> None:
    sampler = ZipfSampler(100, 1.2, random.Random(11))
    counts = Counter(sampler.sample() for _ in range(20_000))
    hottest = sampler.hottest(1)[0]
    assert counts.most_common(1)[0][0] == hottest
    expected = _zipf_share(100, 1.2, 1)
    assert counts[hottest] / 20_000 == pytest.approx(expected, abs=0.02)


def test_zipf_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        ZipfSampler(0, 1.0, random.Random())
    with pytest.raises(ValueError):
        ZipfSampler(10, -0.5, random.Random())


# ---------------------------------------------------------------- op generator


def test_generate_ops_is_seeded_and_mixes_writes() -> None:
    a = generate_ops(rows=500, ops=20_000, write_ratio=0.1, bypass_writes=0.25, seed=5)
    b = generate_ops(rows=500, ops=20_000, write_ratio=0.1, bypass_writes=0.25, seed=5)
    c = generate_ops(rows=500, ops=20_000, write_ratio=0.1, bypass_writes=0.25, seed=6)
    assert a == b and a != c
    kinds = Counter(op.kind for op in a)
    writes = kinds[WRITE] + kinds[BYPASS]
    assert writes / len(a) == pytest.approx(0.1, abs=0.01)
    assert kinds[BYPASS] / writes == pytest.approx(0.25, abs=0.04)
    assert all(1 <= op.key <= 500 for op in a)


def test_generate_ops_rejects_bad_ratios() -> None:
    with pytest.raises(ValueError):
        generate_ops(rows=10, ops=10, write_ratio=1.5)


# ---------------------------------------------------------------- stale-read detector


def test_detector_counts_stale_reads_and_their_age() -> None:
    clock = SimClock()
    d = StaleReadDetector(clock)
    assert d.observe(1, 0) is False
    clock.advance(5)
    d.committed(1, 1)
    clock.advance(3)
    assert d.observe(1, 0) is True  # superseded 3 s ago
    assert d.observe(1, 1) is False
    assert d.observe(2, 0) is False  # never written: the seeded version
    assert (d.reads, d.stale, d.max_staleness) == (4, 1, 3.0)
    assert d.truth(1) == 1 and d.truth(2) == 0


def _script(*ops: tuple[str, int]) -> list[Op]:
    return [Op(kind, key, 7) for kind, key in ops]


def _filler(n: int) -> list[tuple[str, int]]:
    return [(READ, 2)] * n


@pytest.mark.parametrize("strategy", ["cache-aside", "write-through"])
def test_bypass_write_then_read_before_ttl_is_one_stale_read(
    store: SqlUserStore, strategy: str
) -> None:
    # one op per simulated second; key 1 is cached at t=1 and expires at t=11
    ops = _script((READ, 1), (BYPASS, 1), (READ, 1), *_filler(8), (READ, 1), (READ, 1))
    r = run_scenario(ops, store, strategy=strategy, ttl=10, ops_per_second=1.0)
    assert r.stale_reads == 1
    assert r.max_staleness_s == pytest.approx(1.0)  # bypass at t=2, stale read at t=3
    # t=12: the entry has expired, the reload sees version 1; t=13: a fresh hit
    assert (r.reads, r.hits, r.misses) == (12, 9, 3)
    assert (r.db_reads, r.db_writes) == (3, 1)
    assert r.bypass_writes == 1 and r.writes == 0


@pytest.mark.parametrize("strategy", ["cache-aside", "write-through"])
def test_bypass_write_read_after_ttl_expiry_is_not_stale(
    store: SqlUserStore, strategy: str
) -> None:
    ops = _script((READ, 1), (BYPASS, 1), *_filler(9), (READ, 1))
    r = run_scenario(ops, store, strategy=strategy, ttl=10, ops_per_second=1.0)
    assert r.stale_reads == 0
    assert r.evictions_expired >= 1


def test_without_ttl_a_bypass_write_stays_stale(store: SqlUserStore) -> None:
    ops = _script((READ, 1), (BYPASS, 1), *[(READ, 1)] * 50)
    r = run_scenario(ops, store, strategy="cache-aside", ttl=None, ops_per_second=1.0)
    assert r.stale_reads == 50
    assert r.max_staleness_s == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("strategy", "misses"), [("cache-aside", 3), ("write-through", 1), ("none", 0)]
)
def test_writes_through_the_cache_are_never_stale(
    store: SqlUserStore, strategy: str, misses: int
) -> None:
    ops = _script((READ, 1), (WRITE, 1), (READ, 1), (WRITE, 1), (WRITE, 1), (READ, 1))
    r = run_scenario(ops, store, strategy=strategy, ttl=60, ops_per_second=1.0)
    assert r.stale_reads == 0
    assert r.misses == misses  # cache-aside reloads after the first write, write-through never
    assert r.db_writes == 3


def test_generated_workload_write_through_has_no_stale_reads(store: SqlUserStore) -> None:
    ops = generate_ops(rows=50, ops=3000, write_ratio=0.1, bypass_writes=0.0, seed=1)
    for strategy in ("cache-aside", "write-through"):
        r = run_scenario(ops, store, strategy=strategy, ttl=30, ops_per_second=100)
        assert r.stale_reads == 0, strategy
        assert r.hit_ratio > 0.8
    # the same workload with bypass writes does show staleness, so the check above can fail
    ops = generate_ops(rows=50, ops=3000, write_ratio=0.1, bypass_writes=0.5, seed=1)
    r = run_scenario(ops, store, strategy="write-through", ttl=30, ops_per_second=100)
    assert r.stale_reads > 0


def test_scenario_counts_queries_and_evictions(tmp_path: Path) -> None:
    ops = generate_ops(rows=200, ops=2000, write_ratio=0.05, bypass_writes=0.5, seed=2)
    with SqlUserStore(f"sqlite:///{tmp_path / 'c.db'}", rows=200) as store:
        none = run_scenario(ops, store, strategy="none", ttl=None)
        small = run_scenario(
            ops, store, strategy="cache-aside", ttl=None, cache_url="memory://?maxsize=20"
        )
        results = [none, small]
    assert none.db_reads == none.reads == sum(op.kind == READ for op in ops)
    assert none.db_writes == none.writes + none.bypass_writes
    assert none.hits == none.misses == 0
    assert small.db_reads == small.misses  # every miss is one SELECT
    assert small.evictions_capacity > 0 and small.evictions_expired == 0
    assert small.p50_us <= small.p99_us
    assert set(small.as_dict()) >= {"label", "hit_ratio", "db_queries", "stale_ratio", "evictions"}
    assert "of the" in summarize(results)


def test_store_reset_restores_the_seeded_rows(store: SqlUserStore) -> None:
    store.reset()
    before = store.load(3)
    assert before is not None and before["version"] == 0
    after = store.save(3, 99, 1.5)
    assert after["version"] == 1 and after["score"] == 99 and after["updated_at"] == 1.5
    assert store.load(3) == after
    assert store.query_counts() == (2, 1)
    store.reset()
    assert store.load(3) == before
    assert store.load(999) is None


def test_unknown_strategy_is_refused(store: SqlUserStore) -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        run_scenario([], store, strategy="write-behind", ttl=1)
    assert "none" in STRATEGIES


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) == 0.0


# ---------------------------------------------------------------- findings elsewhere


def test_templated_key_hit_does_not_bind_the_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    import cachekit as ck

    cache = ck.Cache(ck.MemoryBackend(), namespace="tmpl")

    @cache.cached(key="user:{user_id}")
    def load_user(user_id: int) -> int:
        return user_id

    load_user(1)  # warm
    calls = 0
    real_bind = inspect.Signature.bind

    def counting_bind(self: inspect.Signature, *args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return real_bind(self, *args, **kwargs)

    monkeypatch.setattr(inspect.Signature, "bind", counting_bind)
    assert load_user(1) == 1
    assert cache.stats().hits == 1
    assert calls == 0


def test_json_serializer_takes_sqlalchemy_row_dicts(tmp_path: Path) -> None:
    import cachekit as ck

    with SqlUserStore(f"sqlite:///{tmp_path / 'j.db'}", rows=3) as store:
        store.reset()
        row = store._conn.execute(store._select, {"uid": 1}).one()
    value = dict(row._mapping)
    assert ck.JsonSerializer().loads(ck.JsonSerializer().dumps(value)) == value
