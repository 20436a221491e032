"""How Kafka clients connect (infra.kafka): the arguments every client is built with for
each security profile, Faust's credentials, the topics' durability settings, and that
credentials never reach a repr or a log line.

The development broker speaks neither TLS nor SASL, so these are checked by the
arguments the clients receive (each real client class is built, and stopped there)."""

from __future__ import annotations

import ast
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiokafka
import aiokafka.admin
import kafka
import pytest
from cryptography.hazmat.primitives import serialization
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError

from dev.processes import dev_field_overrides
from infra.audit import record_actions
from infra.audit_relay import AuditRelay
from infra.config import Settings
from infra.kafka import (
    CommittedOffsets,
    RangeReader,
    faust_broker_credentials,
    kafka_client_options,
    read_topic,
    topic_problems,
)
from infra.rules_log import RulesLog
from infra.secrets import SecretNotFound
from infra.topics import create_topics, wanted_topics
from services.cli.dead_letters import ensure_replays_topic
from streams.faust_app import build_app
from tests.grpc_certificates import CertificateAuthority

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "sasl-pa55word-never-shown"
KEY_PASSWORD = "key-pa55word-never-shown"
SECURITY_KEYS = (
    "security_protocol",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
)


class Profiles:
    """The four protocols as a deployment would configure them, with files made here."""

    def __init__(self, directory: Path) -> None:
        authority = CertificateAuthority(directory)
        client = authority.client("availability")
        encrypted_key = directory / "client-encrypted.key"
        key = serialization.load_pem_private_key(client.key_pem, password=None)
        encrypted_key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
            )
        )
        password_file = directory / "sasl-password"
        password_file.write_text(PASSWORD + "\n")
        self.ca_file = str(authority.cert_file)
        self.by_name: dict[str, Settings] = {
            "plaintext": Settings(),
            "ssl": Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=self.ca_file),
            "ssl-client-certificate": Settings(
                kafka_security_protocol="SSL",
                kafka_ssl_ca_file=self.ca_file,
                kafka_ssl_cert_file=str(client.cert_file),
                kafka_ssl_key_file=str(encrypted_key),
                kafka_ssl_key_password=KEY_PASSWORD,
            ),
            "sasl-plaintext-plain": Settings(
                kafka_security_protocol="SASL_PLAINTEXT",
                kafka_sasl_mechanism="PLAIN",
                kafka_sasl_username="availability",
                kafka_sasl_password=PASSWORD,
            ),
            "sasl-ssl-scram-256": Settings(
                kafka_security_protocol="SASL_SSL",
                kafka_sasl_mechanism="SCRAM-SHA-256",
                kafka_sasl_username="availability",
                kafka_sasl_password=PASSWORD,
                kafka_ssl_ca_file=self.ca_file,
            ),
            "sasl-ssl-scram-512-password-file": Settings(
                kafka_security_protocol="SASL_SSL",
                kafka_sasl_mechanism="SCRAM-SHA-512",
                kafka_sasl_username="availability",
                kafka_sasl_password_file=str(password_file),
                kafka_ssl_cert_file=str(client.cert_file),
                kafka_ssl_key_file=str(client.key_file),
            ),
        }


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Profiles:
    return Profiles(tmp_path_factory.mktemp("kafka-tls"))


PROFILE_NAMES = [
    "plaintext",
    "ssl",
    "ssl-client-certificate",
    "sasl-plaintext-plain",
    "sasl-ssl-scram-256",
    "sasl-ssl-scram-512-password-file",
]


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_client_options_per_profile(profiles: Profiles, name: str) -> None:
    settings = profiles.by_name[name]
    options = kafka_client_options(settings)
    protocol = settings.kafka_security_protocol
    assert options["bootstrap_servers"] == "127.0.0.1:9092"
    assert options["security_protocol"] == protocol
    if protocol.endswith("SSL"):
        context = options["ssl_context"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        ours = ((("commonName", "test CA"),),)
        subjects = [c["subject"] for c in context.get_ca_certs()]
        # Our CA alone when it is named; else the system's CAs, not ours.
        assert (subjects == [ours]) == bool(settings.kafka_ssl_ca_file)
    else:
        assert "ssl_context" not in options
    if protocol.startswith("SASL_"):
        assert options["sasl_mechanism"] == settings.kafka_sasl_mechanism
        assert options["sasl_plain_username"] == "availability"
        assert options["sasl_plain_password"] == PASSWORD  # the file's content, stripped
    else:
        assert not {"sasl_mechanism", "sasl_plain_username", "sasl_plain_password"} & set(options)


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_faust_connects_as_the_other_clients_do(profiles: Profiles, name: str) -> None:
    settings = profiles.by_name[name]
    app = build_app(settings, "security-test")
    credentials = app.conf.broker_credentials
    expected = kafka_client_options(settings)
    if name == "plaintext":
        assert credentials is None
    elif name.startswith("ssl"):
        assert isinstance(credentials, SSLCredentials)
    else:
        assert isinstance(credentials, SASLCredentials)
    # What Faust hands its aiokafka consumers, producer and topic admin.
    auth = dict(credentials_to_aiokafka_auth(credentials, app.conf.ssl_context))
    for key in SECURITY_KEYS:
        assert auth.get(key) == expected.get(key), key
    assert isinstance(auth.get("ssl_context"), ssl.SSLContext) == ("ssl_context" in expected)


def test_a_wrong_key_password_or_missing_files_stop_the_client(profiles: Profiles) -> None:
    good = profiles.by_name["ssl-client-certificate"]
    with pytest.raises(ssl.SSLError):
        kafka_client_options(good.model_copy(update={"kafka_ssl_key_password": SecretStr("wrong")}))
    with pytest.raises(FileNotFoundError):
        kafka_client_options(good.model_copy(update={"kafka_ssl_ca_file": "/nonexistent/ca"}))
    sasl = profiles.by_name["sasl-ssl-scram-512-password-file"]
    missing = sasl.model_copy(update={"kafka_sasl_password_file": "/nonexistent/password"})
    with pytest.raises(SecretNotFound, match="/nonexistent/password"):
        kafka_client_options(missing)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_password": "x"}, "USERNAME"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"}, "exactly"),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "x",
                "kafka_sasl_password_file": "/f",
            },
            "exactly",
        ),
        ({"kafka_ssl_cert_file": "/c"}, "both or neither"),
        ({"kafka_security_protocol": "TLS"}, "PLAINTEXT"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "SCRAM"),
        ({"replication_factor": 1}, "MIN_INSYNC_REPLICAS"),
    ],
)
def test_inconsistent_kafka_settings_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)


def test_production_and_development_durability() -> None:
    production = Settings()
    assert (production.replication_factor, production.min_insync_replicas) == (3, 2)
    for topic in wanted_topics(production).values():
        assert topic.replication_factor == 3
        assert topic.topic_configs["min.insync.replicas"] == "2"
    # Topic-specific configs are kept beside it.
    assert wanted_topics(production)[production.audit_topic].topic_configs["cleanup.policy"] == (
        "delete"
    )
    dev = dev_field_overrides()
    assert (dev["replication_factor"], dev["min_insync_replicas"]) == ("1", "1")
    development = Settings(replication_factor=1, min_insync_replicas=1)
    for topic in wanted_topics(development).values():
        assert topic.replication_factor == 1
        assert topic.topic_configs["min.insync.replicas"] == "1"


def test_the_worker_journal_gets_the_same_durability() -> None:
    from streams.app import Processor

    processor = Processor(Settings(redis_url="redis://127.0.0.1:1/0"))
    changelog = processor.states.changelog_topic
    assert processor.app.conf.topic_replication_factor == 3
    assert changelog.config == {"min.insync.replicas": "2"}


# --------------------------------------------------------------- every client, built


class Built(Exception):
    """Raised by the patched client constructors: the arguments are recorded, no
    connection is tried."""


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    for cls in (
        aiokafka.AIOKafkaProducer,
        aiokafka.AIOKafkaConsumer,
        aiokafka.admin.AIOKafkaAdminClient,
        kafka.KafkaProducer,
    ):

        def record(self: Any, *args: Any, _name: str = cls.__name__, **kwargs: Any) -> None:
            calls.append((_name, kwargs))
            raise Built

        monkeypatch.setattr(cls, "__init__", record)
    yield calls


def _clients(settings: Settings) -> dict[str, Callable[[], Awaitable[Any]]]:
    """A way to make each component build its Kafka client."""
    from services.cli.baseline import publish_reset
    from services.webhooks.publisher import Publisher

    async def publisher() -> None:
        await Publisher(settings)._started()

    async def rules_log() -> None:
        log = RulesLog(settings)
        try:
            await log.start()
        finally:
            await log.stop()

    async def audit_relay() -> None:
        await AuditRelay(settings, RulesLog(settings)).start()

    async def push() -> None:
        from services.push.engine import PushEngine

        await PushEngine(settings, [], None, None).run()  # type: ignore[arg-type]

    return {
        "webhooks publisher": publisher,
        "rules log": rules_log,
        "audit relay": audit_relay,
        "audit record": lambda: record_actions(settings, [("r", b"{}")]),
        "push engine": push,
        "topics create": lambda: create_topics(settings),
        "dead-letter ledger topic": lambda: ensure_replays_topic(settings),
        "baseline reset": lambda: publish_reset(settings, None),  # type: ignore[arg-type]
        "read topic": lambda: read_topic(settings, "t"),
        "topic check": lambda: topic_problems(settings, {"t": 1}),
        "gap reader": lambda: RangeReader(settings, "gaps").read(
            "t", 0, 0, 1, max_records=1, max_bytes=1, timeout=5
        ),
        "committed offsets": lambda: CommittedOffsets(settings, "g").committed("t", 0),
    }


@pytest.mark.parametrize("name", ["plaintext", "sasl-ssl-scram-512-password-file"])
async def test_every_client_is_built_with_the_security_options(
    profiles: Profiles, name: str, built: list[tuple[str, dict[str, Any]]]
) -> None:
    settings = profiles.by_name[name]
    expected = kafka_client_options(settings)
    for component, make in _clients(settings).items():
        built.clear()
        with pytest.raises(Built):
            await make()
        assert built, component
        _, kwargs = built[-1]
        for key in (*SECURITY_KEYS, "bootstrap_servers"):
            assert kwargs.get(key) == expected.get(key), (component, key)
        assert isinstance(kwargs.get("ssl_context"), ssl.SSLContext) == (
            "ssl_context" in expected
        ), component


#: Client constructions that do not take kafka_client_options, and why.
EXEMPT = {
    # Probes whether the development broker (plaintext only) is up.
    ("dev/broker.py", "AIOKafkaClient"),
}
CLIENT_CLASSES = {
    "AIOKafkaProducer",
    "AIOKafkaConsumer",
    "AIOKafkaAdminClient",
    "AIOKafkaClient",
    "KafkaProducer",
    "KafkaConsumer",
    "KafkaAdminClient",
}


def test_every_kafka_client_in_the_code_takes_the_central_options() -> None:
    unsafe = []
    for package in ("infra", "streams", "services", "dev", "loadtests", "tests"):
        for path in (ROOT / package).rglob("*.py"):
            relative = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name not in CLIENT_CLASSES or (relative, name) in EXEMPT:
                    continue
                if relative == "tests/unit/test_kafka_security.py":
                    continue
                spread = [ast.unparse(k.value) for k in node.keywords if k.arg is None]
                if not any("kafka_client_options(" in s for s in spread):
                    unsafe.append(f"{relative}:{node.lineno} {name}")
    assert not unsafe, unsafe


# --------------------------------------------------------------- never shown


async def test_credentials_never_reach_reprs_or_logs(
    profiles: Profiles, caplog: pytest.LogCaptureFixture
) -> None:
    settings = profiles.by_name["ssl-client-certificate"].model_copy(
        update={
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_username": "availability",
            "kafka_sasl_password": SecretStr(PASSWORD),
        }
    )
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert PASSWORD not in shown and KEY_PASSWORD not in shown
    credentials = faust_broker_credentials(settings)
    assert PASSWORD not in repr(credentials) and PASSWORD not in str(credentials)
    with caplog.at_level(logging.DEBUG):
        app = build_app(settings, "security-log-test")
        logging.getLogger("infra").info("settings: %s", settings)
        options = kafka_client_options(settings)
        producer = aiokafka.AIOKafkaProducer(**options)
        logging.getLogger("aiokafka").debug("producer %r", producer)
        await producer.stop()
        logging.getLogger("faust").info("conf %r", app.conf)
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    for record in caplog.records:
        text = record.getMessage()
        assert PASSWORD not in text and KEY_PASSWORD not in text, record.name
