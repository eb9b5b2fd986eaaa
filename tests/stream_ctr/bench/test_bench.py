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


def test_quality_bench_scores_every_event_before_learning_it(make_events):
    from stream_ctr.bench.quality import _one_hot, _service_progressive
    from stream_ctr.config import Settings
    from stream_ctr.trainer.global_trainer import GlobalTrainer

    events = make_events(users=20, events_per_user=40, seed=3).events
    settings = Settings(features="category,segment", batch_size=64, delta_every=200)
    preds, published = _service_progressive(settings, events)
    assert {len(p) for p in preds.values()} == {len(events)}
    assert published > 0  # the deltas the scorer applied went through their bytes
    # The first batch: each user's first event in it is scored by the untrained v0 model, in the input order (the
    # step groups it by user); the user's later ones after the user's own first-order weight learned the earlier
    # ones (the catch-up's in-order steps). Without the catch-up, all of it by v0.
    v0 = GlobalTrainer(settings).predict_proba(events[:64])
    first = [i for i, e in enumerate(events[:64]) if e.user_id not in {x.user_id for x in events[:i]}]
    later = sorted(set(range(64)) - set(first))
    assert first and later
    assert abs(preds["global"][first] - v0[first]).max() < 1e-6
    assert abs(preds["global"][later] - v0[later]).max() > 1e-3
    assert abs(preds["global"][-64:] - v0[:1]).max() > 1e-3  # later batches: a trained snapshot
    plain, _ = _service_progressive(settings.replace(catch_up_events=0), events)
    assert abs(plain["global"][:64] - v0).max() < 1e-6
    x = _one_hot(events[0], crosses=True)
    assert f"user={events[0].user_id}" in x and f"item={events[0].item_id}" in x


def test_quality_bench_reports_every_arm_and_both_baselines():
    from stream_ctr.bench import run_quality_bench
    from stream_ctr.config import Settings

    lines, rows = run_quality_bench(
        Settings(features="category,segment"), "synthetic", limit=3000, cadences=[500], corrections=["lc", "lc_bias"]
    )
    assert len(rows) == 8 and sum(name.startswith("river") for name in rows) == 2
    assert all(0.4 < r["auc"] < 1 and 0 < r["logloss"] < 1 for r in rows.values())
    assert len(lines) == 4 + 8 + 1 + 5 + 2  # the table, then the paired differences of the 2 corrections
    # The ft_lc arm with the default correction is the ft_lc row; another correction gives another arm.
    plain, bias = rows["deepfm ft_lc with lc, delta every 500"], rows["deepfm ft_lc with lc_bias, delta every 500"]
    assert plain["gauc"] == rows["deepfm ft_lc, delta every 500"]["gauc"] and bias["gauc"] != plain["gauc"]
    # Paired over users on the same events: the difference of the arms' gAUCs, inside its own CI.
    ft = rows["deepfm ft, delta every 500"]
    assert plain["vs_ft"]["delta"] == pytest.approx(plain["gauc"] - ft["gauc"], abs=1e-9)
    lo, hi = bias["vs_global"]["ci"]
    assert lo <= bias["vs_global"]["delta"] <= hi and lo < hi


def test_the_past_click_rate_reference_scores_each_event_by_what_came_before_it(make_events):
    from stream_ctr.bench.quality import _past_click_rate

    events = make_events(users=2, events_per_user=30, seed=5).events
    rate = _past_click_rate(events)
    first = {}
    for i, e in enumerate(events):
        first.setdefault(e.user_id, i)
    assert rate[0] == 0.5  # nothing seen yet
    later = max(first.values())  # the second user's first event: the prior of everything before it
    assert abs(rate[later] - (sum(e.label for e in events[:later]) + 0.5) / (later + 1)) < 1e-6


def test_quality_bench_compares_families_and_the_cost_of_freshness():
    from stream_ctr.bench import run_quality_bench
    from stream_ctr.config import Settings

    _, rows = run_quality_bench(
        Settings(features="category,segment"), "synthetic", limit=2000, cadences=[500, 20], families=("lr", "fm")
    )
    assert {name.split()[0] for name in rows if "delta every" in name} == {"lr", "fm"}
    cost = {(name.split()[0], name.split()[-1]): r["model_bytes"] for name, r in rows.items() if "model_bytes" in r}
    assert cost[("fm", "20")] > cost[("fm", "500")] > 0  # fresher costs more bytes on the model topic


@pytest.mark.broker
def test_pipeline_bench_measures_the_worker_against_a_raw_consumer_of_the_same_topic(settings_factory):
    from stream_ctr.bench import headline, run_pipeline_bench

    lines, r = run_pipeline_bench(settings_factory(), limit=40_000, workers=(1,))  # 1-2 s of draining
    assert r["raw_consume_eps"] > r["pipeline_eps"] > 0
    assert r["pipeline_ratio"] == r["pipeline_eps"] / r["raw_consume_eps"] and r["workers_eps"] == {
        "1": r["pipeline_eps"]
    }
    assert any(line.startswith("| personalize pipeline, 1 worker |") for line in lines)
    summary = headline(
        {"lc_head_eps": 1.0, "trainer_sps": {"lr": 2.0}},
        {"score_p50_ms": 1.0, "score_p99_ms": 3.0},
        {"memory": {"state_bytes_per_user": 300.0, "recovery_s": 5.0}},
        r,
    )
    assert {
        "raw_consume_eps",
        "pipeline_eps",
        "pipeline_ratio",
        "lc_head_eps",
        "trainer_sps",
        "score_p50_ms",
        "score_p99_ms",
        "state_bytes_per_user",
        "recovery_s",
        "workers_eps",
    } <= set(summary)
    assert summary["machine"]["cores"] >= 1 and summary["state_store"] == "memory"


def test_inprocess_bench_times_test_then_train_with_and_without_the_forward_pass():
    from stream_ctr.bench.inprocess import run_bench
    from stream_ctr.config import Settings

    lines, r = run_bench(Settings(), ["lr"], limit=6_000)
    assert set(r["test_then_train_eps"]) == {"16", "64", "256", "1024"} and set(r["trainer_sps"]) == {"lr"}
    # Without the global forward pass the heads' part alone is faster than the whole step, at every batch mix.
    assert r["lc_head_eps"] > max(r["test_then_train_eps"].values()) > 0
    assert r["lc_head_eps_shuffled"] > 0
    assert any(line.startswith("| 1024, shuffled (") for line in lines)


@pytest.mark.broker
def test_quality_bench_live_rows_come_from_the_running_service(settings_factory):
    """The live rows: the same events through Kafka, a worker and a trainer process, beside the in-process rows."""
    from stream_ctr.bench import run_quality_bench
    from stream_ctr.bench.quality import in_process_quality
    from stream_ctr.data import load_dataset

    settings = settings_factory(delta_every=8, batch_size=8)
    lines, rows = run_quality_bench(settings, "synthetic", limit=2000, cadences=[8], live_rate=1000)
    live = {name: r for name, r in rows.items() if name.startswith("service live (1,000 events/s")}
    assert len(live) == 3  # one per arm
    assert all(0.5 < r["auc"] < 1 and 0 < r["logloss"] < 1 and 0 < r["eps"] < 1500 for r in live.values())
    assert sum("service live" in line for line in lines) == 3
    # The lockstep run of the same events is the in-process row (one owner of that figure).
    again = in_process_quality(settings.replace(features="category,segment"), load_dataset("synthetic", 2000))
    assert again["global"]["auc"] == pytest.approx(rows["deepfm global, delta every 8"]["auc"], abs=1e-9)


@pytest.mark.broker
def test_pipeline_bench_measures_workers_and_trainer_ranks_on_one_topic(settings_factory):
    from stream_ctr.bench import run_pipeline_bench

    lines, result = run_pipeline_bench(settings_factory(), limit=20_000, workers=(1,), ranks=(1, 2))
    assert result["raw_consume_eps"] > 0 and result["pipeline_eps"] > 0
    assert set(result["trainer_ranks_sps"]) == {"1", "2"} and min(result["trainer_ranks_sps"].values()) > 0
    assert sum(line.startswith("| global trainer, ") for line in lines) == 2


@pytest.mark.broker
def test_load_bench_drives_the_real_worker_open_loop_with_and_without_events(settings_factory):
    """A short run of ``bench --serving-load``: vegeta against a real worker, every request sent at its rate and
    answered, the rows summarising what came back, and the HTTP baseline measured in the same run."""
    from stream_ctr.bench.load import run_load_bench

    lines, r = run_load_bench(
        settings_factory(),
        rates=(20, 60),
        seconds=2,
        candidates=20,
        stream_rates=(0, 300),
        routed_rate=30,
        scorers=1,
    )
    for phase in ("stream_0", "stream_300", "scorers_1_stream_0", "scorers_1_stream_300"):
        rows = r[phase]["rows"]
        assert [row["rate"] for row in rows] == [20, 60]
        for row in rows:
            assert row["sent"] == pytest.approx(2 * row["rate"], abs=2) and row["timeouts"] == 0
            assert row["ok_share"] > 0.95 and 0 < row["p50_ms"] <= row["p99_ms"] <= row["p999_ms"], (phase, row)
            assert 0 < row["worker_cores"] < 2  # the server was busy ranking, and it is one process
            assert row["staleness_mean"] >= 0  # every step's requests counted how far behind their model was
        assert r[phase]["capacity_rps"] in (0, 20, 60)
    # Events flowing at 300/s and models published every 1,000 samples: some requests meet an unlearned backlog.
    assert max(row["staleness_mean"] for row in r["scorers_1_stream_300"]["rows"]) > 0
    assert r["healthz"]["ok_share"] == 1.0 and r["healthz"]["sent"] >= 110
    assert sum("Scoring under open-loop load" in line for line in lines) == 4
    # Then a second worker: requests for the first worker's users and for the second's (forwarded), both answered
    for part in ("local", "forwarded"):
        assert r["routed"][part]["sent"] == pytest.approx(60, abs=2) and r["routed"][part]["ok_share"] == 1.0
    assert any(line.startswith("Forwarded / local") for line in lines)
