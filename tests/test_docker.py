"""The compose stack (``docker/compose.yml``) as a user would start it: no Docker engine here, so its structure is
checked instead. Every stream-ctr service's environment must be settings a worker accepts, and the brokers must
be able to keep the durability those settings ask for."""

from pathlib import Path

import yaml

from stream_ctr.config import Settings

COMPOSE = Path(__file__).resolve().parents[1] / "docker" / "compose.yml"


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_every_service_environment_is_valid_settings():
    ours = {name: svc for name, svc in _services().items() if svc.get("image") == "stream-ctr:local"}
    assert {"worker", "trainer", "replay", "topics"} <= set(ours)
    for name, svc in ours.items():
        env = {k: str(v) for k, v in svc["environment"].items()}
        Settings.from_env(env)  # raises ConfigError naming the key


def test_brokers_can_hold_the_replication_the_topics_ask_for():
    services = _services()
    brokers = {n: s["environment"] for n, s in services.items() if n.startswith("kafka")}
    settings = Settings.from_env({k: str(v) for k, v in services["worker"]["environment"].items()})
    assert len(brokers) >= settings.replication_factor == 3 and settings.min_insync_replicas == 2
    assert sorted(b["KAFKA_NODE_ID"] for b in brokers.values()) == list(range(1, len(brokers) + 1))
    assert len({b["CLUSTER_ID"] for b in brokers.values()}) == 1
    assert {b["KAFKA_MIN_INSYNC_REPLICAS"] for b in brokers.values()} == {settings.min_insync_replicas}
    for name, env in brokers.items():
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == len(brokers)
    assert settings.kafka_bootstrap.count(",") == len(brokers) - 1
