"""A real Apache Kafka with the security a managed Kafka has: SASL_SSL (SCRAM-SHA-512), mutual TLS, ACLs.

:class:`SecuredKafka` is :class:`~stream_ctr.broker.kafka.LocalKafka` (same jars, same KRaft single node) with
two client listeners on 127.0.0.1, both over TLS with a certificate of a CA made for the test (``trustme``):

- ``SASL_SSL``: SCRAM-SHA-512 users created at format time (``StorageTool format --add-scram``);
- ``SSL`` with ``ssl.client.auth=required``: the client's certificate is its identity, its CN the principal
  (``ssl.principal.mapping.rules``), so the certificate ``CN=stream-ctr`` and the SCRAM user ``stream-ctr`` are one
  principal with one set of ACLs.

The StandardAuthorizer denies whatever no ACL allows. Super users: ``admin`` (SCRAM, creates the ACLs here) and
``broker``, the broker's own certificate: the SSL listener is also the inter-broker one, and the controller
listener is TLS with client certificates too, so no anonymous principal needs any right (with a plaintext
controller listener, ``User:ANONYMOUS`` would have to be a super user). Every principal's password is in a file
under :attr:`SecuredKafka.secrets`.
"""

from __future__ import annotations

import secrets as random_secrets
import shutil
import socket
import tempfile
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from kafka.admin import ACL, ACLOperation, ACLPermissionType, ResourcePattern, ResourceType

from stream_ctr.broker.acls import apply_acls
from stream_ctr.broker.connection import Kafka, Security
from stream_ctr.broker.kafka import LocalKafka
from stream_ctr.process.net import reserve_port

#: The SCRAM users of the broker; each has a client certificate with its name as CN, too.
USERS = ("admin", "stream-ctr", "intruder", "no-group")


def _pkcs8_then_chain(cert: trustme.LeafCert) -> bytes:
    """A PEM keystore as Kafka reads it: the unencrypted PKCS#8 key, then the certificate chain."""
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pkcs8 + b"".join(pem.bytes() for pem in cert.cert_chain_pems)


class SecuredKafka(LocalKafka):
    """Kafka with a SASL_SSL and an mTLS listener and the StandardAuthorizer (see the module doc)."""

    def __init__(self, heap: str = "512m"):
        super().__init__(heap=heap)
        self.secrets = Path(tempfile.mkdtemp(prefix="stream-ctr-secrets-"))
        self.ca = trustme.CA()
        self.sasl_port = self.ssl_port = 0
        self.passwords = {user: random_secrets.token_urlsafe(16) for user in USERS}
        for user, password in self.passwords.items():
            (self.secrets / f"{user}.password").write_text(password + "\n")
            cert = self.ca.issue_cert(user, common_name=user, key_type=trustme.KeyType.RSA)
            cert.private_key_pem.write_to_path(str(self.secrets / f"{user}.key"))
            cert.cert_chain_pems[0].write_to_path(str(self.secrets / f"{user}.crt"))
        self.ca.cert_pem.write_to_path(str(self.secrets / "ca.pem"))
        server = self.ca.issue_cert("localhost", "127.0.0.1", common_name="broker", key_type=trustme.KeyType.RSA)
        (self.secrets / "broker.keystore.pem").write_bytes(_pkcs8_then_chain(server))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    def sasl(self, user: str = "stream-ctr", password_file: Path | None = None, cafile: Path | None = None) -> Kafka:
        """A connection over SASL_SSL as ``user``."""
        return Kafka(
            self.bootstrap,
            Security(
                protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-512",
                username=user,
                password_file=str(password_file or self.secrets / f"{user}.password"),
                cafile=str(cafile or self.secrets / "ca.pem"),
            ),
        )

    def mtls(self, user: str = "stream-ctr") -> Kafka:
        """A connection over the mutual-TLS listener with ``user``'s certificate."""
        return Kafka(
            self.ssl_bootstrap,
            Security(
                protocol="SSL",
                cafile=str(self.secrets / "ca.pem"),
                certfile=str(self.secrets / f"{user}.crt"),
                keyfile=str(self.secrets / f"{user}.key"),
            ),
        )

    def env(self, kafka: Kafka) -> dict[str, str]:
        """The environment of a stream-ctr process that connects as ``kafka`` does."""
        sec = kafka.security
        return {
            "KAFKA_BOOTSTRAP": kafka.bootstrap,
            "STREAM_CTR_KAFKA_SECURITY_PROTOCOL": sec.protocol,
            "STREAM_CTR_KAFKA_SASL_MECHANISM": sec.sasl_mechanism,
            "STREAM_CTR_KAFKA_SASL_USERNAME": sec.username,
            "STREAM_CTR_KAFKA_SASL_PASSWORD_FILE": sec.password_file,
            "STREAM_CTR_KAFKA_SSL_CAFILE": sec.cafile,
            "STREAM_CTR_KAFKA_SSL_CERTFILE": sec.certfile,
            "STREAM_CTR_KAFKA_SSL_KEYFILE": sec.keyfile,
        }

    @property
    def kafka(self) -> Kafka:
        return self.sasl("admin")

    def _config(self, workdir: Path) -> dict[str, str]:
        cfg = super()._config(workdir)
        more: list[socket.socket] = [reserve_port(), reserve_port()]
        self._held += more
        self.sasl_port, self.ssl_port = (sock.getsockname()[1] for sock in more)
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        cfg.update(
            {
                "listeners": f"SASL_SSL://127.0.0.1:{self.sasl_port},SSL://127.0.0.1:{self.ssl_port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                "advertised.listeners": f"SASL_SSL://127.0.0.1:{self.sasl_port},SSL://127.0.0.1:{self.ssl_port}",
                "listener.security.protocol.map": "SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL",
                "inter.broker.listener.name": "SSL",
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(self.secrets / "broker.keystore.pem"),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.secrets / "ca.pem"),
                "listener.name.ssl.ssl.client.auth": "required",
                "listener.name.controller.ssl.client.auth": "required",
                "ssl.principal.mapping.rules": "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users": "User:admin;User:broker",
            }
        )
        return cfg

    def _format_options(self) -> list[str]:
        return [
            opt
            for user, password in self.passwords.items()
            for opt in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]")
        ]

    def allow(self, acls: list[ACL]) -> None:
        """Create ``acls`` as the super user (the jars have no kafka-acls tool: the admin API does it)."""
        apply_acls(self.kafka, acls)

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)
        shutil.rmtree(self.secrets, ignore_errors=True)


def topic_only_acls(principal: str, topic_prefix: str) -> list[ACL]:
    """Every operation on the topics under ``topic_prefix`` and nothing on any group: a principal that can read
    and write the service's topics but join none of its consumer groups."""
    return [
        ACL(
            principal,
            "*",
            ACLOperation.ALL,
            ACLPermissionType.ALLOW,
            ResourcePattern(ResourceType.TOPIC, topic_prefix, pattern_type=_prefixed()),
        )
    ]


def _prefixed():
    from kafka.admin import ACLResourcePatternType

    return ACLResourcePatternType.PREFIXED
