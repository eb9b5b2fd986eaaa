"""The benchmarks run and measure something real (their numbers are for the README, not asserted here)."""

import pytest

from stream_ctr.bench import run_state_bench


@pytest.mark.broker
def test_state_bench_measures_memory_state_and_recovery_on_a_real_worker(settings_factory):
    lines, results = run_state_bench(settings_factory(), users=3000, stores=["memory"])
    r = results["memory"]
    assert r["eps"] > 0 and r["rss_after"] > 0
    assert 100 < r["state_bytes_per_user"] < 2000  # one event a user: counts, window bits, three small heads
    assert 0 < r["recovery_s"] < 60
    assert any(line.startswith("| memory |") for line in lines)
