"""Limits on failed client authentications: the token, introspection and revocation
endpoints and the console's sign-in share them (docs/api.md §3).

Failures are counted in fixed windows of AUTH_FAILURE_WINDOW seconds under three
keys (see `app.http.client_address` for the address):

- the claimed client id from one address (AUTH_FAILURE_LIMIT_CLIENT),
- the address, whatever client id it names or none (AUTH_FAILURE_LIMIT_ADDRESS),
- the claimed client id from every address together (AUTH_FAILURE_LIMIT_CLIENT_TOTAL).

0 turns a limit off. Once a count reaches its limit, every request under that key
is refused with `429 slow_down` and a `Retry-After` header until the window
ends, before its credentials are checked: even correct credentials are refused,
so the limit cannot be used to confirm a guessed secret. The first limit blocks
a client id from one address only, so someone who knows a client id but not its
secret cannot lock the client out from the addresses it really uses, unless
they reach the client-wide limit, which blocks the client id from every address.
Refused attempts are not counted, so when the window ends the counts start from
zero and no attacker can lock a client out for longer than one window.

`slow_down` is the token-endpoint error registered by RFC 8628 §3.5 (OAuth
Extensions Error Registry, RFC 6749 §8.5) for "polling too fast".

The counting itself, shared by every instance and answered without I/O while
the block feed is up, is app/state/failures.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from authlib.oauth2.rfc6749 import OAuth2Error
from flask import Flask

from app.http.client_address import client_address
from app.oauth.requests import FormRequest, claimed_client_id
from app.runtime import runtime, runtime_of
from app.settings import Settings
from app.state.failures import CounterStore, FailureCounters, counter_key


class RateLimited(OAuth2Error):
    """429 slow_down with Retry-After: too many failed client authentications."""

    error = "slow_down"
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            description="Too many failed client authentications; retry later.",
            status_code=429,
        )
        self.retry_after = retry_after

    def get_headers(self):
        headers = super().get_headers()
        headers.append(("Retry-After", str(self.retry_after)))
        return headers


class Throttle:
    """The failed-authentication limits over one app's shared failure counters."""

    def __init__(
        self,
        counters: FailureCounters,
        limit_client: int,
        limit_address: int,
        limit_client_total: int,
    ) -> None:
        self.counters = counters
        self.limit_client = limit_client
        self.limit_address = limit_address
        self.limit_client_total = limit_client_total
        self.enabled = limit_client > 0 or limit_address > 0 or limit_client_total > 0

    @classmethod
    def from_settings(cls, settings: Settings, store: CounterStore, engine: sa.Engine) -> Throttle:
        limits = (
            settings.auth_failure_limit_client,
            settings.auth_failure_limit_address,
            settings.auth_failure_limit_client_total,
        )
        counters = FailureCounters(
            store,
            settings.auth_failure_window,
            engine,
            min_limit=min((n for n in limits if n > 0), default=1),
            use_feed=settings.auth_failure_feed,
        )
        return cls(counters, *limits)

    def _limits(self, client_id: str | None, address: str) -> dict[str, int]:
        limits = {}
        if client_id and self.limit_client > 0:
            # Its own kind: the pair is encoded whole, so no client id can
            # name another client's pair (see counter_key).
            limits[counter_key("pair", client_id, address)] = self.limit_client
        if self.limit_address > 0:
            limits[counter_key("addr", address)] = self.limit_address
        if client_id and self.limit_client_total > 0:
            limits[counter_key("client", client_id)] = self.limit_client_total
        return limits

    def check(self, client_id: str | None, address: str) -> None:
        """Refuse a client id from this address, an address or a client id past its limit.

        :raise RateLimited: 429 with the seconds left in the window.
        """
        if self.enabled and not self.counters.nothing_blocked():
            self._refuse_over_limit(client_id, address)

    def _refuse_over_limit(self, client_id: str | None, address: str) -> None:
        limits = self._limits(client_id, address)
        if limits and not self.counters.test(limits):
            raise RateLimited(self.counters.resets_in())

    def record_failure(self, client_id: str | None, address: str) -> None:
        """Count one failed authentication under each of its keys."""
        if self.enabled:
            self.counters.hit(self._limits(client_id, address))

    def check_request(self, request: FormRequest) -> None:
        """`check` for the client id an OAuth request claims and its address.

        :raise RateLimited: 429 with the seconds left in the window.
        """
        # Nothing counted in this window (the usual case): no id to read, no key to make.
        if self.enabled and not self.counters.nothing_blocked():
            self._refuse_over_limit(claimed_client_id(request), client_address())

    def record_request_failure(self, request: FormRequest, client_id: str | None = None) -> None:
        """`record_failure` for an OAuth request: its claimed client id, else `client_id`."""
        if self.enabled:
            self.record_failure(claimed_client_id(request) or client_id, client_address())

    def init_app(self, app: Flask) -> None:
        """Refuse and count at the app's authorization server."""
        server = runtime_of(app).oauth
        assert server is not None  # config_oauth runs first
        server.rate_limiter = self
        server.on_auth_failure = self.record_request_failure


def check(client_id: str | None, address: str) -> None:
    """`Throttle.check` on the current app's throttle.

    :raise RateLimited: 429 with the seconds left in the window.
    """
    runtime().throttle.check(client_id, address)


def record_failure(client_id: str | None, address: str) -> None:
    """`Throttle.record_failure` on the current app's throttle."""
    runtime().throttle.record_failure(client_id, address)
