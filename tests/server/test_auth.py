"""Bearer/Basic auth and SMART Backend Services (private_key_jwt), with keys generated per test run."""

from __future__ import annotations

import base64
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from fhir_adapter.client.auth import (
    CLIENT_ASSERTION_TYPE,
    BearerTokenAuth,
    SmartBackendAuth,
    basic_auth,
    discover_token_url,
)
from fhir_adapter.client.http import FhirClient
from fhir_adapter.errors import AuthError, ConfigError

BASE = "https://fhir.example.org/r4"
TOKEN_URL = "https://auth.example.org/oauth2/token"
CLIENT_ID = "fhir-adapter-nct05495321"


@dataclass(frozen=True)
class KeyPair:
    algorithm: str
    private_pem: bytes
    public_key: PublicKeyTypes


def _pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(params=["RS384", "ES384"])
def keypair(
    request: pytest.FixtureRequest, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> KeyPair:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa_key if request.param == "RS384" else ec_key
    return KeyPair(request.param, _pem(key), key.public_key())


class FakeClock:
    def __init__(self) -> None:
        # Near real time so the JWT library's own sanity checks on the numbers are meaningful.
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


def smart_auth(keypair: KeyPair, clock: FakeClock, **kwargs: Any) -> SmartBackendAuth:
    return SmartBackendAuth(
        TOKEN_URL,
        CLIENT_ID,
        keypair.private_pem,
        algorithm=keypair.algorithm,  # type: ignore[arg-type]
        kid="key-2026",
        clock=clock,
        **kwargs,
    )


def client_with(auth: requests.auth.AuthBase) -> FhirClient:
    return FhirClient(BASE, auth=auth, sleep=lambda _: None, rng=random.Random(1))


def token_reply(mocked: responses.RequestsMock, token: str, expires_in: int = 300) -> None:
    mocked.post(TOKEN_URL, json={"access_token": token, "token_type": "Bearer", "expires_in": expires_in})


def form_of(call: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(call.request.body).items()}


def verified_claims(assertion: str, keypair: KeyPair) -> dict[str, Any]:
    """Signature, algorithm and audience are checked; time claims are asserted by the tests themselves."""
    claims: dict[str, Any] = jwt.decode(
        assertion,
        keypair.public_key,  # type: ignore[arg-type]
        algorithms=[keypair.algorithm],
        audience=TOKEN_URL,
        options={"verify_exp": False, "verify_iat": False, "require": ["iss", "sub", "aud", "exp", "jti"]},
    )
    return claims


def token_calls(mocked: responses.RequestsMock) -> list[Any]:
    return [c for c in mocked.calls if c.request.url == TOKEN_URL]


def fhir_calls(mocked: responses.RequestsMock) -> list[Any]:
    return [c for c in mocked.calls if c.request.url.startswith(BASE)]


# -- SMART Backend Services --------------------------------------------------------------------


def test_token_request_is_client_credentials_with_a_verifiable_private_key_jwt(
    mocked: responses.RequestsMock, clock: FakeClock, keypair: KeyPair
) -> None:
    token_reply(mocked, "tok-1")
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    auth = smart_auth(keypair, clock, scope="system/Patient.read")

    client_with(auth).read("Patient", "p1")

    form = form_of(token_calls(mocked)[0])
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/Patient.read"
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    header = jwt.get_unverified_header(form["client_assertion"])
    assert header["alg"] == keypair.algorithm
    assert header["kid"] == "key-2026"
    assert header["typ"] == "JWT"
    assert "jku" not in header
    claims = verified_claims(form["client_assertion"], keypair)
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == TOKEN_URL
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert claims["exp"] <= clock.now + 300
    assert fhir_calls(mocked)[0].request.headers["Authorization"] == "Bearer tok-1"


def test_token_is_cached_then_refreshed_within_the_margin_before_expiry(
    mocked: responses.RequestsMock, clock: FakeClock, keypair: KeyPair
) -> None:
    token_reply(mocked, "tok-1", expires_in=300)
    token_reply(mocked, "tok-2", expires_in=300)
    for _ in range(3):
        mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    client = client_with(smart_auth(keypair, clock, refresh_margin_s=60))
    start = clock.now

    client.read("Patient", "p1")
    clock.now = start + 239  # still more than 60 s before expiry: cached
    client.read("Patient", "p1")
    clock.now = start + 240  # inside the margin: renewed
    client.read("Patient", "p1")

    assert [c.request.headers["Authorization"] for c in fhir_calls(mocked)] == [
        "Bearer tok-1",
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    first, second = (verified_claims(form_of(c)["client_assertion"], keypair) for c in token_calls(mocked))
    assert first["jti"] != second["jti"]
    assert second["iat"] == first["iat"] + 240
    assert second["exp"] - second["iat"] <= 300


def test_short_lived_token_is_renewed_at_half_life_not_on_every_request(
    mocked: responses.RequestsMock, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    token_reply(mocked, "tok-1", expires_in=40)
    token_reply(mocked, "tok-2", expires_in=40)
    auth = smart_auth(KeyPair("RS384", _pem(rsa_key), rsa_key.public_key()), clock, refresh_margin_s=60)
    start = clock.now

    assert auth.access_token() == "tok-1"
    clock.now = start + 19
    assert auth.access_token() == "tok-1"
    clock.now = start + 20
    assert auth.access_token() == "tok-2"


def test_401_from_the_fhir_server_fetches_a_new_token_and_resends_once(
    mocked: responses.RequestsMock, clock: FakeClock, keypair: KeyPair
) -> None:
    token_reply(mocked, "revoked")
    token_reply(mocked, "fresh")
    mocked.get(f"{BASE}/Patient/p1", status=401)
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    client = client_with(smart_auth(keypair, clock))

    result = client.read("Patient", "p1")

    assert result is not None and result.status == 200
    assert [c.request.headers["Authorization"] for c in fhir_calls(mocked)] == [
        "Bearer revoked",
        "Bearer fresh",
    ]
    assert len(token_calls(mocked)) == 2
    assert (client.request_count, client.retry_count) == (2, 1)


def test_401_after_a_fresh_token_raises_auth_error(
    mocked: responses.RequestsMock, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    token_reply(mocked, "tok-1")
    token_reply(mocked, "tok-2")
    mocked.get(f"{BASE}/Patient/p1", status=401)
    mocked.get(f"{BASE}/Patient/p1", status=401)
    client = client_with(smart_auth(KeyPair("RS384", _pem(rsa_key), rsa_key.public_key()), clock))

    with pytest.raises(AuthError) as caught:
        client.read("Patient", "p1")

    assert caught.value.status == 401
    assert len(fhir_calls(mocked)) == 2


def test_token_endpoint_error_raises_auth_error_with_the_oauth_error_code_only(
    mocked: responses.RequestsMock, clock: FakeClock, keypair: KeyPair
) -> None:
    mocked.post(
        TOKEN_URL,
        status=400,
        json={
            "error": "invalid_client",
            "error_description": "Signature verification failed for kid key-2026",
        },
    )
    client = client_with(smart_auth(keypair, clock))

    with pytest.raises(AuthError) as caught:
        client.read("Patient", "p1")

    message = str(caught.value)
    assert "invalid_client" in message
    # error_description is the server's free text: like all server error text, not repeated.
    assert "Signature verification failed" not in message
    assert CLIENT_ID in message
    assert form_of(token_calls(mocked)[0])["client_assertion"] not in message
    assert caught.value.status == 400
    assert caught.value.url == TOKEN_URL
    assert fhir_calls(mocked) == []


def test_unreachable_token_endpoint_raises_auth_error(
    mocked: responses.RequestsMock, clock: FakeClock, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    mocked.post(TOKEN_URL, body=requests.exceptions.ConnectTimeout("connect timed out"))
    auth = smart_auth(KeyPair("ES384", _pem(ec_key), ec_key.public_key()), clock)

    with pytest.raises(AuthError, match="unreachable \\(ConnectTimeout\\)"):
        auth.access_token()


@pytest.mark.parametrize(
    "reply",
    [
        {"token_type": "Bearer", "expires_in": 300},
        {"access_token": "t", "token_type": "mac", "expires_in": 300},
    ],
)
def test_token_response_without_a_bearer_access_token_is_rejected(
    mocked: responses.RequestsMock, clock: FakeClock, rsa_key: rsa.RSAPrivateKey, reply: dict[str, Any]
) -> None:
    mocked.post(TOKEN_URL, json=reply)
    auth = smart_auth(KeyPair("RS384", _pem(rsa_key), rsa_key.public_key()), clock)

    with pytest.raises(AuthError):
        auth.access_token()


@pytest.mark.parametrize("token", ["abc\r\nX-Injected: 1", "tok\u4e2d\u6587", "a b", "t\x00"])
def test_an_access_token_that_cannot_go_into_a_header_is_an_auth_error_not_a_crash(
    mocked: responses.RequestsMock, clock: FakeClock, rsa_key: rsa.RSAPrivateKey, token: str
) -> None:
    token_reply(mocked, token)
    auth = smart_auth(KeyPair("RS384", _pem(rsa_key), rsa_key.public_key()), clock)

    with pytest.raises(AuthError, match="not a single word of visible ASCII") as caught:
        auth.access_token()
    assert "Injected" not in str(caught.value) and "\u4e2d" not in str(caught.value)


def test_a_token_type_that_is_not_a_word_is_not_repeated(
    mocked: responses.RequestsMock, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    mocked.post(TOKEN_URL, json={"access_token": "t", "token_type": "Jane Roe\r\n4711", "expires_in": 300})
    auth = smart_auth(KeyPair("RS384", _pem(rsa_key), rsa_key.public_key()), clock)

    with pytest.raises(AuthError, match=r"token_type \(not a word\)") as caught:
        auth.access_token()
    assert "Jane" not in str(caught.value)


@pytest.mark.parametrize("token", ["tok\u4e2d", "t\x7f"])
def test_a_static_bearer_token_of_non_ascii_or_control_characters_is_a_config_error(token: str) -> None:
    with pytest.raises(ConfigError, match="visible ASCII"):
        BearerTokenAuth(token)


def test_jku_header_is_sent_when_configured(clock: FakeClock, keypair: KeyPair) -> None:
    auth = smart_auth(keypair, clock, jku="https://adapter.example.org/jwks.json")

    header = jwt.get_unverified_header(auth.client_assertion())

    assert header["jku"] == "https://adapter.example.org/jwks.json"


def test_a_key_that_does_not_match_the_algorithm_is_a_config_error(
    clock: FakeClock, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    for pem, algorithm in [
        (_pem(rsa_key), "ES384"),
        (_pem(ec_key), "RS384"),
        (_pem(p256), "ES384"),
        (_pem(small_rsa), "RS384"),
        (b"not a key", "RS384"),
    ]:
        with pytest.raises(ConfigError, match="private key"):
            SmartBackendAuth(TOKEN_URL, CLIENT_ID, pem, algorithm=algorithm, clock=clock)  # type: ignore[arg-type]


def test_repr_never_shows_key_or_token(
    mocked: responses.RequestsMock, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    token_reply(mocked, "tok-secret")
    auth = smart_auth(KeyPair("RS384", _pem(rsa_key), rsa_key.public_key()), clock)
    auth.access_token()

    assert "tok-secret" not in repr(auth)
    assert "PRIVATE" not in repr(auth)


def test_token_and_assertion_never_reach_the_logs(
    mocked: responses.RequestsMock, clock: FakeClock, keypair: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_reply(mocked, "tok-secret")
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})

    client_with(smart_auth(keypair, clock)).read("Patient", "p1")

    assertion = form_of(token_calls(mocked)[0])["client_assertion"]
    assert "tok-secret" not in caplog.text
    assert assertion not in caplog.text
    assert "Authorization" not in caplog.text


def test_discover_token_url_reads_the_smart_configuration(mocked: responses.RequestsMock) -> None:
    same_origin = "https://fhir.example.org/auth/token"
    mocked.get(
        f"{BASE}/.well-known/smart-configuration",
        json={"token_endpoint": same_origin, "token_endpoint_auth_methods_supported": ["private_key_jwt"]},
    )

    assert discover_token_url(requests.Session(), BASE + "/") == same_origin


@pytest.mark.parametrize(
    "endpoint",
    [
        TOKEN_URL,  # another host: trusted only when configured
        "http://fhir.example.org/auth/token",  # another scheme
        "https://fhir.example.org\\@auth.example.org/token",
        "https://user:pw@fhir.example.org/token",
        "https://fhir.example.org/to ken",
        "/auth/token",
    ],
)
def test_a_discovered_token_endpoint_off_the_fhir_origin_or_ambiguous_is_refused(
    mocked: responses.RequestsMock, endpoint: str
) -> None:
    mocked.get(f"{BASE}/.well-known/smart-configuration", json={"token_endpoint": endpoint})

    with pytest.raises(ConfigError, match="token URL"):
        discover_token_url(requests.Session(), BASE + "/")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("https://user:secret@auth.example.org/token", "must not contain credentials"),
        ("http://auth.example.org/token", "plain http"),
        ("https://auth.example.org\\@evil.example/token", "backslash"),
    ],
)
def test_a_configured_token_url_with_credentials_plain_http_or_ambiguity_is_a_config_error(
    clock: FakeClock, keypair: KeyPair, url: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        SmartBackendAuth(url, CLIENT_ID, keypair.private_pem, algorithm=keypair.algorithm, clock=clock)  # type: ignore[arg-type]

    assert "secret" not in str(caught.value)


def test_plain_http_token_url_is_allowed_for_loopback_or_with_the_opt_in(
    clock: FakeClock, keypair: KeyPair
) -> None:
    SmartBackendAuth(
        "http://127.0.0.1:9000/token",
        CLIENT_ID,
        keypair.private_pem,
        algorithm=keypair.algorithm,
        clock=clock,
    )  # type: ignore[arg-type]
    SmartBackendAuth(
        "http://auth.example.org/token",
        CLIENT_ID,
        keypair.private_pem,
        algorithm=keypair.algorithm,  # type: ignore[arg-type]
        clock=clock,
        allow_plain_http=True,
    )


@pytest.mark.parametrize(("status", "body"), [(404, {"error": "x"}), (200, {"issuer": "x"})])
def test_discover_token_url_without_a_token_endpoint_raises_auth_error(
    mocked: responses.RequestsMock, status: int, body: dict[str, Any]
) -> None:
    mocked.get(f"{BASE}/.well-known/smart-configuration", status=status, json=body)

    with pytest.raises(AuthError, match="smart-configuration"):
        discover_token_url(requests.Session(), BASE)


# -- static credentials ------------------------------------------------------------------------


def test_bearer_token_auth_sets_the_header_and_hides_the_token_in_repr(
    mocked: responses.RequestsMock,
) -> None:
    mocked.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement", "fhirVersion": "5.0.0"})
    auth = BearerTokenAuth("abc.def")

    assert client_with(auth).fhir_version() == "5.0.0"

    assert mocked.calls[0].request.headers["Authorization"] == "Bearer abc.def"
    assert "abc.def" not in repr(auth)


def test_bearer_token_from_an_env_secret(
    mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIR_TOKEN", "from-env\n")
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})

    client_with(BearerTokenAuth.from_secret("env:FHIR_TOKEN")).read("Patient", "p1")

    assert mocked.calls[0].request.headers["Authorization"] == "Bearer from-env"


def test_bearer_token_refuses_a_literal_secret() -> None:
    with pytest.raises(ConfigError, match="bearer_token"):
        BearerTokenAuth.from_secret("eyJhbGciOi.literal.token")


def test_basic_auth_reads_the_password_from_a_file_secret(
    mocked: responses.RequestsMock, tmp_path: Any
) -> None:
    secret = tmp_path / "password"
    secret.write_text("pa:ss\n")
    secret.chmod(0o600)
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})

    client_with(basic_auth("adapter", f"file:{secret}")).read("Patient", "p1")

    expected = base64.b64encode(b"adapter:pa:ss").decode()
    assert mocked.calls[0].request.headers["Authorization"] == f"Basic {expected}"
