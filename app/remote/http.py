"""The CLI's HTTP side: an admin token (RFC 6749 §4.4) and calls to /api/v1.

The token is asked for once per run and kept in memory only; it is never
written anywhere, and neither is the client secret. A 401 from the API
(the token expired during a long run, or was revoked) gets one new token
and one retry.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import quote_plus

import httpx

from app.remote.config import Settings
from app.remote.errors import ApiError, AuthError, Unreachable

TOKEN_PATH = "/oauth2/token"
API = "/api/v1"
TIMEOUT = 15.0

# What the API's field messages say with a regular expression, in words.
FIELD_RULES = {
    "name": "must be 1 to 63 characters: lowercase letters, digits, '_' and '-',"
    " starting with a letter or digit",
    "account_id": "must be 1 to 63 characters: lowercase letters, digits, '_' and '-',"
    " starting with a letter or digit",
    "name_prefix": "must be lowercase letters, digits, '_' and '-'",
    "scopes": "must be scope tokens: printable ASCII without spaces, '\"' or '\\'",
    "audiences": "must not contain spaces or control characters",
    "identifier": "must not contain spaces or control characters",
}
_PATTERN_MESSAGE = re.compile(r"^must match \S.*$")


def _agent() -> str:
    try:
        return f"ccserver-cli/{version('ccserver')}"
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "ccserver-cli"


def humane(field: str, message: str) -> str:
    """A field message, with a regular expression replaced by words."""
    if not _PATTERN_MESSAGE.match(message):
        return message
    leaf = re.sub(r"\[\d+\]", "", field).split(".")[-1]
    if leaf == "value":  # a resource server's scopes[i].value
        leaf = "scopes"
    return FIELD_RULES.get(leaf, "has an invalid format")


def problem_line(status: int, body: Any, name: Callable[[str], str]) -> tuple[str, str | None]:
    """One line for an RFC 9457 problem (or any error body) and its `code`."""
    if not isinstance(body, dict):
        return f"HTTP {status}", None
    code = body.get("code") or body.get("error")
    detail = body.get("detail") or body.get("error_description") or body.get("title") or ""
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        parts = []
        for item in errors:
            if isinstance(item, dict):
                field = str(item.get("field", ""))
                parts.append(f"{name(field)}: {humane(field, str(item.get('message', '')))}")
        return "; ".join(parts), code
    head = f"{status} {code}" if code else f"HTTP {status}"
    return (f"{head}: {detail}" if detail else head), code


class Api:
    """The management API of one server, as one admin client."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self.settings = settings
        self._http = httpx.Client(
            base_url=settings.url,
            timeout=timeout,
            verify=settings.ca_bundle or True,
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": _agent(), "Accept": "application/json"},
        )
        self._token: str | None = None
        #: The claims of the admin token (read, never trusted: the server checks it).
        self.claims: dict[str, Any] = {}
        #: Names an API body field as the user wrote it (an option, a file path).
        self.name_field: Callable[[str], str] = lambda field: field

    def close(self) -> None:
        self._http.close()

    # --- the token -----------------------------------------------------------------------------

    def _basic(self) -> str:
        # RFC 6749 §2.3.1: the id and secret are form-urlencoded before Basic.
        settings = self.settings
        raw = f"{quote_plus(settings.client_id)}:{quote_plus(settings.client_secret)}"
        return "Basic " + base64.b64encode(raw.encode()).decode()

    def token(self) -> str:
        """An admin access token for the management API, fetched once per run.

        :raise AuthError: the server refused the credentials or the audience.
        :raise Unreachable: no answer, or not a token endpoint's.
        """
        if self._token is not None:
            return self._token
        form = {"grant_type": "client_credentials"}
        if self.settings.audience:
            form["resource"] = self.settings.audience
        response = self._send(
            "POST", TOKEN_PATH, data=form, headers={"Authorization": self._basic()}
        )
        body = _json(response)
        if response.status_code >= 500:
            raise Unreachable(
                f"the server failed at {TOKEN_PATH} (HTTP {response.status_code}); try again later"
            )
        if response.status_code != 200:
            line, code = problem_line(response.status_code, body, lambda f: f)
            if code == "invalid_client":
                raise AuthError(
                    f"authentication failed for client {self.settings.client_id!r}"
                    " (invalid_client): check the client id and secret, and that the client"
                    " is enabled"
                )
            if response.status_code == 429:
                wait = response.headers.get("Retry-After", "a while")
                raise AuthError(f"too many failed authentications: retry after {wait} s ({line})")
            raise AuthError(f"authentication failed: {line}")
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise Unreachable(f"{self.settings.url}{TOKEN_PATH} did not answer with a token")
        self._token = token
        self.claims = _unverified_claims(token)
        return token

    # --- API calls -----------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise Unreachable(f"cannot reach {self.settings.url}: timed out") from exc
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            cause = exc.__cause__ or exc.__context__
            if cause is not None and str(cause):
                reason = str(cause).splitlines()[0][:200]
            raise Unreachable(f"cannot reach {self.settings.url}: {reason}") from exc
        if 300 <= response.status_code < 400:
            where = response.headers.get("Location", "elsewhere")
            raise Unreachable(
                f"{self.settings.url}{path} redirects to {where}:"
                " is CCSERVER_URL the server's base URL?"
            )
        return response

    def call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """The JSON answer of one management API call (None for 204).

        :raise ApiError: a 4xx, in one line naming the fields as the user wrote them.
        :raise AuthError: the API refused the token (401).
        :raise Unreachable: no answer, or a 5xx.
        """
        query = {k: v for k, v in (params or {}).items() if v is not None}
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.token()}"}
            response = self._send(method, API + path, json=body, params=query, headers=headers)
            if response.status_code == 401 and attempt == 1:
                self._token = None  # expired or revoked during this run: once more
                continue
            break
        if response.status_code == 204:
            return None
        payload = _json(response)
        if response.status_code >= 500:
            line, _ = problem_line(response.status_code, payload, self.name_field)
            raise Unreachable(f"the server failed: {line}")
        if response.status_code == 401:
            line, _ = problem_line(response.status_code, payload, self.name_field)
            raise AuthError(
                f"the management API refused the admin token ({line}); is the client an admin"
                " client, and is CCSERVER_AUDIENCE the management audience if it lists others?"
            )
        if response.status_code >= 400:
            line, code = problem_line(response.status_code, payload, self.name_field)
            raise ApiError(line, response.status_code, code)
        if payload is None and response.content:
            raise Unreachable(f"{self.settings.url}{API}{path} did not answer with JSON")
        return payload

    def offers(self, path: str) -> bool:
        """Whether the server's OpenAPI document (docs/api.md §2.6) lists an API path.

        :raise Unreachable: no answer, or no document.
        """
        response = self._send("GET", API + "/openapi.json")
        document = _json(response)
        if response.status_code != 200 or not isinstance(document, dict):
            raise Unreachable(f"{self.settings.url}{API}/openapi.json: no OpenAPI document")
        return path in (document.get("paths") or {})

    def pages(
        self, path: str, params: dict[str, Any], *, every: bool
    ) -> Iterator[tuple[list[Any], str | None]]:
        """The pages of a listing (docs/api.md §2.1): one, or with `every` all of them."""
        params = dict(params)
        while True:
            page = self.call("GET", path, params=params)
            cursor = page.get("next_cursor")
            yield page["data"], cursor
            if not every or not cursor:
                return
            params["cursor"] = cursor

    def every(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a listing, in pages of 1000."""
        items: list[Any] = []
        for data, _ in self.pages(path, {**(params or {}), "limit": 1000}, every=True):
            items.extend(data)
        return items


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _unverified_claims(token: str) -> dict[str, Any]:
    """The payload of our own JWT, only to learn the caller's account (never to trust it)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}
