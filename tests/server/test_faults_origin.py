"""Issue 8, class 1: credentials go only to the configured origin.

Every URL the server hands us (next links, redirects, Location, the token endpoint) is checked with the
parser that opens the connection; a foreign or ambiguous one is an error for that request and is never
requested. Real sockets: the fault server is the FHIR server, ``elsewhere`` the other origin, and each
test asserts that nothing (no request, so no token) reached it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faultserver import FaultServer, Redirect, Reply, searchset
from fhirdata import baseline, for_patient

from fhir_adapter.cli import main
from fhir_adapter.client.factory import open_client
from fhir_adapter.settings import AuthSettings, ServerSettings

from .faultrun import TOKEN, load_patients, screen


def everything_page(server: FaultServer, pid: str, next_url: str) -> Reply:
    """Page 1 of a patient's $everything, whose next link is ``next_url``."""
    return Reply(json=searchset(for_patient(baseline(), pid)[:2], next_url))


def foreign_links(server: FaultServer, elsewhere: FaultServer) -> dict[str, str]:
    port, other = server.port, elsewhere.port
    return {
        "other-port": f"{elsewhere.base}/Patient/p2/$everything?page=2",
        "localhost-for-127.0.0.1": f"http://localhost:{other}/fhir/page2",
        "protocol-relative": f"//127.0.0.1:{other}/fhir/page2",
        "host-root-elsewhere": f"http://127.0.0.1:{other}/page2",
        "backslash-confusion": f"http://127.0.0.1:{other}\\@127.0.0.1:{port}/fhir/page2",
        "userinfo": f"http://127.0.0.1:{port}@127.0.0.1:{other}/fhir/page2",
        "userinfo-same-host": f"http://user:pw@127.0.0.1:{port}/fhir/page2",
        "crlf-injection": f"{server.base}/page2?x=1\r\nHost: 127.0.0.1:{other}",
        "space": f"{server.base}/page 2",
        "tab-in-host": f"http://127.0.0.1:{other}\t/fhir/page2",
        "nul": f"{server.base}/page2\x00",
        "other-scheme": f"https://127.0.0.1:{port}/fhir/page2",
        "percent-host": f"http://127.0.0.1%3A{other}/fhir/page2",
    }


LINK_KINDS = [
    "other-port",
    "localhost-for-127.0.0.1",
    "protocol-relative",
    "host-root-elsewhere",
    "backslash-confusion",
    "userinfo",
    "userinfo-same-host",
    "crlf-injection",
    "space",
    "tab-in-host",
    "nul",
    "other-scheme",
    "percent-host",
]


@pytest.mark.parametrize("kind", LINK_KINDS)
def test_a_foreign_or_ambiguous_next_link_fails_that_patient_and_nothing_reaches_another_origin(
    kind: str,
    server: FaultServer,
    elsewhere: FaultServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bearer: list[str],
    fast_retries: None,
) -> None:
    load_patients(server, "p1", "p2", "p3")
    link = foreign_links(server, elsewhere)[kind]
    server.on("GET", r"Patient/p2/\$everything", everything_page(server, "p2", link))

    run = screen(capsys, server, tmp_path / "r.json", *bearer)

    assert elsewhere.requests == []  # neither with nor without the token
    # The link was not followed on this server either: p2 had exactly one request.
    assert len(server.requests_to("GET", r"Patient/p2/\$everything")) == 1
    assert not [r for r in server.requests if "page2" in r.path or "page 2" in r.path]
    assert run.code == 3
    assert run.screened() == ["Patient/p1", "Patient/p3"]
    (error,) = run.errors_for("Patient/p2")
    assert "refusing a URL from the server" in error["reason"]
    assert link not in run.err and str(elsewhere.port) not in run.err  # the URL itself is not echoed


def test_a_next_link_on_the_same_origin_is_followed_with_the_token(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], bearer: list[str]
) -> None:
    load_patients(server, "p1")
    resources = for_patient(baseline(), "p1")
    server.on(
        "GET",
        r"Patient/p1/\$everything",
        Reply(json=searchset(resources[:3], f"{server.base}/page2?cursor=abc")),
    )
    server.on("GET", r"page2", Reply(json=searchset(resources[3:])))

    run = screen(capsys, server, tmp_path / "r.json", *bearer)

    assert run.code == 0
    (page2,) = server.requests_to("GET", "page2")
    assert page2.headers["authorization"] == f"Bearer {TOKEN}"
    assert page2.query == {"cursor": ["abc"]}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_an_error_for_that_request_and_is_not_followed(
    status: int,
    server: FaultServer,
    elsewhere: FaultServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bearer: list[str],
) -> None:
    load_patients(server, "p1", "p2")
    server.on("GET", r"Patient/p1/\$everything", Redirect(elsewhere.url("Patient/p1/$everything"), status))

    run = screen(capsys, server, tmp_path / "r.json", *bearer)

    assert elsewhere.requests == []
    assert run.code == 3
    assert run.screened() == ["Patient/p2"]
    assert "another origin" in run.errors_for("Patient/p1")[0]["reason"]


def test_a_redirect_on_the_same_origin_is_followed_by_the_client_with_the_token(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], bearer: list[str]
) -> None:
    load_patients(server, "p1")
    server.on("GET", r"Patient/p1/\$everything", Redirect("/fhir/moved/p1"))
    server.on("GET", r"moved/p1", Reply(json=searchset(for_patient(baseline(), "p1"))))

    run = screen(capsys, server, tmp_path / "r.json", *bearer)

    assert run.code == 0
    (moved,) = server.requests_to("GET", "moved/p1")
    assert moved.headers["authorization"] == f"Bearer {TOKEN}"


def test_a_redirect_loop_on_the_same_origin_ends_as_that_patients_error(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1", "p2")
    server.on("GET", r"Patient/p1/\$everything", Redirect("/fhir/loop"))
    server.on("GET", r"loop", Redirect("/fhir/loop"), repeat=True)

    run = screen(capsys, server, tmp_path / "r.json")

    assert run.code == 3
    assert "redirects" in run.errors_for("Patient/p1")[0]["reason"]
    assert len(server.requests_to("GET", "loop")) == 5


def test_a_write_answered_with_a_redirect_is_not_followed(
    server: FaultServer, elsewhere: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1")
    server.on("POST", "ResearchSubject", Redirect(elsewhere.url("ResearchSubject"), 307), repeat=True)

    run = screen(capsys, server, tmp_path / "r.json", "--write-back")

    assert elsewhere.requests == []
    assert run.code == 3  # the write-back of p1 failed; its result is still written
    assert run.screened() == ["Patient/p1"]


def test_a_location_on_another_origin_is_not_used(
    server: FaultServer, elsewhere: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A create answered with a Location elsewhere: the write is re-read on our origin, never followed."""
    load_patients(server, "p1")

    def foreign_location(request: object) -> Reply:
        status, stored = server.store.create(request.json(), None)  # type: ignore[attr-defined]
        return Reply(status, headers={"Location": elsewhere.url(f"ResearchSubject/{stored['id']}")})

    server.on("POST", "ResearchSubject", foreign_location)

    run = screen(capsys, server, tmp_path / "r.json", "--write-back")

    assert elsewhere.requests == []
    assert run.code == 0
    assert len(server.store.all("ResearchSubject")) == 1
    assert len(server.store.all("Provenance")) == 1


def _smart_args(tmp_path: Path, token_url: str | None = None) -> list[str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pem.chmod(0o600)
    args = ["--auth", "smart", "--smart-client-id", "adapter", "--smart-key", f"file:{pem}"]
    return [*args, "--smart-token-url", token_url] if token_url else args


@pytest.mark.parametrize(
    "endpoint",
    [
        "{other}/token",
        "http://localhost:{other_port}/token",
        "http://127.0.0.1:{port}\\@127.0.0.1:{other_port}/t",
    ],
)
def test_a_token_endpoint_from_well_known_on_another_origin_gets_no_client_assertion(
    endpoint: str,
    server: FaultServer,
    elsewhere: FaultServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = endpoint.format(other=elsewhere.base, other_port=elsewhere.port, port=server.port)
    server.on("GET", r"\.well-known/smart-configuration", Reply(json={"token_endpoint": url}))

    code = main(["screen", "--server", server.base, "--patient", "p1", *_smart_args(tmp_path)])

    assert code == 2  # a configuration matter: the operator may trust that endpoint explicitly
    assert elsewhere.requests == []
    assert "set it explicitly as the token URL" in capsys.readouterr().err
    assert [r.path for r in server.requests] == [".well-known/smart-configuration"]


def test_a_token_endpoint_on_another_origin_is_used_when_configured(
    server: FaultServer, elsewhere: FaultServer, tmp_path: Path
) -> None:
    elsewhere.on(
        "POST", "token", Reply(json={"access_token": "t1", "token_type": "bearer", "expires_in": 300})
    )
    load_patients(server, "p1")

    out = str(tmp_path / "r.json")
    smart = _smart_args(tmp_path, elsewhere.url("token"))
    code = main(["screen", "--server", server.base, "--as-of", "2026-06-15", "--out", out, *smart])

    assert code == 0
    assert [r.path for r in elsewhere.requests] == ["token"]
    assert all(r.headers.get("authorization") == "Bearer t1" for r in server.requests if r.path != "metadata")


def test_credentials_in_the_token_url_are_refused_and_not_echoed(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://adapter:s3cr3t-pw@127.0.0.1:{server.port}/token"

    code = main(["screen", "--server", server.base, "--patient", "p1", *_smart_args(tmp_path, url)])

    assert code == 2
    err = capsys.readouterr().err
    assert "--smart-token-url must not contain credentials" in err
    assert "s3cr3t-pw" not in err
    assert server.requests == []


@pytest.mark.parametrize("url", ["http://fhir.example.org/r4", "http://10.1.2.3:8080/fhir"])
def test_plain_http_to_a_host_that_is_not_loopback_is_refused_before_any_request(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["screen", "--server", url, "--patient", "p1"])

    assert code == 2
    assert "--allow-plain-http" in capsys.readouterr().err


def test_plain_http_is_allowed_with_the_explicit_opt_in_and_for_loopback() -> None:
    settings = ServerSettings("http://fhir.example.org/r4", allow_plain_http=True)
    with open_client(settings) as client:
        assert client.base_url == "http://fhir.example.org/r4/"
    with open_client(ServerSettings("http://[::1]:8080/fhir")) as client:
        assert client.origin == ("http", "[::1]", 8080)


def test_plain_http_token_url_to_a_remote_host_is_refused_like_the_base_url(tmp_path: Path) -> None:
    from fhir_adapter.errors import ConfigError

    key = _smart_args(tmp_path)[-1]
    settings = ServerSettings(
        "https://fhir.example.org/r4",
        auth=AuthSettings(
            method="smart",
            smart_client_id="a",
            smart_key=key,
            smart_token_url="http://auth.example.org/token",
        ),
    )
    with pytest.raises(ConfigError, match="--smart-token-url is plain http"):
        open_client(settings)
