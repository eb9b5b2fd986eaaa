"""A start-up check of a Kafka connection: credentials, certificates, and the ACLs of the topics and groups a
process is about to use, each failure as one clear error that names the setting to fix, within seconds.

Without it the clients fail slowly or not at all: kafka-python reports a wrong password or an untrusted certificate
as a bootstrap timeout after 30 s or more, a consumer denied a topic receives nothing and raises nothing, and a
Faust app whose consumer group the ACLs deny waits forever. So every command that talks to an existing broker
(:func:`stream_ctr.broker.kafka.require_broker`), the worker and the trainer included, first calls :func:`check`:

1. **handshake**: one connection to a bootstrap address with aiokafka, which reports the cause (TLS verification,
   SASL authentication) at once: an untrusted broker certificate names ``STREAM_CTR_KAFKA_SSL_CAFILE``, a refused
   login ``STREAM_CTR_KAFKA_SASL_PASSWORD_FILE``, a listener that wants a client certificate
   ``STREAM_CTR_KAFKA_SSL_CERTFILE``, no Kafka answer at all ``STREAM_CTR_KAFKA_SECURITY_PROTOCOL``;
2. **authorisation**: the metadata of the topics (``TOPIC_AUTHORIZATION_FAILED`` names the topic and the principal)
   and the committed offsets of the consumer groups (``GROUP_AUTHORIZATION_FAILED``), as the principal the
   process connects as. ``stream-ctr acls`` prints the ACLs the service needs.
"""

from __future__ import annotations

import asyncio
import ssl

from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.errors import SaslAuthenticationFailed
from kafka.errors import GroupAuthorizationFailedError, KafkaError

from stream_ctr.broker.connection import Kafka, KafkaTarget
from stream_ctr.broker.lag import retrying
from stream_ctr.config import ConfigError

__all__ = ["KafkaAccessError", "check", "principal_of"]

#: Kafka's error code for a topic the principal may not describe.
TOPIC_AUTHORIZATION_FAILED = 29


class KafkaAccessError(ConfigError):
    """The broker refused this process's connection or its use of a topic or group; the message starts with the
    setting to look at."""


def principal_of(kafka: Kafka) -> tuple[str, str]:
    """``(setting, description)`` of who the broker sees: the SASL user, the client certificate, or nobody."""
    sec = kafka.security
    if sec.sasl:
        return "STREAM_CTR_KAFKA_SASL_USERNAME", f"user {sec.username!r}"
    if sec.certfile:
        return "STREAM_CTR_KAFKA_SSL_CERTFILE", f"the certificate in {sec.certfile}"
    return "STREAM_CTR_KAFKA_SECURITY_PROTOCOL", f"an anonymous client ({sec.protocol})"


def check(kafka: KafkaTarget, topics: tuple[str, ...] = (), groups: tuple[str, ...] = (), timeout: float = 15.0):
    """Raise :class:`KafkaAccessError` unless ``kafka`` connects and may use ``topics`` and ``groups``."""
    kafka = Kafka.of(kafka)
    asyncio.run(_handshake(kafka, timeout))
    if topics or groups:
        _authorised(kafka, topics, groups, timeout)


async def _handshake(kafka: Kafka, timeout: float) -> None:
    """One connection (TLS and SASL: their errors have causes here), then a metadata exchange as a client has it
    (a listener that wants SASL closes on a client that sent none after TLS alone)."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.conn import create_conn

    options = kafka.security.client_options()
    failures: list[KafkaAccessError] = []
    for address in kafka.bootstrap.split(","):
        address = address.strip()
        host, _, port = address.rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(host, int(port), **options), timeout)
            conn.close()
            client = AIOKafkaClient(bootstrap_servers=address, request_timeout_ms=int(timeout * 1000), **options)
            try:
                await asyncio.wait_for(client.bootstrap(), timeout)
            finally:
                await client.close()
            return
        except ConnectionRefusedError:
            continue  # nothing listens there: wait_ready's business, not a security failure
        except (TimeoutError, OSError, KafkaError, AioKafkaError) as exc:
            failures.append(_explain(kafka, address, exc, timeout))
    if failures:
        raise failures[0]


def _explain(kafka: Kafka, address: str, exc: BaseException, timeout: float) -> KafkaAccessError:
    """The setting behind a failed handshake with the broker at ``address``."""
    sec, why = kafka.security, str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        if "mismatch" in str(exc):
            return KafkaAccessError(
                f"STREAM_CTR_KAFKA_SSL_CHECK_HOSTNAME: the certificate of the broker at {address} does not name that "
                f"host ({exc.verify_message}); connect by a name it has, or set 0 to skip the check"
            )
        return KafkaAccessError(
            f"STREAM_CTR_KAFKA_SSL_CAFILE: the certificate of the broker at {address} is not signed by a CA in "
            f"{sec.cafile or 'the system trust store'} ({exc.verify_message})"
        )
    if isinstance(exc, ssl.SSLError):
        return KafkaAccessError(
            f"STREAM_CTR_KAFKA_SSL_CERTFILE: the broker at {address} refused the TLS handshake ({why}); a listener "
            f"with mutual TLS needs a client certificate its CA signed ({sec.certfile or 'none is set'})"
        )
    if isinstance(exc, SaslAuthenticationFailed):
        return KafkaAccessError(
            f"STREAM_CTR_KAFKA_SASL_PASSWORD_FILE: the broker at {address} refused user {sec.username!r} with "
            f"{sec.sasl_mechanism} (wrong password in {sec.password_file}, unknown user, or another "
            f"STREAM_CTR_KAFKA_SASL_MECHANISM)"
        )
    if isinstance(exc, TimeoutError):
        why = f"no answer within {timeout:.0f}s"
    if sec.protocol == "SSL" and not sec.certfile:
        return KafkaAccessError(
            f"STREAM_CTR_KAFKA_SSL_CERTFILE: the broker at {address} ended the connection over TLS without a client "
            f"certificate ({why}): a listener with mutual TLS needs one (or another STREAM_CTR_KAFKA_SECURITY_PROTOCOL)"
        )
    return KafkaAccessError(
        f"STREAM_CTR_KAFKA_SECURITY_PROTOCOL: no Kafka handshake with the broker at {address} over "
        f"{sec.protocol} ({why}); does that listener expect another protocol?"
    )


def _authorised(kafka: Kafka, topics: tuple[str, ...], groups: tuple[str, ...], timeout: float) -> None:
    setting, who = principal_of(kafka)
    admin = kafka.admin(request_timeout_ms=int(timeout * 1000))
    try:
        for desc in admin.describe_topics(list(topics)) if topics else []:
            if desc["error_code"] == TOPIC_AUTHORIZATION_FAILED:
                topic = desc.get("topic") or desc.get("name")
                raise KafkaAccessError(
                    f"{setting}: {who} may not use topic {topic} (TOPIC_AUTHORIZATION_FAILED: the broker's "
                    "ACLs; `stream-ctr acls` prints those stream-ctr needs)"
                )
        for group in groups:
            try:
                retrying(lambda: admin.list_group_offsets({group: []}))  # noqa: B023 (called at once)
            except GroupAuthorizationFailedError:
                raise KafkaAccessError(
                    f"{setting}: {who} may not use consumer group {group} (GROUP_AUTHORIZATION_FAILED: the broker's "
                    "ACLs; `stream-ctr acls` prints those stream-ctr needs)"
                ) from None
    finally:
        admin.close()
