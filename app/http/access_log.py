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

The development server (`flask run`) writes its own request line to the
`werkzeug` logger, query string included; `StripQueryString` cuts the query
out of every line of that logger, so credentials a client wrongly put in the
URL (refused with 400, RFC 6749 §2.3.1) are not written there either.
gunicorn.conf.py's access log format names the path without the query, and
granian's default format does too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time

import orjson
from flask import Flask, g

from app.http.client_address import client_address
from app.http.observer import RequestView, ResponseView

ACCESS_LOGGER = "ccserver.access"
DEV_SERVER_LOGGER = "werkzeug"
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


def _encode(line: dict) -> str:
    try:
        return orjson.dumps(line).decode()
    except orjson.JSONEncodeError:
        # A lone surrogate (an undecodable byte in a message): json escapes it.
        return _ENCODER.encode(line)


def _access_line(created: float, fields: dict) -> str:
    line = {
        "ts": f"{_utc_stamp(created)}.{int((created - int(created)) * 1000):03d}Z",
        "level": "info",
        "logger": ACCESS_LOGGER,
    }
    line.update(fields)
    return _encode(line)


class JSONFormatter(logging.Formatter):
    """Formats a record as one JSON object; access records carry their fields in `access`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "access", None)
        if isinstance(fields, dict) and record.name == ACCESS_LOGGER:
            return _access_line(record.created, fields)
        line = {
            "ts": f"{_utc_stamp(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
            if record.exc_info:
                # The traceback inside the line: one JSON object per line, always.
                line["exc_info"] = self.formatException(record.exc_info)
        return _encode(line)


def request_id_from(value: str | None) -> str:
    """The caller's request id when it is safe to echo and log, else a new one."""
    if value and _SAFE_REQUEST_ID.fullmatch(value):
        return value
    # 128 random bits, hex: cheaper than uuid4() and just as unique.
    return os.urandom(16).hex()


class RequestLog:
    """Request observer: settle the request id, then write the access line and echo the id."""

    def before(self, request: RequestView) -> None:
        request.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))

    def after(self, request: RequestView, response: ResponseView) -> None:
        request_id = request.request_id
        if request_id is None:  # `before` never ran: nothing to log
            return
        response.headers.set(REQUEST_ID_HEADER, request_id)
        if access_log.isEnabledFor(logging.INFO):
            fields = {
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round((time.perf_counter() - (request.started or 0.0)) * 1000, 3),
                "request_id": request_id,
                "remote_addr": client_address(request.environ),
            }
            client_id = current_client_id()
            if client_id:
                fields["client_id"] = client_id
            handler = _sole_handler()
            if handler is None:
                access_log.handle(_access_record(fields))
            else:
                _write(handler, _access_line(time.time(), fields))


def _sole_handler() -> logging.StreamHandler | None:
    """Our own handler when it alone would see an access record, else None.

    Then the line is written straight to its stream: the same bytes as
    `access_log.handle` would write, without building a LogRecord and walking
    the logging machinery (about 5 % of a basic token request in process,
    docs/performance.md). Any other handler or filter, added by an operator's
    logging config or by a test, sends the record the usual way.
    """
    handlers = access_log.handlers
    if len(handlers) != 1 or access_log.filters or access_log.disabled or access_log.propagate:
        return None
    handler = handlers[0]
    if (
        not getattr(handler, "ccserver_access", False)
        or handler.filters
        or handler.level > logging.INFO
        or type(handler.formatter) is not JSONFormatter
    ):
        return None
    return handler  # type: ignore[return-value]


def _write(handler: logging.StreamHandler, line: str) -> None:
    # StreamHandler.emit without the record: one write and a flush, under its lock.
    handler.acquire()
    try:
        handler.stream.write(line + handler.terminator)
        handler.stream.flush()
    except Exception:  # noqa: BLE001  # as Handler.handleError: logging never breaks a request
        if logging.raiseExceptions:
            sys.stderr.write("--- access log line could not be written\n")
    finally:
        handler.release()


# Every attribute a LogRecord has, with the values that never change for an
# access line; filled from a dict instead of LogRecord.__init__, which looks
# up the process name, the module name and more on every line.
_RECORD_TEMPLATE = logging.LogRecord(
    ACCESS_LOGGER, logging.INFO, __file__, 0, "request", None, None, "after"
).__dict__


def _access_record(fields: dict) -> logging.LogRecord:
    record = logging.LogRecord.__new__(logging.LogRecord)
    attrs = record.__dict__
    attrs.update(_RECORD_TEMPLATE)
    now = time.time()
    thread = threading.current_thread()
    attrs["created"] = now
    attrs["msecs"] = (now - int(now)) * 1000
    start = logging._startTime  # type: ignore[attr-defined]  # noqa: SLF001
    attrs["relativeCreated"] = (now - start) * 1000
    attrs["thread"] = thread.ident
    attrs["threadName"] = thread.name
    attrs["process"] = os.getpid()  # a forked worker has its own
    attrs["access"] = fields
    return record


# A request target's query: from "?" to the next space or quote (the line ends
# ' HTTP/1.1"'). Targets in the request line are never quoted or spaced.
_QUERY = re.compile(r"\?[^\s\"]*")


class StripQueryString(logging.Filter):
    """Cut the query string out of a log record's message and string arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "?" in record.msg:
            record.msg = _QUERY.sub("", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _QUERY.sub("", arg) if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True


def current_client_id() -> str | None:
    """The client this request authenticated as: token endpoint, API caller or console admin."""
    client_id = g.get("client_id")
    if client_id:
        return client_id
    caller = g.get("caller")
    return getattr(caller, "client_id", None)


def init_app(app: Flask) -> None:
    """Install the JSON handler of the access log, once per process.

    The log itself is written by `RequestLog`, an observer of app.http.pipeline.
    """
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
    dev_server_log = logging.getLogger(DEV_SERVER_LOGGER)
    if not any(isinstance(f, StripQueryString) for f in dev_server_log.filters):
        dev_server_log.addFilter(StripQueryString())
