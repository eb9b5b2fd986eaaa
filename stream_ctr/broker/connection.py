"""How every client of stream-ctr connects to Kafka: the bootstrap address and its security, in one place.

A :class:`Kafka` is a bootstrap address plus a :class:`Security` (TLS, SASL, client certificates), and it is the
only thing in stream-ctr that builds a Kafka client: kafka-python producers, consumers and admin clients, aiokafka
consumers, and the credentials of the Faust apps (whose own aiokafka consumers and producers, changelogs included,
take them from the app). ``tests/stream_ctr/broker/test_connection.py`` proves no other module constructs one.

The security comes from the :class:`~stream_ctr.config.KafkaSecuritySettings` section (docs/SECURITY.md): the
protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), the SASL mechanism and user, the password read from a file
(never an environment value that ``ps`` would show), a CA file, a client certificate and key for mutual TLS, and
hostname verification, on unless switched off. A bare ``host:port`` string is a PLAINTEXT broker (tests, local
brokers).

>>> Kafka.of("127.0.0.1:9092")
Kafka('127.0.0.1:9092', PLAINTEXT)
>>> Security(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", username="svc", password_file="/run/pw")
Security(SASL_SSL, SCRAM-SHA-512 as 'svc', password from /run/pw, system CAs)
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    from stream_ctr.config import Settings

__all__ = ["PROTOCOLS", "SASL_MECHANISMS", "Kafka", "KafkaTarget", "Security"]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

#: What a function that talks to Kafka takes: a connection, the settings (bootstrap and security section), or a
#: ``host:port`` of a PLAINTEXT broker.
KafkaTarget = Union["Kafka", "Settings", str]


@dataclass(frozen=True)
class Security:
    """The security of a Kafka connection. Holds the *path* of the password file, never the password: its repr,
    ``stream-ctr config`` and every log show where the secret is, not what it is."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password_file: str = ""
    cafile: str = ""  # empty: the system's trusted CAs
    certfile: str = ""  # client certificate (PEM) for mutual TLS
    keyfile: str = ""  # its private key (PEM, unencrypted)
    check_hostname: bool = True

    @classmethod
    def of(cls, settings: Settings) -> Security:
        return cls(
            protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_sasl_username,
            password_file=settings.kafka_sasl_password_file,
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            check_hostname=bool(settings.kafka_ssl_check_hostname),
        )

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def __repr__(self) -> str:
        parts = [self.protocol]
        if self.sasl:
            parts.append(f"{self.sasl_mechanism} as {self.username!r}, password from {self.password_file or '?'}")
        if self.tls:
            parts.append(f"CA {self.cafile}" if self.cafile else "system CAs")
            if self.certfile:
                parts.append(f"client certificate {self.certfile}")
            if not self.check_hostname:
                parts.append("hostname NOT verified")
        return f"Security({', '.join(parts)})"

    def password(self) -> str:
        """The SASL password: the first line of ``password_file`` (read at each connection, so it can rotate)."""
        text = Path(self.password_file).read_text()
        return text.splitlines()[0] if text else ""

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of SSL and SASL_SSL (None otherwise): the CA file or the system's CAs, the client
        certificate for mutual TLS, hostname verification unless switched off."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.cafile or None)
        context.check_hostname = self.check_hostname
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile or None)
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of kafka-python's and aiokafka's clients (both take these names)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl:
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password(),
            }
        return options

    def faust_credentials(self) -> Any:
        """The ``broker_credentials`` of a Faust app (None for PLAINTEXT). Faust's SASL credentials without an SSL
        context silently mean SASL_PLAINTEXT; here the protocol decides, never the absence of a context."""
        import faust

        if self.protocol == "SSL":
            return faust.SSLCredentials(self.ssl_context())
        if self.sasl:
            credentials = faust.SASLCredentials(
                username=self.username,
                password=self.password(),
                ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism,
            )
            assert credentials.protocol.value == self.protocol, (credentials.protocol, self.protocol)
            return credentials
        return None


@dataclass(frozen=True)
class Kafka:
    """A broker (``bootstrap``: ``host:port[,host:port...]``) and how to connect to it; builds every client."""

    bootstrap: str
    security: Security = field(default_factory=Security)

    @classmethod
    def of(cls, target: Kafka | Settings | str) -> Kafka:
        """``target`` as a connection: a :class:`Kafka` as it is, :class:`~stream_ctr.config.Settings` with their
        security section, a ``host:port`` string as a PLAINTEXT broker."""
        if isinstance(target, Kafka):
            return target
        if isinstance(target, str):
            return cls(target)
        return cls(target.kafka_bootstrap, Security.of(target))

    def __repr__(self) -> str:
        return f"Kafka({self.bootstrap!r}, {self.security.protocol})"

    @property
    def _options(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, **self.security.client_options()}

    def producer(self, **kwargs: Any) -> KafkaProducer:
        from kafka import KafkaProducer

        return KafkaProducer(**self._options, **kwargs)

    def consumer(self, *topics: str, **kwargs: Any) -> KafkaConsumer:
        from kafka import KafkaConsumer

        return KafkaConsumer(*topics, **self._options, **kwargs)

    def admin(self, **kwargs: Any) -> KafkaAdminClient:
        from kafka import KafkaAdminClient

        return KafkaAdminClient(**self._options, **kwargs)

    def aio_consumer(self, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(*topics, **self._options, **kwargs)
