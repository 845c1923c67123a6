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
import os
import re
import sys
import threading
import time

from flask import Flask, Response, g, request

from app.http.client_address import client_address

ACCESS_LOGGER = "ccserver.access"
REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

access_log = logging.getLogger(ACCESS_LOGGER)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


# (second, "YYYY-MM-DDTHH:MM:SS") of the last line: strftime once per second,
# not once per line. One tuple, so a thread never sees half an update.
_last_stamp: tuple[int, str] = (-1, "")


def _utc_stamp(created: float) -> str:
    global _last_stamp
    second = int(created)
    cached = _last_stamp
    if cached[0] != second:
        cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _last_stamp = cached
    return cached[1]


class JSONFormatter(logging.Formatter):
    """Formats a record as one JSON object; access records carry their fields in `access`."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": f"{_utc_stamp(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        return _ENCODER.encode(line)


def request_id_from(value: str | None) -> str:
    """The caller's request id when it is safe to echo and log, else a new one."""
    if value and _SAFE_REQUEST_ID.fullmatch(value):
        return value
    # 128 random bits, hex: cheaper than uuid4() and just as unique.
    return os.urandom(16).hex()


def begin_request(ctx_g, headers) -> None:
    """Start the request's timer and settle its id (on `ctx_g`, Flask's g object)."""
    ctx_g.request_started = time.perf_counter()
    ctx_g.request_id = request_id_from(headers.get(REQUEST_ID_HEADER))


def log_request(ctx_g, method: str, path: str, status: int, environ: dict) -> None:
    """Write the access line of a request `begin_request` started."""
    if access_log.isEnabledFor(logging.INFO):
        started = getattr(ctx_g, "request_started", None) or time.perf_counter()
        fields = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "request_id": ctx_g.request_id,
            "remote_addr": client_address(environ),
        }
        client_id = current_client_id()
        if client_id:
            fields["client_id"] = client_id
        access_log.handle(_access_record(fields))


def _before() -> None:
    # One proxy lookup each: LocalProxy attribute access is most of this hook's cost.
    begin_request(g._get_current_object(), request.headers)


def _after(response: Response) -> Response:
    ctx_g = g._get_current_object()
    request_id = getattr(ctx_g, "request_id", None)
    if request_id is None:
        return response
    response.headers[REQUEST_ID_HEADER] = request_id
    req = request._get_current_object()
    log_request(ctx_g, req.method, req.path, response.status_code, req.environ)
    return response


# Every attribute a LogRecord has, with the values that never change for an
# access line; filled from a dict instead of LogRecord.__init__, which looks
# up the process name, the module name and more on every line.
_RECORD_TEMPLATE = logging.LogRecord(
    ACCESS_LOGGER, logging.INFO, __file__, 0, "request", None, None, "_after"
).__dict__


def _access_record(fields: dict) -> logging.LogRecord:
    record = logging.LogRecord.__new__(logging.LogRecord)
    attrs = record.__dict__
    attrs.update(_RECORD_TEMPLATE)
    now = time.time()
    thread = threading.current_thread()
    attrs["created"] = now
    attrs["msecs"] = (now - int(now)) * 1000
    attrs["relativeCreated"] = (now - logging._startTime) * 1000  # noqa: SLF001
    attrs["thread"] = thread.ident
    attrs["threadName"] = thread.name
    attrs["process"] = os.getpid()  # a forked worker has its own
    attrs["access"] = fields
    return record


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
