"""The OpenID Connect provider as a client sees it: discovery, password and refresh grants,
logout. Per-request token checks never call it (see `web.tokens`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import requests

log = logging.getLogger(__name__)

# Connect and read timeouts: a dead provider answers "unavailable" well within 5 seconds.
TIMEOUT = (2.0, 2.5)
UNAVAILABLE = "identity provider unavailable"


class ProviderUnavailable(Exception):
    """The provider could not be reached or answered nonsense."""


@dataclass(frozen=True)
class GrantResult:
    """What a token request produced: tokens on success, a plain message otherwise."""

    success: bool
    message: str
    tokens: dict[str, Any] | None = None


class IdentityProvider:
    """Talks to the provider's endpoints, found by discovery from the issuer."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        jwks_url: str | None = None,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self._jwks_url = jwks_url
        self._metadata: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.http = requests.Session()

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document, fetched once."""
        if self._metadata is None:
            with self._lock:
                if self._metadata is None:
                    url = f"{self.issuer}/.well-known/openid-configuration"
                    try:
                        response = self.http.get(url, timeout=TIMEOUT)
                        response.raise_for_status()
                        metadata = response.json()
                    except (requests.RequestException, ValueError) as error:
                        raise ProviderUnavailable(f"discovery failed: {error}") from None
                    if metadata.get("issuer") != self.issuer:
                        raise ProviderUnavailable("discovery names another issuer")
                    self._metadata = metadata
        return self._metadata

    def jwks_url(self) -> str:
        """OIDC_JWKS_URL when set, else the discovered `jwks_uri`."""
        if self._jwks_url:
            return self._jwks_url
        try:
            return self.metadata()["jwks_uri"]
        except (ProviderUnavailable, KeyError) as error:
            raise requests.RequestException(str(error)) from None

    def _endpoint(self, name: str) -> str:
        url = self.metadata().get(name)
        if not isinstance(url, str):
            raise ProviderUnavailable(f"the provider has no {name}")
        return url

    def _post(self, endpoint: str, form: dict[str, str]) -> requests.Response:
        data = {"client_id": self.client_id, **form}
        if self.client_secret:
            data["client_secret"] = self.client_secret
        try:
            return self.http.post(self._endpoint(endpoint), data=data, timeout=TIMEOUT)
        except requests.RequestException as error:
            raise ProviderUnavailable(
                f"{endpoint} request failed: {type(error).__name__}"
            ) from None

    def _grant(self, form: dict[str, str], refused: str) -> GrantResult:
        try:
            response = self._post("token_endpoint", form)
        except ProviderUnavailable as error:
            log.warning("token request failed: %s", error)
            return GrantResult(False, UNAVAILABLE)
        if response.status_code >= 500:
            log.warning("token endpoint answered HTTP %s", response.status_code)
            return GrantResult(False, UNAVAILABLE)
        try:
            body = response.json()
        except ValueError:
            return GrantResult(False, UNAVAILABLE)
        if response.status_code != 200 or "access_token" not in body:
            # The provider's error code is safe to log; its description may echo input.
            log.info("token request refused: %s", body.get("error", response.status_code))
            return GrantResult(False, refused)
        return GrantResult(True, "Login successful", body)

    def password_grant(self, username: str, password: str) -> GrantResult:
        """Sign in with a username and password (direct access grant)."""
        return self._grant(
            {
                "grant_type": "password",
                "username": username,
                "password": password,
                "scope": "openid",
            },
            "Invalid username or password",
        )

    def refresh_grant(self, refresh_token: str) -> GrantResult:
        """Trade a refresh token for new tokens."""
        return self._grant(
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            "The refresh token is invalid or expired",
        )

    def logout(self, refresh_token: str) -> GrantResult:
        """End the session behind a refresh token (Keycloak's logout endpoint, or RFC 7009)."""
        endpoint = "end_session_endpoint"
        form = {"refresh_token": refresh_token}
        try:
            if "end_session_endpoint" not in self.metadata():
                endpoint = "revocation_endpoint"
                form = {"token": refresh_token, "token_type_hint": "refresh_token"}
            response = self._post(endpoint, form)
        except ProviderUnavailable as error:
            log.warning("logout failed: %s", error)
            return GrantResult(False, UNAVAILABLE)
        if response.status_code in (200, 204):
            return GrantResult(True, "Logged out")
        if response.status_code >= 500:
            return GrantResult(False, UNAVAILABLE)
        return GrantResult(False, "The refresh token is invalid or expired")
