"""Prometheus metrics: `/metrics`, OAuth outcomes, latency, signing key age.

Labels only ever hold values from small fixed sets (endpoint names, outcome
codes, authentication method names): never a client id, secret or token, so
neither a secret can leak through a scrape nor an attacker grow the series.

Under gunicorn with several workers each process keeps its own counters, so
`PROMETHEUS_MULTIPROC_DIR` must name an empty directory shared by the workers
(gunicorn.conf.py sets one up and calls `mark_process_dead` from
`child_exit`); `/metrics` then sums every worker's files through
`MultiProcessCollector`. The variable must be set before this module is
imported, which is why gunicorn.conf.py sets it and not create_app.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from authlib.integrations.flask_oauth2 import client_authenticated
from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import ClientDisconnected

from app.extensions import db
from app.http.observer import RequestView, ResponseView
from app.models import SigningKey
from app.protocol import AUTH_METHODS
from app.timeutil import utcnow

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # prometheus_client writes there as soon as a metric exists; a missing
    # directory would stop every process (the CLI too) at import.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

bp = Blueprint("metrics", __name__)

#: The OAuth endpoints counted by outcome, keyed by Flask endpoint name (app.oauth.views).
OAUTH_ENDPOINTS = {
    "oauth.issue_token": "token",
    "oauth.introspect_token": "introspect",
    "oauth.revoke_token": "revoke",
}
# The same, by path, for a request that matched no endpoint (a Host refused
# before routing): still a try at the OAuth endpoint.
_OAUTH_PATHS = {
    "/oauth2/token": "token",
    "/oauth2/introspect": "introspect",
    "/oauth2/revoke": "revoke",
}

#: RFC 6749 / 7009 / 8707 error codes kept as outcome labels; others are "other".
KNOWN_ERRORS = frozenset(
    {
        "invalid_client",
        "invalid_request",
        "invalid_scope",
        "invalid_target",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "unsupported_token_type",
        "temporarily_unavailable",
        "server_error",
    }
)

TOKEN_REQUESTS = Counter(
    "ccserver_token_requests",
    "Requests to the OAuth endpoints (token, introspect, revoke) by outcome "
    "and client authentication method.",
    ["endpoint", "outcome", "auth_method"],
)
REQUEST_LATENCY = Histogram(
    "ccserver_http_request_duration_seconds",
    "Time to answer an HTTP request, by Flask endpoint.",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
#: One per request refused by the failed-authentication rate limit
#: (docs/operations.md, Metrics): counted here from every 429 response (the
#: limiter is the only source of 429s), so the limiter itself must not
#: increment it.
RATE_LIMITED = Counter(
    "ccserver_rate_limit_rejections",
    "Requests answered 429 by the failed-authentication rate limit.",
)
#: Fetches of federated issuers' documents (app/federation/issuer_keys.py), by
#: document (`jwks`, `discovery`) and outcome (app.federation.fetch.FETCH_OUTCOMES).
#: Never the issuer or URL: admins and token senders choose those without bound.
ISSUER_KEY_FETCHES = Counter(
    "ccserver_federation_key_fetches",
    "Fetches of federated issuers' key sets and discovery documents, by outcome.",
    ["document", "outcome"],
)
#: Key look-ups answered from keys past their expiry because refreshing them failed.
STALE_ISSUER_KEYS_USED = Counter(
    "ccserver_federation_stale_key_uses",
    "Federated issuer key look-ups answered with stale keys after a failed refresh.",
)

# Pre-bound children: labels() builds a key tuple and takes a lock each call;
# a dict hit on a tuple we already hold is far cheaper on the token path.
_latency_children: dict[str, object] = {}
_request_children: dict[tuple[str, str, str], object] = {}


def _latency_child(endpoint: str):
    child = _latency_children.get(endpoint)
    if child is None:
        child = _latency_children[endpoint] = REQUEST_LATENCY.labels(endpoint)
    return child


def _request_child(endpoint: str, outcome: str, method: str):
    key = (endpoint, outcome, method)
    child = _request_children.get(key)
    if child is None:
        child = _request_children[key] = TOKEN_REQUESTS.labels(endpoint, outcome, method)
    return child


#: The auth_method label of a token request authenticated by a federated credential.
FEDERATED_LABEL = "federated"


def note_client_authenticated(_sender, client=None, grant=None, **_kwargs) -> None:
    """Authlib's client_authenticated signal: remember who and how, for logs and metrics."""
    if client is not None:
        g.client_id = client.id
    request = getattr(grant, "request", None)
    method = getattr(request, "auth_method", None)
    if getattr(request, "federated_credential", None):
        # RFC 7523 as private_key_jwt is, but told apart for operators (docs/api.md §1.3).
        g.auth_method = FEDERATED_LABEL
    elif method in AUTH_METHODS:  # a label value: only ever one of a fixed few
        g.auth_method = method


def auth_method_tried(headers, length: int | None, body: Callable[[], bytes]) -> str:
    """The client authentication method a request tried, judged without parsing it again."""
    methods = []
    if "Authorization" in headers:
        methods.append("client_secret_basic")
    if length and length <= (current_app.config.get("MAX_CONTENT_LENGTH") or 65536):
        # The view has already read and cached the body; a substring test on
        # it is cheap, and form encoding escapes '=' inside values.
        try:
            data = body()
        except ClientDisconnected:
            # The body was shorter than its Content-Length: the view has
            # answered 400 already; a second read must not turn that into 500.
            data = b""
        if data.startswith(b"client_secret=") or b"&client_secret=" in data:
            methods.append("client_secret_post")
        if b"client_assertion" in data:
            methods.append("private_key_jwt")
    if not methods:
        return "none"
    return methods[0] if len(methods) == 1 else "multiple"


def outcome(status: int, json_body: Callable[[], object]) -> str:
    """The outcome label of a response given its status and its body as parsed JSON."""
    if status < 300:
        return "success"
    if status == 429:
        return "rate_limited"
    if status == 413:
        return "too_large"
    if status >= 500 and status != 503:
        return "error"
    body = json_body()
    code = body.get("error") if isinstance(body, dict) else None
    if code in KNOWN_ERRORS:
        return code
    return "error" if status >= 500 else "other"


class RequestMetrics:
    """Request observer: latency by endpoint, 429s, and the OAuth outcome and auth method."""

    def after(self, request: RequestView, response: ResponseView) -> None:
        started = request.started
        if started is None:  # the pipeline's `before` never ran: nothing to time
            return
        endpoint = request.endpoint or "unmatched"
        _latency_child(endpoint).observe(time.perf_counter() - started)
        status = response.status
        if status == 429:
            RATE_LIMITED.inc()
        oauth = OAUTH_ENDPOINTS.get(endpoint) or _OAUTH_PATHS.get(request.path)
        if oauth is not None and request.method == "POST":
            # Set by note_client_authenticated; else judged from the request.
            tried = g.get("auth_method") or auth_method_tried(
                request.headers, request.content_length, request.body
            )
            _request_child(oauth, outcome(status, response.json), tried).inc()


class SigningKeyCollector(Collector):
    """Signing key ages read from signing_keys at scrape time (all instances agree)."""

    def __init__(self, rows: list[tuple[str, float]]) -> None:
        self.rows = rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        age = GaugeMetricFamily(
            "ccserver_signing_key_age_seconds",
            "Seconds since the signing key took its status (current: since activation).",
            labels=["status"],
        )
        count = GaugeMetricFamily(
            "ccserver_signing_keys", "Signing keys by status.", labels=["status"]
        )
        counts: dict[str, int] = {"next": 0, "current": 0, "retired": 0}
        for status, seconds in self.rows:
            counts[status] = counts.get(status, 0) + 1
            if status == "current":
                age.add_metric([status], seconds)
        for status, n in counts.items():
            count.add_metric([status], n)
        yield age
        yield count


def signing_key_rows() -> list[tuple[str, float]]:
    """(status, age in seconds) of every signing key; [] when the database is down."""
    now = utcnow()
    try:
        rows = db.session.execute(
            sa.select(SigningKey.status, SigningKey.activated_at, SigningKey.created_at)
        ).all()
    except sa.exc.SQLAlchemyError:
        db.session.rollback()
        return []
    result = []
    for status, activated_at, created_at in rows:
        since = activated_at or created_at
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=now.tzinfo)
        result.append((status, max(0.0, (now - since).total_seconds()) if since else 0.0))
    return result


def _scrape_allowed() -> bool:
    """True without METRICS_TOKEN, else only for `Authorization: Bearer <METRICS_TOKEN>`."""
    token = current_app.config.get("METRICS_TOKEN")
    if not token:
        return True
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


@bp.get("/metrics")
def metrics():
    """Prometheus text format: this process, or every worker in multi-process mode."""
    if not _scrape_allowed():
        # Prometheus sends it with `authorization: {credentials: …}` (docs/operations.md).
        return Response(
            "metrics need Authorization: Bearer <METRICS_TOKEN>\n",
            status=401,
            content_type="text/plain; charset=utf-8",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    keys = CollectorRegistry(auto_describe=False)
    keys.register(SigningKeyCollector(signing_key_rows()))
    body = generate_latest(registry) + generate_latest(keys)
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Register /metrics and note who authenticated and how.

    Requests are counted by `RequestMetrics`, an observer of app.http.pipeline.
    """
    app.register_blueprint(bp)
    # weak=False: the receiver is a module function; connecting twice is a no-op.
    client_authenticated.connect(note_client_authenticated, weak=False)
