"""Production server (`make serve-prod`): granian serving wsgi:app; knobs from the environment.

    PORT (5000), HOST (0.0.0.0)   where to listen
    WORKERS (2)                   processes; about one per CPU core (token
                                  signing is CPU-bound)
    THREADS (4)                   request threads per worker; each holds at most
                                  one database connection and the pool is sized
                                  from THREADS (app/settings.py DB_POOL_SIZE)
    GRACEFUL_TIMEOUT (20)         on SIGTERM, seconds a worker may take to finish
    WORKERS_MAX_RSS (0: off)      recycle a worker whose RSS passes this many MiB
    LOG_LEVEL (info), ACCESS_LOG  granian's own log level; any ACCESS_LOG value
                                  turns granian's access log on
    LOG_FORMAT (json)             text: human-readable lines instead

granian was chosen by measurement (`make bench`, docs/performance.md): on
this endpoint it spends far less CPU per request than gunicorn's sync or
gthread workers. gunicorn.conf.py still works:
`gunicorn -c gunicorn.conf.py wsgi:app`.

Before granian binds, this process checks that the port is free (two
servers on one port would split the traffic), builds the app once (a bad
setting, database or KEYS_DIR ends here, in one line), runs `db upgrade` and
`keys init` (both idempotent), logs what it loaded, and warns when no admin
client exists with the command that makes one. LOG_FORMAT defaults to json
here: every line, granian's own included, is one JSON object.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("ccserver.serve")


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def prepare_metrics_dir() -> None:
    """Prometheus multi-process mode (app/http/metrics.py): one empty directory shared by the workers."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ccserver-metrics-")
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    # A previous run's files would be summed into this run's figures.
    for path in directory.glob("*.db"):
        path.unlink()


def prepare(host: str, port: int) -> None:
    """Everything before granian binds; one log line and exit status 1 on a start-up failure."""
    from app.cli.serve import PortInUse, check_port

    try:
        check_port(host, port)
    except PortInUse as busy:
        log.error("%s", busy)
        sys.exit(1)
    from app import create_app
    from app.cli.serve import prepare_to_serve
    from app.startup import explain

    try:
        app = create_app()
        prepare_to_serve(app)
    except Exception as exc:
        line = explain(exc)
        if line is None:
            raise
        log.error("%s", line)
        sys.exit(1)


def main() -> None:
    os.environ.setdefault("LOG_FORMAT", "json")
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    from app.http import logs

    log_format = os.environ["LOG_FORMAT"]
    logs.configure(log_format)
    # All interfaces by default: instances sit behind a load balancer or in a container.
    host = os.environ.get("HOST", "0.0.0.0")  # noqa: S104
    port = _int("PORT", 5000)
    prepare_metrics_dir()
    prepare(host, port)
    max_rss = _int("WORKERS_MAX_RSS", 0)
    Server(
        "wsgi:app",
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=_int("WORKERS", 2),
        blocking_threads=_int("THREADS", 4),
        websockets=False,
        respawn_failed_workers=True,
        workers_kill_timeout=_int("GRACEFUL_TIMEOUT", 20),
        workers_max_rss=max_rss or None,
        log_level=LogLevels(os.environ.get("LOG_LEVEL", "info").lower()),
        log_access=bool(os.environ.get("ACCESS_LOG")),
        log_dictconfig=logs.granian_log_config(log_format),
        working_dir=Path(__file__).resolve().parent,
    ).serve()


if __name__ == "__main__":
    main()
