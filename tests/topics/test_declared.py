"""The topic declarations: one name per topic, every name prefixed, the record limit the broker accepts."""

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from stream_ctr import topics
from stream_ctr.broker.admin import ensure_topics, topic_partitions
from stream_ctr.config import Settings


def test_names_are_unique_and_prefixed():
    specs = topics.declared(Settings(topic_prefix="p."))
    names = [s.name for s in specs]
    assert len(names) == len(set(names)) and all(n.startswith("p.ctr.") for n in names)
    assert topics.events(Settings(events_partitions=6)).partitions == 6


@pytest.mark.broker
def test_declared_topics_are_created_as_declared(settings_factory):
    settings = settings_factory(events_partitions=3)
    specs = topics.declared(settings)
    assert sorted(ensure_topics(settings.kafka_bootstrap, specs)) == sorted(s.name for s in specs)
    assert ensure_topics(settings.kafka_bootstrap, specs) == []  # idempotent
    assert topic_partitions(settings.kafka_bootstrap, topics.events(settings).name) == [0, 1, 2]
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        name = topics.model(settings).name
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])["topic"][name]
    finally:
        admin.close()
    assert configs["cleanup.policy"]["value"] == "compact"
    assert int(configs["max.message.bytes"]["value"]) == topics.MAX_RECORD_BYTES
    assert configs["min.insync.replicas"]["value"] == "1"


def test_durability_is_the_deployments():
    specs = topics.declared(Settings(replication_factor=3, min_insync_replicas=2))
    assert {(s.replicas, s.kafka_config()["min.insync.replicas"]) for s in specs} == {(3, "2")}
    with pytest.raises(ValueError, match="STREAM_CTR_MIN_INSYNC_REPLICAS"):
        Settings.from_env({"STREAM_CTR_MIN_INSYNC_REPLICAS": "2"})  # more than the one replica
