"""Authentication for FHIR servers: static bearer token, HTTP Basic, SMART Backend Services.

Each class is a ``requests.auth.AuthBase`` so ``FhirClient`` stays ignorant of the scheme. Only
``SmartBackendAuth`` can renew its credentials; it exposes ``invalidate()``, which ``FhirClient``
calls on a 401 before resending once (see ``fhir_adapter.client.http.InvalidatableAuth``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

import requests
import requests.auth

from fhir_adapter.client.secrets import resolve_secret
from fhir_adapter.client.transport import BodyTooLarge, DeadlinePassed, exchange, watched_session
from fhir_adapter.client.urls import check_configured_url, check_server_url, origin_of
from fhir_adapter.errors import AuthError, ConfigError, UnsafeUrl

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

logger = logging.getLogger(__name__)

CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# SMART v1 scope syntax, which v2 servers also accept; pass v2 scopes (system/*.rs) if required.
# Write-back creates ResearchSubject and Provenance, and once each a ResearchStudy and a Device.
DEFAULT_SCOPE: Final = (
    "system/*.read system/ResearchSubject.write system/Provenance.write "
    "system/ResearchStudy.write system/Device.write"
)
# A read server whose write-back goes to a separate write target is asked for reads only.
READ_SCOPE: Final = "system/*.read"
# SMART Backend Services: the assertion's exp must be no more than five minutes in the future.
ASSERTION_LIFETIME_S: Final = 300
# Used when a token response omits expires_in; SMART recommends 300 s, so assume no more.
_DEFAULT_EXPIRES_IN: Final = 300.0
# A token or configuration answer is small; anything bigger is not one.
_MAX_BODY: Final = 1024 * 1024
_DEADLINE_S: Final = 60.0
# RFC 6749 error codes are ASCII words (invalid_client); anything else is server free text, not repeated.
_OAUTH_ERROR_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")

Algorithm = Literal["RS384", "ES384"]


def _is_token(text: str) -> bool:
    """A credential that can go into an ``Authorization`` header as it is: visible ASCII, no space."""
    return bool(text) and text.isascii() and text.isprintable() and not any(c.isspace() for c in text)


class BearerTokenAuth(requests.auth.AuthBase):
    """A fixed bearer token (e.g. a long-lived API token issued by the site)."""

    def __init__(self, token: str) -> None:
        token = token.strip()
        if not _is_token(token):
            raise ConfigError("bearer token: must be a single non-empty word of visible ASCII characters")
        self._token = token

    @classmethod
    def from_secret(cls, ref: str, *, setting: str = "bearer_token") -> BearerTokenAuth:
        """Build from an ``env:``/``file:`` reference (see ``resolve_secret``)."""
        return cls(resolve_secret(ref, setting=setting))

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "BearerTokenAuth(<redacted>)"


def basic_auth(
    username: str, password_ref: str, *, setting: str = "basic_password"
) -> requests.auth.HTTPBasicAuth:
    """HTTP Basic with the password read from an ``env:``/``file:`` reference; the user name is not secret."""
    if not username:
        raise ConfigError("basic auth: username is empty")
    return requests.auth.HTTPBasicAuth(username, resolve_secret(password_ref, setting=setting))


class SmartBackendAuth(requests.auth.AuthBase):
    """SMART Backend Services: ``client_credentials`` grant with a ``private_key_jwt`` client assertion.

    The access token is cached and renewed ``refresh_margin_s`` before it expires, or at once after
    ``invalidate()`` (which ``FhirClient`` calls when the FHIR server answers 401). Thread-safe.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        private_key_pem: bytes,
        *,
        algorithm: Algorithm = "RS384",
        kid: str | None = None,
        jku: str | None = None,
        scope: str = DEFAULT_SCOPE,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        refresh_margin_s: float = 60,
        timeout: tuple[float, float] = (10, 30),
        verify: bool | str = True,
        allow_plain_http: bool = False,
        deadline_seconds: float = _DEADLINE_S,
    ) -> None:
        # Credentials in the URL, plain http to a remote host: refused, as for the FHIR base URL.
        check_configured_url(token_url, "token_url", allow_plain_http=allow_plain_http)
        if not client_id:
            raise ConfigError("client_id: is empty")
        if refresh_margin_s < 0:
            raise ValueError("refresh_margin_s must be >= 0")
        self.token_url = token_url
        self.client_id = client_id
        self.algorithm: Algorithm = algorithm
        self.kid = kid
        self.jku = jku
        self.scope = scope
        self._key = _load_signing_key(private_key_pem, algorithm)
        self._session = session if session is not None else watched_session()
        self._deadline = deadline_seconds
        self._clock = clock
        self._refresh_margin = refresh_margin_s
        self._timeout = timeout
        self._verify = verify
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self.granted_scope: str | None = None  # what the token endpoint said it granted (preflight)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.access_token()}"
        return r

    def __repr__(self) -> str:
        return f"SmartBackendAuth(token_url={self.token_url!r}, client_id={self.client_id!r})"

    def invalidate(self) -> None:
        """Forget the cached access token; the next request fetches a new one."""
        with self._lock:
            self._token = None

    def access_token(self) -> str:
        """The cached access token, fetched anew when missing or within the refresh margin of expiry."""
        with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                self._token = self._fetch_token()
            return self._token

    def client_assertion(self) -> str:
        """A freshly signed ``private_key_jwt``; a new ``jti`` each call so servers can reject replays."""
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_S,
            "jti": uuid.uuid4().hex,
        }
        headers: dict[str, Any] = {"typ": "JWT"}
        if self.kid is not None:
            headers["kid"] = self.kid
        if self.jku is not None:
            headers["jku"] = self.jku
        import jwt  # here, not at the top: only SMART backend services sign, and it costs every run ~40 ms

        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)

    def _fetch_token(self) -> str:
        """POST the client_credentials grant; sets the renewal time and returns the access token."""
        requested_at = self._clock()
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
        }
        try:
            # Never redirected: the client assertion goes to the configured endpoint only.
            resp = exchange(
                self._session,
                "POST",
                self.token_url,
                deadline=self._deadline,
                max_bytes=_MAX_BODY,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                verify=self._verify,
            )
        except (requests.exceptions.RequestException, DeadlinePassed, BodyTooLarge) as exc:
            # The exception text is harmless here, but keep one rule for all transport errors.
            raise AuthError(
                f"token endpoint {self.token_url} unreachable ({type(exc).__name__})", url=self.token_url
            ) from None
        body = _json_object(resp)
        if resp.status_code != 200:
            raise AuthError(self._describe_failure(resp.status_code, body), resp.status_code, self.token_url)
        token = body.get("access_token") if body else None
        token_type = body.get("token_type") if body else None
        if not isinstance(token, str) or not token:
            raise AuthError(
                f"token endpoint {self.token_url} returned no access_token", resp.status_code, self.token_url
            )
        if not _is_token(token):
            # It goes into a header line: a newline would end the header, non-ASCII cannot be sent.
            raise AuthError(
                f"token endpoint {self.token_url} returned an access_token that is not a single word of "
                "visible ASCII characters",
                resp.status_code,
                self.token_url,
            )
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            shown = (
                repr(token_type)
                if isinstance(token_type, str) and _is_token(token_type[:20])
                else "(not a word)"
            )
            raise AuthError(
                f"token endpoint {self.token_url} returned token_type {shown}, expected 'bearer'",
                resp.status_code,
                self.token_url,
            )
        granted = body.get("scope") if body else None
        self.granted_scope = granted if isinstance(granted, str) else None
        expires_in = _DEFAULT_EXPIRES_IN
        raw_expiry = body.get("expires_in") if body else None
        if isinstance(raw_expiry, int | float) and not isinstance(raw_expiry, bool) and raw_expiry > 0:
            expires_in = float(raw_expiry)
        # A token shorter-lived than the margin would otherwise be refetched on every request.
        margin = min(self._refresh_margin, expires_in / 2)
        self._renew_at = requested_at + expires_in - margin
        logger.info("obtained access token from %s (expires in %.0f s)", self.token_url, expires_in)
        return token

    def _describe_failure(self, status: int, body: dict[str, Any] | None) -> str:
        """The status and the OAuth ``error`` code; ``error_description`` is the server's free text
        and, like every server's error text, is not repeated in messages and logs."""
        message = f"token endpoint {self.token_url} rejected client {self.client_id}: HTTP {status}"
        error = body.get("error") if body else None
        if isinstance(error, str) and _OAUTH_ERROR_RE.fullmatch(error):
            message += f": {error}"
        return message


def discover_token_url(
    session: requests.Session,
    base_url: str,
    *,
    timeout: tuple[float, float] = (10, 30),
    verify: bool | str = True,
    deadline_seconds: float = _DEADLINE_S,
) -> str:
    """The ``token_endpoint`` from ``[base]/.well-known/smart-configuration``.

    Takes a session rather than a ``FhirClient`` because the client needs its auth, and so the
    token URL, before it exists; the document is public and needs no credentials.

    The endpoint is a URL the server hands us, so it must be on the FHIR base's origin and
    unambiguous (:func:`fhir_adapter.client.urls.check_server_url`): the client assertion is a
    credential. A token endpoint on another host (a separate authorization server) is trusted only
    when the operator configures it (``--smart-token-url`` / ``server.auth.token_url``).
    """
    url = base_url.rstrip("/") + "/.well-known/smart-configuration"
    try:
        resp = exchange(
            session,
            "GET",
            url,
            deadline=deadline_seconds,
            max_bytes=_MAX_BODY,
            headers={"Accept": "application/json"},
            timeout=timeout,
            verify=verify,
        )
    except (requests.exceptions.RequestException, DeadlinePassed, BodyTooLarge) as exc:
        raise AuthError(f"SMART configuration {url} unreachable ({type(exc).__name__})", url=url) from None
    body = _json_object(resp)
    if resp.status_code != 200 or body is None:
        raise AuthError(
            f"SMART configuration {url}: HTTP {resp.status_code}; set the token URL explicitly",
            resp.status_code,
            url,
        )
    token_url = body.get("token_endpoint")
    if not isinstance(token_url, str) or not token_url:
        raise AuthError(f"SMART configuration {url} has no token_endpoint", resp.status_code, url)
    try:
        return check_server_url(token_url, origin_of(base_url))
    except UnsafeUrl as exc:
        raise ConfigError(
            f"SMART configuration {url}: its token_endpoint is not used ({exc}); if that endpoint is your "
            "authorization server, set it explicitly as the token URL (--smart-token-url / "
            "server.auth.token_url)"
        ) from None


def _load_signing_key(pem: bytes, algorithm: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    # Fail at start-up with a config error, not at the first request with a JWT library error.
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError("private key: not an unencrypted PEM private key (PKCS#8 or traditional)") from None
    if algorithm == "RS384":
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
            raise ConfigError("private key: RS384 needs an RSA key of at least 2048 bits")
        return key
    if algorithm == "ES384":
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP384R1):
            raise ConfigError("private key: ES384 needs an EC key on curve P-384")
        return key
    raise ConfigError(f"algorithm: {algorithm!r} is not supported; use RS384 or ES384")


def _json_object(resp: requests.Response) -> dict[str, Any] | None:
    try:
        body = resp.json() if resp.content else None
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
