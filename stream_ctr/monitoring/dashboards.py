"""The Grafana dashboards of stream-ctr, generated from code: ``Pipeline``, ``Drift`` and ``A/B``.

``grafana/dashboards/*.json`` is the output of :func:`write` and is committed; nobody edits it by hand.
``tests/grafana/test_dashboards.py`` checks the committed files equal :func:`build` and runs every panel query
against a real Prometheus scraping the real worker and trainer.

    python -m stream_ctr.monitoring.dashboards [DIR]          # write pipeline.json, drift.json, ab.json to DIR
    python -m stream_ctr.monitoring.dashboards --check [DIR]  # exit 1 naming each file that differs

DIR defaults to grafana/dashboards.

Plain dicts, no dependency: a panel is a small function of title, description, queries and unit; the grid is
laid out by :func:`_layout` (rows top to bottom, panels left to right, wrapping at Grafana's 24 columns). The
Prometheus datasource is the one dashboard variable, ``${datasource}``. No query ever names a user.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_ctr.contracts.arms import ARMS, FINE_TUNED

__all__ = ["build", "check", "render", "write"]

DS = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24
RATE = "$__rate_interval"

WORKER = 'job="stream-ctr-worker"'
TRAINER = 'job="stream-ctr-trainer"'
ANY_JOB = 'job=~"stream-ctr-worker|stream-ctr-trainer"'

UIDS = {"pipeline.json": "stream-ctr-pipeline", "drift.json": "stream-ctr-drift", "ab.json": "stream-ctr-ab"}
TITLES = {"pipeline.json": "stream-ctr: Pipeline", "drift.json": "stream-ctr: Drift", "ab.json": "stream-ctr: A/B"}


# --- PromQL pieces ------------------------------------------------------------------------------------------------


def sel(metric: str, job: str = WORKER, *matchers: str, **labels: str) -> str:
    """``metric{job="stream-ctr-worker", <matchers>, k="v"}``; a matcher is raw PromQL (``'arm=~"ft|ft_lc"'``)."""
    return metric + "{" + ", ".join([job, *matchers, *(f'{k}="{v}"' for k, v in labels.items())]) + "}"


def rate(selector: str, window: str = RATE) -> str:
    return f"rate({selector}[{window}])"


def quantile(q: float, bucket_selector: str, rated: bool = False) -> str:
    """``histogram_quantile`` over the ``le`` buckets of all series (``rated``: of a latency histogram's rate; a
    scrape-time distribution across users is read as is)."""
    inner = rate(bucket_selector) if rated else bucket_selector
    return f"histogram_quantile({q}, sum by (le) ({inner}))"


# --- panels -------------------------------------------------------------------------------------------------------


def q(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> dict:
    """One Prometheus query of a panel; its ``refId`` is given by the panel (A, B, ...)."""
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "format": fmt,
        "editorMode": "code",
    }


def _steps(*steps: tuple[str, float | None]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


GREEN_ONLY = _steps(("green", None))


def mapping(*pairs: tuple[float, str, str]) -> list[dict]:
    """Value mappings ``(value, text, color)``, e.g. 0 -> "stable"."""
    return [
        {"type": "value", "options": {str(v): {"text": text, "color": color, "index": i}}}
        for i, (v, text, color) in enumerate(pairs)
    ]


def override(ref: str, **properties) -> dict:
    """Field properties of one query (``refId``) that differ from the panel's defaults."""
    return {
        "matcher": {"id": "byFrameRefID", "options": ref},
        "properties": [{"id": k, "value": v} for k, v in properties.items()],
    }


def _panel(
    kind: str,
    title: str,
    description: str,
    targets: list[dict],
    unit: str,
    w: int,
    h: int,
    defaults: dict | None = None,
    options: dict | None = None,
    overrides: list[dict] | None = None,
) -> dict:
    assert 0 < w <= GRID_COLUMNS, (title, w)
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},  # x and y come from _layout
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": overrides or []},
        "options": options or {},
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
    }


def timeseries(
    title: str,
    description: str,
    targets: list[dict],
    unit: str,
    *,
    w: int = 12,
    h: int = 8,
    min: float | None = None,
    max: float | None = None,
    decimals: int | None = None,
    step: bool = False,
    overrides: list[dict] | None = None,
) -> dict:
    custom = {
        "drawStyle": "line",
        "lineInterpolation": "stepAfter" if step else "linear",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
    }
    defaults = {"custom": custom, "min": min, "max": max, "decimals": decimals}
    return _panel(
        "timeseries",
        title,
        description,
        targets,
        unit,
        w,
        h,
        defaults={k: v for k, v in defaults.items() if v is not None},
        options={
            "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        overrides=overrides,
    )


def _reduce_last() -> dict:
    return {"calcs": ["lastNotNull"], "fields": "", "values": False}


def stat(
    title: str,
    description: str,
    targets: list[dict],
    unit: str,
    *,
    w: int = 6,
    h: int = 8,
    thresholds: dict = GREEN_ONLY,
    mappings: list[dict] | None = None,
    decimals: int | None = None,
    graph: bool = False,
    overrides: list[dict] | None = None,
) -> dict:
    defaults: dict[str, Any] = {"thresholds": thresholds, "color": {"mode": "thresholds"}, "mappings": mappings or []}
    if decimals is not None:
        defaults["decimals"] = decimals
    return _panel(
        "stat",
        title,
        description,
        targets,
        unit,
        w,
        h,
        defaults=defaults,
        options={
            "reduceOptions": _reduce_last(),
            "colorMode": "value",
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "textMode": "auto",
            "orientation": "auto",
        },
        overrides=overrides,
    )


def bargauge(title: str, description: str, targets: list[dict], unit: str, *, w: int = 6, h: int = 8) -> dict:
    return _panel(
        "bargauge",
        title,
        description,
        targets,
        unit,
        w,
        h,
        defaults={"decimals": 0, "min": 0, "thresholds": GREEN_ONLY, "color": {"mode": "thresholds"}},
        options={
            "reduceOptions": _reduce_last(),
            "orientation": "vertical",
            "displayMode": "basic",
            "showUnfilled": True,
            "valueMode": "color",
        },
    )


def heatmap(
    title: str, description: str, targets: list[dict], unit: str, *, y_unit: str, w: int = 6, h: int = 8
) -> dict:
    """Cells count ``unit`` (e.g. users) per bucket of a histogram whose bounds are in ``y_unit``."""
    return _panel(
        "heatmap",
        title,
        description,
        targets,
        unit,
        w,
        h,
        options={
            "calculate": False,
            "yAxis": {"axisPlacement": "left", "unit": y_unit},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "rowsFrame": {"layout": "le"},
            "tooltip": {"show": True, "yHistogram": True},
        },
    )


def buckets(bucket_selector: str, *, instant: bool) -> dict:
    """The ``le`` buckets of a scrape-time histogram, summed over workers; the ``heatmap`` format de-cumulates
    them into the count per bucket (bar gauge: now; heatmap: over time)."""
    return q(f"sum by (le) ({bucket_selector})", "{{le}}", instant=instant, fmt="heatmap")


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[dict, ...]


def row(title: str, *panels: dict) -> Row:
    return Row(title, panels)


def _layout(rows: list[Row]) -> list[dict]:
    """Rows top to bottom, each a full-width header followed by its panels placed left to right and wrapped at 24
    columns (a line is as tall as its tallest panel); ids count from 1 in reading order."""
    ids = itertools.count(1)
    out, y = [], 0
    for r in rows:
        out.append(
            {
                "type": "row",
                "id": next(ids),
                "title": r.title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": GRID_COLUMNS, "x": 0, "y": y},
            }
        )
        y += 1
        x = line_h = 0
        for p in r.panels:
            w, h = p["gridPos"]["w"], p["gridPos"]["h"]
            if x + w > GRID_COLUMNS:
                x, y, line_h = 0, y + line_h, 0
            out.append({**p, "id": next(ids), "gridPos": {"h": h, "w": w, "x": x, "y": y}})
            x, line_h = x + w, max(line_h, h)
        y += line_h
    return out


def dashboard(file: str, description: str, rows: list[Row]) -> dict:
    """A dashboard with the datasource variable, links to the other stream-ctr dashboards and laid-out rows."""
    return {
        "uid": UIDS[file],
        "title": TITLES[file],
        "description": description,
        "tags": ["stream-ctr"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {},
        "schemaVersion": 39,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": _links(file),
        "annotations": _annotations(),
        "templating": _templating(),
        "panels": _layout(rows),
    }


def _links(file: str) -> list[dict]:
    """Links to the other stream-ctr dashboards, keeping the time range and the datasource."""
    return [
        {
            "type": "link",
            "title": TITLES[other].removeprefix("stream-ctr: "),
            "url": f"/d/{uid}",
            "icon": "dashboard",
            "tooltip": TITLES[other],
            "keepTime": True,
            "includeVars": True,
            "targetBlank": False,
            "asDropdown": False,
            "tags": [],
        }
        for other, uid in UIDS.items()
        if other != file
    ]


def _annotations() -> dict:
    """Grafana's built-in annotations and alerts, hidden."""
    return {
        "list": [
            {
                "builtIn": 1,
                "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True,
                "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard",
            }
        ]
    }


def _templating() -> dict:
    """The one dashboard variable: the Prometheus datasource."""
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Prometheus",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "includeAll": False,
                "multi": False,
                "options": [],
                "refresh": 1,
                "regex": "",
                "skipUrlSync": False,
            }
        ]
    }


# --- the three dashboards -----------------------------------------------------------------------------------------

UP_DOWN = mapping((0, "DOWN", "red"), (1, "up", "green"))
STABLE_DRIFTING = mapping((0, "stable", "green"), (1, "DRIFTING", "red"))
EVENTS = sel("stream_ctr_events_total")
DRIFT_BUCKETS = sel("stream_ctr_user_ctr_drift_bucket")
Z_BUCKETS = sel("stream_ctr_user_drift_z_bucket")
GAUC = "stream_ctr_arm_gauc"
FINE_TUNED_GAUC = sel(GAUC, WORKER, f'arm=~"{"|".join(FINE_TUNED)}"')


def per_arm_rate(metric: str) -> str:
    return f"sum by (arm) ({rate(sel(metric))})"


def _pipeline_throughput() -> Row:
    return row(
        "Throughput",
        timeseries(
            "Event throughput by outcome",
            "How many events per second the workers consume, and what happens to them: applied "
            "(learned), duplicate (redelivered, skipped by per-user offsets), dead_letter (failed "
            "validation).",
            [q(f"sum by (outcome) ({rate(EVENTS)})", "{{outcome}}")],
            "ops",
        ),
        timeseries(
            "Dead letters by reason",
            "Why events go to ctr.events.dlq: events per second by validation failure (a closed set of "
            "reasons; the raw bytes and the reason are in the record's headers).",
            [q(f"sum by (reason) ({rate(sel('stream_ctr_dead_letter_total'))})", "{{reason}}")],
            "ops",
        ),
    )


def _pipeline_consumer_lag() -> Row:
    return row(
        "Consumer lag",
        timeseries(
            "Consumer lag per topic and group",
            "Are the consumers keeping up? Events on each topic not yet committed by the group (end "
            "offset - committed offset), summed over the partitions each job owns.",
            [
                q(
                    f"sum by (job, topic, group) ({sel('stream_ctr_consumer_lag_events', ANY_JOB)})",
                    "{{job}} {{topic}} ({{group}})",
                )
            ],
            "short",
            min=0,
        ),
        stat(
            "Stalled partitions",
            "Partitions with events waiting and no committed progress for STREAM_CTR_STALL_AFTER_S: their "
            "users get no updates (alert StreamCtrPartitionStalled).",
            [q(f"sum by (job) ({sel('stream_ctr_partitions_stalled', ANY_JOB)})", "{{job}}")],
            "short",
            thresholds=_steps(("green", None), ("red", 1)),
            decimals=0,
        ),
        stat(
            "Users with state",
            "How many users the workers hold a rolling CTR and heads for (active within STREAM_CTR_USER_IDLE_S).",
            [q(f"sum({sel('stream_ctr_users')})", "users")],
            "short",
            graph=True,
            decimals=0,
        ),
    )


def _pipeline_latency_and_trainer() -> Row:
    return row(
        "Latency and trainer",
        *_worker_latency_panels(),
        *_trainer_panels(),
    )


def _worker_latency_panels() -> tuple[dict, ...]:
    """The worker's test-then-train batch latency, and Faust's offset commits and rebalances."""
    return (
        timeseries(
            "Test-then-train batch latency",
            "How long one personalize batch takes to score with every arm and then learn.",
            [
                q(quantile(p, sel("stream_ctr_batch_seconds_bucket"), rated=True), f"p{round(p * 100)}")
                for p in (0.5, 0.99)
            ],
            "s",
            w=6,
        ),
        timeseries(
            "Offset commits and rebalances (Faust)",
            "How long Faust takes to commit offsets (p50, p99), and the mean duration of this worker's "
            "rebalances including table recovery.",
            [
                *(
                    q(quantile(p, sel("stream_ctr_commit_seconds_bucket"), rated=True), f"commit p{round(p * 100)}")
                    for p in (0.5, 0.99)
                ),
                q(
                    f"sum({sel('stream_ctr_rebalance_seconds_sum')}) / "
                    f"sum({sel('stream_ctr_rebalance_seconds_count')})",
                    "rebalance (mean)",
                ),
            ],
            "s",
            w=6,
        ),
    )


def _trainer_panels() -> tuple[dict, ...]:
    """The trainer's throughput, batch latency and loss."""
    return (
        timeseries(
            "Trainer samples / s",
            "How fast the global model trains: samples per second, and invalid events it skipped.",
            [
                q(f"sum({rate(sel('stream_ctr_trainer_samples_total', TRAINER))})", "trained"),
                q(f"sum({rate(sel('stream_ctr_trainer_skipped_total', TRAINER))})", "skipped (invalid)"),
            ],
            "ops",
            w=6,
        ),
        timeseries(
            "Trainer batch latency",
            "How long the trainer takes to train on one consumed batch.",
            [
                q(
                    quantile(p, sel("stream_ctr_trainer_batch_seconds_bucket", TRAINER), rated=True),
                    f"p{round(p * 100)}",
                )
                for p in (0.5, 0.99)
            ],
            "s",
            w=6,
        ),
        timeseries(
            "Trainer loss",
            "Is the global model still learning? Training logloss of the last mini-batch.",
            [q(f"avg({sel('stream_ctr_trainer_loss', TRAINER)})", "last mini-batch logloss")],
            "none",
            w=6,
            decimals=3,
        ),
    )


def _pipeline_serving() -> Row:
    served = rate(sel("stream_ctr_serving_batch_requests_sum"))
    return row(
        "Serving: /v1/score",
        timeseries(
            "Scoring requests / s",
            "Requests ranked, and requests shed (alert StreamCtrScoringShed): over_capacity = refused 429 at "
            "the door (more than STREAM_CTR_SERVING_MAX_IN_FLIGHT held), deadline = dropped 503 after "
            "waiting past X-Deadline-Ms.",
            [
                q(f"sum({served})", "ranked"),
                q(f"sum by (reason) ({rate(sel('stream_ctr_serving_shed_total'))})", "shed {{reason}}"),
            ],
            "reqps",
            w=8,
            min=0,
        ),
        timeseries(
            "Scoring queue time and event-loop lag",
            "Time from a request's body being read to its ranking starting (p50, p99), and how late each "
            "worker's event loop runs (requests are refused while it is past STREAM_CTR_SERVING_MAX_LAG_MS).",
            [
                *(
                    q(
                        quantile(p, sel("stream_ctr_serving_queue_seconds_bucket"), rated=True),
                        f"queued p{round(p * 100)}",
                    )
                    for p in (0.5, 0.99)
                ),
                q(f"max({sel('stream_ctr_serving_loop_lag_seconds')})", "loop lag (worst worker)"),
            ],
            "s",
            w=8,
            min=0,
        ),
        timeseries(
            "Requests per forward pass",
            "How many scoring requests share one encoding and forward pass (micro-batching): 1 when "
            "traffic is light, more as it grows.",
            [q(f"sum({served}) / sum({rate(sel('stream_ctr_serving_batch_requests_count'))})", "mean")],
            "none",
            w=8,
            min=0,
            decimals=1,
        ),
    )


def _pipeline_model() -> Row:
    return row(
        "Model: trainer -> workers",
        stat(
            "Model version",
            "Do the workers score with the newest model? The oldest version in use on a worker, the newest "
            "the trainer published, and the full snapshots swapped in over the last hour.",
            [
                q(f"min({sel('stream_ctr_model_version')})", "in use (oldest worker)"),
                q(f"max({sel('stream_ctr_model_version', TRAINER)})", "published (trainer)"),
                q(f"sum(increase({sel('stream_ctr_model_swaps_total')}[1h]))", "swaps in 1h"),
            ],
            "none",
            w=6,
            decimals=0,
        ),
        _model_staleness_panel(),
        timeseries(
            "Model age",
            "How stale is the model in use? Seconds since the trainer published the version each "
            "worker scores with (alert StreamCtrModelStale).",
            [q(f"max by (instance) ({sel('stream_ctr_model_age_seconds')})", "{{instance}}")],
            "s",
            w=6,
            min=0,
        ),
        timeseries(
            "Model bytes published by kind",
            "What the model updates cost the broker: bytes per second the trainer writes to the model "
            "topics, deltas (every few samples) and full snapshots (every N deltas and when quiet).",
            [q(f"sum by (kind) ({rate(sel('stream_ctr_model_published_bytes_total', TRAINER), '1m')})", "{{kind}}")],
            "Bps",
            w=6,
            min=0,
        ),
    )


def _model_staleness_panel() -> dict:
    """Events the model in use had not learned when it scored an event, and when it scored a request."""
    return timeseries(
        "Model staleness (events behind)",
        "How many events the model in use had not learned when it scored an event, p50 and p99 over "
        "the last minutes, and the p99 for scoring requests (alert StreamCtrModelStaleness). It grows "
        "when the trainer falls behind the stream.",
        [
            *(
                q(
                    quantile(p, sel("stream_ctr_model_staleness_samples_bucket", WORKER, scored="event"), rated=True),
                    f"events p{round(p * 100)}",
                )
                for p in (0.5, 0.99)
            ),
            q(
                quantile(0.99, sel("stream_ctr_model_staleness_samples_bucket", WORKER, scored="request"), rated=True),
                "requests p99",
            ),
        ],
        "none",
        w=6,
        min=0,
    )


def _pipeline_processes() -> Row:
    return row(
        "Processes",
        timeseries(
            "CPU",
            "CPU time per second of each job (1 = one core busy).",
            [q(f"sum by (job) ({rate(sel('process_cpu_seconds_total', ANY_JOB))})", "{{job}}")],
            "percentunit",
            w=6,
            min=0,
        ),
        timeseries(
            "Resident memory",
            "Resident set size of each job's processes.",
            [q(f"sum by (job) ({sel('process_resident_memory_bytes', ANY_JOB)})", "{{job}}")],
            "bytes",
            w=6,
            min=0,
        ),
        timeseries(
            "Open file descriptors",
            "Open fds of each job's processes (sockets to the broker, RocksDB files).",
            [q(f"sum by (job) ({sel('process_open_fds', ANY_JOB)})", "{{job}}")],
            "short",
            w=6,
            min=0,
        ),
        stat(
            "Scrape health",
            "Can Prometheus scrape every worker and trainer? 1 = the last scrape succeeded.",
            [q(f"up{{{ANY_JOB}}}", "{{job}} {{instance}}")],
            "none",
            mappings=UP_DOWN,
            thresholds=_steps(("red", None), ("green", 1)),
        ),
    )


def pipeline() -> dict:
    return dashboard(
        "pipeline.json",
        "Is the stream flowing? Throughput, dead letters, consumer lag, latency, the "
        "model's version and age on its way from the trainer to the workers, and the processes.",
        [
            _pipeline_throughput(),
            _pipeline_consumer_lag(),
            _pipeline_latency_and_trainer(),
            _pipeline_serving(),
            _pipeline_model(),
            _pipeline_processes(),
        ],
    )


def _drift_detectors() -> Row:
    return row(
        "Detectors (signals: global_ctr, logloss_<arm>)",
        timeseries(
            "Detector alarms per signal",
            "Which detectors fired recently: alarms per signal in the last 5 minutes (ADWIN on every "
            "label for global_ctr, Page-Hinkley on block means of each arm's logloss).",
            [q(f"sum by (signal) (increase({sel('stream_ctr_drift_alarms_total')}[5m]))", "{{signal}}")],
            "short",
            w=8,
            min=0,
        ),
        timeseries(
            "Drift state per signal",
            "When each signal was drifting: 1 from its first alarm until the hold time passes without "
            "another, 0 when stable (any worker drifting counts).",
            [q(f"max by (signal) ({sel('stream_ctr_drift_detected')})", "{{signal}}")],
            "none",
            w=8,
            min=0,
            max=1,
            decimals=0,
            step=True,
        ),
        stat(
            "Drifting now, and for how long",
            "Is any signal drifting right now (stable / DRIFTING), and since how long (seconds since the "
            "episode began on the first worker that saw it; no value while stable).",
            [
                q(f"max by (signal) ({sel('stream_ctr_drift_detected')})", "{{signal}}"),
                q(
                    f"time() - min by (signal) ({sel('stream_ctr_drift_since_timestamp_seconds')})",
                    "{{signal}} drifting for",
                ),
            ],
            "none",
            w=8,
            mappings=STABLE_DRIFTING,
            thresholds=_steps(("green", None), ("red", 1)),
            overrides=[override("B", unit="s", mappings=[], thresholds=_steps(("red", None)))],
        ),
    )


def _drift_inputs() -> Row:
    return row(
        "What the detectors watch",
        timeseries(
            "Global CTR p_g: workers vs trainer",
            "Did the click rate of the whole stream move? The global CTR the workers use (the target "
            "prior of label correction) and the one the trainer publishes.",
            [
                q(f"avg({sel('stream_ctr_global_ctr')})", "in use (workers)"),
                q(f"max({sel('stream_ctr_global_ctr', TRAINER)})", "published (trainer)"),
            ],
            "percentunit",
            w=8,
            decimals=2,
        ),
        timeseries(
            "Online logloss per arm (window)",
            "Does an arm predict worse than it did? Test-then-train logloss over the sliding window, "
            "per arm: the input of the logloss_<arm> detectors.",
            [q(f"avg by (arm) ({sel('stream_ctr_arm_logloss', scope='window')})", "{{arm}}")],
            "none",
            w=8,
            decimals=3,
        ),
        timeseries(
            "Correction magnitude (ft_lc)",
            "How hard label correction pushes: mean |corrected label - raw label| per learned event of "
            "the label-corrected arm. 0 when users' click rates match p_g; it grows as local CTRs "
            "drift away from the global one.",
            [
                q(
                    f"sum({rate(sel('stream_ctr_label_shift_total'))}) / "
                    f"sum({rate(sel('stream_ctr_events_total', outcome='applied'))})",
                    "mean |label shift| per event",
                )
            ],
            "none",
            w=8,
            min=0,
            decimals=3,
        ),
    )


def _drift_gap_across_users() -> Row:
    return row(
        "Local vs global CTR |p_u - p_g| across users",
        timeseries(
            "Drift quantiles across users",
            "How far users' own click rates sit from the global one: quantiles over users of "
            "|p_u - p_g| (one value per user, rebuilt at each scrape, so no rate(); interpolated "
            "inside buckets) and the mean.",
            [
                *(q(quantile(p, DRIFT_BUCKETS), f"p{round(p * 100)}") for p in (0.1, 0.5, 0.9)),
                q(
                    f"sum({sel('stream_ctr_user_ctr_drift_sum')}) / sum({sel('stream_ctr_user_ctr_drift_count')})",
                    "mean",
                ),
            ],
            "percentunit",
            min=0,
        ),
        bargauge(
            "Users per |p_u - p_g| bucket (now)",
            "How many users fall in each drift bucket right now (bucket upper bound shown).",
            [buckets(DRIFT_BUCKETS, instant=True)],
            "short",
        ),
        heatmap(
            "|p_u - p_g| distribution over time",
            "How the users' drift distribution moves: users per bucket at each scrape.",
            [buckets(DRIFT_BUCKETS, instant=False)],
            "short",
            y_unit="percentunit",
        ),
    )


def _drift_drifting_users() -> Row:
    return row(
        "Drifting users (|z|: |window CTR - p_g| in units of the user's own binomial std)",
        timeseries(
            "Drifting users",
            "How many users' window CTR lies significantly away from p_g (|z| above the worker's "
            "threshold; users with few events never count).",
            [q(f"sum({sel('stream_ctr_users_drifting')})", "drifting users")],
            "short",
            w=6,
            min=0,
            decimals=0,
        ),
        timeseries(
            "Share of users drifting",
            "Which share of the active users is drifting (drifting users / users with state).",
            [q(f"sum({sel('stream_ctr_users_drifting')}) / sum({sel('stream_ctr_users')})", "share")],
            "percentunit",
            w=6,
            min=0,
        ),
        timeseries(
            "|z| quantiles across users",
            "How significant the users' gaps are: quantiles over users of |z| = |window CTR - p_g| / "
            "sqrt(p_g (1 - p_g) / n) of each user's window (0 for users with few events).",
            [q(quantile(p, Z_BUCKETS), f"p{round(p * 100)}") for p in (0.5, 0.9, 0.99)],
            "none",
            w=6,
            min=0,
            decimals=2,
        ),
        bargauge(
            "Users per |z| bucket (now)",
            "How many users fall in each |z| bucket right now (bucket upper bound shown, in sampling "
            "standard deviations).",
            [buckets(Z_BUCKETS, instant=True)],
            "short",
        ),
    )


def drift() -> dict:
    return dashboard(
        "drift.json",
        "Has the stream moved? The drift detectors per signal, the global CTR, each "
        "user's CTR against the global one (never a per-user series: distributions across users), "
        "and how hard label correction pushes the labels.",
        [
            _drift_detectors(),
            _drift_inputs(),
            _drift_gap_across_users(),
            _drift_drifting_users(),
        ],
    )


def _ab_shadow_arms() -> Row:
    return row(
        f"Shadow arms: every arm scores every event ({' | '.join(ARMS)})",
        *(
            timeseries(
                f"gAUC per arm ({scope})",
                f"Which arm ranks each user's items best ({scope})? Online gAUC per arm, test-then-train: "
                "every event is scored before it is learned. Averaged over workers; each worker owns a "
                "disjoint set of users.",
                [q(f"avg by (arm) ({sel(GAUC, scope=scope)})", "{{arm}}")],
                "none",
                w=9,
                decimals=3,
            )
            for scope in ("window", "lifetime")
        ),
        stat(
            "Predictions in scope",
            "How many test-then-train predictions the per-arm metrics rest on: the sliding window and the whole run.",
            [q(f"sum by (scope) ({sel('stream_ctr_arm_predictions')})", "{{scope}}")],
            "short",
            decimals=0,
        ),
        timeseries(
            "gAUC lift over global (ft, ft_lc)",
            "Does fine-tuning help ranking? gAUC of each fine-tuned arm minus the global model's, per "
            "scope; below zero it hurts. Differences of a few thousandths are the expected size.",
            [
                q(
                    f"avg by (arm, scope) ({FINE_TUNED_GAUC})\n"
                    f"  - on (scope) group_left\navg by (scope) ({sel(GAUC, arm='global')})",
                    "{{arm}} - global ({{scope}})",
                )
            ],
            "none",
            decimals=4,
        ),
        timeseries(
            "Logloss per arm",
            "Which arm is best calibrated? Online logloss per arm and scope. Label correction trades "
            "calibration to the user's own CTR for ranking, so ft_lc may lose logloss to ft while "
            "winning gAUC.",
            [q(f"avg by (arm, scope) ({sel('stream_ctr_arm_logloss')})", "{{arm}} ({{scope}})")],
            "none",
            decimals=3,
        ),
    )


def _ab_online_experiment() -> Row:
    return row(
        "Online experiment: served rankings per arm (POST /v1/score)",
        *_ab_outcome_panels(),
        *_ab_integrity_panels(),
    )


def _ab_outcome_panels() -> tuple[dict, ...]:
    """What each arm's served rankings got: clicks, traffic and the quality of the served scores."""
    return (
        timeseries(
            "CTR of served items per arm",
            "Which arm's rankings get clicked? Attributed clicks / attributed impressions per arm: "
            "events carrying the request_id of a ranking the arm served.",
            [
                q(
                    f"{per_arm_rate('stream_ctr_ab_clicks_total')} / {per_arm_rate('stream_ctr_ab_impressions_total')}",
                    "{{arm}}",
                )
            ],
            "percentunit",
            decimals=2,
        ),
        timeseries(
            "Scoring requests / s per arm",
            "How much traffic each arm serves: POST /v1/score requests per second per arm (users "
            "inside the experiment's coverage).",
            [q(per_arm_rate("stream_ctr_ab_requests_total"), "{{arm}}")],
            "reqps",
            min=0,
        ),
        timeseries(
            "Served-score quality per arm",
            "How good the scores each arm served were, on the events attributed to them: windowed "
            "gAUC, lifetime logloss and calibration (sum of scores over clicks; 1 = calibrated).",
            [
                q(f"avg by (arm) ({sel(f'stream_ctr_ab_{m}')})", f"{name} {{{{arm}}}}")
                for m, name in (("gauc", "gAUC"), ("logloss", "logloss"), ("calibration", "calibration"))
            ],
            "none",
            decimals=3,
        ),
    )


def _ab_integrity_panels() -> tuple[dict, ...]:
    """Whether the split can be trusted: users per arm, the sample-ratio check, and the events
    that could not be attributed."""
    return (
        stat(
            "Users per arm",
            "How many users each arm has served, counted once per arm: the units of the sample-ratio check.",
            [q(f"sum by (arm) ({sel('stream_ctr_ab_users_total')})", "{{arm}}")],
            "short",
            decimals=0,
        ),
        stat(
            "Sample-ratio p-value (min over workers)",
            "Can the A/B results be trusted? Always-valid (Dirichlet-multinomial) test of users per arm against the "
            "configured weights, safe to watch; below 0.001 the split is broken (alert StreamCtrSampleRatioMismatch).",
            [q(f"min({sel('stream_ctr_ab_srm_p_value')})", "p")],
            "none",
            decimals=4,
            thresholds=_steps(("red", None), ("green", 0.001)),
        ),
        timeseries(
            "Unattributed events by reason",
            "Why events naming a request_id could not be attributed: unknown_request (another "
            "worker, a restart, or pushed out of the pending window), expired, item_not_served.",
            [q(f"sum by (reason) ({rate(sel('stream_ctr_ab_unattributed_total'))})", "{{reason}}")],
            "ops",
            w=24,
            min=0,
        ),
    )


def ab() -> dict:
    return dashboard(
        "ab.json",
        "Which arm wins? The shadow arms (every arm scores every event: global | ft | "
        "ft_lc) and the online experiment (each user served by one arm through POST /v1/score).",
        [
            _ab_shadow_arms(),
            _ab_online_experiment(),
        ],
    )


# --- files --------------------------------------------------------------------------------------------------------


def build() -> dict[str, dict]:
    """``{file name: dashboard}`` of every stream-ctr dashboard."""
    return {"pipeline.json": pipeline(), "drift.json": drift(), "ab.json": ab()}


def render(dashboard: dict) -> str:
    """The committed text of a dashboard: sorted keys, 2-space indent, a trailing newline."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: str | Path) -> list[Path]:
    """Write every dashboard into ``directory``; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, d in build().items():
        path = directory / name
        path.write_text(render(d), encoding="utf-8")
        paths.append(path)
    return paths


def check(directory: str | Path) -> list[str]:
    """What differs between ``directory`` and the generated dashboards: one line per file that is missing,
    differs, or is a JSON file the generator does not make (Grafana would provision it too). Empty when equal."""
    directory = Path(directory)
    generated = build()
    problems = []
    for name, d in generated.items():
        path = directory / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != render(d):
            problems.append(f"{path}: differs from the generated dashboard")
    problems += [
        f"{p}: not generated by stream_ctr.monitoring.dashboards"
        for p in sorted(directory.glob("*.json"))
        if p.name not in generated
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stream_ctr.monitoring.dashboards", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "directory",
        nargs="?",
        default="grafana/dashboards",
        help="where the dashboards live (default: grafana/dashboards, from the repository root)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming each file that differs from the generated one",
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.directory)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("regenerate with: python -m stream_ctr.monitoring.dashboards", file=sys.stderr)
        return 1 if problems else 0
    for path in write(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
