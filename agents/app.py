"""The one module that configures Faust apps. Each role is its own app id, hence its own consumer group."""

from __future__ import annotations

import tempfile

import faust
from faust.serializers import codecs

from stream_ctr.broker.connection import Security
from stream_ctr.config import ConfigError, Settings
from stream_ctr.learning.state import UserState
from stream_ctr.topics import MAX_RECORD_BYTES

from . import faust_compat

__all__ = ["USER_STATE_CODEC", "create_app", "raw_topic"]

USER_STATE_CODEC = "stream_ctr.userstate"


class _UserStateCodec(codecs.Codec):
    """Table values as :meth:`UserState.to_bytes` (a few hundred bytes a user), not JSON."""

    def _dumps(self, obj: UserState) -> bytes:
        return obj.to_bytes()

    def _loads(self, s: bytes) -> UserState:
        return UserState.from_bytes(s)


codecs.register(USER_STATE_CODEC, _UserStateCodec())
faust_compat.install()  # checks the installed Faust; create_app puts its work-arounds in every app (app_settings)


def create_app(settings: Settings, role: str, web_port: int | None) -> faust.App:
    """The Faust app of ``role`` (its app id and consumer group); ``web_port`` None: no HTTP server."""
    if not settings.kafka_bootstrap:
        raise ConfigError("KAFKA_BOOTSTRAP: required to run an agent (stream-ctr up sets it for you)")
    return faust.App(
        f"{settings.app_id}-{role}",
        **faust_compat.app_settings(settings.kafka_bootstrap, settings.store),  # broker, store, TableManager
        broker_credentials=Security.of(settings).faust_credentials(),  # TLS / SASL of every Faust client
        autodiscover=False,
        datadir=settings.data_dir or tempfile.mkdtemp(prefix=f"stream-ctr-{role}-"),
        topic_partitions=settings.events_partitions,
        topic_replication_factor=settings.replication_factor,  # changelogs: min.insync is the broker's default
        # Offsets are committed often: a crash then replays little, and per-user offsets drop the replays.
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # A killed member is noticed after the session timeout; until then its partitions wait (Faust: 60 s).
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_s,
        producer_acks=-1,  # every record, changelog writes included, acknowledged by all in-sync replicas
        producer_max_request_size=MAX_RECORD_BYTES,
        consumer_auto_offset_reset="earliest",
        web_enabled=web_port is not None,
        web_bind=settings.web_bind,
        web_host=settings.advertised_host,  # canonical URL: where other workers forward a user's requests
        web_port=web_port or 6066,  # Faust's default, never bound when web_port is None
    )


def raw_topic(app: faust.App, spec, **kwargs) -> faust.TopicT:
    """A Faust topic for a declared :class:`~stream_ctr.topics.TopicSpec`, keys and values as raw bytes."""
    return app.topic(spec.name, key_serializer="raw", value_serializer="raw", **kwargs)
