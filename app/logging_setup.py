"""One JSON line per request on the `ccserver.access` logger, and X-Request-ID.

A request id sent by the caller (a proxy or the client) is kept when it is at
most 128 safe characters; anything else is replaced by a fresh one, so a log
line can never be forged or bloated through the header. The response always
carries the id back in `X-Request-ID`.

What is logged is a fixed list of fields: method, path (never the query
string, which could hold a secret a careless client put there), status,
duration, client id when the request authenticated one, request id and the
peer address. Headers and bodies are never logged, so neither are
Authorization headers, secrets or tokens.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime

from flask import Flask, Response, g, request

ACCESS_LOGGER = "ccserver.access"
REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

access_log = logging.getLogger(ACCESS_LOGGER)


class JSONFormatter(logging.Formatter):
    """Formats a record as one JSON object; access records carry their fields in `access`."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


def request_id_from(value: str | None) -> str:
    """The caller's request id when it is safe to echo and log, else a new one."""
    if value and _SAFE_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def _before() -> None:
    g.request_started = time.perf_counter()
    g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))


def _after(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id is None:
        return response
    response.headers[REQUEST_ID_HEADER] = request_id
    if access_log.isEnabledFor(logging.INFO):
        started = g.get("request_started") or time.perf_counter()
        fields = {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "request_id": request_id,
            "remote_addr": request.remote_addr,
        }
        client_id = current_client_id()
        if client_id:
            fields["client_id"] = client_id
        access_log.info("request", extra={"access": fields})
    return response


def current_client_id() -> str | None:
    """The client this request authenticated as: token endpoint, API caller or console admin."""
    client_id = g.get("client_id")
    if client_id:
        return client_id
    caller = g.get("caller")
    return getattr(caller, "client_id", None)


def init_app(app: Flask) -> None:
    """Install the request-id and access-log hooks, and a JSON handler once per process."""
    if app.config.get("ACCESS_LOG", True) and not any(
        getattr(h, "ccserver_access", False) for h in access_log.handlers
    ):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
        handler.ccserver_access = True  # type: ignore[attr-defined]
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        # Our handler writes the line; the root logger must not print it again.
        access_log.propagate = False
    # Alembic's fileConfig (flask db upgrade in this process) disables every
    # logger that exists at the time; the access log must survive it.
    access_log.disabled = False
    # First in, last out: our timer starts before any other hook can answer
    # early, and the log sees the response after every other hook changed it.
    app.before_request_funcs.setdefault(None, []).insert(0, _before)
    app.after_request_funcs.setdefault(None, []).insert(0, _after)
