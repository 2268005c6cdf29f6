"""The client's session and the machine's environment: proxy settings and the CA bundle are honoured
(read once per origin, not on every request), and ``~/.netrc`` never adds credentials."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import responses

from fhir_adapter.client import transport
from fhir_adapter.client.http import FhirClient
from fhir_adapter.client.transport import watched_session

PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


class _Proxy(BaseHTTPRequestHandler):
    seen: list[str]

    def do_GET(self) -> None:
        type(self).seen.append(self.path)  # a proxy is sent the absolute URL
        body = json.dumps({"resourceType": "Patient", "id": "p1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    handler = type("Proxy", (_Proxy,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()


def test_requests_go_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, proxy: tuple[str, list[str]]
) -> None:
    url, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", url)
    client = FhirClient("http://fhir.invalid/r4", allow_plain_http=True, max_retries=0)

    client.read("Patient", "p1")
    client.read("Patient", "p1")

    assert seen == ["http://fhir.invalid/r4/Patient/p1"] * 2


def test_no_proxy_hosts_are_fetched_directly(
    monkeypatch: pytest.MonkeyPatch, proxy: tuple[str, list[str]]
) -> None:
    url, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = FhirClient(url + "/r4", max_retries=0)

    assert client.read("Patient", "p1") is not None
    assert seen == ["/r4/Patient/p1"]  # origin form: asked directly, not as a proxy


def test_the_environment_is_read_once_per_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = transport.get_environ_proxies

    def counting(url: str, no_proxy: str | None = None) -> dict[str, str]:
        calls.append(url)
        return real(url, no_proxy)

    monkeypatch.setattr(transport, "get_environ_proxies", counting)
    session = watched_session()
    with responses.RequestsMock() as mocked:
        mocked.get("https://a.example.org/r4/Patient/p1", json={})
        mocked.get("https://b.example.org/r4/Patient/p1", json={})
        for _ in range(5):
            session.get("https://a.example.org/r4/Patient/p1")
        session.get("https://b.example.org/r4/Patient/p1")

    assert calls == ["https://a.example.org/r4/Patient/p1", "https://b.example.org/r4/Patient/p1"]


def test_the_environment_ca_bundle_is_used_unless_verify_names_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/hospital-ca.pem")
    session = watched_session()

    default = session.merge_environment_settings("https://a.example.org/", {}, None, True, None)
    named = session.merge_environment_settings("https://a.example.org/", {}, None, "/own.pem", None)
    off = session.merge_environment_settings("https://a.example.org/", {}, None, False, None)

    assert (default["verify"], named["verify"], off["verify"]) == ("/etc/hospital-ca.pem", "/own.pem", False)


def test_netrc_credentials_are_never_sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine fhir.example.org login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client = FhirClient("https://fhir.example.org/r4", max_retries=0)
    with responses.RequestsMock() as mocked:
        mocked.get("https://fhir.example.org/r4/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
        client.read("Patient", "p1")
        sent = mocked.calls[0].request.headers

    assert "Authorization" not in sent
