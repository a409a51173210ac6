"""HTTPS (server.tls_cert / server.tls_key) with certificates the test makes itself."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from harness import SIMPLE_SCHEMA, Server, event, run_cli, to_toml
from tls_certs import CertFiles, make_certs


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return make_certs(tmp_path / "certs")


def tls_config(certs: CertFiles, **server: object) -> dict[str, object]:
    return {"server": {"tls_cert": str(certs.cert), "tls_key": str(certs.key), **server}}


def test_https_round_trip(make_server: Callable[..., Server], certs: CertFiles) -> None:
    server = make_server(tls_config(certs), tls_ca=certs.ca)
    assert server.url("/").startswith("https://")
    server.create_stream("secure", SIMPLE_SCHEMA)
    answer = server.ingest("secure", [event(n) for n in range(5)])
    assert answer["accepted"] == 5
    assert server.stream_info("secure")["accepted"] == 5
    ready = server.get("/readyz")
    assert ready.status_code == 200, ready.text

    # The connection really is TLS, with the test CA's certificate.
    context = ssl.create_default_context(cafile=str(certs.ca))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            peer = tls.getpeercert()
            assert ("commonName", "localhost") in [item for part in peer["subject"] for item in part]


def test_https_offers_http2_and_http1_by_alpn(make_server: Callable[..., Server], certs: CertFiles) -> None:
    server = make_server(tls_config(certs), tls_ca=certs.ca)
    for protocol in ("h2", "http/1.1"):
        context = ssl.create_default_context(cafile=str(certs.ca))
        context.set_alpn_protocols([protocol])
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.selected_alpn_protocol() == protocol


def test_clients_that_fail_tls_do_not_disturb_others(
    make_server: Callable[..., Server], certs: CertFiles
) -> None:
    server = make_server(tls_config(certs, request_timeout="1s"), tls_ca=certs.ca)
    # Plain HTTP to the HTTPS port gets no HTTP answer.
    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
    # A client that does not trust the test CA refuses the certificate.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server.url("/healthz"), timeout=5)
    # A client that connects and never starts the handshake is dropped after the timeout.
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        assert server.get("/healthz").status_code == 200  # others are served meanwhile
        started = time.monotonic()
        assert idle.recv(1) == b"", "the server closes a connection that never shakes hands"
        assert time.monotonic() - started < 8
    finally:
        idle.close()
    server.create_stream("after", SIMPLE_SCHEMA)
    assert server.ingest("after", [event(1)])["accepted"] == 1


def test_tls_settings_are_checked_before_serving(tmp_path: Path, certs: CertFiles) -> None:
    cases = [
        ({"tls_cert": str(certs.cert)}, "server.tls_key: is needed with server.tls_cert"),
        ({"tls_key": str(certs.key)}, "server.tls_cert: is needed with server.tls_key"),
        (
            {"tls_cert": str(tmp_path / "missing.pem"), "tls_key": str(certs.key)},
            "server.tls_cert: cannot read",
        ),
        ({"tls_cert": str(certs.key), "tls_key": str(certs.key)}, "server.tls_cert:"),
        ({"tls_cert": str(certs.cert), "tls_key": str(certs.cert)}, "server.tls_key: cannot read a PEM private key"),
    ]
    other = make_certs(tmp_path / "other", ca_name="another CA")
    cases.append(
        ({"tls_cert": str(certs.cert), "tls_key": str(other.key)}, "do not go together"),
    )
    for i, (server_settings, expected) in enumerate(cases):
        config = tmp_path / f"bad{i}.toml"
        config.write_text(to_toml({"server": server_settings}))
        result = run_cli(["check", "--config", str(config)])
        assert result.returncode == 1, (server_settings, result.stdout, result.stderr)
        assert expected in result.stderr, (expected, result.stderr)
