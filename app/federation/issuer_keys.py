"""Foreign issuers' public keys, fetched safely, cached per process (docs/federation-keys.md).

A federated credential (docs/api.md §2.8) names its issuer's keys in one
of three ways: inline (not fetched, not here), a `jwks_uri`, or nothing,
and then they are found by OpenID Connect Discovery 1.0 §4 (the issuer's
`/.well-known/openid-configuration`, whose `issuer` must be identical to
the issuer asked, §4.3, and whose `jwks_uri` names the key set). Each
fetch goes through app.federation.fetch: https, public addresses, 3 s,
256 KiB.

The cache, per (issuer, jwks_uri):
- a key set (RFC 7517 §5) lives as long as its response's `Cache-Control:
  max-age` says, bounded to 60 s..24 h, 300 s without one (or with
  `no-store` / `no-cache`); the discovery document likewise;
- a `kid` that is not in the set refetches it, at most once per 30 s;
- a failed refresh keeps the last keys for up to 24 h past their expiry
  (a warning is logged each time), and tries again at most once per 30 s;
  an issuer never fetched waits 30 s between failed tries too;
- one fetch per entry at a time: concurrent callers wait for it and share
  its result (single flight);
- at most 1,000 entries, least recently used dropped first.

Exceptions::

    IssuerKeysUnavailable   .reason: for the operator's log, never a token
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from app.federation.fetch import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    Fetched,
    FetchError,
    FetchPolicy,
    IPAddress,
    address_refusal,
    fetch_json,
)
from app.http.metrics import ISSUER_KEY_FETCHES, STALE_ISSUER_KEYS_USED
from app.protocol import FEDERATION_SIGNING_ALGS
from app.runtime import runtime

log = logging.getLogger(__name__)

#: Bounds of a cached document's lifetime, seconds (docs/api.md §1.3).
MIN_LIFETIME = 60
MAX_LIFETIME = 24 * 3600
#: The lifetime when the response does not say one.
DEFAULT_LIFETIME = 300
#: How often an entry may be fetched again for an unknown kid or after a failure.
REFETCH_INTERVAL = 30.0
#: How long past their expiry keys are still used while refreshes fail.
STALE_FOR = 24 * 3600.0
#: Entries kept (issuer and jwks_uri pairs).
MAX_ENTRIES = 1000
#: Longest issuer or jwks_uri accepted, characters.
MAX_URL_LENGTH = 2048
#: Keys used from one key set.
MAX_KEYS = 100
#: Smallest RSA modulus accepted, bits.
MIN_RSA_BITS = 2048

#: JWK members of private (or symmetric) keys, RFC 7518 §6.2.2, §6.3.2, §6.4.1, RFC 8037 §2.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: Key types of signature keys this server verifies (RFC 7518 §6.1, RFC 8037 §2).
KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
#: `use` values of a key that verifies JWTs: RFC 7517's, and a SPIFFE bundle's JWT-SVID keys.
SIGNATURE_USES = frozenset({"sig", "jwt-svid"})
#: `alg` values a key may name: asymmetric signatures only (never `none` nor HMAC).
SIGNATURE_ALGS = frozenset(FEDERATION_SIGNING_ALGS) | {"Ed25519"}  # RFC 9864's name too


class IssuerKeysUnavailable(Exception):
    """The issuer's keys cannot be had; .reason is a short string for operators, never a token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidKeySet(ValueError):
    """A document is not an acceptable JWKS; `outcome` is `invalid_document` or `private_key`."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


def cache_lifetime(cache_control: str | None) -> int:
    """Seconds to keep a document given its Cache-Control header (RFC 9111 §5.2.2), bounded.

    `max-age` bounded to 60..86400; no header, no valid `max-age`, `no-store`
    or `no-cache`: 300 (a document that asks not to be stored is still
    needed, and 300 s is the same rule as no header at all).
    """
    if not cache_control:
        return DEFAULT_LIFETIME
    max_age: int | None = None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return DEFAULT_LIFETIME
        if name == "max-age" and max_age is None:
            value = value.strip().strip('"')
            if not value.isdigit():
                return DEFAULT_LIFETIME
            max_age = int(value[:12])  # a huge number is still only "long"
    if max_age is None:
        return DEFAULT_LIFETIME
    return max(MIN_LIFETIME, min(MAX_LIFETIME, max_age))


def _usable_key(jwk: Mapping[str, Any]) -> jwt.PyJWK | None:
    """A public signature key from one JWK, or None for a key this server would not use."""
    if jwk.get("kty") not in KEY_TYPES:
        return None
    # RFC 7517 §4.2; a SPIFFE bundle marks its JWT-SVID signing keys "jwt-svid" and its
    # X509 CA keys "x509-svid" (SPIFFE Trust Domain and Bundle §4.1), never to sign JWTs.
    if jwk.get("use", "sig") not in SIGNATURE_USES:
        return None
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):  # §4.3
        return None
    alg = jwk.get("alg")
    if alg is not None and alg not in SIGNATURE_ALGS:
        return None
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    try:
        key = jwt.PyJWK(dict(jwk))
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if isinstance(key.key, RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
        return None
    return key


def public_signing_keys(document: Any) -> list[jwt.PyJWK]:
    """The signature keys of a JWK Set (RFC 7517 §5) that this server can use.

    Keys meant for encryption (`use` other than `sig` or SPIFFE's `jwt-svid`, `key_ops` without
    `verify`), of another type than RSA, EC or OKP, naming a non-signature
    `alg`, RSA keys under 2048 bits, or that PyJWT cannot read are skipped;
    at most 100 are kept.

    :raises InvalidKeySet: not a JWK Set (`invalid_document`), or any key has
        private members (`private_key`): a set that leaks private keys is
        not trusted at all.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise InvalidKeySet("invalid_document", 'not a JWK Set (no "keys" list)')
    keys: list[jwt.PyJWK] = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            raise InvalidKeySet("invalid_document", "a key that is not a JSON object")
        private = sorted(PRIVATE_MEMBERS & jwk.keys())
        if private:
            raise InvalidKeySet("private_key", f"a key with private members ({', '.join(private)})")
    for jwk in document["keys"]:
        key = _usable_key(jwk)
        if key is not None:
            keys.append(key)
            if len(keys) == MAX_KEYS:
                break
    return keys


def _shown(value: object) -> str:
    """A value for the log: quoted, escaped, cut short (issuers and kids come from requests)."""
    return repr(str(value)[:200])


@dataclass(frozen=True)
class _State:
    """What one entry knows; replaced whole, so readers need no lock."""

    keys: tuple[jwt.PyJWK, ...] | None = None
    #: Until then (clock seconds) the keys are fresh.
    fresh_until: float = float("-inf")
    #: Until then they may still be used, stale, while refreshes fail.
    usable_until: float = float("-inf")
    #: No fetch before then (unknown kid, failure).
    next_attempt: float = float("-inf")
    #: Why the last refresh failed; None after a success.
    error: str | None = None


@dataclass(frozen=True)
class _Discovered:
    jwks_uri: str
    fresh_until: float
    usable_until: float


class _Entry:
    def __init__(self) -> None:
        self.state = _State()
        # Held while fetching: the single flight.
        self.lock = threading.Lock()
        # The discovery document's jwks_uri (entries without a jwks_uri); under `lock`.
        self.discovered: _Discovered | None = None


class IssuerKeyCache:
    """Issuers' public keys, fetched on demand, cached, shared by every thread of the process."""

    def __init__(
        self,
        *,
        allow_insecure: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
        refetch_interval: float = REFETCH_INTERVAL,
        stale_for: float = STALE_FOR,
        refuse_address: Callable[[IPAddress], str | None] = address_refusal,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`refuse_address` and `ssl_context` exist for tests (a local TLS server); `clock`
        too. The other defaults are the documented rules."""
        self.policy = FetchPolicy(
            timeout=timeout,
            max_bytes=max_bytes,
            allow_insecure=allow_insecure,
            refuse_address=refuse_address,
            ssl_context=ssl_context,
        )
        self._clock = clock
        self._max_entries = max_entries
        self._refetch_interval = refetch_interval
        self._stale_for = stale_for
        # A waiter gives up after the longest a refresh can take (discovery
        # and key set, each within the fetch's deadline) and a margin.
        self._wait = 2 * timeout + 1.0
        self._entries: OrderedDict[tuple[str, str | None], _Entry] = OrderedDict()
        self._entries_lock = threading.Lock()

    def signing_keys(
        self, issuer: str, *, jwks_uri: str | None, kid: str | None
    ) -> list[jwt.PyJWK]:
        """Public keys of `issuer` that may verify a JWT whose header names `kid`.

        All of them when kid is None.

        jwks_uri None -> OIDC discovery: GET <issuer>/.well-known/openid-configuration,
        its `issuer` must equal `issuer`, then its jwks_uri. A kid not in the cached
        set triggers a refetch at most once per 30 s per issuer.

        :raises IssuerKeysUnavailable: no keys can be had, or none has that kid.
        """
        if not isinstance(issuer, str) or not isinstance(jwks_uri, str | None):
            raise IssuerKeysUnavailable("an issuer or jwks_uri that is not a string")
        if len(issuer) > MAX_URL_LENGTH or (jwks_uri and len(jwks_uri) > MAX_URL_LENGTH):
            raise IssuerKeysUnavailable(f"issuer or jwks_uri longer than {MAX_URL_LENGTH}")
        entry = self._entry(issuer, jwks_uri)
        state = entry.state
        now = self._clock()
        if now >= state.fresh_until and now >= state.next_attempt:
            state = self._refresh(entry, state, issuer, jwks_uri)
            now = self._clock()
        keys = self._usable(state, now, issuer)
        if kid is None:
            return list(keys)
        matching = [key for key in keys if key.key_id == kid]
        if not matching and now >= state.next_attempt:
            # The issuer may have rotated its keys since the last fetch.
            state = self._refresh(entry, state, issuer, jwks_uri)
            keys = self._usable(state, self._clock(), issuer)
            matching = [key for key in keys if key.key_id == kid]
        if not matching:
            raise IssuerKeysUnavailable(
                f"no key with kid {_shown(kid)} among the {len(keys)} keys of"
                f" issuer {_shown(issuer)}"
            )
        return matching

    def clear(self) -> None:
        """Forget every entry."""
        with self._entries_lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, issuer: str, jwks_uri: str | None) -> _Entry:
        key = (issuer, jwks_uri)
        with self._entries_lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
            return entry

    def _usable(self, state: _State, now: float, issuer: str) -> tuple[jwt.PyJWK, ...]:
        if state.keys is None or now >= state.usable_until:
            raise IssuerKeysUnavailable(state.error or "the issuer's keys were never fetched")
        if now >= state.fresh_until:
            STALE_ISSUER_KEYS_USED.inc()
        return state.keys

    def _refresh(self, entry: _Entry, seen: _State, issuer: str, jwks_uri: str | None) -> _State:
        """Fetch the entry's keys again, or wait for the fetch under way and take its result."""
        if not entry.lock.acquire(timeout=self._wait):
            raise IssuerKeysUnavailable(
                f"gave up waiting for the fetch of issuer {_shown(issuer)}'s keys"
            )
        try:
            if entry.state is not seen:
                return entry.state  # fetched (or failed) while this thread waited
            entry.state = self._fetched_state(entry, seen, issuer, jwks_uri)
            return entry.state
        finally:
            entry.lock.release()

    def _fetched_state(
        self, entry: _Entry, seen: _State, issuer: str, jwks_uri: str | None
    ) -> _State:
        try:
            uri = jwks_uri or self._jwks_uri_by_discovery(entry, issuer)
            fetched = self._fetch(uri, "jwks")
        except FetchError as exc:
            return self._failed(seen, issuer, exc.reason)
        try:
            keys = public_signing_keys(fetched.document)
        except InvalidKeySet as exc:
            ISSUER_KEY_FETCHES.labels("jwks", exc.outcome).inc()
            return self._failed(seen, issuer, f"{_shown(uri)}: {exc.reason}")
        ISSUER_KEY_FETCHES.labels("jwks", "ok").inc()
        now = self._clock()
        fresh_until = now + cache_lifetime(fetched.cache_control)
        if seen.error is not None:
            log.info("issuer keys: fetched the keys of issuer %s again", _shown(issuer))
        return _State(
            keys=tuple(keys),
            fresh_until=fresh_until,
            usable_until=fresh_until + self._stale_for,
            next_attempt=now + self._refetch_interval,
        )

    def _failed(self, seen: _State, issuer: str, reason: str) -> _State:
        now = self._clock()
        if seen.keys is not None and now < seen.usable_until:
            log.warning(
                "issuer keys: refreshing the keys of issuer %s failed: %s; still using the"
                " %d keys fetched before, for at most %d s more",
                _shown(issuer),
                reason,
                len(seen.keys),
                int(seen.usable_until - now),
            )
            return replace(seen, next_attempt=now + self._refetch_interval, error=reason)
        log.warning("issuer keys: cannot fetch the keys of issuer %s: %s", _shown(issuer), reason)
        return _State(next_attempt=now + self._refetch_interval, error=reason)

    def _fetch(self, url: str, document: str) -> Fetched:
        try:
            fetched = fetch_json(url, self.policy)
        except FetchError as exc:
            ISSUER_KEY_FETCHES.labels(document, exc.outcome).inc()
            raise
        return fetched

    def _jwks_uri_by_discovery(self, entry: _Entry, issuer: str) -> str:
        """The issuer's jwks_uri from its discovery document, cached (called under entry.lock).

        :raises FetchError: no discovery document within the rules, and none cached.
        """
        now = self._clock()
        known = entry.discovered
        if known is not None and now < known.fresh_until:
            return known.jwks_uri
        try:
            jwks_uri, lifetime = self._discover(issuer)
        except FetchError as exc:
            if known is not None and now < known.usable_until:
                log.warning(
                    "issuer keys: discovery for issuer %s failed: %s; using the jwks_uri"
                    " it named before",
                    _shown(issuer),
                    exc.reason,
                )
                return known.jwks_uri
            raise
        fresh_until = self._clock() + lifetime
        entry.discovered = _Discovered(jwks_uri, fresh_until, fresh_until + self._stale_for)
        return jwks_uri

    def _discover(self, issuer: str) -> tuple[str, int]:
        """(jwks_uri, lifetime) from `<issuer>/.well-known/openid-configuration`.

        OpenID Connect Discovery 1.0 §4: the URL is the issuer with any
        trailing `/` removed, then the well-known path; an issuer has no query
        or fragment (§2 via RFC 8414 §2). §4.3: the document's `issuer` MUST
        be identical to the issuer the URL was made from.
        """
        if "?" in issuer or "#" in issuer:
            ISSUER_KEY_FETCHES.labels("discovery", "refused_url").inc()
            raise FetchError("refused_url", "an issuer with a query or fragment")
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        fetched = self._fetch(url, "discovery")
        document = fetched.document
        if not isinstance(document, dict):
            ISSUER_KEY_FETCHES.labels("discovery", "invalid_document").inc()
            raise FetchError("invalid_document", f"{url}: not a JSON object")
        if document.get("issuer") != issuer:
            ISSUER_KEY_FETCHES.labels("discovery", "issuer_mismatch").inc()
            named = document.get("issuer")
            raise FetchError(
                "issuer_mismatch",
                f"{url}: names issuer {_shown(named) if isinstance(named, str) else 'none'}",
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri or len(jwks_uri) > MAX_URL_LENGTH:
            ISSUER_KEY_FETCHES.labels("discovery", "invalid_document").inc()
            raise FetchError("invalid_document", f"{url}: no usable jwks_uri")
        ISSUER_KEY_FETCHES.labels("discovery", "ok").inc()
        return jwks_uri, cache_lifetime(fetched.cache_control)


def issuer_keys() -> IssuerKeyCache:
    """The current app's cache (app.runtime's Runtime.issuer_keys, built in create_app)."""
    return runtime().issuer_keys
