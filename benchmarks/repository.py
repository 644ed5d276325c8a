"""Repository benchmark: ``repo.get`` hit (memory backend) vs ``session.get``, and a Zipf workload.

(a) One ``CachedRepository.get`` hit on the memory backend next to one
``session.get`` in a fresh session (what an uncached request does) on SQLite
(file, WAL) and on PostgreSQL, as a speed-up; SELECTs are counted with engine
events to show the hits issue none. (b) A Zipf(1.1) workload over 10,000 rows:
how many SELECTs 20,000 reads cost with and without the cache. Each speed-up
is the median of ``--runs`` runs (the two sides interleave, so drift on a
noisy machine hits both), with the min-max spread.

    python benchmarks/repository.py --runs 7
    python benchmarks/repository.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import cachekit as ck
from cachekit.sqlalchemy import CachedRepository


class Base(DeclarativeBase):
    pass


class BenchUser(Base):
    __tablename__ = "ck_bench_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    email: Mapped[str] = mapped_column(sa.String(120))
    active: Mapped[bool] = mapped_column(default=True)


ROWS = 10_000


def per_call(fn: Callable[[], Any], n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def zipf_keys(n: int, count: int, s: float, seed: int) -> list[int]:
    weights = [1.0 / (k**s) for k in range(1, n + 1)]
    return random.Random(seed).choices(range(1, n + 1), weights=weights, k=count)


def bench_db(label: str, engine: sa.Engine, runs: int, n: int) -> dict[str, Any]:
    selects = [0]

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects[0] += 1

    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        Base.metadata.create_all(conn)
        conn.execute(
            sa.insert(BenchUser),
            [
                {"id": i, "name": f"user {i}", "email": f"u{i}@example.com", "active": i % 3 > 0}
                for i in range(1, ROWS + 1)
            ],
        )
    factory: sessionmaker[Session] = sessionmaker(engine)
    cache = ck.Cache(ck.MemoryBackend(maxsize=ROWS * 2), namespace="bench-" + uuid.uuid4().hex)
    repo = CachedRepository(BenchUser, factory, cache, policy=ck.WriteThrough(ttl=3600))
    repo.get(42)

    def session_get() -> Any:
        with factory() as s:
            return s.get(BenchUser, 42)

    session_get()
    ratios, hit_times, db_times = [], [], []
    for _ in range(runs):
        before = selects[0]
        hit = per_call(lambda: repo.get(42), n * 20)
        assert selects[0] == before, "a repository hit issued SQL"
        direct = per_call(session_get, n)
        hit_times.append(hit)
        db_times.append(direct)
        ratios.append(direct / hit)

    # Zipf workload: database queries with and without the cache
    keys = zipf_keys(ROWS, 20_000, 1.1, seed=7)
    repo.clear()
    before = selects[0]
    for k in keys:
        repo.get(k)
    with_cache = selects[0] - before
    before = selects[0]
    with factory() as s:
        for k in keys[:2000]:  # a fresh session per read, as an uncached service does
            s.expunge_all()
            s.get(BenchUser, k)
    without = (selects[0] - before) * len(keys) // 2000
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
    engine.dispose()
    cache.close()
    return {
        "label": label,
        "hit_us": statistics.median(hit_times) * 1e6,
        "db_us": statistics.median(db_times) * 1e6,
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "zipf_reads": len(keys),
        "zipf_with": with_cache,
        "zipf_without": without,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--calls", type=int, default=500, help="session.get calls per run")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "CACHEKIT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="PostgreSQL URL ('' to skip)",
    )
    args = parser.parse_args(argv)
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"SQLAlchemy {sa.__version__}, {os.cpu_count()} cores, {platform.machine()}"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = sa.create_engine(f"sqlite:///{tmp}/bench.sqlite")
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        results.append(bench_db("SQLite (file, WAL)", engine, args.runs, args.calls))
    if args.postgres:
        schema = "ck_bench_" + uuid.uuid4().hex[:8]
        admin = sa.create_engine(args.postgres)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        try:
            engine = sa.create_engine(
                args.postgres, connect_args={"options": f"-csearch_path={schema}"}
            )
            results.append(bench_db("PostgreSQL (loopback)", engine, args.runs, args.calls))
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
            admin.dispose()
    print()
    print(
        "| database | repo.get hit (memory) | session.get | speed-up, median [min-max] "
        "| SQL per hit |"
    )
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['label']} | {r['hit_us']:.1f} µs | {r['db_us']:.0f} µs | "
            f"{r['ratio']:.0f}x [{r['ratio_min']:.0f}-{r['ratio_max']:.0f}] | 0 |"
        )
    print()
    print("| database | Zipf(1.1) reads over 10,000 rows | SELECTs with cache | SELECTs without |")
    print("|---|---|---|---|")
    for r in results:
        print(
            f"| {r['label']} | {r['zipf_reads']:,} | {r['zipf_with']:,} | {r['zipf_without']:,} |"
        )
    pg = [r for r in results if r["label"].startswith("PostgreSQL")]
    if pg and pg[0]["ratio"] < 20:
        print(f"\nbelow target: {pg[0]['ratio']:.1f}x < 20x on PostgreSQL", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
