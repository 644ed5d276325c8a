"""``cachekit bench``: per-thread Zipf streams, the threaded stale-read detector, traces,
the recommendation, and the command end to end (SQLite, PostgreSQL, Redis, --json, --plot)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachekit import cli
from cachekit.bench import (
    BenchConfig,
    BenchResult,
    Trace,
    TraceError,
    parse_trace,
    read_trace,
    run_combination,
)
from cachekit.bench_report import pick, recommend, render_bench_table
from cachekit.workload import (
    BYPASS,
    READ,
    WRITE,
    Op,
    OpGenerator,
    SimClock,
    StaleReadDetector,
    ZipfSampler,
)
from cachekit.workload_db import SqlUserStore

TINY = ["bench", "--keys", "200", "--duration", "0.3", "--threads", "2", "--quiet"]


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
    config = BenchConfig(keys=50, threads=2, ttls=(None,))
    r = run_combination(store, config, strategy, None, trace=_deal(a, b))
    assert r.stale_reads == 5
    assert (r.reads, r.writes, r.bypass_writes) == (12, 1, 1)
    assert r.max_staleness_s > 0
    assert r.threads == 2 and r.clock == "real"


def test_threaded_write_through_with_one_writer_reads_nothing_stale(store: SqlUserStore) -> None:
    # thread 0 writes the hot keys through the cache; threads 1 and 2 read them meanwhile
    writer = [Op(WRITE, 1 + i % 3, i) for i in range(300)]
    readers = [[Op(READ, 1 + i % 3) for i in range(300)] for _ in range(2)]
    config = BenchConfig(keys=50, threads=3, ttls=(None,))
    r = run_combination(store, config, "write-through", None, trace=_deal(writer, *readers))
    assert r.reads == 600 and r.writes == 300
    assert r.stale_reads == 0
    # the same script with the writes made around the cache does read stale values
    bypass = [Op(BYPASS, op.key, op.value) for op in writer]
    warm = [Op(READ, 1 + i % 3) for i in range(3)]
    r = run_combination(
        store, BenchConfig(keys=50, threads=1, ttls=(None,)), "write-through", None,
        trace=Trace(warm + bypass + warm, [], None),
    )  # fmt: skip
    assert r.stale_reads == 3


def test_generated_real_clock_run_measures_everything(store: SqlUserStore) -> None:
    config = BenchConfig(keys=50, threads=2, duration=0.3, write_ratio=0.1, bypass_writes=0.0)
    r = run_combination(store, config, "write-through", 30.0)
    assert r.ops > 100 and r.throughput > 0 and 0.25 < r.wall_seconds < 5
    assert r.hits + r.misses == r.reads and r.hit_ratio > 0.5
    # one SELECT per miss (the write's RETURNING is a write), minus the misses that waited
    # for another thread's load of the same key (single-flight)
    assert 0 < r.db_reads <= r.misses
    one = run_combination(store, BenchConfig(keys=50, threads=1, ops=500), "cache-aside", 30.0)
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


def _result(strategy: str, ttl: float | None, hit: float, stale: float, db: float) -> BenchResult:
    reads = 10_000
    hits = int(hit * reads)
    return BenchResult(
        strategy=strategy, ttl=ttl, reads=reads, writes=0, bypass_writes=0, hits=hits,
        misses=reads - hits, db_reads=int(db * reads), db_writes=0, p50_us=5.0, p99_us=50.0,
        stale_reads=int(stale * reads), max_staleness_s=1.0, evictions_capacity=0,
        evictions_expired=0, cache_errors=0, simulated_seconds=0.0, wall_seconds=1.0,
    )  # fmt: skip


def test_recommendation_maximises_hits_within_the_stale_budget() -> None:
    results = [
        _result("none", None, 0.0, 0.0, 1.0),
        _result("cache-aside", 60, 0.91, 0.004, 0.09),
        _result("cache-aside", 300, 0.95, 0.03, 0.05),
        _result("write-through", 300, 0.97, 0.0, 0.03),
    ]
    assert pick(results, 0.01) is results[3]
    text = recommend(results, 0.01)
    assert text.startswith("Recommended: write-through with TTL 300s: 97.0% hits, 0 stale reads")
    assert "Next best: cache-aside with TTL 300s: 95.0% hits, 3.0% stale reads" in text
    assert "(over the budget)" in text
    assert "saves 97% of database reads" in text
    # a looser budget does not change the winner; a tighter one rules out all but write-through
    assert pick(results, 0.05) is results[3]
    assert pick(results[:3], 0.01) is results[1]
    assert pick(results[:3], 0.05) is results[2]


def test_recommendation_breaks_ties_on_database_reads() -> None:
    a = _result("cache-aside", 60, 0.900, 0.0, 0.12)
    b = _result("write-through", 60, 0.898, 0.0, 0.08)  # within half a point of hits
    c = _result("write-through", 10, 0.850, 0.0, 0.01)  # fewest reads, but not tied on hits
    assert pick([a, b, c], 0.01) is b


def test_recommendation_when_nothing_meets_the_budget() -> None:
    results = [
        _result("cache-aside", 60, 0.9, 0.05, 0.1),
        _result("write-through", 1, 0.5, 0.02, 0.5),
    ]
    assert pick(results, 0.01) is None
    text = recommend(results, 0.01)
    assert text.startswith("No combination kept stale reads within the stale-read budget of 1.0%")
    assert "the least stale was write-through with TTL 1s" in text
    assert recommend([_result("none", None, 0, 0, 1)], 0.01).startswith("No cache strategy")
    assert "write-through" in render_bench_table(results)


# ---------------------------------------------------------------- the command end to end


def test_bench_prints_the_table_clock_and_recommendation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main([*TINY, "--ttl", "0.2", "1"]) == 0
    out = capsys.readouterr().out
    for column in ("hit ratio", "DB reads", "DB writes", "p95 µs", "ops/s", "stale %", "evictions"):
        assert column in out
    firsts = [line.split()[:2] for line in out.splitlines()]
    for strategy in ("cache-aside", "write-through"):
        assert [strategy, "0.2s"] in firsts and [strategy, "1s"] in firsts
    assert ["none", "-"] in firsts
    assert "clock: real; 5 runs of 0.3 s, 2 threads" in out
    assert "recommendation (stale budget 1.0%): " in out


def test_bench_json_has_the_config_and_the_expected_fields(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "bench.db"
    code = cli.main([*TINY, "--json", "--ttl", "5,none", "--db", str(db), "--value-size", "500"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["command"] == "bench" and doc["database"] == "sqlite"
    assert doc["clock"] == {
        "kind": "real", "threads": 2, "duration_s": 0.3, "ops_per_run": None,
        "runs_per_combination": 1,
    }  # fmt: skip
    assert doc["config"]["ttls"] == [5.0, None] and doc["config"]["value_size"] == 500
    assert doc["config"]["keys"] == 200 and doc["machine"]["cpus"] >= 1
    fields = {
        "label", "hit_ratio", "db_reads", "db_writes", "p50_us", "p95_us", "p99_us",
        "throughput", "stale_reads", "stale_ratio", "max_staleness_s", "evictions", "ops",
        "threads", "clock", "wall_seconds",
    }  # fmt: skip
    for r in doc["results"]:
        assert fields <= set(r)
        assert r["ops"] > 0 and r["threads"] == 2
    assert doc["results"][0]["label"] == "none"
    assert doc["recommended"] is None or doc["recommended"] in {r["label"] for r in doc["results"]}
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        assert doc["config"]["table"] not in sa.inspect(engine).get_table_names()  # dropped
    finally:
        engine.dispose()


def test_bench_replays_a_trace_on_the_simulated_clock(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("op,key,ts\nread,u1,0\nbypass,u1,1\nread,u1,4\nread,u2,5\nread,u1,20\n")
    code = cli.main(
        ["bench", "--workload", str(trace), "--simulated-clock", "--threads", "1", "--ttl", "10",
         "--json", "--quiet", "--strategies", "cache-aside,write-through"]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["clock"]["kind"] == "simulated" and doc["trace"]["keys"] == 2
    for r in doc["results"]:
        # t=4: still the version cached at t=0, superseded at t=1; t=20: expired and reloaded
        assert (r["reads"], r["stale_reads"], r["max_staleness_s"]) == (4, 1, 3.0)
        assert r["hits"] == 1 and r["evictions_expired"] >= 1


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--simulated-clock"], "one thread: use --threads 1", 2),
        (["--threads", "1", "--simulated-clock", "--cache-url", "redis://x"], "memory:// only", 2),
        (["--ops", "100"], "give --duration or --ops, not both", 2),
        (["--strategies", "write-behind"], "unknown strategy", 2),
        (["--ttl", "0"], "TTL must be > 0", 2),
    ],
)
def test_bench_rejects_bad_options(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str, code: int
) -> None:
    assert cli.main([*TINY, *args]) == code
    assert message in capsys.readouterr().err


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
    assert f"plot written to {png}" in capsys.readouterr().out


def test_bench_plot_without_matplotlib_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main([*TINY, "--plot", str(tmp_path / "x.png")]) == 1
    assert "pip install 'cachekit[plot]'" in capsys.readouterr().err


@pytest.mark.redis
def test_bench_over_redis(capsys: pytest.CaptureFixture[str], redis_url: str) -> None:
    code = cli.main([*TINY, "--json", "--ttl", "5", "--cache-url", redis_url])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    for r in doc["results"][1:]:
        assert r["cache_errors"] == 0 and r["hit_ratio"] > 0.3
        assert r["db_reads"] < doc["results"][0]["db_reads"] * r["ops"] / doc["results"][0]["ops"]


@pytest.mark.postgres
def test_bench_on_postgresql_drops_its_table(
    capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    code = cli.main([*TINY, "--json", "--ttl", "5", "--db", postgres_url])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["database"] == "postgresql"
    assert doc["config"]["table"].startswith("cachekit_bench_")
    assert all(r["db_reads"] > 0 and r["ops"] > 0 for r in doc["results"])
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    try:
        assert doc["config"]["table"] not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_importing_cachekit_and_the_bench_engine_pulls_in_no_sqlalchemy_or_matplotlib() -> None:
    code = (
        "import sys, cachekit, cachekit.bench, cachekit.bench_report, cachekit.cli; "
        "bad = [m for m in ('sqlalchemy', 'matplotlib') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
