"""Lantern's OTLP/HTTP span exporter honours every OTEL_EXPORTER_OTLP_* variable the SDK's
exporter does, and retries and refuses as it does. Each case runs against a real receiver (plain
HTTP, or HTTPS that demands a client certificate from a CA made here), once with Lantern's
exporter and once with the SDK's, and the receiver must see the same from both."""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lantern_runtime.telemetry.otlp import LeanOTLPSpanExporter

if TYPE_CHECKING:
    from pathlib import Path

EXPORTERS: dict[str, Callable[..., SpanExporter]] = {
    "lantern": LeanOTLPSpanExporter,
    "sdk": OTLPSpanExporter,
}


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    client_cn: str | None


@dataclass
class Receiver:
    """An OTLP/HTTP receiver that answers each request with the next scripted answer (then 200)."""

    url: str
    seen: list[Seen] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
            client_cn = None
            if peer:
                client_cn = next(value for ((key, value),) in peer["subject"] if key == "commonName")
            receiver.seen.append(
                Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body, client_cn)
            )
            time.sleep(receiver.delay)
            status, headers = receiver.answers.pop(0) if receiver.answers else (200, {})
            self.send_response(status)
            for name, value in {**headers, "Content-Length": "0"}.items():
                self.send_header(name, value)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_bundle: Path  # certificate and key in one PEM


def _issue(
    subject: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *, ca: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer else (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        if issuer:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = _issue("Lantern test CA", None, ca=True)
    server_cert, server_key = _issue("localhost", (ca_cert.subject, ca_key))
    client_cert, client_key = _issue("lantern-exporter", (ca_cert.subject, ca_key))
    files = {
        "ca": _pem(ca_cert),
        "server_cert": _pem(server_cert),
        "server_key": _key_pem(server_key),
        "client_cert": _pem(client_cert),
        "client_key": _key_pem(client_key),
        "client_bundle": _pem(client_cert) + _key_pem(client_key),
    }
    for name, content in files.items():
        (root / f"{name}.pem").write_bytes(content)
    return Pki(**{name: root / f"{name}.pem" for name in files})


def _serve(receiver: Receiver, server: ThreadingHTTPServer) -> Iterator[Receiver]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain() -> Iterator[Receiver]:
    receiver = Receiver("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.url = f"http://127.0.0.1:{server.server_port}"
    yield from _serve(receiver, server)


@pytest.fixture
def mutual_tls(pki: Pki) -> Iterator[Receiver]:
    receiver = Receiver("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    server.socket = context.wrap_socket(server.socket, server_side=True)
    receiver.url = f"https://localhost:{server.server_port}"
    yield from _serve(receiver, server)


@pytest.fixture(scope="module")
def spans() -> Sequence[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "orders"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("lantern.test")
    for i in range(5):
        with tracer.start_as_current_span(f"process order.created {i}", attributes={"n": i}):
            pass
    return exporter.get_finished_spans()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    # requests (under the SDK's exporter) lets these override OTEL_EXPORTER_OTLP_CERTIFICATE.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def export(kind: str, spans: Sequence[ReadableSpan], **options: Any) -> tuple[SpanExportResult, float]:
    exporter = EXPORTERS[kind](**options)
    began = time.monotonic()
    try:
        return exporter.export(spans), time.monotonic() - began
    finally:
        exporter.shutdown()


def request_of(seen: Seen) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(seen.body)


@pytest.mark.parametrize("kind", EXPORTERS)
def test_endpoint_headers_gzip_and_mutual_tls_from_the_general_variables(
    kind: str, spans: Sequence[ReadableSpan], mutual_tls: Receiver, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", mutual_tls.url + "/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret,X-Tenant=t%201")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(pki.client_cert))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(pki.client_key))
    result, _ = export(kind, spans)
    assert result is SpanExportResult.SUCCESS
    [seen] = mutual_tls.seen
    assert seen.path == "/v1/traces"
    assert seen.client_cn == "lantern-exporter"
    assert (seen.headers["api-key"], seen.headers["x-tenant"]) == ("s3cret", "t 1")
    assert seen.headers["content-encoding"] == "gzip"
    assert seen.headers["content-type"] == "application/x-protobuf"
    assert request_of(seen) == sdk_encode_spans(spans)


@pytest.mark.parametrize("kind", EXPORTERS)
def test_the_traces_variables_win_and_the_traces_endpoint_is_used_as_it_is(
    kind: str, spans: Sequence[ReadableSpan], mutual_tls: Receiver, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", mutual_tls.url + "/custom/spans")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=general")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", str(pki.ca))
    # A certificate file that holds the key too, and no key variable: as the SDK takes it.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", str(pki.client_bundle))
    result, _ = export(kind, spans)
    assert result is SpanExportResult.SUCCESS
    [seen] = mutual_tls.seen
    assert (seen.path, seen.client_cn, seen.headers["api-key"]) == (
        "/custom/spans",
        "lantern-exporter",
        "traces",
    )
    assert "content-encoding" not in seen.headers
    assert request_of(seen) == sdk_encode_spans(spans)


@pytest.mark.parametrize("kind", EXPORTERS)
def test_an_untrusted_server_certificate_is_refused(
    kind: str, spans: Sequence[ReadableSpan], mutual_tls: Receiver, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default CA bundle does not know the test CA.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", mutual_tls.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(pki.client_cert))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(pki.client_key))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    result, _ = export(kind, spans)
    assert result is SpanExportResult.FAILURE
    assert mutual_tls.seen == []


@pytest.mark.parametrize("kind", EXPORTERS)
def test_429_and_503_are_retried_after_the_retry_after_wait_and_400_is_not(
    kind: str, spans: Sequence[ReadableSpan], plain: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", plain.url)
    plain.answers = [(503, {"Retry-After": "0"}), (429, {"Retry-After": "0.2"})]
    result, took = export(kind, spans)
    assert result is SpanExportResult.SUCCESS
    assert len(plain.seen) == 3 and 0.2 <= took < 2
    assert all(request_of(seen) == sdk_encode_spans(spans) for seen in plain.seen)

    plain.seen.clear()
    plain.answers = [(400, {})]
    result, _ = export(kind, spans)
    assert result is SpanExportResult.FAILURE
    assert len(plain.seen) == 1


@pytest.mark.parametrize("kind", EXPORTERS)
def test_retries_stop_at_the_timeout(
    kind: str, spans: Sequence[ReadableSpan], plain: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", plain.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1.5")
    # Backoff 1 s (±20%), then 2 s: past the deadline, so two attempts and no third.
    plain.answers = [(503, {})] * 5
    result, took = export(kind, spans)
    assert result is SpanExportResult.FAILURE
    assert len(plain.seen) == 2 and took < 1.5


@pytest.mark.parametrize("kind", EXPORTERS)
def test_a_receiver_slower_than_the_timeout_fails_the_export_in_time(
    kind: str, spans: Sequence[ReadableSpan], plain: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", plain.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    plain.delay = 2.0
    result, took = export(kind, spans)
    assert result is SpanExportResult.FAILURE
    assert took < 1.5


@pytest.mark.parametrize("kind", EXPORTERS)
def test_a_request_over_the_size_limit_is_dropped_unsent(
    kind: str, spans: Sequence[ReadableSpan], plain: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", plain.url)
    size = len(sdk_encode_spans(spans).SerializeToString())
    result, _ = export(kind, spans, max_request_size=size - 1)
    assert (result, plain.seen) == (SpanExportResult.FAILURE, [])
    result, _ = export(kind, spans, max_request_size=size)
    assert result is SpanExportResult.SUCCESS and len(plain.seen) == 1


def test_after_shutdown_nothing_is_sent(spans: Sequence[ReadableSpan], plain: Receiver) -> None:
    exporter = LeanOTLPSpanExporter(endpoint=plain.url + "/v1/traces")
    exporter.shutdown()
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert plain.seen == []
