"""The compose stack (``docker/compose.yml``) as a user would start it: no Docker engine here, so its structure is
checked instead. Docker Compose itself renders the file (``make compose`` builds the binary), and the rendered
stack must have its healthchecks, restart policies, volumes and Alertmanager. Every stream-ctr service's
environment must be settings a worker accepts, and the brokers must be able to keep the durability those settings
ask for."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stream_ctr.broker.kafka import cache_root
from stream_ctr.config import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yml"
#: The Docker Compose release ``make compose`` builds (its Makefile pin) into the stream-ctr cache.
COMPOSE_VERSION = re.search(r"^COMPOSE_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
#: Services that run until stopped (the others do one job and exit).
LONG_RUNNING = {  # the one-shot jobs (secrets, acls, topics, replay) run once and exit
    "kafka-1",
    "kafka-2",
    "kafka-3",
    "worker",
    "scorer",
    "trainer",
    "trainer-replica",
    "prometheus",
    "alertmanager",
    "grafana",
}


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _settings_of(service: dict, secrets: Path) -> Settings:
    """The settings a service's environment gives, its /secrets files standing for those the secrets service
    makes (validation reads them)."""
    env = {k: str(v) for k, v in service["environment"].items()}
    for key, value in env.items():
        if value.startswith("/secrets/"):
            local = secrets / value.removeprefix("/secrets/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text("a secret\n")
            env[key] = str(local)
    return Settings.from_env(env)  # raises ConfigError naming the key


def test_every_service_environment_is_valid_settings(tmp_path):
    ours = {name: svc for name, svc in _services().items() if svc.get("image") == "stream-ctr:local"}
    assert {"worker", "trainer", "replay", "topics", "acls"} <= set(ours)
    for svc in ours.values():
        _settings_of(svc, tmp_path)


def test_every_kafka_client_uses_sasl_ssl_and_the_brokers_allow_nothing_else(tmp_path):
    services = _services()
    ours = {name: svc for name, svc in services.items() if svc.get("image") == "stream-ctr:local"}
    for name, svc in ours.items():
        settings = _settings_of(svc, tmp_path)
        assert settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_ssl_check_hostname, name
        expected = "admin" if name == "acls" else "stream-ctr"  # only the ACL job is the admin
        assert settings.kafka_sasl_username == expected, name
        assert svc["environment"]["STREAM_CTR_KAFKA_SASL_PASSWORD_FILE"] == f"/secrets/kafka/{expected}.password"
    assert ours["acls"]["command"] == ["acls", "--principal", "User:stream-ctr", "--apply"]
    assert ours["topics"]["depends_on"]["acls"]["condition"] == "service_completed_successfully"
    node = (ROOT / "docker" / "security" / "kafka-node.sh").read_text()
    assert 'echo "listeners=SASL_SSL://:9092,CONTROLLER://:9093,SSL://:9094"' in node
    assert '"listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL"' in node
    assert "listener.name.ssl.ssl.client.auth=required" in node
    assert "listener.name.controller.ssl.client.auth=required" in node
    assert "StandardAuthorizer" in node and "ANONYMOUS" not in node and "PLAINTEXT" not in node
    for name, svc in services.items():
        if name.startswith("kafka-"):
            assert not any(k.endswith("LISTENERS") or "PROTOCOL" in k for k in svc["environment"]), name
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/secrets/grafana/admin.password"
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "${GRAFANA_ANONYMOUS:-false}"


def test_brokers_can_hold_the_replication_the_topics_ask_for(tmp_path):
    services = _services()
    brokers = {n: s["environment"] for n, s in services.items() if n.startswith("kafka")}
    settings = _settings_of(services["worker"], tmp_path)
    assert len(brokers) >= settings.replication_factor == 3 and settings.min_insync_replicas == 2
    assert sorted(b["KAFKA_NODE_ID"] for b in brokers.values()) == list(range(1, len(brokers) + 1))
    assert len({b["CLUSTER_ID"] for b in brokers.values()}) == 1
    assert {b["KAFKA_MIN_INSYNC_REPLICAS"] for b in brokers.values()} == {settings.min_insync_replicas}
    for env in brokers.values():
        assert len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == len(brokers)
    assert settings.kafka_bootstrap.count(",") == len(brokers) - 1


# --- Docker Compose renders the file ------------------------------------------------------------------------------


def _compose_command() -> list[str]:
    """The binary ``make compose`` built, else a ``docker compose`` (v2) plugin already installed."""
    built = cache_root() / f"compose-{COMPOSE_VERSION}" / "docker-compose"
    if built.exists():
        return [str(built)]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    pytest.skip(f"no docker compose v2: `make compose` builds {built}")


def _compose(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_trainer_is_a_group_of_replicas_meeting_at_the_trainer_service():
    out = _compose("config", "--format", "json", env={"STREAM_CTR_TRAINER_REPLICAS": "3"})
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    head, replica = services["trainer"], services["trainer-replica"]
    assert head["entrypoint"] == replica["entrypoint"] == ["torchrun"]
    assert head["command"] == replica["command"]  # one group: the same rendezvous, the same trainer
    args = head["command"]
    endpoint = args[args.index("--rdzv-endpoint") + 1]
    assert endpoint.split(":")[0] == head["hostname"]  # the trainer service hosts the rendezvous
    assert args[args.index("--nproc-per-node") + 1] == "1" and args[-3:] == ["-m", "stream_ctr.cli", "trainer"]
    assert replica["deploy"]["replicas"] == 3
    prometheus = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "stream-ctr-trainer")
    assert job["dns_sd_configs"][0]["names"] == ["trainer-replica"]  # every node's /metrics


def test_docker_compose_config_is_valid():
    out = _compose("config", "--quiet")
    assert out.returncode == 0, out.stderr


def test_rendered_stack_has_healthchecks_restarts_volumes_and_alertmanager():
    out = _compose("config", "--format", "json")
    assert out.returncode == 0, out.stderr
    stack = json.loads(out.stdout)
    services = stack["services"]
    for name, port in (("worker", 6066), ("scorer", 6066), ("trainer", 6067)):
        check = services[name]["healthcheck"]
        assert f"http://localhost:{port}/healthz" in " ".join(check["test"]), (name, check)
        assert check["test"][0] == "CMD" and check["test"][1] == "python", (name, check)  # the image has no curl
    # Scorer replicas reach the host through one port each, so replicas cannot outnumber the range.
    (scorer_port,) = services["scorer"]["ports"]
    low, high = map(int, scorer_port["published"].split("-"))
    assert scorer_port["target"] == 6066 and high - low + 1 >= 8, scorer_port
    for name in ("worker", "trainer"):  # the replay starts once both hold a model
        assert services["replay"]["depends_on"][name]["condition"] == "service_healthy"
    assert {n for n, s in services.items() if s.get("restart") == "unless-stopped"} == LONG_RUNNING
    assert all(services[n]["restart"] == "no" for n in set(services) - LONG_RUNNING)

    am = services["alertmanager"]
    assert am["image"].startswith("prom/alertmanager:")
    assert {p["target"] for p in am["ports"]} == {9093}
    assert any(
        v["target"] == "/etc/alertmanager/alertmanager.yml" and v["source"].endswith("docker/alertmanager.yml")
        for v in am["volumes"]
    )
    assert "alertmanager" in services["prometheus"]["depends_on"]

    # Every named volume is declared and used; each long-running service with state keeps it in one.
    named = {v["source"]: name for name, s in services.items() for v in s.get("volumes", []) if v["type"] == "volume"}
    assert set(named) == set(stack["volumes"])
    assert {"worker", "prometheus", "alertmanager", "grafana", "kafka-1", "kafka-2", "kafka-3"} <= set(named.values())

    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/var/lib/grafana/dashboards/pipeline.json"
    assert (ROOT / "grafana" / "dashboards" / Path(home).name).exists()
