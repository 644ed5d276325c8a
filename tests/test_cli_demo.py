"""``cachekit demo`` end to end on a tiny workload: table, JSON, options, metrics, progress bar."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from cachekit.advisor import cli

TINY = ["demo", "--rows", "200", "--ops", "400", "--quiet", "--seed", "3"]


def test_demo_prints_a_table_with_every_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*TINY, "--ttl", "5", "60"]) == 0
    out = capsys.readouterr().out
    for column in ("hit ratio", "DB queries", "p50 µs", "p99 µs", "stale reads", "evictions"):
        assert column in out
    rows = [line.split()[0:2] for line in out.splitlines() if line.startswith(("none", "cache"))]
    rows += [line.split()[0:2] for line in out.splitlines() if line.startswith("write-through")]
    assert ["none", "-"] in rows
    for strategy in ("cache-aside", "write-through"):
        assert [strategy, "5s"] in rows and [strategy, "60s"] in rows
    assert "clock: simulated" in out
    assert out.rstrip().splitlines()[-1].startswith("reading: ")


def test_demo_json_is_parseable_with_the_expected_fields(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "demo.db"
    code = cli.main([*TINY, "--json", "--ttl", "10,none", "--db", str(db)])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert db.exists()  # --db takes a plain path
    assert doc["clock"] == {
        "simulated": True,
        "ops_per_second": 500.0,
        "simulated_seconds_per_run": 0.8,
    }
    assert doc["config"]["ttl"] == [10.0, None]
    labels = [r["label"] for r in doc["results"]]
    assert labels == [
        "none",
        "cache-aside ttl=10s",
        "cache-aside ttl=none",
        "write-through ttl=10s",
        "write-through ttl=none",
        "repository ttl=10s",
        "repository ttl=none",
        "asyncio ttl=10s",
        "asyncio ttl=none",
    ]
    fields = {
        "strategy", "ttl", "hit_ratio", "db_queries", "db_reads", "db_writes", "p50_us",
        "p99_us", "stale_reads", "stale_ratio", "max_staleness_s", "evictions",
        "evictions_capacity", "evictions_expired", "reads", "writes", "bypass_writes",
    }  # fmt: skip
    for r in doc["results"]:
        assert fields <= set(r)
        assert r["reads"] + r["writes"] + r["bypass_writes"] == 400
    none = doc["results"][0]
    assert none["db_queries"] == 400 and none["hit_ratio"] == 0.0
    assert all(r["db_queries"] < 400 for r in doc["results"][1:])
    assert isinstance(doc["reading"], str) and doc["reading"]


def test_demo_without_bypass_writes_reads_nothing_stale(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*TINY, "--json", "--bypass-writes", "0", "--write-ratio", "0.2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["stale_reads"] for r in doc["results"]] == [0] * 9  # none + 4 strategies x 2 TTLs
    assert "every write went through the cache" in doc["reading"]


def test_python_dash_m_runs_the_demo(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cachekit", *TINY, "--strategies", "none,write-through"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "write-through" in proc.stdout and "cache-aside" not in proc.stdout
    assert proc.stderr == ""  # --quiet, and stderr is no TTY anyway: no progress bar
    assert list(tmp_path.iterdir()) == []  # the default database lives in a temp dir


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "write-behind"], "unknown strategy"),
        (["--ttl", "soon"], "TTL must be seconds"),
        (["--ttl", "0"], "TTL must be > 0"),
        (["--ops-per-second", "0"], "--ops-per-second"),
    ],
)
def test_demo_rejects_bad_options(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert cli.main([*TINY, *args]) == 2
    assert message in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_unknown_cache_scheme_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*TINY, "--cache-url", "nosuch://x"]) == 1
    assert "no cachekit backend for URL scheme 'nosuch'" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_metrics_port_serves_every_cache_until_interrupted(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    scraped: list[str] = []

    def scrape_then_interrupt() -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            scraped.append(resp.read().decode())

    monkeypatch.setattr(cli, "_wait_for_interrupt", scrape_then_interrupt)
    assert cli.main([*TINY, "--metrics-port", str(port)]) == 0
    err = capsys.readouterr().err
    assert f"http://127.0.0.1:{port}/metrics" in err and "Ctrl-C" in err
    body = scraped[0]
    for ns in ("demo-cache-aside-ttl-10", "demo-write-through-ttl-60"):
        assert re.search(rf'^cachekit_hits_total{{[^}}]*cache="{ns}"', body, re.M), ns
    # a repository row exports its own counters, not zeros
    repo = re.search(
        r'^cachekit_hits_total{[^}]*cache="demo-repository-ttl-60/[^"]*"[^}]*} (\S+)', body, re.M
    )
    assert repo is not None and float(repo.group(1)) > 0, body
    # the server was shut down and the caches unregistered
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)
    assert cli.main([*TINY, "--metrics-port", str(port)]) == 0  # registers the same names again


def test_metrics_port_without_the_metrics_module_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cachekit.metrics", None)  # import now raises ImportError
    assert cli.main([*TINY, "--metrics-port", str(_free_port())]) == 1
    err = capsys.readouterr().err
    assert "--metrics-port needs cachekit.metrics" in err
    assert "pip install 'cachekit-py[prometheus]'" in err


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_tty_only() -> None:
    tty = _Tty()
    bar = cli.Progress(100, stream=tty, delay=0.0)
    bar.label = "cache-aside ttl=10s"
    bar.update(50)
    assert "50%" in tty.getvalue() and "cache-aside ttl=10s" in tty.getvalue()
    bar.close()
    assert tty.getvalue().endswith("\r")

    pipe = io.StringIO()
    quiet = cli.Progress(100, stream=pipe, delay=0.0)
    quiet.update(100)
    quiet.close()
    assert pipe.getvalue() == ""

    off = cli.Progress(100, stream=_Tty(), enabled=False, delay=0.0)
    off.update(100)
    assert off.stream.getvalue() == ""  # type: ignore[attr-defined]


def test_progress_bar_waits_for_the_first_second() -> None:
    tty = _Tty()
    bar = cli.Progress(100, stream=tty, delay=60.0)
    bar.update(100)
    bar.close()
    assert tty.getvalue() == ""


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("memcached", marks=pytest.mark.memcached),
    ],
)
def test_demo_over_a_remote_backend(
    capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest, kind: str
) -> None:
    url = request.getfixturevalue(f"{kind}_url")
    code = cli.main([*TINY, "--json", "--ttl", "60", "--cache-url", url])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["clock"]["simulated"] is False
    cached = doc["results"][1:]
    assert [r["label"] for r in cached] == [
        "cache-aside ttl=60s",
        "write-through ttl=60s",
        "repository ttl=60s",
        "asyncio ttl=60s",
    ]
    for r in cached:
        assert r["cache_errors"] == 0  # rows round-trip through the JSON serializer
        assert r["hit_ratio"] > 0.5 and r["db_queries"] < 400


def test_demo_repository_row_matches_write_through(capsys: pytest.CaptureFixture[str]) -> None:
    # The repository replays the same operations through CachedRepository: same hits and
    # stale reads as the decorator's write-through, plus one SELECT per update (the ORM
    # loads the row it changes).
    code = cli.main([*TINY, "--json", "--ttl", "10", "--strategies", "write-through,repository"])
    assert code == 0
    wt, repo = json.loads(capsys.readouterr().out)["results"]
    assert repo["strategy"] == "repository"
    assert repo["hit_ratio"] == pytest.approx(wt["hit_ratio"], abs=0.01)
    assert repo["stale_reads"] == wt["stale_reads"]
    assert repo["db_reads"] >= wt["db_reads"]


def test_the_asyncio_row_matches_cache_aside(capsys: pytest.CaptureFixture[str]) -> None:
    # the same operations through an AsyncCache: the same hits, loads and stale reads
    code = cli.main([*TINY, "--json", "--ttl", "10", "--strategies", "cache-aside,asyncio"])
    assert code == 0
    aside, aio = json.loads(capsys.readouterr().out)["results"]
    assert aio["strategy"] == "asyncio"
    for field in ("hit_ratio", "db_queries", "stale_reads"):
        assert aio[field] == aside[field], field
