"""``cachekit bench``: per-thread Zipf streams, the threaded stale-read detector, traces,
the recommendation, and the command end to end (SQLite, PostgreSQL, Redis, --json, --plot)."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cachekit.advisor import bench_cli, cli
from cachekit.advisor.bench import (
    BenchConfig,
    BenchResult,
    SimExpiryBackend,
    Trace,
    TraceError,
    parse_trace,
    progress_total,
    read_trace,
    run_bench,
    run_combination,
)
from cachekit.advisor.bench_fresh import PLAIN, Freshness
from cachekit.advisor.bench_report import (
    BenchRow,
    Spread,
    assess,
    pick,
    recommend,
    render_bench_table,
)
from cachekit.advisor.workload import (
    BYPASS,
    READ,
    WRITE,
    Op,
    OpGenerator,
    SimClock,
    StaleReadDetector,
    ZipfSampler,
)
from cachekit.advisor.workload_db import SqlUserStore
from cachekit.backends import MISSING, Backend, backend_from_url

TINY = ["bench", "--keys", "200", "--real-clock", "--duration", "0.3", "--threads", "2", "--quiet",
        "--repeats", "1"]  # fmt: skip
#: The default (simulated) clock, small: 1,200 ops per run, a 120 s window.
SIM = ["bench", "--keys", "200", "--duration", "120", "--ops-per-second", "10", "--quiet"]
REAL = {"simulated": False, "threads": 2, "duration": 4.0}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlUserStore]:
    with SqlUserStore(f"sqlite:///{tmp_path / 'b.db'}", rows=50, table="bench_t", payload=32) as s:
        yield s


# ---------------------------------------------------------------- per-thread Zipf streams


def test_thread_streams_share_the_hot_keys_and_the_skew() -> None:
    n, k, draws = 2000, 20, 30_000
    base = ZipfSampler(n, 1.1, random.Random(1))
    expected = base.expected_top_share(k)
    sigma = (expected * (1 - expected) / draws) ** 0.5
    for t in range(3):
        rng = random.Random(100 + t)
        ops = OpGenerator(base.with_rng(rng), rng, write_ratio=0.1, bypass_writes=0.5).take(draws)
        counts = Counter(op.key for op in ops)
        observed = sum(counts[key] for key in base.hottest(k)) / draws
        assert abs(observed - expected) < 4 * sigma, (t, observed, expected)
        assert counts.most_common(1)[0][0] == base.hottest(1)[0]  # same hottest key everywhere
        kinds = Counter(op.kind for op in ops)
        assert (kinds[WRITE] + kinds[BYPASS]) / draws == pytest.approx(0.1, abs=0.01)


# ---------------------------------------------------------------- threaded stale-read detector


def test_a_write_overlapping_a_read_does_not_make_it_stale() -> None:
    clock = SimClock()
    d = StaleReadDetector(clock)
    since = d.mark()  # the read starts ...
    done = threading.Event()
    threading.Thread(target=lambda: (d.committed(1, 1), done.set())).start()
    assert done.wait(5)
    clock.advance(2)
    assert d.observe(1, 0, since=since, at=0.0) is False  # ... before the write finished
    assert d.observe(1, 0, since=d.mark(), at=clock()) is True  # a read that starts now
    assert (d.reads, d.stale, d.max_staleness) == (2, 1, 2.0)


def test_a_late_report_of_an_older_write_changes_nothing() -> None:
    d = StaleReadDetector(SimClock())
    d.committed(1, 3)  # versions 0, 1, 2 are superseded
    d.committed(1, 2)  # reported late: the row is already at 3
    assert d.truth(1) == 3
    assert d.observe(1, 2) is True and d.observe(1, 0) is True
    assert d.observe(1, 3) is False
    assert d.stale == 2


def test_threads_on_their_own_keys_count_exactly_their_stale_reads() -> None:
    d = StaleReadDetector(SimClock())
    threads, stale_each = 8, 250
    start = threading.Barrier(threads)

    def client(key: int) -> None:
        start.wait()
        for version in range(1, 21):
            assert d.observe(key, version - 1, since=d.mark()) is False
            d.committed(key, version)
            for _ in range(stale_each // 20):  # a cache still serving the old version
                d.observe(key, version - 1, since=d.mark())
            d.observe(key, version, since=d.mark())

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert d.stale == threads * (stale_each // 20) * 20
    assert d.reads == threads * 20 * (2 + stale_each // 20)


def _deal(*per_thread: list[Op]) -> Trace:
    """A trace that ``run_combination`` deals round-robin back to these per-thread lists."""
    n = len(per_thread)
    length = max(len(ops) for ops in per_thread)
    assert all(len(ops) == length for ops in per_thread)
    ops = [per_thread[i % n][i // n] for i in range(length * n)]
    return Trace(ops, [str(k) for k in range(1, 51)], None)


@pytest.mark.parametrize("strategy", ["cache-aside", "write-through"])
def test_threaded_replay_counts_a_scripted_number_of_stale_reads(
    store: SqlUserStore, strategy: str
) -> None:
    # thread 0: key 1 cached, then written around the cache, then read 5 times: 5 stale reads
    # thread 1: key 2 cached, written through the cache, read 5 times: none stale
    a = [Op(READ, 1), Op(BYPASS, 1, 5), *[Op(READ, 1)] * 5]
    b = [Op(READ, 2), Op(WRITE, 2, 5), *[Op(READ, 2)] * 5]
    config = BenchConfig(keys=50, ttls=(None,), **REAL)  # type: ignore[arg-type]
    r = run_combination(store, config, strategy, None, trace=_deal(a, b))
    assert r.stale_reads == 5
    assert (r.reads, r.writes, r.bypass_writes) == (12, 1, 1)
    assert r.max_staleness_s > 0
    assert r.threads == 2 and r.clock == "real"


def test_threaded_write_through_with_one_writer_reads_nothing_stale(store: SqlUserStore) -> None:
    # thread 0 writes the hot keys through the cache; threads 1 and 2 read them meanwhile
    writer = [Op(WRITE, 1 + i % 3, i) for i in range(300)]
    readers = [[Op(READ, 1 + i % 3) for i in range(300)] for _ in range(2)]
    config = BenchConfig(keys=50, ttls=(None,), **{**REAL, "threads": 3})  # type: ignore[arg-type]
    r = run_combination(store, config, "write-through", None, trace=_deal(writer, *readers))
    assert r.reads == 600 and r.writes == 300
    assert r.stale_reads == 0
    # the same script with the writes made around the cache does read stale values
    bypass = [Op(BYPASS, op.key, op.value) for op in writer]
    warm = [Op(READ, 1 + i % 3) for i in range(3)]
    r = run_combination(
        store, BenchConfig(keys=50, ttls=(None,), **{**REAL, "threads": 1}), "write-through", None,
        trace=Trace(warm + bypass + warm, [], None),
    )  # fmt: skip
    assert r.stale_reads == 3


def test_generated_real_clock_run_measures_everything(store: SqlUserStore) -> None:
    config = BenchConfig(
        keys=50, simulated=False, threads=2, duration=0.3, write_ratio=0.1, bypass_writes=0.0
    )
    r = run_combination(store, config, "write-through", 30.0)
    assert r.ops > 100 and r.throughput > 0 and 0.25 < r.wall_seconds < 5
    assert r.window_s == 0.3 < r.wall_seconds  # a 0.3 s TTL never expired in it: flagged
    assert r.hits + r.misses == r.reads and r.hit_ratio > 0.5
    # one SELECT per miss (the write's RETURNING is a write), minus the misses that waited
    # for another thread's load of the same key (single-flight)
    assert 0 < r.db_reads <= r.misses
    one_cfg = BenchConfig(keys=50, simulated=False, duration=None, ops=500)
    one = run_combination(store, one_cfg, "cache-aside", 30.0)
    assert one.db_reads == one.misses and one.ops == 500
    assert r.p50_us <= r.p95_us <= r.p99_us
    none = run_combination(store, config, "none", None)
    assert none.db_reads == none.reads and none.db_reads_per_read == 1.0


# ---------------------------------------------------------------- trace files


def test_parse_trace_numbers_keys_and_keeps_times() -> None:
    trace = parse_trace(
        ["op,key,ts", "# a comment", "read,user:7,0", "", "WRITE, user:9 ,1.5", "bypass,user:7,1.5"]
    )
    assert [(op.kind, op.key) for op in trace.ops] == [(READ, 1), (WRITE, 2), (BYPASS, 1)]
    assert trace.names == ["user:7", "user:9"]
    assert trace.times == [0.0, 1.5, 1.5]
    assert parse_trace(["read,a", "read,b"]).times is None


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["read,a", "fetch,a"], "t.csv:2: unknown op 'fetch'"),
        (["read,a", "", "read,"], "t.csv:3: empty key"),
        (["read,a,1,2"], "t.csv:1: expected op,key[,ts], got 4 fields"),
        (["read"], "t.csv:1: expected op,key[,ts], got 1 fields"),
        (["read,a,soon"], "t.csv:1: ts must be seconds, not 'soon'"),
        (["read,a,-1"], "t.csv:1: ts must be a finite number >= 0"),
        (["read,a,5", "read,a,4"], "t.csv:2: ts 4 goes back in time"),
        (["read,a,5", "read,a"], "t.csv:2: either every line has a ts column or none does"),
        (["# only a comment"], "t.csv: no operations"),
    ],
)
def test_parse_trace_rejects_bad_lines_with_their_number(lines: list[str], message: str) -> None:
    with pytest.raises(TraceError) as info:
        parse_trace(lines, "t.csv")
    assert str(info.value).startswith(message)


def test_read_trace_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read the workload file"):
        read_trace(str(tmp_path / "nope.csv"))


# ---------------------------------------------------------------- recommendation


def _run(
    strategy: str,
    ttl: float | None,
    hit: float,
    stale: float,
    db: float,
    *,
    ops_s: float = 10_000.0,
    p95: float = 50.0,
    reads: int = 10_000,
    window: float = 7200.0,
) -> BenchResult:
    hits = int(hit * reads)
    return BenchResult(
        strategy=strategy, ttl=ttl, reads=reads, writes=0, bypass_writes=0, hits=hits,
        misses=reads - hits, db_reads=round(db * reads), db_writes=0, p50_us=5.0, p99_us=50.0,
        stale_reads=round(stale * reads), max_staleness_s=1.0, evictions_capacity=0,
        evictions_expired=0, cache_errors=0, simulated_seconds=window,
        wall_seconds=reads / ops_s, p95_us=p95, clock="simulated",
    )  # fmt: skip


def _row(strategy: str, ttl: float | None, hit: float, stale: float, db: float,
         **kw: float) -> BenchRow:  # fmt: skip
    """Three repeats around the given figures: hits -/+ 0.2 points, ops/s -/+ 5 %."""
    ops_s = kw.pop("ops_s", 10_000.0)
    runs = [
        _run(strategy, ttl, hit + d, stale, db, ops_s=ops_s * (1 + d * 25), **kw)  # type: ignore[arg-type]
        for d in (-0.002, 0.0, 0.002)
    ]
    return BenchRow(strategy, ttl, runs)


CFG = BenchConfig(max_stale=0.01)


def _pick(rows: list[BenchRow], max_stale: float = 0.01) -> BenchRow | None:
    best = pick(assess(rows, max_stale))
    return None if best is None else best.row


def test_a_spread_is_the_median_and_the_range() -> None:
    s = Spread.of([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.lo, s.hi) == (2.5, 1.0, 10.0)
    assert s.fmt(lambda x: f"{x:g}") == "2.5 (1-10)"
    assert Spread.of([4.0, 4.0, 4.0]).fmt(lambda x: f"{x:g}") == "4"


def test_recommendation_maximises_hits_within_the_stale_budget() -> None:
    rows = [
        _row("none", None, 0.0, 0.0, 1.0),
        _row("cache-aside", 60, 0.91, 0.004, 0.09, ops_s=20_000),
        _row("cache-aside", 300, 0.95, 0.03, 0.05, ops_s=20_000),
        _row("write-through", 300, 0.97, 0.0, 0.03, ops_s=20_000),
    ]
    assert _pick(rows) is rows[3]
    text = recommend(rows, CFG)
    assert text.startswith("Recommended: write-through with TTL 300s: 97.0 (96.8-97.2) % hits")
    assert "30 DB reads and 0 stale reads per 1,000 reads" in text
    assert "Next best: cache-aside with TTL 60s: 91.0 (90.8-91.2) % hits" in text
    assert "Over the stale budget: cache-aside ttl=300s" in text
    assert "Assumed: 5% of operations are writes and 1% of those go around the cache" in text
    assert "a stale-read budget of 10 per 1,000 reads" in text
    assert "simulated clock at 4 requests/s over a 7,200 s window" in text
    assert "medians of 3 repeats" in text
    assert _pick(rows, 0.05) is rows[3]
    assert _pick(rows[:3]) is rows[1]
    assert _pick(rows[:3], 0.05) is rows[2]


def test_figures_are_per_1000_reads_so_a_longer_run_does_not_look_worse() -> None:
    # same hit ratio; a ran twice the reads (so twice the DB reads in absolute terms)
    # but fewer per read: it wins the tie
    a = BenchRow("cache-aside", 60, [_run("cache-aside", 60, 0.9, 0, 0.08, reads=20_000)] * 3)
    b = BenchRow("write-through", 60, [_run("write-through", 60, 0.9, 0, 0.1, reads=10_000)] * 3)
    assert a.runs[0].db_reads == 1600 and b.runs[0].db_reads == 1000
    assert (a["db_reads_per_1k"].median, b["db_reads_per_1k"].median) == (80.0, 100.0)
    assert _pick([b, a]) is a
    table = render_bench_table([a, b], assess([a, b], 0.01))
    assert re.search(r"^cache-aside\s+60s\s+90\.0\s+80\s", table, re.M), table


def test_recommendation_breaks_ties_on_database_reads() -> None:
    a = _row("cache-aside", 60, 0.900, 0.0, 0.12)
    b = _row("write-through", 60, 0.898, 0.0, 0.08)  # within half a point of hits
    c = _row("write-through", 10, 0.850, 0.0, 0.01)  # fewest reads, but not tied on hits
    assert _pick([a, b, c]) is b


def test_recommendation_when_nothing_meets_the_budget() -> None:
    rows = [
        _row("cache-aside", 60, 0.9, 0.05, 0.1),
        _row("write-through", 1, 0.5, 0.02, 0.5),
    ]
    assert _pick(rows) is None
    text = recommend(rows, CFG)
    assert text.startswith("No combination kept stale reads within the budget of 10 per 1,000")
    assert "the least stale was write-through with TTL 1s" in text
    assert recommend([_row("none", None, 0, 0, 1)], CFG).startswith("No cache strategy")
    assert "write-through" in render_bench_table(rows)


def test_a_ttl_as_long_as_the_window_is_flagged_and_never_ranked() -> None:
    rows = [
        _row("none", None, 0.0, 0.0, 1.0),
        _row("write-through", 60, 0.80, 0.0, 0.2, ops_s=20_000, window=600),
        _row("write-through", 600, 0.95, 0.0, 0.05, ops_s=20_000, window=600),
        _row("write-through", 3600, 0.95, 0.0, 0.05, ops_s=20_000, window=600),
    ]
    verdicts = assess(rows, 0.01)
    assert [v.beyond_window for v in verdicts] == [False, True, True]
    assert _pick(rows) is rows[1]  # more hits, but they never expired: not ranked
    text = recommend(rows, CFG)
    assert text.startswith("Recommended: write-through with TTL 60s")
    assert "Not ranked, because their TTL is at least the 600 s the run covered" in text
    assert "write-through ttl=600s, write-through ttl=3600s" in text
    table = render_bench_table(rows, verdicts)
    assert re.search(r"^write-through\s+3600s\s.*TTL ≥ window$", table, re.M), table
    assert re.search(r"^write-through\s+60s\s.*recommended$", table, re.M), table
    only_long = [rows[0], rows[3]]
    assert _pick(only_long) is None
    assert recommend(only_long, CFG).startswith("No TTL could be judged")


def test_a_cache_slower_than_no_cache_is_said_so_and_not_recommended() -> None:
    # PostgreSQL on loopback + Redis: every cached row ran fewer ops/s with a higher p95
    rows = [
        _row("none", None, 0.0, 0.0, 1.0, ops_s=6_200, p95=440),
        _row("cache-aside", 60, 0.70, 0.0, 0.3, ops_s=3_100, p95=1_200),
        _row("write-through", 60, 0.75, 0.0, 0.25, ops_s=4_300, p95=1_400),
    ]
    verdicts = assess(rows, 0.01)
    assert all(v.slower and v.p95_worse and not v.ranked for v in verdicts)
    assert _pick(rows) is None
    text = recommend(rows, CFG)
    assert text.startswith("On this database a cache does not pay off")
    assert "The fastest was write-through with TTL 60s" in text
    assert "p95 440 µs -> 1.40 ms" in text
    assert "cut database reads to 250 per 1,000 reads" in text
    assert re.search(
        r"^cache-aside\s+60s\s.*slower; p95 up$", render_bench_table(rows, verdicts), re.M
    )
    # a higher p95 alone is reported, but more ops/s buy it back
    rows[1] = _row("cache-aside", 60, 0.70, 0.0, 0.3, ops_s=9_000, p95=1_200)
    assert _pick(rows) is rows[1]
    assert "its p95 is above no cache's" in recommend(rows, CFG)


def test_a_noisy_baseline_does_not_hide_a_slower_cache() -> None:
    # measured on a busy machine (PostgreSQL + Redis): no cache 858-5,429 ops/s, the cache
    # 743-1,353; the ranges overlap, the medians do not lie
    none = BenchRow(
        "none",
        None,
        [
            _run("none", None, 0, 0, 1.0, ops_s=x, p95=p)
            for x, p in ((858, 5177), (1955, 1686), (5429, 249))
        ],
    )
    wt = BenchRow("write-through", 300, [_run("write-through", 300, 0.55, 0, 0.45, ops_s=x,
                  p95=p) for x, p in ((743, 2433), (1120, 3085), (1353, 4955))])  # fmt: skip
    (verdict,) = assess([none, wt], 0.01)
    assert verdict.slower and not verdict.ranked
    text = recommend([none, wt], CFG)
    assert text.startswith("On this database a cache does not pay off")
    assert "Caution: the repeats disagree (ops/s of none from 858 to 5,429)" in text


# ---------------------------------------------------------------- a scripted slow cache


class SlowMemory(Backend):
    """A memory backend that takes ``delay`` seconds per command (a far-away cache)."""

    local = True

    def __init__(self, inner: Backend, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def _wait(self) -> None:
        time.sleep(self.delay)

    def get(self, key: str) -> Any:
        self._wait()
        return self.inner.get(key)

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        self._wait()
        self.inner.set(key, value, ttl)

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        self._wait()
        return self.inner.add(key, value, ttl)

    def delete(self, key: str) -> bool:
        self._wait()
        return self.inner.delete(key)


def test_a_slow_cache_makes_do_not_cache_the_recommendation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = cli._build_parser().parse_args(
        [*SIM, "--ttl", "5", "10", "--duration", "20", "--strategies", "none,write-through",
         "--json"]
    )  # fmt: skip
    wrapped: list[SlowMemory] = []

    def slow(backend: Backend) -> Backend:
        wrapped.append(SlowMemory(backend, 0.001))  # 1 ms per cache command
        return wrapped[-1]

    assert bench_cli.run_bench_command(args, sys.stdout, sys.stderr, wrap_backend=slow) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(wrapped) == 2 * 3  # every cached run of every repeat went through it
    assert doc["recommended"] is None
    assert doc["recommendation"].startswith("On this database a cache does not pay off")
    for row in doc["results"][1:]:
        assert row["ranked"] is False and "slower" in row["notes"]
        assert row["hit_ratio"]["median"] > 0.1  # the cache did serve hits, slowly


# ---------------------------------------------------------------- the command end to end


def test_bench_defaults_are_realistic_ttls_on_the_simulated_clock() -> None:
    args = cli._build_parser().parse_args(["bench"])
    config = bench_cli._config(args)
    assert config.ttls == (10.0, 60.0, 300.0, 3600.0)
    assert config.simulated and config.threads == 1 and config.repeats == 3
    assert config.duration == 7200.0 > max(t for t in config.ttls if t is not None)
    assert config.fixed_ops == 28_800
    real = bench_cli._config(cli._build_parser().parse_args(["bench", "--real-clock"]))
    assert not real.simulated and real.threads == 2 and real.duration == 2.0


def test_bench_prints_medians_and_spreads_of_three_repeats(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main([*SIM, "--ttl", "10", "60"]) == 0
    out = capsys.readouterr().out
    for column in ("hit %", "DB reads/1k reads", "stale/1k reads", "p95 µs", "ops/s", "notes"):
        assert column in out
    firsts = [line.split()[:2] for line in out.splitlines()]
    for strategy in ("cache-aside", "write-through"):
        assert [strategy, "10s"] in firsts and [strategy, "60s"] in firsts
    assert ["none", "-"] in firsts
    assert "clock: simulated (10 ops/s); 5 combinations x 3 repeats each" in out
    none = next(line for line in out.splitlines() if line.startswith("none "))
    assert re.search(r"\b1,000\b.*\d \(\d[\d.,]*-\d[\d.,]*\)", none), none  # ops/s: median (range)
    assert "recommendation (stale budget 10 per 1,000 reads): " in out
    assert "medians of 3 repeats" in " ".join(out.split())  # the paragraph is wrapped


def test_bench_json_has_the_repeats_and_the_expected_fields(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "bench.db"
    code = cli.main([*SIM, "--json", "--ttl", "5,none", "--db", str(db), "--value-size", "500"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["command"] == "bench" and doc["database"] == "sqlite"
    assert doc["clock"] == {
        "kind": "simulated", "threads": 1, "duration_s": 120.0, "ops_per_run": 1200,
        "runs_per_combination": 3,
    }  # fmt: skip
    assert doc["config"]["ttls"] == [5.0, None] and doc["config"]["value_size"] == 500
    assert doc["config"]["keys"] == 200 and doc["machine"]["cpus"] >= 1
    for row in doc["results"]:
        assert len(row["runs"]) == 3
        for name in ("hit_ratio", "db_reads_per_1k", "stale_per_1k", "p95_us", "throughput"):
            runs = sorted(r[{"throughput": "throughput"}.get(name, name)] for r in row["runs"])
            assert row[name] == {"median": runs[1], "min": runs[0], "max": runs[2]}, name
        assert [r["ops"] for r in row["runs"]] == [1200] * 3
    assert doc["results"][0]["label"] == "none" and doc["results"][0]["ranked"] is None
    assert doc["results"][0]["db_reads_per_1k"]["median"] == 1000.0
    assert doc["recommended"] is None or doc["recommended"] in {r["label"] for r in doc["results"]}
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        assert doc["config"]["table"] not in sa.inspect(engine).get_table_names()  # dropped
    finally:
        engine.dispose()


def test_per_1000_figures_of_a_known_trace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # 20 reads: a cached once, then written around the cache, then read 9 times (stale);
    # b read 10 times. Cache-aside without expiry: 2 DB reads, 9 stale reads.
    trace = tmp_path / "t.csv"
    trace.write_text("read,a\nbypass,a\n" + "read,a\n" * 9 + "read,b\n" * 10)
    code = cli.main(
        ["bench", "--workload", str(trace), "--ttl", "none", "--json", "--quiet",
         "--strategies", "none,cache-aside", "--repeats", "3"]
    )  # fmt: skip
    assert code == 0
    none, aside = json.loads(capsys.readouterr().out)["results"]
    assert none["db_reads_per_1k"] == {"median": 1000.0, "min": 1000.0, "max": 1000.0}
    assert aside["db_reads_per_1k"] == {"median": 100.0, "min": 100.0, "max": 100.0}
    assert aside["stale_per_1k"]["median"] == 450.0
    assert [r["reads"] for r in aside["runs"]] == [20, 20, 20]


def test_bench_labels_each_repeat_for_the_progress_bar(store: SqlUserStore) -> None:
    labels: list[str] = []
    config = BenchConfig(keys=50, ops=50, duration=None, ttls=(60.0,), strategies=("none",
                         "write-through"), repeats=3)  # fmt: skip
    runs = run_bench(store, config, on_run=labels.append)
    assert labels == [
        "none (1/3)", "write-through ttl=60s (1/3)", "none (2/3)",
        "write-through ttl=60s (2/3)", "none (3/3)", "write-through ttl=60s (3/3)",
    ]  # fmt: skip
    assert [len(r) for r in runs] == [3, 3]
    assert progress_total(config, None) == 2 * 3 * 50


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bench_progress_goes_to_a_terminals_stderr_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_cli, "Progress", functools.partial(cli.Progress, delay=0.0))
    args = cli._build_parser().parse_args([*SIM, "--ttl", "60", "--strategies", "none,cache-aside"])
    args.quiet = False
    out, err = io.StringIO(), _Tty()
    assert bench_cli.run_bench_command(args, out, err) == 0
    drawn = err.getvalue()
    assert "none (1/3)" in drawn and "%" in drawn  # the label names the repeat
    assert drawn.endswith("\r")  # erased before the table is printed
    assert "\r" not in out.getvalue() and "cache-aside" in out.getvalue()
    piped = io.StringIO()  # not a terminal: nothing drawn
    assert bench_cli.run_bench_command(args, io.StringIO(), piped) == 0
    assert piped.getvalue() == ""


@pytest.mark.parametrize(
    "cache", ["memory", pytest.param("redis", marks=pytest.mark.redis),
              pytest.param("memcached", marks=pytest.mark.memcached)],
)  # fmt: skip
def test_bench_replays_a_trace_on_the_simulated_clock(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, request: pytest.FixtureRequest,
    cache: str,
) -> None:  # fmt: skip
    url = "memory://" if cache == "memory" else request.getfixturevalue(f"{cache}_url")
    trace = tmp_path / "trace.csv"
    trace.write_text("op,key,ts\nread,u1,0\nbypass,u1,1\nread,u1,4\nread,u2,5\nread,u1,20\n")
    code = cli.main(
        ["bench", "--workload", str(trace), "--ttl", "10", "--cache-url", url,
         "--json", "--quiet", "--strategies", "cache-aside,write-through", "--repeats", "1"]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["clock"]["kind"] == "simulated" and doc["trace"]["keys"] == 2
    for row in doc["results"]:
        (r,) = row["runs"]
        # t=4: still the version cached at t=0, superseded at t=1; t=20: expired and reloaded
        assert (r["reads"], r["stale_reads"], r["max_staleness_s"]) == (4, 1, 3.0)
        assert r["hits"] == 1 and r["evictions_expired"] >= 1 and r["cache_errors"] == 0


class Counting(Backend):
    """Counts the commands that reach the wrapped backend."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.calls = inner, Counter[str]()

    def __getattribute__(self, name: str) -> Any:
        if name in ("get", "set", "add", "delete", "compare_and_set", "get_many", "set_many"):
            method = getattr(object.__getattribute__(self, "inner"), name)
            calls = object.__getattribute__(self, "calls")

            def counted(*args: Any) -> Any:
                calls[name] += 1
                return method(*args)

            return counted
        return object.__getattribute__(self, name)

    get = set = add = delete = None  # type: ignore[assignment]


def test_sim_expiry_backend_costs_the_servers_round_trips(redis_url: str, namespace: str) -> None:
    clock = SimClock()
    inner = Counting(backend_from_url(redis_url))
    b = SimExpiryBackend(inner, clock)  # type: ignore[arg-type]
    try:
        key = f"{namespace}:k"
        b.set(key, b"v", 10)
        clock.advance(10)
        assert b.get(key) is MISSING  # expired: a miss, as on the server
        assert b.add(key, b"lease", 10)  # the cache's lease over the expired entry
        assert b.compare_and_set(key, b"lease", b"new", 10)  # the loaded value replaces it
        assert b.get(key) == b"new"
        assert dict(inner.calls) == {"set": 2, "get": 2, "compare_and_set": 1}
    finally:
        b.delete(f"{namespace}:k")
        b.close()


def test_sim_expiry_backend_expires_on_the_simulated_clock(redis_url: str, namespace: str) -> None:
    clock = SimClock()
    b = SimExpiryBackend(backend_from_url(redis_url), clock)
    try:
        key = f"{namespace}:k"
        b.set(key, b"v", 3600)
        assert b.get(key) == b"v" and not b.add(key, b"w", 10)
        assert b.compare_and_set(key, b"v", b"x", 3600) and b.get_many([key]) == {key: b"x"}
        clock.advance(3600)
        assert b.get(key) is MISSING and b.eviction_counts() == (0, 1)
        assert not b.compare_and_set(key, b"x", b"y", 10)
        assert b.add(key, b"w", 10) and b.get(key) == b"w"
        assert 0 < b.inner.client.pttl(key) <= 900_000  # the server forgets it within 15 min
        assert b.delete(key) and b.get(key) is MISSING
    finally:
        b.close()


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--simulated-clock"], "not allowed with argument --real-clock", 2),
        (["--ops", "100"], "give --duration or --ops, not both", 2),
        (["--strategies", "write-behind"], "unknown strategy", 2),
        (["--ttl", "0"], "TTL must be > 0", 2),
    ],
)
def test_bench_rejects_bad_options(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str, code: int
) -> None:
    if args == ["--simulated-clock"]:
        with pytest.raises(SystemExit) as info:
            cli.main([*TINY, *args])
        assert info.value.code == code
    else:
        assert cli.main([*TINY, *args]) == code
    assert message in capsys.readouterr().err


def test_bench_simulated_clock_runs_on_one_thread(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*SIM, "--threads", "2"]) == 2
    assert "one thread: use --threads 1, or --real-clock" in capsys.readouterr().err


def test_bench_policy_sim_hands_over_to_the_simulator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["bench", "--policy-sim", "synthetic:loop", "--capacity", "100", "--limit", "3000",
            "--policy", "lru", "optimal"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("trace") and "capacity" in out and "optimal" in out
    assert "synthetic:loop       100       3000" in out
    assert cli.main(["bench", "--policy-sim"]) == 2
    assert "--policy-sim needs at least one TRACE" in capsys.readouterr().err


def test_bench_rejects_a_bad_trace_with_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("read,a\nread,b\nupdate,a\n")
    assert cli.main(["bench", "--workload", str(trace), "--quiet"]) == 2
    assert f"{trace}:3: unknown op 'update'" in capsys.readouterr().err


def test_bench_plot_writes_a_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    png = tmp_path / "bench.png"
    assert cli.main([*TINY, "--ttl", "0.2", "1", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    out = capsys.readouterr().out
    assert f"plot written to {png}" in out
    # on the real clock a 1 s TTL in a 0.3 s run never expired: flagged, not ranked
    assert re.search(r"^cache-aside\s+1s\s.*TTL ≥ window", out, re.M), out


def test_bench_plot_without_matplotlib_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main([*TINY, "--plot", str(tmp_path / "x.png")]) == 1
    assert "pip install 'cachekit-py[plot]'" in capsys.readouterr().err


@pytest.mark.redis
def test_bench_over_redis(capsys: pytest.CaptureFixture[str], redis_url: str) -> None:
    code = cli.main([*TINY, "--json", "--ttl", "5", "--cache-url", redis_url])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    for r in doc["results"][1:]:
        assert r["cache_errors"] == 0 and r["hit_ratio"]["median"] > 0.3
        assert r["db_reads_per_1k"]["median"] < 1000


@pytest.mark.postgres
def test_bench_on_postgresql_drops_its_table(
    capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    code = cli.main([*TINY, "--json", "--ttl", "5", "--db", postgres_url])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["database"] == "postgresql"
    assert doc["config"]["table"].startswith("cachekit_bench_")
    assert all(r["db_reads"] > 0 and r["ops"] > 0 for row in doc["results"] for r in row["runs"])
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    try:
        assert doc["config"]["table"] not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_importing_cachekit_and_the_bench_engine_pulls_in_no_sqlalchemy_or_matplotlib() -> None:
    code = (
        "import sys, cachekit, cachekit.advisor.bench, cachekit.advisor.bench_report; "
        "import cachekit.advisor.cli; "
        "bad = [m for m in ('sqlalchemy', 'matplotlib') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------- freshness


def _hot_trace(reads: int, every: float) -> Trace:
    """Key 1 read every ``every`` simulated seconds, ``reads`` times."""
    return Trace([Op(READ, 1)] * reads, ["hot"], [i * every for i in range(reads)])


def _fresh_run(
    store: SqlUserStore, fresh: Freshness, trace: Trace, *, ttl: float = 10.0,
    load_ms: float = 200.0, **kw: Any,
) -> BenchResult:  # fmt: skip
    config = BenchConfig(keys=50, ttls=(ttl,), load_ms=load_ms, hot_keys=1, freshness=(fresh,),
                         **kw)  # fmt: skip
    return run_combination(store, config, "cache-aside", ttl, fresh, trace=trace)


def test_simulated_hot_key_without_freshness_waits_at_every_expiry(store: SqlUserStore) -> None:
    # read every 50 ms for 100 s, TTL 10 s, loads of 200 ms: at each expiry the first read
    # loads and the next ones (within the 200 ms) wait for it
    r = _fresh_run(store, PLAIN, _hot_trace(2000, 0.05))
    assert r.hot_loads == 10 and r.background_loads == 0
    assert r.loads_per_key_per_ttl == pytest.approx(10 / (99.95 / 10))
    assert r.expiries == 9  # the tenth entry outlives the trace
    assert r.hot_waits >= 9 * 3 and r.hot_waits_per_expiry is not None
    assert r.hot_waits_per_expiry >= 3
    assert r.hot_p99_near_expiry_us is not None and r.hot_p99_near_expiry_us >= 200_000


def test_simulated_early_refresh_spares_every_wait_after_the_first(store: SqlUserStore) -> None:
    r = _fresh_run(store, Freshness(early_refresh=1.0), _hot_trace(2000, 0.05))
    assert r.refreshes_started == r.background_loads == r.hot_loads - 1  # only the first blocks
    assert 1.0 <= r.loads_per_key_per_ttl <= 1.15  # type: ignore[operator]
    assert r.hot_waits == 0 and r.expiries >= 9
    # no read near expiry was charged a load (200 ms): they were all hits
    assert r.hot_p99_near_expiry_us is not None and r.hot_p99_near_expiry_us < 200_000
    assert r.label == "cache-aside ttl=10s early=1"


def test_simulated_stale_while_revalidate_serves_past_expiry_without_waits(
    store: SqlUserStore,
) -> None:
    r = _fresh_run(store, Freshness(stale_while_revalidate=5.0), _hot_trace(2000, 0.05))
    assert r.stale_revalidated == r.refreshes_started == 9  # one stale hit per expiry
    assert r.hot_loads == 10 and r.loads_per_key_per_ttl == pytest.approx(10 / 9.995)
    assert r.hot_waits == 0 and r.expiries == 9
    assert r.hot_p99_near_expiry_us is not None and r.hot_p99_near_expiry_us < 200_000


def test_loads_per_key_per_ttl_of_a_sparse_key(store: SqlUserStore) -> None:
    # read once a second for 100 s with a 10 s TTL and instant loads: a load per TTL,
    # and each expiry's first read waits for it
    r = _fresh_run(store, PLAIN, _hot_trace(101, 1.0), load_ms=0.0)
    assert r.hot_loads == 10 and r.loads_per_key_per_ttl == pytest.approx(1.0)
    assert r.expiries == 9 and r.hot_waits == 9 and r.hot_near_expiry_reads == 9
    none = run_combination(store, BenchConfig(keys=50, ttls=(10.0,)), "none", None,
                           trace=_hot_trace(101, 1.0))  # fmt: skip
    assert none.loads_per_key_per_ttl is None and none.hot_p99_near_expiry_us is None


def test_a_write_that_replaced_an_entry_is_not_an_expiry(store: SqlUserStore) -> None:
    # t=0 load (expires at 10); t=5 a write through the cache drops it; t=6 reload
    # (expires at 16); the entry of t=0 never reached its expiry
    ops = [Op(READ, 1), Op(WRITE, 1, 7), Op(READ, 1), Op(READ, 1), Op(READ, 1)]
    trace = Trace(ops, ["hot"], [0.0, 5.0, 6.0, 10.5, 16.5])
    r = _fresh_run(store, PLAIN, trace, load_ms=0.0)
    assert r.hot_loads == 3 and r.expiries == 1 and r.hot_waits == 1
    assert r.hot_near_expiry_reads == 1  # the read at 16.5, not the hit at 10.5


def test_real_clock_hot_key_waits_show_without_freshness_and_not_with_it(
    store: SqlUserStore,
) -> None:
    # one key, two threads, 1.2 s, TTL 0.25 s, loads slept 20 ms: every expiry makes a
    # reader wait; early refresh and stale-while-revalidate reload behind the readers
    kw: dict[str, Any] = {"simulated": False, "threads": 2, "duration": 1.2,
                          "write_ratio": 0.0, "keys": 1}  # fmt: skip
    runs = {}
    for fresh in (PLAIN, Freshness(early_refresh=1.0), Freshness(stale_while_revalidate=5.0)):
        config = BenchConfig(ttls=(0.25,), load_ms=20, hot_keys=1, freshness=(fresh,), **kw)
        runs[fresh.label] = run_combination(store, config, "cache-aside", 0.25, fresh)
    plain, early, swr = runs["-"], runs["early=1"], runs["swr=5s"]
    assert plain.expiries >= 3 and plain.hot_waits >= plain.expiries
    assert plain.background_loads == 0 and plain.hot_p99_near_expiry_us >= 20_000  # type: ignore[operator]
    for r in (early, swr):
        # (the last reload may still be running when the run ends)
        assert r.background_loads >= 2 and r.refreshes_started >= 3 and r.clock == "real"
        # a reload thread starved by a busy machine may miss an expiry now and then
        assert r.hot_waits < plain.hot_waits and r.hot_waits <= max(1, r.expiries // 2), r
    assert swr.stale_revalidated >= 3


def test_freshness_grid_and_options() -> None:
    parse = cli._build_parser().parse_args
    assert bench_cli._config(parse(["bench"])).freshness == (PLAIN,)
    config = bench_cli._config(parse(["bench", "--freshness", "none,early", "swr"]))
    assert config.freshness == (PLAIN, Freshness(1.0), Freshness(0.0, 60.0))
    config = bench_cli._config(parse(["bench", "--early-refresh", "0.5,2", "--load-ms", "50"]))
    assert config.freshness == (PLAIN, Freshness(0.5), Freshness(2.0)) and config.load_ms == 50
    config = bench_cli._config(
        parse(["bench", "--freshness", "early+swr", "--stale-while-revalidate", "30", "--ttl",
               "60", "none"])
    )  # fmt: skip
    assert config.freshness == (Freshness(1.0, 30.0),)
    combos = config.combinations()
    assert ("cache-aside", 60.0, Freshness(1.0, 30.0)) in combos
    assert ("cache-aside", None, PLAIN) in combos  # no expiry: nothing to refresh
    assert len(combos) == 1 + 2 * 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--freshness", "fast"], "unknown freshness 'fast'"),
        (["--early-refresh", "0"], "--early-refresh must be > 0"),
        (["--stale-while-revalidate", "soon"], "--stale-while-revalidate must be numbers"),
    ],
)
def test_bench_rejects_bad_freshness_options(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert cli.main([*SIM, *args]) == 2
    assert message in capsys.readouterr().err


def test_bench_compares_freshness_settings_in_table_and_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # the hot key read every 50 ms, TTL 5 s, loads of 200 ms (simulated)
    trace = tmp_path / "hot.csv"
    trace.write_text("".join(f"read,hot,{i * 0.05:.2f}\n" for i in range(600)) + "read,cold,30\n")
    base = ["bench", "--workload", str(trace), "--ttl", "5", "--load-ms", "200", "--quiet",
            "--strategies", "cache-aside", "--repeats", "1", "--hot-keys", "1",
            "--freshness", "none,early,swr", "--stale-while-revalidate", "2"]  # fmt: skip
    assert cli.main(base) == 0
    out = capsys.readouterr().out
    assert "freshness: plain TTL, early=1, swr=2s; hot keys: the 1 most read; a load takes its " \
        "real time + 200 ms (simulated)" in out  # fmt: skip
    for col in ("fresh", "hot p99 µs @exp", "hot waits/exp", "loads/key/TTL"):
        assert col in out
    assert re.search(r"^cache-aside\s+5s\s+early=1\s", out, re.M), out
    flat = " ".join(out.split())  # the recommendation is wrapped
    assert "Freshness at cache-aside TTL 5s: plain TTL: hot p99 around expiry 200" in flat
    assert cli.main([*base, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["freshness"] == ["-", "early=1", "swr=2s"]
    rows = {row["freshness"]: row for row in doc["results"]}
    assert rows["-"]["hot_waits_per_expiry"]["median"] >= 3
    assert rows["-"]["hot_p99_near_expiry_us"]["median"] >= 200_000
    for label in ("early=1", "swr=2s"):
        assert rows[label]["hot_waits_per_expiry"]["median"] == 0
        assert rows[label]["hot_p99_near_expiry_us"]["median"] < 200_000
        (run,) = rows[label]["runs"]
        assert run["background_loads"] >= 4 and run["freshness"] == label
    for row in rows.values():
        assert 0.9 <= row["loads_per_key_per_ttl"]["median"] <= 1.3
    # hits tie (within half a point); stale-while-revalidate reloads no more than needed
    assert doc["recommended"] == "cache-aside ttl=5s swr=2s"
    assert (
        "No setting makes fewer hot readers wait than the recommended one"
        in (doc["recommendation"])
    )


def test_figures_that_do_not_apply_are_a_dash_and_null() -> None:
    s = Spread.of([math.nan, math.nan])
    assert not s.known and s.fmt(str) == "-" and s.as_dict()["median"] is None
    assert Spread.of([math.nan, 2.0, 4.0]).as_dict() == {"median": 3.0, "min": 2.0, "max": 4.0}
    row = _row("none", None, 0.0, 0.0, 1.0)
    assert row.cell("loads_per_key_per_ttl") == "-"


def test_recommendation_says_what_each_freshness_setting_did() -> None:
    def fresh_row(f: Freshness, waits: int, p99: float, hit: float = 0.9) -> BenchRow:
        runs = [
            dataclasses.replace(
                _run("write-through", 300, hit, 0.0, 0.1, ops_s=20_000),
                early_refresh=f.early_refresh, stale_while_revalidate=f.stale_while_revalidate,
                hot_waits=waits, expiries=10,
                hot_p99_near_expiry_us=p99, loads_per_key_per_ttl=1.0,
            )
            for _ in range(3)
        ]  # fmt: skip
        return BenchRow("write-through", 300, runs, f)

    rows = [
        _row("none", None, 0.0, 0.0, 1.0),
        fresh_row(PLAIN, 20, 50_000.0, hit=0.902),
        fresh_row(Freshness(1.0), 0, 40.0),
    ]
    assert _pick(rows) is rows[1]  # the most hits: freshness does not change the ranking ...
    text = recommend(rows, CFG)
    assert "hot keys around expiry: p99 50.00 ms, 2 reads waiting for a load per expiry" in text
    assert "Freshness at write-through TTL 300s: plain TTL: hot p99 around expiry 50.00 ms" in text
    assert "early=1: hot p99 around expiry 40 µs, 0 waits per expiry" in text
    # ... the text names the setting that spares the hot readers
    assert "Fewest hot readers waiting for a load: early refresh (beta 1) (0 per expiry " \
        "instead of 2)" in text  # fmt: skip
    table = render_bench_table(rows, assess(rows, 0.01))
    assert re.search(r"^write-through\s+300s\s+early=1\s.*\s40\.0\s+0\s+1\.00\s*$", table, re.M), (
        table
    )


def test_bench_freshness_on_the_real_clock_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [*TINY, "--ttl", "0.1", "--freshness", "none", "swr", "--stale-while-revalidate", "1",
         "--load-ms", "5", "--hot-keys", "3", "--strategies", "none,cache-aside", "--json"]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["load_ms"] == 5 and doc["config"]["hot_keys"] == 3
    none, plain, swr = doc["results"]
    assert none["loads_per_key_per_ttl"]["median"] is None  # no cache: nothing expires
    assert (plain["freshness"], swr["freshness"]) == ("-", "swr=1s")
    assert swr["label"] == "cache-aside ttl=0.1s swr=1s"
    for row in (plain, swr):
        (run,) = row["runs"]
        assert run["clock"] == "real" and run["hot_keys"] == 3 and run["hot_reads"] > 0
        assert run["expiries"] > 0 and row["loads_per_key_per_ttl"]["median"] > 0
    assert swr["runs"][0]["refreshes_started"] > 0 and swr["runs"][0]["background_loads"] > 0
    assert plain["runs"][0]["background_loads"] == 0
