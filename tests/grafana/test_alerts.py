"""The alert rules and where they go, without the service: ``promtool`` checks ``grafana/alerts.yml`` and
``docker/prometheus.yml``, unit-tests every alert on input series (a case where it fires and one where it stays
quiet), a real Prometheus loads the compose config and evaluates every rule with no Alertmanager reachable,
``amtool`` checks ``docker/alertmanager.yml`` and which receiver each severity reaches, and one alert goes end to
end: a fake worker in drift, Prometheus, the real Alertmanager, the warning receiver's webhook.

``tests/grafana/test_dashboards.py`` evaluates the same rules against the running service.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from stream_ctr.process.net import reserve_port

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "grafana" / "alerts.yml"
PROM_CONFIG = ROOT / "docker" / "prometheus.yml"
AM_CONFIG = ROOT / "docker" / "alertmanager.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
ALERTMANAGER = (
    shutil.which("prometheus-alertmanager") or shutil.which("alertmanager") or "/usr/bin/prometheus-alertmanager"
)
SEVERITIES = {"critical", "warning", "info"}


def _run(binary: str, *args: str, package: str = "prometheus") -> subprocess.CompletedProcess:
    if not Path(binary).exists():
        pytest.skip(f"{binary} not installed (Debian package '{package}'; `make prometheus` installs it)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def _alerts() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]


def _compose_layout(dest: Path) -> Path:
    """prometheus.yml and alerts.yml side by side, as docker/compose.yml mounts them in /etc/prometheus."""
    shutil.copy(PROM_CONFIG, dest / "prometheus.yml")
    shutil.copy(ALERTS, dest / "alerts.yml")
    return dest / "prometheus.yml"


# --- the rule file ----------------------------------------------------------------------------------------------------


def test_promtool_check_config_and_rules(tmp_path):
    cfg = _run(PROMTOOL, "check", "config", str(_compose_layout(tmp_path)))
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    rules = _run(PROMTOOL, "check", "rules", str(ALERTS))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_every_alert_has_severity_and_annotations():
    alerts = _alerts()
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), names
    for a in alerts:
        assert a["alert"].startswith("StreamCtr"), a["alert"]
        assert a.get("labels", {}).get("severity") in SEVERITIES, a["alert"]
        assert {"summary", "description"} <= set(a.get("annotations", {})), a["alert"]
    cfg = yaml.safe_load(PROM_CONFIG.read_text())
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


#: ``promtool test rules`` cases (rule_files is set by the test). Every alert of grafana/alerts.yml has an
#: alert_rule_test where it fires and one where it must not (checked by test_every_alert_has_both_cases).
RULE_TESTS = r"""
evaluation_interval: 1m
tests:
  # w1's label-corrected arm falls 0.03 behind global at 5m; its model stops moving at 5m while events flow;
  # 60 of every 660 events are dead-lettered (9.1%).
  - interval: 1m
    input_series:
      - series: 'stream_ctr_arm_gauc{job="stream-ctr-worker", instance="w1", arm="global", scope="window"}'
        values: '0.70x30'
      - series: 'stream_ctr_arm_gauc{job="stream-ctr-worker", instance="w1", arm="ft_lc", scope="window"}'
        values: '0.69x5 0.67x25'
      - series: 'stream_ctr_model_age_seconds{job="stream-ctr-worker", instance="w1"}'
        values: '1x5 60+60x25'
      - series: 'stream_ctr_events_total{job="stream-ctr-worker", instance="w1", outcome="applied"}'
        values: '0+600x30'
      - series: 'stream_ctr_events_total{job="stream-ctr-worker", instance="w1", outcome="dead_letter"}'
        values: '0+60x30'
      - series: 'stream_ctr_dead_letter_total{job="stream-ctr-worker", instance="w1", reason="not_json"}'
        values: '0+60x30'
    alert_rule_test:
      - eval_time: 5m
        alertname: StreamCtrLabelCorrectionBelowGlobal
        exp_alerts: []
      - eval_time: 20m
        alertname: StreamCtrLabelCorrectionBelowGlobal
        exp_alerts:
          - exp_labels: {severity: warning, scope: window}
            exp_annotations:
              summary: "gAUC of ft_lc minus global is -0.030 (window)"
              description: "Per-user heads with label correction rank worse than no fine-tuning for 10m: check head lr/steps/l2."
      - eval_time: 10m
        alertname: StreamCtrModelStale
        exp_alerts: []
      - eval_time: 20m
        alertname: StreamCtrModelStale
        exp_alerts:
          - exp_labels: {severity: warning, instance: w1}
            exp_annotations:
              summary: "the model in use on w1 is 900 s old while events flow"
              description: "No model update from the trainer reached the worker in 5m: the trainer or the ctr.model.updates follower is stuck."
      - eval_time: 12m
        alertname: StreamCtrDeadLetterRateHigh
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations:
              summary: "9.091% of events go to ctr.events.dlq"
              description: "More than 5% of consumed events failed validation over 5m; see the dead-letter panel for the reason."
  # 6 of every 606 events dead-lettered (1%) is below the threshold.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_events_total{job="stream-ctr-worker", instance="w1", outcome="applied"}'
        values: '0+600x30'
      - series: 'stream_ctr_events_total{job="stream-ctr-worker", instance="w1", outcome="dead_letter"}'
        values: '0+6x30'
      - series: 'stream_ctr_dead_letter_total{job="stream-ctr-worker", instance="w1", reason="not_json"}'
        values: '0+6x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: StreamCtrDeadLetterRateHigh
        exp_alerts: []
  # The trainer dead-letters one valid event that raised at 10m; the worker only dead-letters invalid ones.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_dead_letter_total{job="stream-ctr-trainer", instance="t1", reason="internal_error"}'
        values: '0x10 1x20'
      - series: 'stream_ctr_dead_letter_total{job="stream-ctr-worker", instance="w1", reason="internal_error"}'
        values: '0x30'
      - series: 'stream_ctr_dead_letter_total{job="stream-ctr-worker", instance="w1", reason="not_json"}'
        values: '0+60x30'
    alert_rule_test:
      - eval_time: 9m
        alertname: StreamCtrInternalError
        exp_alerts: []
      - eval_time: 12m
        alertname: StreamCtrInternalError
        exp_alerts:
          - exp_labels: {severity: warning, job: stream-ctr-trainer, instance: t1}
            exp_annotations:
              summary: "stream-ctr-trainer t1 dead-lettered 1 valid events that raised (5m)"
              description: "Processing a valid event raised; the event is in ctr.events.dlq with reason internal_error and the exception in its detail header, and the log has the traceback. A bug: report it with the record."
      - eval_time: 20m
        alertname: StreamCtrInternalError
        exp_alerts: []
  # Staleness: 100 events a minute scored, from 5m on 99 of them 20,000 behind (le 50000), 1 fresh; before, all 40.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_model_staleness_samples_bucket{job="stream-ctr-worker", instance="w1", scored="event", le="50"}'
        values: '0+100x5 500+1x30'
      - series: 'stream_ctr_model_staleness_samples_bucket{job="stream-ctr-worker", instance="w1", scored="event", le="10000"}'
        values: '0+100x5 500+1x30'
      - series: 'stream_ctr_model_staleness_samples_bucket{job="stream-ctr-worker", instance="w1", scored="event", le="50000"}'
        values: '0+100x35'
      - series: 'stream_ctr_model_staleness_samples_bucket{job="stream-ctr-worker", instance="w1", scored="event", le="+Inf"}'
        values: '0+100x35'
    alert_rule_test:
      - eval_time: 5m
        alertname: StreamCtrModelStaleness
        exp_alerts: []
      - eval_time: 30m
        alertname: StreamCtrModelStaleness
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations:
              summary: "p99 model staleness is 49.6k events"
              description: "Events are scored by a global model that has not learned the last 10,000+ events before them: the trainer cannot keep up. Check trainer samples/s and its mini-batch size on the Pipeline dashboard; raise STREAM_CTR_TRAINER_BATCH_MAX or give the trainer more CPU."
  # w1 and the scorer s1 rank 100 requests/s and shed 5/s from minute 10 (4.8%); w2 sheds 1 in 1,000 throughout.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_serving_batch_requests_sum{job="stream-ctr-worker", instance="w1"}'
        values: '0+6000x40'
      - series: 'stream_ctr_serving_shed_total{job="stream-ctr-worker", instance="w1", reason="over_capacity"}'
        values: '0x10 0+300x30'
      - series: 'stream_ctr_serving_batch_requests_sum{job="stream-ctr-worker", instance="w2"}'
        values: '0+6000x40'
      - series: 'stream_ctr_serving_shed_total{job="stream-ctr-worker", instance="w2", reason="deadline"}'
        values: '0+6x40'
      - series: 'stream_ctr_serving_batch_requests_sum{job="stream-ctr-scorer", instance="s1"}'
        values: '0+6000x40'
      - series: 'stream_ctr_serving_shed_total{job="stream-ctr-scorer", instance="s1", reason="over_capacity"}'
        values: '0x10 0+300x30'
    alert_rule_test:
      - eval_time: 12m
        alertname: StreamCtrScoringShed
        exp_alerts: []
      - eval_time: 30m
        alertname: StreamCtrScoringShed
        exp_alerts:
          - exp_labels: {severity: warning, instance: w1}
            exp_annotations:
              summary: "w1 sheds 4.762% of scoring requests"
              description: &shed "The process refuses scoring requests (429) or drops them past their deadline (503): more traffic than it can rank. Add scorer processes (stream-ctr scorer) or workers, or raise STREAM_CTR_SERVING_MAX_IN_FLIGHT if its CPU is not busy; see docs/results/serving-load.md for capacity per core."
          - exp_labels: {severity: warning, instance: s1}
            exp_annotations:
              summary: "s1 sheds 4.762% of scoring requests"
              description: *shed
  # The experiment's split breaks on w1 after 5m (p drops below 0.001); w2 stays healthy.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_ab_srm_p_value{job="stream-ctr-worker", instance="w1"}'
        values: '0.4x5 0.0002x20'
      - series: 'stream_ctr_ab_srm_p_value{job="stream-ctr-worker", instance="w2"}'
        values: '0.6x25'
    alert_rule_test:
      - eval_time: 10m
        alertname: StreamCtrSampleRatioMismatch
        exp_alerts: []
      - eval_time: 20m
        alertname: StreamCtrSampleRatioMismatch
        exp_alerts:
          - exp_labels: {severity: critical, instance: w1}
            exp_annotations:
              summary: "sample-ratio mismatch on w1 (p = 0.0002)"
              description: "Users per arm deviate from the experiment's weights; stop reading the A/B results."
  # w1's guardrail on ft_lc's CTR is breached at 5m (the arm is stopped); ft's holds, ft_lc's logloss waits.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_ab_guardrail_state{job="stream-ctr-worker", instance="w1", arm="ft_lc", guardrail="ctr"}'
        values: '0x5 1x20'
      - series: 'stream_ctr_ab_guardrail_state{job="stream-ctr-worker", instance="w2", arm="ft_lc", guardrail="ctr"}'
        values: '-1x25'
      - series: 'stream_ctr_ab_guardrail_state{job="stream-ctr-worker", instance="w1", arm="ft", guardrail="ctr"}'
        values: '0x25'
      - series: 'stream_ctr_ab_guardrail_state{job="stream-ctr-worker", instance="w1", arm="ft_lc", guardrail="logloss"}'
        values: '-1x25'
    alert_rule_test:
      - eval_time: 4m
        alertname: StreamCtrGuardrailStoppedArm
        exp_alerts: []
      - eval_time: 6m
        alertname: StreamCtrGuardrailStoppedArm
        exp_alerts:
          - exp_labels: {severity: warning, arm: ft_lc, guardrail: ctr}
            exp_annotations:
              summary: "arm ft_lc stopped by its ctr guardrail"
              description: "The arm harmed ctr beyond the experiment's tolerance (always-valid test) and was stopped through ctr.experiments: its users are served the control arm. Why and by whom: stream-ctr ab history; undo: stream-ctr ab resume ARM --reason ..."
  # A worker whose model keeps moving (w2), or whose stream is quiet (w3), is not stale; w4 misses a delta once.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_model_age_seconds{job="stream-ctr-worker", instance="w2"}'
        values: '0.2x30'
      - series: 'stream_ctr_events_total{job="stream-ctr-worker", instance="w2", outcome="applied"}'
        values: '0+600x30'
      - series: 'stream_ctr_model_age_seconds{job="stream-ctr-worker", instance="w3"}'
        values: '0+60x30'
      - series: 'stream_ctr_events_total{job="stream-ctr-worker", instance="w3", outcome="applied"}'
        values: '5000x30'
      - series: 'stream_ctr_model_delta_gaps_total{job="stream-ctr-worker", instance="w4"}'
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
          - exp_labels: {severity: info, instance: w4}
            exp_annotations:
              summary: "w4 skipped model deltas after a missed version"
              description: "Deltas were lost (retention) or arrived out of chain; the worker waits for the next full snapshot."
  # w1's partition stalls at 5m for good; w2 blips for one minute (shorter than the 2m hold).
  - interval: 1m
    input_series:
      - series: 'stream_ctr_partitions_stalled{job="stream-ctr-worker", instance="w1"}'
        values: '0x5 1x20'
      - series: 'stream_ctr_partitions_stalled{job="stream-ctr-worker", instance="w2"}'
        values: '0x5 1 0x19'
    alert_rule_test:
      - eval_time: 6m
        alertname: StreamCtrPartitionStalled
        exp_alerts: []
      - eval_time: 10m
        alertname: StreamCtrPartitionStalled
        exp_alerts:
          - exp_labels: {severity: critical, instance: w1}
            exp_annotations:
              summary: "1 partition(s) of ctr.events stalled on w1"
              description: "Events are waiting and the worker's committed offset has not moved: its users get no updates. Restart the worker."
  # Scrapes of worker w1 and the trainer fail from 3m on; w2 answers throughout; a one-minute miss (2m hold)
  # of the trainer at 1m is not an outage.
  - interval: 1m
    input_series:
      - series: 'up{job="stream-ctr-worker", instance="w1"}'
        values: '1x3 0x10'
      - series: 'up{job="stream-ctr-worker", instance="w2"}'
        values: '1x13'
      - series: 'up{job="stream-ctr-trainer", instance="t1"}'
        values: '1 0 1 0x10'
    alert_rule_test:
      - eval_time: 4m
        alertname: StreamCtrWorkerDown
        exp_alerts: []
      - eval_time: 8m
        alertname: StreamCtrWorkerDown
        exp_alerts:
          - exp_labels: {severity: critical, job: stream-ctr-worker, instance: w1}
            exp_annotations:
              summary: "personalize worker w1 is not scraped"
              description: "No /metrics from w1 for 2m: nothing is being personalised there."
      - eval_time: 2m
        alertname: StreamCtrTrainerDown
        exp_alerts: []
      - eval_time: 8m
        alertname: StreamCtrTrainerDown
        exp_alerts:
          - exp_labels: {severity: critical, job: stream-ctr-trainer, instance: t1}
            exp_annotations:
              summary: "global trainer t1 is not scraped"
              description: "No /metrics from the trainer for 2m: no new model snapshots will be published."
  # The users' |p_u - p_g| histogram (a snapshot, not a counter): median 0.08 for 10m, then 0.40.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_user_ctr_drift_bucket{job="stream-ctr-worker", instance="w1", le="0.1"}'
        values: '60x10 10x30'
      - series: 'stream_ctr_user_ctr_drift_bucket{job="stream-ctr-worker", instance="w1", le="0.25"}'
        values: '90x10 20x30'
      - series: 'stream_ctr_user_ctr_drift_bucket{job="stream-ctr-worker", instance="w1", le="0.5"}'
        values: '100x10 70x30'
      - series: 'stream_ctr_user_ctr_drift_bucket{job="stream-ctr-worker", instance="w1", le="+Inf"}'
        values: '100x40'
    alert_rule_test:
      - eval_time: 10m
        alertname: StreamCtrDriftMedianHigh
        exp_alerts: []
      - eval_time: 20m
        alertname: StreamCtrDriftMedianHigh
        exp_alerts: []
      - eval_time: 30m
        alertname: StreamCtrDriftMedianHigh
        exp_alerts:
          - exp_labels: {severity: info}
            exp_annotations:
              summary: "median user CTR drift is 0.40"
              description: "Half of the users have |local CTR - global CTR| above 0.25 for 15m."
  # 100 batches a minute, all under 0.5 s for 10m; then 90 of every 100 take 1-2.5 s (p99 about 2.5 s).
  - interval: 1m
    input_series:
      - series: 'stream_ctr_batch_seconds_bucket{job="stream-ctr-worker", instance="w1", le="0.5"}'
        values: '0+100x10 1010+10x20'
      - series: 'stream_ctr_batch_seconds_bucket{job="stream-ctr-worker", instance="w1", le="1"}'
        values: '0+100x10 1010+10x20'
      - series: 'stream_ctr_batch_seconds_bucket{job="stream-ctr-worker", instance="w1", le="2.5"}'
        values: '0+100x30'
      - series: 'stream_ctr_batch_seconds_bucket{job="stream-ctr-worker", instance="w1", le="+Inf"}'
        values: '0+100x30'
    alert_rule_test:
      - eval_time: 10m
        alertname: StreamCtrBatchLatencyHigh
        exp_alerts: []
      - eval_time: 30m
        alertname: StreamCtrBatchLatencyHigh
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations:
              summary: "p99 test-then-train batch latency is 2.483s"
              description: "Batches take over a second at p99: consumer lag will grow."
  # Drift detectors on two workers. logloss_ft_lc alarms on w1 at 5m and holds until 15m; global_ctr alarms
  # once on w2 at 11m, between two scrapes of its gauge (only the counter shows it); logloss_global never alarms.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_drift_detected{job="stream-ctr-worker", instance="w1", signal="logloss_ft_lc"}'
        values: '0x4 1x10 0x16'
      - series: 'stream_ctr_drift_since_timestamp_seconds{job="stream-ctr-worker", instance="w1", signal="logloss_ft_lc"}'
        values: '0x4 300x10 0x16'
      - series: 'stream_ctr_drift_alarms_total{job="stream-ctr-worker", instance="w1", signal="logloss_ft_lc"}'
        values: '0x4 1x26'
      - series: 'stream_ctr_drift_detected{job="stream-ctr-worker", instance="w2", signal="global_ctr"}'
        values: '0x30'
      - series: 'stream_ctr_drift_alarms_total{job="stream-ctr-worker", instance="w2", signal="global_ctr"}'
        values: '0x10 1x20'
      - series: 'stream_ctr_drift_detected{job="stream-ctr-worker", instance="w1", signal="logloss_global"}'
        values: '0x30'
      - series: 'stream_ctr_drift_alarms_total{job="stream-ctr-worker", instance="w1", signal="logloss_global"}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 3m
        alertname: StreamCtrDriftDetected
        exp_alerts: []
      - eval_time: 8m
        alertname: StreamCtrDriftDetected
        exp_alerts:
          - exp_labels: {severity: warning, signal: logloss_ft_lc}
            exp_annotations:
              summary: "drift detected on logloss_ft_lc"
              description: "A river drift detector alarmed on logloss_ft_lc in the last 5m or still holds its alarm (drifting since 1970-01-01 00:05:00 +0000 UTC). Arm ft_lc predicts worse than before (Page-Hinkley on its online logloss): taste changed under it; compare the arms' logloss (Drift) and gAUC (A/B dashboard)."
      - eval_time: 12m
        alertname: StreamCtrDriftDetected
        exp_alerts:
          - exp_labels: {severity: warning, signal: logloss_ft_lc}
            exp_annotations:
              summary: "drift detected on logloss_ft_lc"
              description: "A river drift detector alarmed on logloss_ft_lc in the last 5m or still holds its alarm (drifting since 1970-01-01 00:05:00 +0000 UTC). Arm ft_lc predicts worse than before (Page-Hinkley on its online logloss): taste changed under it; compare the arms' logloss (Drift) and gAUC (A/B dashboard)."
          - exp_labels: {severity: warning, signal: global_ctr}
            exp_annotations:
              summary: "drift detected on global_ctr"
              description: "A river drift detector alarmed on global_ctr in the last 5m or still holds its alarm. The click rate of the whole stream moved (ADWIN): check global CTR on the Drift dashboard (workers vs trainer) and the producers; the trainer's model should follow within minutes."
      - eval_time: 25m
        alertname: StreamCtrDriftDetected
        exp_alerts: []
  # Worker lag on ctr.events grows by 100 events a minute on partition 0 (1.7/s) and passes the 1,000 floor at
  # 10m: it fires 10m later. The trainer's large lag is being worked off; another group's small lag grows.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_consumer_lag_events{job="stream-ctr-worker", instance="w1", topic="ctr.events", group="stream-ctr", partition="0"}'
        values: '0+100x40'
      - series: 'stream_ctr_consumer_lag_events{job="stream-ctr-worker", instance="w2", topic="ctr.events", group="stream-ctr", partition="1"}'
        values: '50x40'
      - series: 'stream_ctr_consumer_lag_events{job="stream-ctr-trainer", instance="t1", topic="ctr.events", group="trainer", partition="0"}'
        values: '50000-100x40'
      - series: 'stream_ctr_consumer_lag_events{job="stream-ctr-worker", instance="w3", topic="ctr.events", group="other", partition="0"}'
        values: '0+10x40'
    alert_rule_test:
      - eval_time: 15m
        alertname: StreamCtrConsumerLagGrowing
        exp_alerts: []
      - eval_time: 25m
        alertname: StreamCtrConsumerLagGrowing
        exp_alerts:
          - exp_labels: {severity: warning, job: stream-ctr-worker, topic: ctr.events, group: stream-ctr}
            exp_annotations:
              summary: "stream-ctr-worker falls behind on ctr.events by 1.7 events/s"
              description: "stream-ctr-worker (group stream-ctr) has kept falling behind on ctr.events for over 10m and is over 1,000 events behind: it cannot keep up. Check batch latency and stalled partitions on the Pipeline dashboard; add workers (up to one per partition) or give the trainer more CPU."
  # The trainer reads every partition without a consumer group (its position is in its snapshots; group label
  # "trainer"): its lag grows too.
  - interval: 1m
    input_series:
      - series: 'stream_ctr_consumer_lag_events{job="stream-ctr-trainer", instance="t1", topic="ctr.events", group="trainer", partition="3"}'
        values: '2000+60x40'
    alert_rule_test:
      - eval_time: 5m
        alertname: StreamCtrConsumerLagGrowing
        exp_alerts: []
      - eval_time: 15m
        alertname: StreamCtrConsumerLagGrowing
        exp_alerts:
          - exp_labels: {severity: warning, job: stream-ctr-trainer, topic: ctr.events, group: trainer}
            exp_annotations:
              summary: "stream-ctr-trainer falls behind on ctr.events by 1.0 events/s"
              description: "stream-ctr-trainer (group trainer) has kept falling behind on ctr.events for over 10m and is over 1,000 events behind: it cannot keep up. Check batch latency and stalled partitions on the Pipeline dashboard; add workers (up to one per partition) or give the trainer more CPU."
"""


def _rule_tests() -> dict:
    return yaml.safe_load(RULE_TESTS)


def test_every_alert_has_both_cases():
    cases: dict[str, set[bool]] = {}
    for group in _rule_tests()["tests"]:
        for case in group["alert_rule_test"]:
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    names = {a["alert"] for a in _alerts()}
    assert set(cases) == names, {"untested": names - set(cases), "unknown": set(cases) - names}
    assert {n for n, kinds in cases.items() if kinds != {True, False}} == set(), cases


def test_promtool_alert_unit_tests(tmp_path):
    spec = {"rule_files": [str(ALERTS)], **_rule_tests()}
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, width=1000))
    out = _run(PROMTOOL, "test", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


# --- a real Prometheus (and Alertmanager) on the compose configs ------------------------------------------------------


def _api(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]


def test_prometheus_evaluates_rules_without_alertmanager(tmp_path, run_prometheus):
    """The compose config as is: its targets and Alertmanager do not resolve here, which must cost nothing but
    failed scrapes (up == 0) and failed notifications in the log; every rule is loaded and evaluates."""
    cfg = _compose_layout(tmp_path)
    # A 1 s evaluation, as tests/grafana/test_dashboards.py runs it, so that every rule has run within seconds.
    cfg.write_text(cfg.read_text().replace("evaluation_interval: 5s", "evaluation_interval: 1s"))
    url, server = run_prometheus(cfg, tmp_path)
    with server:
        rules: list[dict] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rules = [r for g in _api(f"{url}/api/v1/rules")["groups"] for r in g["rules"]]
            if rules and all(r["health"] != "unknown" for r in rules):
                break
            time.sleep(0.5)
        assert {r["name"] for r in rules} == {a["alert"] for a in _alerts()}
        bad = {r["name"]: (r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"}
        assert not bad, bad
        # Prometheus sends to the compose stack's Alertmanager (unreachable here); discovery hands the static
        # target to the notifier within a few seconds.
        while time.monotonic() < deadline:
            if ams := _api(f"{url}/api/v1/alertmanagers")["activeAlertmanagers"]:
                break
            time.sleep(0.5)
        assert [a["url"] for a in ams] == ["http://alertmanager:9093/api/v2/alerts"], ams


class _Http(http.server.ThreadingHTTPServer):
    """A local HTTP server in a thread: serves ``body`` on GET, keeps (path, JSON) of every POST."""

    def __init__(self, body: bytes = b""):
        posts: list[tuple[str, dict]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                posts.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.posts = posts
        self.address = f"127.0.0.1:{self.server_address[1]}"
        self.url = f"http://{self.address}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def _local_alertmanager_config(path: Path, hooks_url: str) -> None:
    """The compose Alertmanager config at ``path``, notifying at once, each receiver's webhook on ``hooks_url``."""
    am = yaml.safe_load(AM_CONFIG.read_text())
    for route in (am["route"], *am["route"]["routes"]):
        route["group_wait"] = "1s"  # notify at once
    for receiver in am["receivers"]:
        for hook in receiver["webhook_configs"]:
            assert hook["url"].startswith("http://example.invalid/stream-ctr/"), hook
            hook["url"] = f"{hooks_url}/{receiver['name']}"
    path.write_text(yaml.safe_dump(am))


def _local_prometheus_config(tmp_path: Path, worker_address: str, am_port: int) -> Path:
    """The compose Prometheus config, scraping ``worker_address`` for worker and trainer every second and alerting
    the Alertmanager on ``am_port``."""
    cfg = _compose_layout(tmp_path)
    text = cfg.read_text()
    for old, new in (
        ("worker:6066", worker_address),
        ("trainer:6067", worker_address),
        ("alertmanager:9093", f"127.0.0.1:{am_port}"),
        ("scrape_interval: 5s", "scrape_interval: 1s"),
        ("evaluation_interval: 5s", "evaluation_interval: 1s"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    cfg.write_text(text)
    return cfg


def test_alert_reaches_its_receiver_end_to_end(tmp_path, run_server, run_prometheus):
    """Prometheus with the compose config scrapes a worker in drift, StreamCtrDriftDetected fires, and the
    compose Alertmanager routes it to the warning receiver's webhook (both configs pointed at local ports)."""
    if not Path(ALERTMANAGER).exists():
        pytest.skip(f"{ALERTMANAGER} not installed (Debian package 'prometheus-alertmanager')")
    worker = _Http(
        b'stream_ctr_drift_detected{signal="global_ctr"} 1\nstream_ctr_drift_detected{signal="logloss_global"} 0\n'
    )
    hooks = _Http()
    try:
        _local_alertmanager_config(tmp_path / "alertmanager.yml", hooks.url)
        am_reservation = reserve_port()  # held until alertmanager stops
        am_port = am_reservation.getsockname()[1]
        am_url = f"http://127.0.0.1:{am_port}"

        cfg = _local_prometheus_config(tmp_path, worker.address, am_port)

        am_argv = [
            ALERTMANAGER,
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        _, prometheus = run_prometheus(cfg, tmp_path)
        with (
            run_server("alertmanager", am_argv, f"{am_url}/-/ready", tmp_path / "alertmanager.log", am_reservation),
            prometheus,
        ):
            deadline = time.monotonic() + 30
            while not hooks.posts and time.monotonic() < deadline:
                time.sleep(0.5)
    finally:
        for server in (worker, hooks):
            server.shutdown()
            server.server_close()
    assert hooks.posts, "no notification reached a receiver in 30 s"
    path, body = hooks.posts[0]
    assert path == "/team", hooks.posts
    assert [(a["status"], a["labels"]) for a in body["alerts"]] == [
        ("firing", {"alertname": "StreamCtrDriftDetected", "severity": "warning", "signal": "global_ctr"})
    ]
    assert body["alerts"][0]["annotations"]["summary"] == "drift detected on global_ctr"
    assert body["groupLabels"] == {"alertname": "StreamCtrDriftDetected"}  # grouped by alertname and job (none)


# --- Alertmanager -----------------------------------------------------------------------------------------------------


def test_amtool_check_config():
    out = _run(AMTOOL, "check-config", str(AM_CONFIG), package="prometheus-alertmanager")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("severity, receiver", [("critical", "oncall"), ("warning", "team"), ("info", "default")])
def test_each_severity_reaches_its_receiver(severity, receiver):
    out = _run(
        AMTOOL,
        "config",
        "routes",
        "test",
        f"--config.file={AM_CONFIG}",
        f"severity={severity}",
        "alertname=StreamCtrTest",
        "job=stream-ctr-worker",
        package="prometheus-alertmanager",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == [receiver], out.stdout
