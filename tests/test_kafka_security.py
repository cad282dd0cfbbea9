"""Kafka security for managed clusters: TLS, SASL (PLAIN / SCRAM), AWS MSK IAM, and topics.

TLS is tested for real: a TLS terminator (Python's ``ssl``, with certificates made here)
stands in front of a Tansu broker that advertises the terminator's address, so aiokafka
and Faust clients built from the settings do a real TLS handshake and then speak Kafka.

SASL: Tansu 0.6 (the test broker) implements SCRAM only behind ``--authentication``, and
then refuses the ``AlterUserScramCredentials`` request that creates users unless it comes
from an authenticated client; with its memory-only storage there is no way to create the
first user. So no real SASL handshake is tested here; what is tested is that every client
gets the mechanism and credentials (aiokafka keyword arguments and Faust's credentials).

MSK IAM: the token is local signing, checked by decoding it and against AWS's own signer
(``aws-msk-iam-sasl-signer-python``) with the same static credentials.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError
from botocore.credentials import ReadOnlyCredentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloudinv.core.errors import ConfigError
from cloudinv.core.kafka import (
    COMPACTED_TOPICS,
    MSK_IAM_ACTION,
    MskIamTokenProvider,
    client_kwargs,
    cluster_reachable,
    faust_credentials,
    msk_iam_token,
    prepare_topics,
)
from cloudinv.core.settings import KafkaSettings, load_settings
from cloudinv.core.topics import ALL_TOPICS, Topic, topic_name
from cloudinv.streams.app import StreamConfig, create_app

REPO = Path(__file__).resolve().parent.parent

# -- certificates -----------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    wrong_name_cert: Path
    wrong_name_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    import ipaddress

    d = tmp_path_factory.mktemp("pki")

    def pem(cert: x509.Certificate, name: str) -> Path:
        path = d / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_cert, ca_key = _issue("cloudinv test CA", None, ca=True)
    other_cert, _ = _issue("some other CA", None, ca=True)
    issuer = (ca_cert.subject, ca_key)
    server, server_key = _issue(
        "broker", issuer, san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    wrong, wrong_key = _issue("broker", issuer, san=[x509.DNSName("broker.invalid")])
    client, client_key = _issue("cloudinv-worker", issuer)
    return Pki(
        ca=pem(ca_cert, "ca.pem"),
        other_ca=pem(other_cert, "other-ca.pem"),
        server_cert=pem(server, "server.pem"),
        server_key=_write_key(server_key, d / "server.key"),
        wrong_name_cert=pem(wrong, "wrong.pem"),
        wrong_name_key=_write_key(wrong_key, d / "wrong.key"),
        client_cert=pem(client, "client.pem"),
        client_key=_write_key(client_key, d / "client.key"),
    )


# -- a Tansu broker behind a TLS terminator ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def tls_broker(
    pki: Pki, *, wrong_name: bool = False, require_client_cert: bool = False
) -> AsyncIterator[str]:
    """A fresh Tansu whose advertised address is a TLS terminator; yields that address."""
    from cloudinv.runtime.embedded import resolve_broker_binary

    inner, outer = _free_port(), _free_port()
    proc = await asyncio.create_subprocess_exec(
        str(resolve_broker_binary()),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{inner}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{outer}",
        "--storage-engine",
        "memory://tansu/",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if wrong_name:
        server_ctx.load_cert_chain(pki.wrong_name_cert, pki.wrong_name_key)
    else:
        server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        server_ctx.load_verify_locations(pki.ca)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", inner)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", outer, ssl=server_ctx)
    try:
        for _ in range(100):  # Tansu is ready within a second
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection("127.0.0.1", inner)
                w.close()
                break
            await asyncio.sleep(0.05)
        yield f"127.0.0.1:{outer}"
    finally:
        server.close()
        proc.terminate()
        await proc.wait()


def _tls_settings(bootstrap: str, **extra: Any) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=bootstrap, security_protocol="SSL", topic_prefix="tls", partitions=1, **extra
    )


async def _round_trip(kafka: KafkaSettings) -> bytes:
    """Create the topics, produce one message and consume it, all with client_kwargs."""
    await prepare_topics(kafka)
    topic = topic_name(Topic.CHANGES, kafka.topic_prefix)
    producer = AIOKafkaProducer(**client_kwargs(kafka))
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over tls", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, auto_offset_reset="earliest", group_id=None, **client_kwargs(kafka)
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=20)
        value: bytes = message.value
        return value
    finally:
        await consumer.stop()


async def _cannot_connect(kafka: KafkaSettings) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(kafka), request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        await admin.start()
    await admin.close()


async def test_tls_verifies_the_broker_with_the_configured_ca(pki: Pki) -> None:
    async with tls_broker(pki) as bootstrap:
        assert await _round_trip(_tls_settings(bootstrap, ssl_cafile=pki.ca)) == b"over tls"
        # A broker certificate from a CA we were not told to trust is refused.
        await _cannot_connect(_tls_settings(bootstrap, ssl_cafile=pki.other_ca))


async def test_reachability_check_uses_the_security_settings(pki: Pki) -> None:
    async with tls_broker(pki) as bootstrap:
        assert await cluster_reachable(_tls_settings(bootstrap, ssl_cafile=pki.ca), timeout=5)
        untrusted = _tls_settings(bootstrap, ssl_cafile=pki.other_ca)
        assert not await cluster_reachable(untrusted, timeout=5)
        plaintext = KafkaSettings(bootstrap=bootstrap)
        assert not await cluster_reachable(plaintext, timeout=3)


async def test_tls_host_name_check_can_be_turned_off(pki: Pki) -> None:
    async with tls_broker(pki, wrong_name=True) as bootstrap:
        await _cannot_connect(_tls_settings(bootstrap, ssl_cafile=pki.ca))
        relaxed = _tls_settings(bootstrap, ssl_cafile=pki.ca, ssl_check_hostname=False)
        assert await _round_trip(relaxed) == b"over tls"


async def test_mutual_tls_presents_the_client_certificate(pki: Pki) -> None:
    async with tls_broker(pki, require_client_cert=True) as bootstrap:
        await _cannot_connect(_tls_settings(bootstrap, ssl_cafile=pki.ca))
        mutual = _tls_settings(
            bootstrap, ssl_cafile=pki.ca, ssl_certfile=pki.client_cert, ssl_keyfile=pki.client_key
        )
        assert await _round_trip(mutual) == b"over tls"


async def test_faust_worker_consumes_over_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    """The stream worker's app gets the same credentials: its consumer, producer and the
    admin client creating its topics all connect through TLS with the client certificate."""
    async with tls_broker(pki, require_client_cert=True) as bootstrap:
        kafka = _tls_settings(
            bootstrap, ssl_cafile=pki.ca, ssl_certfile=pki.client_cert, ssl_keyfile=pki.client_key
        )
        await prepare_topics(kafka)
        config = StreamConfig(
            bootstrap=bootstrap,
            data_dir=tmp_path,
            app_id="tls-worker",
            topic_prefix=kafka.topic_prefix,
            partitions=1,
            kafka=kafka,
        )
        app = create_app(config)
        received: asyncio.Queue[bytes] = asyncio.Queue()
        source = app.topic(
            topic_name(Topic.ALERTS, kafka.topic_prefix), value_serializer="raw", partitions=1
        )

        async def collect(stream: faust.StreamT[bytes]) -> None:
            async for value in stream:
                await received.put(value)

        app.agent(source, name="collect")(collect)
        await app.start()
        try:
            producer = AIOKafkaProducer(**client_kwargs(kafka))
            await producer.start()
            try:
                await producer.send_and_wait(source.get_topic_name(), b"hello worker")
            finally:
                await producer.stop()
            assert await asyncio.wait_for(received.get(), timeout=60) == b"hello worker"
        finally:
            await app.stop()


def _spawn_worker(env: dict[str, str], cwd: Path, port: int) -> Any:
    import subprocess
    import sys

    log = (cwd / "worker.log").open("wb")
    argv = [sys.executable, "-m", "cloudinv", "worker", "--metrics-port", str(port)]
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc


async def test_worker_process_joins_over_mutual_tls_from_environment_settings(
    pki: Pki, tmp_path: Path, unique: str
) -> None:
    """`cloudinv worker` configured only by CLOUDINV_KAFKA__* variables joins its group
    through the TLS terminator that demands a client certificate."""
    import os
    import signal

    import aiohttp

    async with tls_broker(pki, require_client_cert=True) as bootstrap:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CLOUDINV_KAFKA__BOOTSTRAP": bootstrap,
            "CLOUDINV_KAFKA__SECURITY_PROTOCOL": "SSL",
            "CLOUDINV_KAFKA__SSL_CAFILE": str(pki.ca),
            "CLOUDINV_KAFKA__SSL_CERTFILE": str(pki.client_cert),
            "CLOUDINV_KAFKA__SSL_KEYFILE": str(pki.client_key),
            "CLOUDINV_KAFKA__TOPIC_PREFIX": f"tlsw{unique}",
            "CLOUDINV_KAFKA__PARTITIONS": "1",
            "CLOUDINV_STORAGE__DATA_DIR": str(tmp_path / "data"),
        }
        port = _free_port()
        proc = _spawn_worker(env, tmp_path, port)
        try:
            deadline = time.monotonic() + 60
            status = None
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                while time.monotonic() < deadline and status != 200:
                    assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                            status = resp.status
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.5)
            assert status == 200, (tmp_path / "worker.log").read_text()[-3000:]
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 90)  # a bound on a hang, on a loaded machine


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"},
            "sasl_mechanism SCRAM-SHA-512 needs sasl_username and sasl_password",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
            "sasl_mechanism PLAIN needs sasl_username and sasl_password",
        ),
        ({"security_protocol": "SASL_SSL"}, "security_protocol SASL_SSL needs sasl_mechanism"),
        (
            {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"},
            "sasl_mechanism PLAIN needs security_protocol SASL_SSL",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "AWS_MSK_IAM"},
            "sasl_mechanism AWS_MSK_IAM needs msk_region",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "AWS_MSK_IAM",
                "msk_region": "eu-west-1",
            },
            "AWS_MSK_IAM needs security_protocol SASL_SSL",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"},
            "OAUTHBEARER needs a token source",
        ),
        ({"msk_region": "eu-west"}, "expected an AWS region name"),
    ],
)
def test_security_settings_are_checked_at_start(kafka: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, kafka={"bootstrap": "b1:9096", **kafka})


def test_tls_file_settings_are_checked(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match="only apply with security_protocol SSL or SASL_SSL"):
        load_settings(None, kafka={"bootstrap": "b:9094", "ssl_cafile": str(pki.ca)})
    with pytest.raises(ConfigError, match=r"ssl_cafile = .*does not exist"):
        load_settings(
            None,
            kafka={
                "bootstrap": "b:9094",
                "security_protocol": "SSL",
                "ssl_cafile": str(tmp_path / "missing.pem"),
            },
        )
    with pytest.raises(ConfigError, match="ssl_keyfile needs ssl_certfile"):
        load_settings(
            None,
            kafka={"bootstrap": "b:9094", "security_protocol": "SSL", "ssl_keyfile": str(pki.ca)},
        )
    # Files that exist but are not what they claim fail when the context is built.
    bad = KafkaSettings(
        bootstrap="b:9094", security_protocol="SSL", ssl_certfile=pki.ca, ssl_keyfile=pki.ca
    )
    with pytest.raises(ConfigError, match="kafka TLS files cannot be used"):
        client_kwargs(bad)


def test_section_errors_never_print_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            None,
            kafka={
                "bootstrap": "b:9096",
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "OAUTHBEARER",
                "sasl_password": "hunter2-secret",
            },
        )
    assert "hunter2-secret" not in str(info.value)
    assert "CLOUDINV_KAFKA__" in str(info.value)


def test_environment_configures_scram_over_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDINV_KAFKA__BOOTSTRAP", "b-1.example:9096")
    monkeypatch.setenv("CLOUDINV_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CLOUDINV_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CLOUDINV_KAFKA__SASL_USERNAME", "cloudinv")
    monkeypatch.setenv("CLOUDINV_KAFKA__SASL_PASSWORD", "pw")
    settings = load_settings(None)
    kwargs = client_kwargs(settings.kafka)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"]) == (
        "SCRAM-SHA-512",
        "cloudinv",
    )
    assert kwargs["sasl_plain_password"] == "pw"
    assert settings.masked()["kafka"]["sasl_password"] == "********"


# -- what each mode gives aiokafka and Faust --------------------------------------------------


def test_plaintext_gives_no_tls_and_no_credentials() -> None:
    kafka = KafkaSettings(bootstrap="b:9092")
    assert client_kwargs(kafka) == {"bootstrap_servers": "b:9092", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(kafka) is None
    app = create_app(StreamConfig(bootstrap="b:9092", data_dir=Path("/tmp/x"), kafka=kafka))
    assert app.conf.broker_credentials is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
async def test_sasl_reaches_aiokafka_and_faust(
    mechanism: str, protocol: str, tmp_path: Path
) -> None:
    kafka = KafkaSettings(
        bootstrap="b1:9096,b2:9096",
        security_protocol=protocol,  # type: ignore[arg-type]
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username="cloudinv",
        sasl_password="pw",  # type: ignore[arg-type]
    )
    kwargs = client_kwargs(kafka)
    assert kwargs["bootstrap_servers"] == "b1:9096,b2:9096"
    assert kwargs["security_protocol"] == protocol
    assert kwargs["sasl_mechanism"] == mechanism
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("cloudinv", "pw")
    assert isinstance(kwargs.get("ssl_context"), ssl.SSLContext) == (protocol == "SASL_SSL")
    # aiokafka accepts them (its constructors validate the combination).
    AIOKafkaAdminClient(**kwargs)

    app = create_app(StreamConfig(bootstrap=kafka.bootstrap, data_dir=tmp_path, kafka=kafka))
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == protocol
    assert auth["sasl_mechanism"] == mechanism
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("cloudinv", "pw")


def test_tls_context_follows_the_settings(pki: Pki) -> None:
    kwargs = client_kwargs(
        _tls_settings(
            "b:9094", ssl_cafile=pki.ca, ssl_certfile=pki.client_cert, ssl_keyfile=pki.client_key
        )
    )
    context = kwargs["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "cloudinv test CA"),),)
    ]
    relaxed = client_kwargs(_tls_settings("b:9094", ssl_check_hostname=False))["ssl_context"]
    assert relaxed.verify_mode == ssl.CERT_REQUIRED and not relaxed.check_hostname
    credentials = faust_credentials(_tls_settings("b:9094", ssl_cafile=pki.ca))
    assert isinstance(credentials, faust.SSLCredentials)


# -- AWS MSK IAM ------------------------------------------------------------------------------

STATIC = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None)


def _decode(token: str) -> tuple[Any, dict[str, list[str]]]:
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    parsed = urlparse(url)
    return parsed, parse_qs(parsed.query)


def test_msk_iam_token_is_a_presigned_connect_url() -> None:
    before = int(time.time())
    token, expires_ms = msk_iam_token("eu-west-1", STATIC)
    assert "=" not in token and "+" not in token and "/" not in token  # base64url, unpadded
    url, query = _decode(token)
    assert (url.scheme, url.netloc, url.path) == ("https", "kafka.eu-west-1.amazonaws.com", "/")
    assert query["Action"] == [MSK_IAM_ACTION] == ["kafka-cluster:Connect"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    day = query["X-Amz-Date"][0][:8]
    assert query["X-Amz-Credential"] == [f"AKIDEXAMPLE/{day}/eu-west-1/kafka-cluster/aws4_request"]
    assert query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-SignedHeaders"] == ["host"]
    assert len(query["X-Amz-Signature"][0]) == 64
    assert query["User-Agent"][0].startswith("cloudinv/")
    assert before + 900 <= expires_ms // 1000 <= int(time.time()) + 900


def test_msk_iam_token_matches_aws_reference_signer() -> None:
    """Same credentials, same second: the same signed URL as AWS's own signer library."""
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
    from botocore.credentials import CredentialProvider, Credentials

    class Static(CredentialProvider):  # type: ignore[misc]
        def load(self) -> Credentials:
            return Credentials(STATIC.access_key, STATIC.secret_key)

    for _ in range(5):
        ours, our_expiry = msk_iam_token("us-east-2", STATIC)
        theirs, their_expiry = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(
            "us-east-2", Static()
        )
        (_, q1), (_, q2) = _decode(ours), _decode(theirs)
        if q1["X-Amz-Date"] == q2["X-Amz-Date"]:
            break
    assert q1["X-Amz-Date"] == q2["X-Amz-Date"], "could not sign within one second"
    q1.pop("User-Agent"), q2.pop("User-Agent")
    assert q1 == q2
    assert our_expiry == their_expiry


async def test_msk_iam_provider_reuses_and_refreshes_the_token() -> None:
    calls = 0

    async def credentials() -> ReadOnlyCredentials:
        nonlocal calls
        calls += 1
        return STATIC

    provider = MskIamTokenProvider("eu-west-1", credentials=credentials)
    first = await provider.token()
    assert await provider.token() == first and calls == 1
    # Faust's consumer thread runs its own event loop and shares the provider.
    assert await asyncio.to_thread(asyncio.run, provider.token()) == first
    # Inside the refresh margin (here: always), a new token is signed with fresh credentials.
    eager = MskIamTokenProvider("eu-west-1", credentials=credentials, refresh_before_s=901)
    await eager.token()
    await eager.token()
    assert calls == 3


async def test_msk_iam_provider_uses_the_aws_credential_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    token = await MskIamTokenProvider("ap-southeast-2").token()
    _, query = _decode(token)
    assert query["X-Amz-Credential"][0].startswith("AKIDFROMENV/")
    assert "/ap-southeast-2/kafka-cluster/" in query["X-Amz-Credential"][0]


async def test_msk_iam_reaches_aiokafka_and_faust(tmp_path: Path) -> None:
    kafka = load_settings(
        None,
        kafka={
            "bootstrap": "b-1.prod.abc123.c2.kafka.eu-central-1.amazonaws.com:9098,"
            "b-2.prod.abc123.c2.kafka.eu-central-1.amazonaws.com:9098",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "AWS_MSK_IAM",
        },
    ).kafka
    assert kafka.msk_iam_region() == "eu-central-1"
    kwargs = client_kwargs(kafka)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "OAUTHBEARER"
    provider = kwargs["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokenProvider) and provider.region == "eu-central-1"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    AIOKafkaAdminClient(**kwargs)  # aiokafka checks the provider's type

    app = create_app(StreamConfig(bootstrap=kafka.bootstrap, data_dir=tmp_path, kafka=kafka))
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, faust.auth.OAuthCredentials)
    assert isinstance(credentials.oauth_cb, MskIamTokenProvider)
    assert credentials.protocol.value == "SASL_SSL"
    explicit = KafkaSettings(
        bootstrap="10.0.0.1:9098",
        security_protocol="SASL_SSL",
        sasl_mechanism="AWS_MSK_IAM",
        msk_region="us-west-2",
    )
    assert client_kwargs(explicit)["sasl_oauth_token_provider"].region == "us-west-2"


# -- topics -----------------------------------------------------------------------------------


async def test_topics_created_with_settings_and_checked_when_they_exist(
    broker: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = KafkaSettings(bootstrap=broker, topic_prefix=f"sec{unique}", partitions=3)
    names = sorted(topic_name(t, kafka.topic_prefix) for t in ALL_TOPICS)
    first = await prepare_topics(kafka)
    assert sorted(first.created) == names
    assert (first.existing, first.partition_mismatches) == ([], {})

    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        described = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    assert described == dict.fromkeys(names, 3)
    policies = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}.get("cleanup.policy")
        for response in configs
        for resource in response.resources
    }
    activity = topic_name(Topic.ACTIVITY, kafka.topic_prefix)
    assert policies[activity] == "compact"
    assert all(policy != "compact" for name, policy in policies.items() if name != activity)

    again = await prepare_topics(kafka)
    assert (again.created, sorted(again.existing), again.partition_mismatches) == ([], names, {})

    with caplog.at_level(logging.WARNING, logger="cloudinv.core.kafka"):
        more = await prepare_topics(kafka.model_copy(update={"partitions": 8}))
    assert more.partition_mismatches == dict.fromkeys(names, 3)
    warned = [r.getMessage() for r in caplog.records if r.name == "cloudinv.core.kafka"]
    assert len(warned) == len(names)
    assert "exists with 3 partition(s) but kafka.partitions is 8" in warned[0]


def test_only_aggregate_topics_are_compacted() -> None:
    from cloudinv.core.kafka import _new_topic

    kafka = KafkaSettings(bootstrap="b:9092", partitions=12, replication_factor=3)
    topics = {t: _new_topic(topic_name(t), t, kafka) for t in ALL_TOPICS}
    assert {Topic.ACTIVITY} == COMPACTED_TOPICS
    for which, new in topics.items():
        assert (new.num_partitions, new.replication_factor) == (12, 3)
        expected = {"cleanup.policy": "compact"} if which in COMPACTED_TOPICS else {}
        assert new.topic_configs == expected
