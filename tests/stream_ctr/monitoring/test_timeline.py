"""The demo's report and picture of a run: the detectors' alarms and the per-arm gAUC over time."""

from stream_ctr.contracts.arms import ARMS
from stream_ctr.monitoring.timeline import Timeline, plot_timeline
from stream_ctr.service.demo import render_report


def _stats(applied: int, alarm_times=()) -> dict:
    arms = {arm: {"gauc": 0.6 + 0.01 * i, "auc": 0.7, "logloss": 0.6, "calibration": 1.0} for i, arm in enumerate(ARMS)}
    detectors = {
        "global_ctr": {
            "alarms": len(alarm_times),
            "first_alarm": alarm_times[0] if alarm_times else None,
            "drifting": bool(alarm_times),
            "since": alarm_times[0] if alarm_times else None,
            "alarm_times": list(alarm_times),
        },
        "logloss_ft": {"alarms": 0, "first_alarm": None, "drifting": False, "since": None, "alarm_times": []},
    }
    return {
        "applied": applied,
        "dead_letters": 1,
        "duplicates": 0,
        "users": 10,
        "model_version": 3,
        "global_ctr": 0.5,
        "window": {"arms": arms},
        "lifetime": {"n": applied, "arms": arms},
        "drift": {"buckets": [0.1, 0.2], "counts": [5, 3, 2], "quantiles": {"0.1": 0.0, "0.5": 0.1, "0.9": 0.3}},
        "detectors": detectors,
        "users_drifting": 4,
        "staleness": {"p50": 12.0, "p90": 80.0, "p99": 1843.0, "scored": 300, "ahead": 2},
    }


def test_the_timeline_keeps_each_reading_and_the_alarms_since_the_start(tmp_path):
    timeline = Timeline(start=1000.0)
    timeline.read(_stats(100), now=1001.0, rate=100.0)
    timeline.read(_stats(300, alarm_times=(990.0, 1001.5)), now=1002.0, rate=200.0)
    assert [r["done"] for r in timeline.rows] == [101, 301] and timeline.rows[1]["t"] == 2.0
    assert timeline.alarms == {"global_ctr": [1.5], "logloss_ft": []}  # the alarm before the run is not its own
    png = plot_timeline(timeline, tmp_path / "t.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_the_timeline_stays_bounded():
    timeline = Timeline(start=0.0, max_rows=100)
    for i in range(1000):
        timeline.read(_stats(i), now=float(i), rate=1.0)
    assert len(timeline.rows) <= 100 and timeline.rows[0]["t"] == 0.0 and timeline.rows[-1]["t"] == 999.0


def test_the_report_lists_every_detector_and_links_the_picture():
    report = render_report(
        _stats(300, alarm_times=(1030.0,)),
        {
            "dataset": "ml-100k",
            "sent": 300,
            "malformed": 1,
            "seconds": 3.0,
            "start": 1000.0,
            "timeline": "demo-timeline.png",
        },
    )
    assert "| global_ctr | 1 | 30 | yes |" in report and "| logloss_ft | 0 | - | no |" in report
    assert "![throughput, per-arm gAUC and drift alarms over the run](demo-timeline.png)" in report
    assert "Users beyond their own band (STREAM_CTR_USER_DRIFT_Z sampling stds from p_g): 4." in report
    assert "- staleness p50 12 p99 1843 samples (" in report and "2 of 300 events scored by a model" in report
