"""Hit-ratio simulator: hand-checked replays, trace formats, the shipped traces (policy_sim.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

import cachekit as ck
from cachekit.advisor import policy_sim
from cachekit.advisor.policy_sim import optimal_hits, read_trace, simulate, synthetic

TRACES = Path(__file__).parent / "traces"

# capacity 3, accesses a b c a d b a e:
#   LRU:     a b c miss; a hit; d miss (evicts b); b miss (evicts c); a hit; e miss -> 2 hits
#   optimal: a b c miss; a hit; d miss and not kept (never used again); b hit; a hit; e miss -> 3
#   TinyLFU: window 1 entry, main 2 (probation + protected). a b c miss (a, b pushed from the
#            window to probation); a hit (a -> protected); d miss: c leaves the window and
#            must beat probation's oldest, b: both used once, so c is rejected; b hit; a hit;
#            e miss -> 3 hits
TINY = ["a", "b", "c", "a", "d", "b", "a", "e"]


def by_policy(results: list[policy_sim.SimResult]) -> dict[str, int]:
    return {r.policy: r.hits for r in results}


def test_tiny_trace_matches_the_hand_computed_hits() -> None:
    hits = by_policy(simulate(TINY, [3], ["lru", "tinylfu", "cachetools-lru", "optimal"]))
    assert hits == {"lru": 2, "tinylfu": 3, "cachetools-lru": 2, "optimal": 3}
    results = simulate(TINY, [3], ["lru"])
    assert results[0].accesses == 8
    assert results[0].hit_ratio == 0.25


def test_capacity_above_the_distinct_keys_misses_only_the_first_touch() -> None:
    keys = [f"k{i % 7}" for i in range(100)]
    for r in simulate(keys, [7, 50]):
        assert r.hits == 93, r


def test_optimal_is_an_upper_bound() -> None:
    keys = synthetic("scan", 5000)
    results = by_policy(simulate(keys, [100]))
    assert results["optimal"] == optimal_hits(keys, 100)
    assert all(hits <= results["optimal"] for hits in results.values())


def test_tinylfu_beats_lru_on_the_loop_trace() -> None:
    keys = read_trace(str(TRACES / "loop.trace.gz"))
    results = {r.policy: r.hit_ratio for r in simulate(keys, [1000], ["lru", "tinylfu"])}
    assert results["lru"] == 0.0  # a loop of 1,500 keys through 1,000 slots: LRU never hits
    # Issue 13 asks for LRU + 20 points; str hashes are salted per process, which moves
    # tinylfu between about 0.42 and 0.62 on this trace (0.666 is optimal).
    assert results["tinylfu"] > 0.35


def test_tinylfu_beats_lru_on_the_zipf_trace() -> None:
    keys = read_trace(str(TRACES / "zipf.trace.gz"))
    results = {r.policy: r.hit_ratio for r in simulate(keys, [100], ["lru", "tinylfu"])}
    assert results["tinylfu"] > results["lru"] + 0.03


def test_shipped_traces_are_what_the_generator_writes() -> None:
    for name in ("zipf", "loop", "scan", "recency"):
        shipped = read_trace(str(TRACES / f"{name}.trace.gz"))
        assert shipped == synthetic(name, 20_000), name
    assert read_trace("synthetic:loop", limit=3) == ["l0", "l1", "l2"]


def test_read_trace_formats(tmp_path: Path) -> None:
    plain = tmp_path / "keys.txt"
    plain.write_text("a\n\nb\n# comment\na\n")
    assert read_trace(str(plain)) == ["a", "b", "a"]
    csv = tmp_path / "keys.csv"
    csv.write_text("time,key\n0.5,user:1\n0.7, user:2\n")
    assert read_trace(str(csv)) == ["user:1", "user:2"]
    headless = tmp_path / "headless.csv"
    headless.write_text("1,x\n2,y\n")
    assert read_trace(str(headless)) == ["x", "y"]
    packed = tmp_path / "keys.txt.gz"
    packed.write_bytes(gzip.compress(b"1\n2\n3\n"))
    assert read_trace(str(packed), limit=2) == ["1", "2"]
    with pytest.raises(ck.ConfigurationError):
        read_trace(str(tmp_path / "absent.txt"))
    with pytest.raises(ck.ConfigurationError):
        read_trace("synthetic:nope")


def test_main_prints_a_table_and_draws_a_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "tiny.txt"
    trace.write_text("\n".join(TINY) + "\n")
    png = tmp_path / "sim.png"
    status = policy_sim.main(
        [str(trace), "--capacity", "3", "8", "--policy", "lru", "optimal", "--plot", str(png)]
    )
    out = capsys.readouterr().out
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["trace", "capacity", "accesses", "lru", "optimal"]
    assert lines[2].split() == ["tiny.txt", "3", "8", "25.00%", "37.50%"]
    assert lines[3].split() == ["tiny.txt", "8", "8", "37.50%", "37.50%"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_reports_a_missing_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert policy_sim.main(["/nonexistent/trace.txt"]) == 2
    assert "cannot read trace" in capsys.readouterr().err
