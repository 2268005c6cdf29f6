"""Open a ``FhirClient`` from ``ServerSettings``: auth, CA bundle and timeouts, secrets resolved here.

Each call builds its own session and its own auth object (token cache included): the read server's and
a separate write target's clients share no credentials, and each sends its token to its own origin only.
"""

from __future__ import annotations

import requests.auth

from fhir_adapter.client.auth import (
    DEFAULT_SCOPE,
    READ_SCOPE,
    BearerTokenAuth,
    SmartBackendAuth,
    basic_auth,
    discover_token_url,
)
from fhir_adapter.client.http import FhirClient
from fhir_adapter.client.secrets import resolve_secret
from fhir_adapter.client.transport import watched_session
from fhir_adapter.client.urls import check_configured_url, normalise_base
from fhir_adapter.errors import ConfigError
from fhir_adapter.settings import ServerSettings


def open_client(settings: ServerSettings) -> FhirClient:
    verify: bool | str = str(settings.ca_bundle) if settings.ca_bundle else True
    timeout = (10.0, float(settings.timeout))
    # The base URL is checked (credentials, plain http) before anything, the token URL included, is used.
    normalise_base(settings.url, allow_plain_http=settings.allow_plain_http, what=settings.name("url"))
    return FhirClient(
        settings.url,
        auth=_auth(settings, verify, timeout),
        timeout=timeout,
        verify=verify,
        deadline_seconds=settings.request_deadline,
        max_response_bytes=settings.max_response_bytes,
        max_pages=settings.max_pages,
        throttle_budget_seconds=settings.throttle_budget,
        allow_plain_http=settings.allow_plain_http,
        max_rps=settings.max_rps,
        connections=max(10, settings.concurrency),
    )


def _auth(
    settings: ServerSettings, verify: bool | str, timeout: tuple[float, float]
) -> requests.auth.AuthBase | None:
    auth, name = settings.auth, settings.name
    if auth.method == "none":
        return None
    if auth.method == "bearer":
        return BearerTokenAuth.from_secret(auth.token, setting=name("token"))
    if auth.method == "basic":
        if not auth.basic_user:
            raise ConfigError(f"basic auth needs {name('basic_user')}")
        return basic_auth(auth.basic_user, auth.basic_password, setting=name("basic_password"))
    if not auth.smart_client_id or not auth.smart_key:
        raise ConfigError(f"SMART auth needs {name('smart_client_id')} and {name('smart_key')}")
    key = resolve_secret(auth.smart_key, setting=name("smart_key")).encode("utf-8")
    token_url = auth.smart_token_url
    if token_url:
        check_configured_url(token_url, name("smart_token_url"), allow_plain_http=settings.allow_plain_http)
    else:
        with watched_session() as session:
            token_url = discover_token_url(
                session,
                settings.url,
                timeout=timeout,
                verify=verify,
                deadline_seconds=settings.request_deadline,
            )
    return SmartBackendAuth(
        token_url,
        auth.smart_client_id,
        key,
        algorithm=auth.smart_alg,
        kid=auth.smart_kid,
        scope=auth.smart_scope or (DEFAULT_SCOPE if settings.writes else READ_SCOPE),
        timeout=timeout,
        verify=verify,
        allow_plain_http=settings.allow_plain_http,
        deadline_seconds=settings.request_deadline,
    )
