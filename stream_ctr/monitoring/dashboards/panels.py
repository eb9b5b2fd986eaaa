"""The building blocks of the dashboards: PromQL pieces, panels (time series, stat, bar gauge, heat map),
rows and their grid layout, and the dashboard frame (links, annotations, the datasource variable).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from stream_ctr.contracts.arms import FINE_TUNED

DS = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24
RATE = "$__rate_interval"

WORKER = 'job="stream-ctr-worker"'
#: Every process that serves ``/v1/score``: the workers and the scorer processes beside them.
SERVING = 'job=~"stream-ctr-worker|stream-ctr-scorer"'
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


def steps(*steps: tuple[str, float | None]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


GREEN_ONLY = steps(("green", None))


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


# --- shared by the three dashboards -----------------------------------------------------------------------------

UP_DOWN = mapping((0, "DOWN", "red"), (1, "up", "green"))
STABLE_DRIFTING = mapping((0, "stable", "green"), (1, "DRIFTING", "red"))
EVENTS = sel("stream_ctr_events_total")
DRIFT_BUCKETS = sel("stream_ctr_user_ctr_drift_bucket")
Z_BUCKETS = sel("stream_ctr_user_drift_z_bucket")
GAUC = "stream_ctr_arm_gauc"
FINE_TUNED_GAUC = sel(GAUC, WORKER, f'arm=~"{"|".join(FINE_TUNED)}"')


def per_arm_rate(metric: str) -> str:
    return f"sum by (arm) ({rate(sel(metric))})"
