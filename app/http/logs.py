"""Where log lines go and what they look like: LOG_FORMAT `text` (development) or `json`.

`text`: one human-readable line per request (`15:04:05 POST /oauth2/token 200
3.1ms client=… from 127.0.0.1 id=…`) and `LEVEL logger: message` for the rest.
`json`: every line one JSON object (app.http.access_log.JSONFormatter), the
servers' own lines included: serve.py hands granian the same formatter
(`granian_log_config`), and Flask's and werkzeug's loggers reach the root
handler installed here.

The root logger keeps its level (WARNING), so libraries stay quiet; the
server's own loggers (`app.*`, `ccserver.*`), werkzeug's and alembic's migration lines say INFO too.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from app.http.access_log import ACCESS_LOGGER, JSONFormatter

#: Loggers whose INFO lines are worth an operator's eye.
SERVER_LOGGERS = ("app", "ccserver", "werkzeug", "alembic.runtime.migration")


class TextFormatter(logging.Formatter):
    """An access record as `time method path status duration …`; else the message."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = getattr(record, "access", None)
        if not isinstance(fields, dict):
            line = f"{stamp} {record.levelname} {record.name}: {record.getMessage()}"
            if record.exc_info:
                line += "\n" + self.formatException(record.exc_info)
            return line
        parts = [
            stamp,
            str(fields.get("method")),
            str(fields.get("path")),
            str(fields.get("status")),
            f"{fields.get('duration_ms', 0):.1f}ms",
        ]
        if fields.get("client_id"):
            parts.append(f"client={fields['client_id']}")
        parts.append(f"from {fields.get('remote_addr')}")
        parts.append(f"id={fields.get('request_id')}")
        return " ".join(parts)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each line (as logging.lastResort does)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter of LOG_FORMAT's lines."""
    return JSONFormatter() if log_format == "json" else TextFormatter()


def configure(log_format: str) -> None:
    """Send every log line to stderr in `log_format`; run again, it swaps the formatter."""
    formatter = formatter_for(log_format)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "ccserver_root", False)]
    if ours:
        for handler in ours:
            handler.setFormatter(formatter)
    else:
        handler = StderrHandler()
        handler.setFormatter(formatter)
        handler.ccserver_root = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    # The access log has its own handler (app.http.access_log.init_app).
    for handler in logging.getLogger(ACCESS_LOGGER).handlers:
        if getattr(handler, "ccserver_access", False):
            handler.setFormatter(formatter)


def granian_log_config(log_format: str) -> dict[str, Any] | None:
    """granian's logging dictConfig for LOG_FORMAT: None keeps granian's own lines."""
    if log_format != "json":
        return None
    formatter = {"()": f"{JSONFormatter.__module__}.{JSONFormatter.__qualname__}"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": formatter},
        "handlers": {
            "console": {
                "formatter": "json",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "_granian": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }


def gunicorn_log_config(log_format: str) -> dict[str, Any] | None:
    """gunicorn's `logconfig_dict` for LOG_FORMAT: its error and access lines as JSON too."""
    config = granian_log_config(log_format)
    if config is None:
        return None
    handler = {"handlers": ["console"], "level": "INFO", "propagate": False}
    config["loggers"] = {"gunicorn.error": handler, "gunicorn.access": dict(handler)}
    # The app's own root handler (configure) writes everything else.
    config["root"] = {"level": "WARNING", "handlers": []}
    return config
