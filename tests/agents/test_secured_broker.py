"""stream-ctr against a secured Kafka (tests/support/secured_kafka.py): SASL_SSL with SCRAM-SHA-512, mutual TLS,
and the StandardAuthorizer with only the ACLs of :func:`stream_ctr.broker.acls.service_acls`.

Over each listener the whole path runs on real processes: replay -> worker -> trainer -> ``/v1/score``, with an
API key on the HTTP side; afterwards no log and no ``/metrics`` page holds the Kafka password or the API key.
Each way to be refused (a wrong password, a broker certificate of an untrusted CA, a client without a certificate
on the mTLS listener, a principal denied the topics, or one denied the consumer group) stops ``stream-ctr worker``
within 30 s with an error that names the setting to fix."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
import trustme
from secured_kafka import SecuredKafka, topic_only_acls

from stream_ctr import topics
from stream_ctr.broker.connection import Kafka, Security
from stream_ctr.broker.replay import replay
from stream_ctr.config import Settings
from stream_ctr.process.net import free_port
from stream_ctr.service.stack import Stack

pytestmark = pytest.mark.broker

API_KEY = "sk-secured-broker-test-0123456789"


@pytest.fixture(scope="module")
def secured():
    broker = SecuredKafka().start()
    yield broker
    broker.stop()


def _settings(broker: SecuredKafka, kafka: Kafka, tag: str, **overrides) -> Settings:
    """Settings of a service that connects as ``kafka`` does, on topics of its own, its principal allowed them."""
    env = {
        **broker.env(kafka),
        "STREAM_CTR_TOPIC_PREFIX": f"{tag}.",
        "STREAM_CTR_APP_ID": f"stream-ctr-{tag}",
        "STREAM_CTR_FEATURES": "category,segment",
        "STREAM_CTR_DELTA_EVERY": "1000",
        "STREAM_CTR_BATCH_SIZE": "128",
        "STREAM_CTR_WEB_PORT": str(free_port()),
        "STREAM_CTR_TRAINER_WEB_PORT": str(free_port()),
    }
    return Settings.from_env(env, **overrides)


def _post(url: str, body: dict, key: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=orjson.dumps(body), headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, {"error": err.read().decode()}


def _get(url: str, key: str = API_KEY) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.read()


@pytest.mark.parametrize("listener", ["SASL_SSL", "mTLS"])
def test_replay_worker_trainer_and_scoring_over_each_listener(secured, listener, make_events, tmp_path):
    kafka = secured.sasl() if listener == "SASL_SSL" else secured.mtls()
    keys = tmp_path / "api-keys"
    keys.write_text(f"{hashlib.sha256(API_KEY.encode()).hexdigest()} score,read_users,admin\n")
    settings = _settings(secured, kafka, f"sec-{listener.lower()}", api_keys_file=str(keys))
    # The ACLs as an operator gives them: stream-ctr acls --apply, connecting as the admin user.
    admin = _settings(secured, secured.sasl("admin"), f"sec-{listener.lower()}")
    env = {**admin.to_env(), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "stream_ctr.cli", "acls", "--principal", "User:stream-ctr", "--apply"]
    applied = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0 and applied.stdout.count("created: ALLOW User:stream-ctr") == 12, applied
    events = make_events(users=20, events_per_user=15, seed=31).events
    with Stack(settings, tmp_path / "logs") as stack:
        replay(events, kafka, topics.events(settings).name)  # the replay producer over the same listener
        deadline = time.monotonic() + 120
        while orjson.loads(_get(f"{stack.worker_url}/v1/stats"))["applied"] < len(events):
            assert time.monotonic() < deadline, "the worker did not apply the replay"
            time.sleep(0.5)
        while orjson.loads(_get(f"{stack.settings.trainer_url}/healthz")).get("samples", 0) < len(events):
            assert time.monotonic() < deadline, "the trainer did not learn the replay"
            time.sleep(0.5)
        request = {
            "request_id": f"r-{listener}",
            "user_id": events[0].user_id,
            "candidates": [{"item_id": "i1", "features": {}}],
        }
        status, answer = _post(f"{stack.worker_url}/v1/score", request, API_KEY)
        assert status == 200 and len(answer["items"]) == 1, answer
        pages = [_get(f"{stack.worker_url}/metrics"), _get(f"{stack.settings.trainer_url}/metrics")]
    secret = secured.passwords["stream-ctr"].encode()
    logs = [path.read_bytes() for path in (tmp_path / "logs").glob("*.log")]
    assert logs and all(secret not in text and API_KEY.encode() not in text for text in logs + pages)


def _worker_refused(settings: Settings, tmp_path: Path) -> str:
    """Start ``stream-ctr worker`` with ``settings``: it must exit within 30 s; returns its stderr."""
    env = {**settings.to_env(), "PATH": "/usr/bin:/bin"}
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "stream_ctr.cli", "worker"], env=env, capture_output=True, timeout=60)
    assert time.monotonic() - start < 30 and run.returncode != 0, run.stderr[-2000:]
    return run.stderr.decode()


def test_refusals_name_the_setting_within_30_seconds(secured, tmp_path):
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    no_cert = Kafka(secured.ssl_bootstrap, Security(protocol="SSL", cafile=str(secured.secrets / "ca.pem")))
    base = _settings(secured, secured.sasl(), "sec-refusals")
    secured.allow(topic_only_acls("User:no-group", base.topic("ctr.")))
    cases = {
        "STREAM_CTR_KAFKA_SASL_PASSWORD_FILE": secured.sasl(password_file=wrong),
        "STREAM_CTR_KAFKA_SSL_CAFILE": secured.sasl(cafile=other_ca),
        "STREAM_CTR_KAFKA_SSL_CERTFILE": no_cert,
    }
    for setting, kafka in cases.items():
        err = _worker_refused(_settings(secured, kafka, "sec-refusals"), tmp_path)
        assert setting in err, err[-2000:]
    err = _worker_refused(_settings(secured, secured.sasl("intruder"), "sec-refusals"), tmp_path)
    assert "STREAM_CTR_KAFKA_SASL_USERNAME: user 'intruder' may not use topic sec-refusals.ctr." in err, err[-2000:]
    err = _worker_refused(_settings(secured, secured.mtls("intruder"), "sec-refusals"), tmp_path)
    assert "STREAM_CTR_KAFKA_SSL_CERTFILE" in err and "may not use topic" in err, err[-2000:]
    err = _worker_refused(_settings(secured, secured.sasl("no-group"), "sec-refusals"), tmp_path)
    assert "may not use consumer group stream-ctr-sec-refusals-personalize" in err, err[-2000:]
