"""The Grafana dashboard and the alert rules, proven against a real Prometheus scraping the real service.

A module fixture starts the service as ``stream-ctr up`` does (:class:`~stream_ctr.stack.Stack`: the session's
Kafka, the personalize worker and the trainer as processes) and keeps synthetic clicks, with malformed records
mixed in, flowing into ``ctr.events``. A real ``prometheus`` scrapes both processes every second with
``docker/prometheus.yml`` (targets rewritten) and evaluates ``grafana/alerts.yml``. Then every panel query of
``grafana/dashboards/stream-ctr.json`` must return data.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream_ctr import topics
from stream_ctr.ab.closed_loop import run_closed_loop
from stream_ctr.arms import ARMS
from stream_ctr.data.synthetic import SyntheticConfig
from stream_ctr.events import InvalidEvent, parse_record, partition_of
from stream_ctr.net import free_port
from stream_ctr.replay import MALFORMED_SAMPLES, replay
from stream_ctr.simulate import SimConfig
from stream_ctr.stack import Stack

pytestmark = [pytest.mark.prometheus, pytest.mark.broker]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "stream-ctr.json"
ALERTS = ROOT / "grafana" / "alerts.yml"
PROM_CONFIG = ROOT / "docker" / "prometheus.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

#: Grafana's built-in interval variables, as a 1 s scrape makes them meaningful.
GRAFANA_VARS = {"__rate_interval": "30s", "__interval": "5s", "__range": "5m", "__range_s": "300"}
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
QUERY_DEADLINE_S = 45.0
USERS = 120


def _need(binary: str) -> None:
    if not Path(binary).exists():
        pytest.skip(f"{binary} not installed (Debian package 'prometheus'); the prometheus tier needs it")


def substitute(expr: str) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in GRAFANA_VARS:
            raise AssertionError(f"dashboard variable ${name} has no test substitution: {expr}")
        return GRAFANA_VARS[name]

    return _VAR.sub(repl, expr)


def _all_panels(panels):
    for p in panels:
        yield p
        yield from _all_panels(p.get("panels", []))


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_targets():
    return [(p["title"], t["refId"], t["expr"]) for p in _all_panels(dashboard()["panels"]) if p["type"] != "row"
            for t in p.get("targets", [])]


# --- the service under test: the real worker and trainer processes on the session broker --------------------------


class _Feeder(threading.Thread):
    """Calls ``step()`` (one chunk of traffic) until stopped; an error is kept for the tests to report."""

    def __init__(self, name: str, step):
        super().__init__(daemon=True, name=name)
        self.step = step
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                self.step()
        except BaseException as exc:  # surfaced by the tests instead of dying silently in a thread
            self.error = exc


def _replay_chunks(events, settings, chunk: int = 600, rate: float = 300.0):
    """Replays ``events`` in chunks at a steady rate, one of each malformed sample per chunk."""
    position = itertools.cycle(range(0, len(events), chunk))

    def step():
        lo = next(position)
        replay(events[lo: lo + chunk], settings.kafka_bootstrap, topics.events(settings).name, rate,
               malformed_every=chunk // len(MALFORMED_SAMPLES))

    return step


def _closed_loop_chunks(settings):
    """Simulated users of the same ids request rankings and click: the experiment panels' traffic."""
    seeds = itertools.count()
    world = SyntheticConfig(users=USERS, items=100, seed=11)

    def step():
        sim = SimConfig(requests=50, candidates=20, k=4, seed=next(seeds), start_ts=time.time())
        run_closed_loop(settings, sim, world)
        time.sleep(0.2)

    return step


@dataclass
class _Service:
    port: int  # the worker's; the trainer's is port + 1
    feeders: list[_Feeder]
    user_ids: set[str]


@pytest.fixture(scope="module")
def service(settings_factory, make_events, tmp_path_factory):
    _need(PROMETHEUS)
    data = make_events(users=USERS, events_per_user=40, seed=11)
    settings = settings_factory(snapshot_every=1500, metrics_window=2000, metrics_refresh_s=1.0)
    with Stack(settings, tmp_path_factory.mktemp("stack-logs")) as stack:
        feeders = [_Feeder("replay", _replay_chunks(data.events, stack.settings)),
                   _Feeder("closed-loop", _closed_loop_chunks(stack.settings))]
        for feeder in feeders:
            feeder.start()
        deadline = time.monotonic() + 120
        while stack.stats()["applied"] < 3000:  # every arm has a gAUC before the first scrape
            errors = [f.error for f in feeders if f.error]
            assert not errors and time.monotonic() < deadline, errors or stack.stats()
            time.sleep(0.5)
        yield _Service(stack.settings.web_port, feeders, {e.user_id for e in data.events})
        for feeder in feeders:
            feeder.stopped.set()
        for feeder in feeders:
            feeder.join(timeout=30)


class _Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path):
        self.url, self.proc, self.log = url, proc, log

    def api(self, path: str, **params) -> dict:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:  # 400/422 carry the PromQL error as JSON
            return json.loads(err.read())

    def query(self, expr: str) -> dict:
        return self.api("/api/v1/query", query=expr)


def write_config(dest: Path, worker_port: int, trainer_port: int) -> Path:
    """``docker/prometheus.yml`` with its targets pointed at the local servers and a 1 s scrape."""
    text = PROM_CONFIG.read_text()
    for target, port in (("worker:6066", worker_port), ("trainer:6067", trainer_port)):
        assert target in text, f"{PROM_CONFIG} no longer scrapes {target}"
        text = text.replace(target, f"127.0.0.1:{port}")
    text, n = re.subn(r"(scrape_interval|evaluation_interval):\s*\S+", r"\1: 1s", text)
    assert n == 2, "expected global scrape_interval and evaluation_interval in docker/prometheus.yml"
    shutil.copy(ALERTS, dest / "alerts.yml")  # rule_files: [alerts.yml], as mounted in docker/compose.yml
    cfg = dest / "prometheus.yml"
    cfg.write_text(text)
    return cfg


@pytest.fixture(scope="module")
def prometheus(service, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    cfg = write_config(tmp, service.port, service.port + 1)
    port = free_port()
    log = tmp / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT)
    prom = _Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready in 20 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- (a) promtool ------------------------------------------------------------------------------------------------


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    _need(PROMTOOL)
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_promtool_check_config_and_rules(tmp_path):
    # The compose layout: prometheus.yml and alerts.yml side by side in /etc/prometheus.
    shutil.copy(PROM_CONFIG, tmp_path / "prometheus.yml")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    cfg = _promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    rules = _promtool("check", "rules", str(ALERTS))
    assert rules.returncode == 0, rules.stdout + rules.stderr


#: promtool unit tests of the alerts that guard the experiment (``promtool test rules``).
RULE_TESTS = """
rule_files: [{alerts}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'stream_ctr_arm_gauc{{job="stream-ctr-worker", instance="w1", arm="global", scope="window"}}'
        values: '0.70x30'
      - series: 'stream_ctr_arm_gauc{{job="stream-ctr-worker", instance="w1", arm="ft_lc", scope="window"}}'
        values: '0.69x5 0.67x25'
      - series: 'stream_ctr_model_age_seconds{{job="stream-ctr-worker", instance="w1"}}'
        values: '1x5 60+60x25'
      - series: 'stream_ctr_events_total{{job="stream-ctr-worker", instance="w1", outcome="applied"}}'
        values: '0+600x30'
      - series: 'stream_ctr_events_total{{job="stream-ctr-worker", instance="w1", outcome="dead_letter"}}'
        values: '0+60x30'
      - series: 'stream_ctr_dead_letter_total{{job="stream-ctr-worker", instance="w1", reason="not_json"}}'
        values: '0+60x30'
    alert_rule_test:
      - eval_time: 5m
        alertname: StreamCtrLabelCorrectionBelowGlobal
        exp_alerts: []
      - eval_time: 20m
        alertname: StreamCtrLabelCorrectionBelowGlobal
        exp_alerts:
          - exp_labels: {{severity: warning, scope: window}}
            exp_annotations:
              summary: "gAUC of ft_lc minus global is -0.030 (window)"
              description: "Per-user heads with label correction rank worse than no fine-tuning for 10m: check head lr/steps/l2."
      - eval_time: 10m
        alertname: StreamCtrModelStale
        exp_alerts: []
      - eval_time: 20m
        alertname: StreamCtrModelStale
        exp_alerts:
          - exp_labels: {{severity: warning, instance: w1}}
            exp_annotations:
              summary: "the model in use on w1 is 900 s old while events flow"
              description: "No model update from the trainer reached the worker in 5m: the trainer or the ctr.model.updates follower is stuck."
      - eval_time: 12m
        alertname: StreamCtrDeadLetterRateHigh
        exp_alerts:
          - exp_labels: {{severity: warning}}
            exp_annotations:
              summary: "9.091% of events go to ctr.events.dlq"
              description: "More than 5% of consumed events failed validation over 5m; see the dead-letter panel for the reason."
  # The experiment's split breaks on w1 after 5m (p drops below 0.001); w2 stays healthy.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_ab_srm_p_value{{job="stream-ctr-worker", instance="w1"}}'
        values: '0.4x5 0.0002x20'
      - series: 'stream_ctr_ab_srm_p_value{{job="stream-ctr-worker", instance="w2"}}'
        values: '0.6x25'
    alert_rule_test:
      - eval_time: 10m
        alertname: StreamCtrSampleRatioMismatch
        exp_alerts: []
      - eval_time: 20m
        alertname: StreamCtrSampleRatioMismatch
        exp_alerts:
          - exp_labels: {{severity: critical, instance: w1}}
            exp_annotations:
              summary: "sample-ratio mismatch on w1 (p = 0.0002)"
              description: "Users per arm deviate from the experiment's weights; stop reading the A/B results."
  # A worker whose model keeps moving (w2), or whose stream is quiet (w3), is not stale; w4 misses a delta once.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_model_age_seconds{{job="stream-ctr-worker", instance="w2"}}'
        values: '0.2x30'
      - series: 'stream_ctr_events_total{{job="stream-ctr-worker", instance="w2", outcome="applied"}}'
        values: '0+600x30'
      - series: 'stream_ctr_model_age_seconds{{job="stream-ctr-worker", instance="w3"}}'
        values: '0+60x30'
      - series: 'stream_ctr_events_total{{job="stream-ctr-worker", instance="w3", outcome="applied"}}'
        values: '5000x30'
      - series: 'stream_ctr_model_delta_gaps_total{{job="stream-ctr-worker", instance="w4"}}'
        values: '0x10 3x20'
    alert_rule_test:
      - eval_time: 30m
        alertname: StreamCtrModelStale
        exp_alerts: []
      - eval_time: 5m
        alertname: StreamCtrModelDeltaGaps
        exp_alerts: []
      - eval_time: 15m
        alertname: StreamCtrModelDeltaGaps
        exp_alerts:
          - exp_labels: {{severity: info, instance: w4}}
            exp_annotations:
              summary: "w4 skipped model deltas after a missed version"
              description: "Deltas were lost (retention) or arrived out of chain; the worker waits for the next full snapshot."
  # w1's partition stalls at 5m for good; w2 blips for one minute (shorter than the 2m hold).
  - interval: 1m
    input_series:
      - series: 'stream_ctr_partitions_stalled{{job="stream-ctr-worker", instance="w1"}}'
        values: '0x5 1x20'
      - series: 'stream_ctr_partitions_stalled{{job="stream-ctr-worker", instance="w2"}}'
        values: '0x5 1 0x19'
    alert_rule_test:
      - eval_time: 6m
        alertname: StreamCtrPartitionStalled
        exp_alerts: []
      - eval_time: 10m
        alertname: StreamCtrPartitionStalled
        exp_alerts:
          - exp_labels: {{severity: critical, instance: w1}}
            exp_annotations:
              summary: "1 partition(s) of ctr.events stalled on w1"
              description: "Events are waiting and the worker's committed offset has not moved: its users get no updates. Restart the worker."
"""


def test_promtool_alert_unit_tests(tmp_path):
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(RULE_TESTS.format(alerts=json.dumps(str(ALERTS))))
    out = _promtool("test", "rules", str(spec))
    assert out.returncode == 0, out.stdout + out.stderr


# --- (b) every panel query returns data from the real Prometheus -------------------------------------------------


def _has_data(resp: dict) -> bool:
    if resp.get("status") != "success":
        return False
    data = resp["data"]
    if data["resultType"] == "scalar":
        values = [data["result"][1]]
    else:
        values = [s["value"][1] for s in data["result"]]
    return any(v not in ("NaN", "+Inf", "-Inf") for v in values)


def test_every_panel_query_returns_data(prometheus, service):
    targets = panel_targets()
    assert len(targets) >= 15
    pending = {(title, ref): substitute(expr) for title, ref, expr in targets}
    last: dict = {}
    deadline = time.monotonic() + QUERY_DEADLINE_S  # rate() needs two scrapes inside its window
    while pending and time.monotonic() < deadline:
        errors = [f.error for f in service.feeders if f.error]
        assert not errors, f"a feeder thread died: {errors!r}"
        for key, expr in list(pending.items()):
            last[key] = prometheus.query(expr)
            if _has_data(last[key]):
                del pending[key]
        if pending:
            time.sleep(1.0)
    failures = "\n".join(f"  {title} [{ref}]: {pending[(title, ref)]}\n    -> {json.dumps(last.get((title, ref)))[:300]}"
                         for title, ref in pending)
    assert not pending, f"panel queries without data after {QUERY_DEADLINE_S:.0f} s:\n{failures}"


def test_panel_values_are_plausible(prometheus):
    """A few panels checked for meaning, not just presence: the numbers come from the core loop."""

    def scalar(expr: str) -> float:
        res = prometheus.query(expr)["data"]["result"]
        assert len(res) == 1, (expr, res)
        return float(res[0]["value"][1])

    assert scalar('sum(stream_ctr_users{job="stream-ctr-worker"})') == USERS
    assert 0.0 < scalar('avg(stream_ctr_global_ctr{job="stream-ctr-worker"})') < 1.0
    assert scalar('max(stream_ctr_model_version{job="stream-ctr-trainer"})') >= 1
    gauc = prometheus.query('stream_ctr_arm_gauc{job="stream-ctr-worker"}')["data"]["result"]
    assert {(s["metric"]["arm"], s["metric"]["scope"]) for s in gauc} == {
        (a, s) for a in ARMS for s in ("window", "lifetime")}
    assert all(0.0 <= float(s["value"][1]) <= 1.0 for s in gauc)
    reasons = prometheus.query('stream_ctr_dead_letter_total{job="stream-ctr-worker"} > 0')["data"]["result"]
    injected = set()
    for key, value in MALFORMED_SAMPLES:
        with pytest.raises(InvalidEvent) as err:
            parse_record(value, key, partition_of(key, 4) if key else 0, 4)
        injected.add(err.value.reason)
    assert {s["metric"]["reason"] for s in reasons} == injected
    served = prometheus.query('sum by (arm) (stream_ctr_ab_requests_total{job="stream-ctr-worker"})')["data"]["result"]
    assert {s["metric"]["arm"] for s in served} == set(ARMS) and all(float(s["value"][1]) > 0 for s in served)
    assert 0.0 <= scalar('min(stream_ctr_ab_srm_p_value{job="stream-ctr-worker"})') <= 1.0
    p50 = scalar('histogram_quantile(0.5, sum by (le) (stream_ctr_user_ctr_drift_bucket{job="stream-ctr-worker"}))')
    assert 0.0 <= p50 <= 0.7


def test_alert_rules_evaluate_cleanly(prometheus):
    deadline = time.monotonic() + QUERY_DEADLINE_S
    while True:
        groups = prometheus.api("/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r["health"] != "unknown" for r in rules) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(rules) >= 6
    bad = {r["name"]: (r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"}
    assert not bad, bad
    # The healthy test service fires nothing but the informational drift alert (its synthetic users drift a lot).
    firing = {r["name"] for r in rules if r["state"] == "firing"}
    assert firing <= {"StreamCtrDriftMedianHigh"}, firing


# --- (c) never a user id as a label ------------------------------------------------------------------------------


def test_no_user_label_or_value(prometheus, service):
    from prometheus_client.parser import text_string_to_metric_families

    users = service.user_ids
    assert len(users) == USERS
    port = service.port
    for url in (f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{port + 1}/metrics"):
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read()
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                assert not {"user", "user_id", "uid"} & set(sample.labels), (family.name, sample.labels)
                assert not users & set(sample.labels.values()), (family.name, sample.labels)

    # And what Prometheus actually stored from the scrapes.
    resp = prometheus.api("/api/v1/labels", **{"match[]": '{job=~"stream-ctr-.*"}'})
    assert resp["status"] == "success"
    names = set(resp["data"])
    assert {"arm", "scope", "outcome", "reason", "le"} <= names, names
    assert not {n for n in names if "user" in n.lower()}, names
    for name in names:
        values = prometheus.api(f"/api/v1/label/{name}/values", **{"match[]": '{job=~"stream-ctr-.*"}'})["data"]
        assert not users & set(values), (name, sorted(users & set(values))[:5])
    # Cardinality does not grow with users: a fixed set of series for 120 users.
    n_series = len(prometheus.api("/api/v1/series", **{"match[]": '{job="stream-ctr-worker"}'})["data"])
    assert n_series < 120, n_series


# --- (d) the dashboard is a well-formed Grafana dashboard --------------------------------------------------------


def test_dashboard_structure():
    d = dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"

    panels = list(_all_panels(d["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert all(isinstance(i, int) for i in ids)
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert {"h", "w", "x", "y"} <= set(g) and all(isinstance(g[k], int) for k in "hwxy"), p["title"]
        assert g["w"] > 0 and g["h"] > 0 and 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
        if p["type"] == "row":
            continue
        assert p["title"] and p["type"] in {"timeseries", "stat", "bargauge", "heatmap", "gauge", "table"}
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        targets = p["targets"]
        assert targets, p["title"]
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)) and all(refs), p["title"]
        for t in targets:
            assert t["datasource"]["uid"] == "${datasource}", (p["title"], t["refId"])
            assert t["expr"].strip(), (p["title"], t["refId"])
            assert "user" not in re.sub(r"stream_ctr_\w+", "", t["expr"]), t["expr"]  # no user label, ever

    exprs = " ".join(e for _, _, e in panel_targets())
    for required in ("stream_ctr_events_total", "stream_ctr_dead_letter_total", "stream_ctr_global_ctr",
                     "stream_ctr_model_version", "stream_ctr_arm_gauc", "stream_ctr_arm_logloss",
                     "stream_ctr_user_ctr_drift_bucket", "stream_ctr_batch_seconds_bucket",
                     "stream_ctr_trainer_samples_total", "stream_ctr_trainer_loss", "stream_ctr_model_age_seconds",
                     "stream_ctr_model_published_bytes_total"):
        assert required in exprs, f"no panel shows {required}"
    assert "histogram_quantile" in exprs and "group_left" in exprs and 'arm=~"ft|ft_lc"' in exprs
