"""Kafka security in one place: no module builds a Kafka client but :mod:`stream_ctr.broker.connection`; each
protocol gives every library the same options; a bad combination of settings fails at start naming the knob; the
password is read from its file and shown nowhere."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

import pytest
import trustme

from stream_ctr.broker.connection import Kafka, Security
from stream_ctr.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[3]

#: Constructors of Kafka clients in the libraries stream-ctr uses.
CLIENTS = {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient", "AIOKafkaConsumer", "AIOKafkaProducer",
           "AIOKafkaAdminClient", "AIOKafkaClient", "create_conn", "App"}  # fmt: skip
#: Where they may be called: the connection itself, the preflight's handshake, and the Faust app (credentials).
ALLOWED = {"stream_ctr/broker/connection.py", "stream_ctr/broker/preflight.py", "agents/app.py"}


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in CLIENTS:
                names.add(name)
    return names


def test_no_module_builds_a_kafka_client_but_the_connection():
    sources = [p for folder in ("stream_ctr", "agents", "topics") for p in (ROOT / folder).rglob("*.py")]
    builders = {str(p.relative_to(ROOT)): calls for p in sources if (calls := _calls(p))}
    assert set(builders) == ALLOWED, builders
    app = (ROOT / "agents/app.py").read_text()
    assert "broker_credentials=Security.of(settings).faust_credentials()" in app


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert = ca.issue_cert("stream-ctr", common_name="stream-ctr")
    cert.private_key_pem.write_to_path(str(folder / "client.key"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "client.crt"))
    (folder / "password").write_text("s3cret-value\nignored second line\n")
    return folder


def test_each_protocol_gives_the_clients_their_options(pki):
    plain = Security().client_options()
    assert plain == {"security_protocol": "PLAINTEXT"}
    sasl = Security("SASL_SSL", "SCRAM-SHA-256", "svc", str(pki / "password"), str(pki / "ca.pem")).client_options()
    assert sasl["security_protocol"] == "SASL_SSL" and sasl["sasl_mechanism"] == "SCRAM-SHA-256"
    assert sasl["sasl_plain_username"] == "svc" and sasl["sasl_plain_password"] == "s3cret-value"
    assert isinstance(sasl["ssl_context"], ssl.SSLContext) and sasl["ssl_context"].check_hostname
    ca, crt, key = (str(pki / name) for name in ("ca.pem", "client.crt", "client.key"))
    options = Security("SSL", cafile=ca, certfile=crt, keyfile=key).client_options()
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    unchecked = Security("SSL", cafile=str(pki / "ca.pem"), check_hostname=False).ssl_context()
    assert unchecked is not None and not unchecked.check_hostname


@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_gets_the_configured_protocol_never_a_silent_downgrade(pki, protocol):
    sasl = protocol.startswith("SASL")
    security = Security(
        protocol,
        username="svc" if sasl else "",
        password_file=str(pki / "password") if sasl else "",
        cafile=str(pki / "ca.pem") if "SSL" in protocol else "",
    )
    assert security.faust_credentials().protocol.value == protocol
    assert Security().faust_credentials() is None


def test_the_password_is_in_no_repr_and_no_description(pki):
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP": "broker:9093",
            "STREAM_CTR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAM_CTR_KAFKA_SASL_USERNAME": "svc",
            "STREAM_CTR_KAFKA_SASL_PASSWORD_FILE": str(pki / "password"),
        }
    )
    kafka = Kafka.of(settings)
    assert kafka.security.password() == "s3cret-value"
    for text in (repr(kafka), repr(kafka.security), settings.describe(), repr(settings), str(settings.to_env())):
        assert "s3cret" not in text
    assert str(pki / "password") in repr(kafka.security)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STREAM_CTR_KAFKA_SECURITY_PROTOCOL": "TLS"}, "STREAM_CTR_KAFKA_SECURITY_PROTOCOL"),
        ({"STREAM_CTR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "STREAM_CTR_KAFKA_SASL_USERNAME"),
        (
            {"STREAM_CTR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "STREAM_CTR_KAFKA_SASL_USERNAME": "svc"},
            "STREAM_CTR_KAFKA_SASL_PASSWORD_FILE",
        ),
        ({"STREAM_CTR_KAFKA_SASL_USERNAME": "svc"}, "STREAM_CTR_KAFKA_SASL_USERNAME"),  # PLAINTEXT would not send it
        ({"STREAM_CTR_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "STREAM_CTR_KAFKA_SSL_CAFILE"),
        ({"STREAM_CTR_KAFKA_SECURITY_PROTOCOL": "SSL", "STREAM_CTR_KAFKA_SSL_KEYFILE": "{key}"}, "KEYFILE"),
        ({"STREAM_CTR_KAFKA_SASL_MECHANISM": "GSSAPI"}, "STREAM_CTR_KAFKA_SASL_MECHANISM"),
        ({"STREAM_CTR_KAFKA_SSL_CHECK_HOSTNAME": "2"}, "STREAM_CTR_KAFKA_SSL_CHECK_HOSTNAME"),
    ],
)
def test_a_bad_combination_fails_at_start_naming_the_knob(pki, env, named):
    env = {k: v.format(key=pki / "client.key") for k, v in env.items()}
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert named in str(err.value).split(":")[0]
