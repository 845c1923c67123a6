"""Production gunicorn settings (`make serve-prod`); every knob comes from the environment.

    PORT (5000), HOST (0.0.0.0)   where to listen
    WORKERS (2)                   processes; about one per CPU core (token
                                  signing and secret hashing are CPU-bound)
    THREADS (4)                   threads per worker (gthread); each holds at
                                  most one database connection, and the pool
                                  is sized from THREADS (app/settings.py
                                  DB_POOL_SIZE = THREADS + 1, same overflow)
    TIMEOUT (30)                  a worker silent this long is killed and replaced
    GRACEFUL_TIMEOUT (20)         on SIGTERM workers stop accepting, finish
                                  in-flight requests for up to this long, exit
    MAX_REQUESTS (0: off)         recycle a worker after this many requests

Database connections per instance: WORKERS x (4 x DB_POOL_SIZE + 1) at most
(two pools with their overflow, plus the rate-limit feed's LISTEN connection;
docs/deployment.md); keep the sum over all instances below PostgreSQL's
max_connections.
"""

import os
import shutil
import tempfile
from pathlib import Path

# All interfaces by default: instances sit behind a load balancer or in a container.
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"  # noqa: S104
workers = int(os.environ.get("WORKERS", "2"))
# gthread: a slow client or database call does not block the whole worker.
worker_class = os.environ.get("WORKER_CLASS", "gthread")
threads = int(os.environ.get("THREADS", "4"))
timeout = int(os.environ.get("TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "20"))
keepalive = 5
# gunicorn >= 24 opens a control socket at one fixed per-user path, which two
# instances on one host would fight over; nothing here needs it. Set
# CONTROL_SOCKET to a path to have it.
control_socket_disable = not os.environ.get("CONTROL_SOCKET")
if os.environ.get("CONTROL_SOCKET"):
    control_socket = os.environ["CONTROL_SOCKET"]
# Recycle workers now and then so a slow leak cannot grow without bound.
max_requests = int(os.environ.get("MAX_REQUESTS", "0"))
max_requests_jitter = 1000 if max_requests else 0
accesslog = os.environ.get("ACCESS_LOG") or None
# gunicorn's default format logs the request line, query string included;
# %(U)s is the path alone, so a credential sent in a query is never written
# (nor the Referer, which may hold another URL's query).
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s"'
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
# Production lines are JSON (app/http/logs.py), gunicorn's own included; the
# workers' apps read LOG_FORMAT from the environment they inherit.
os.environ.setdefault("LOG_FORMAT", "json")
if os.environ["LOG_FORMAT"] == "json":
    from app.http.logs import gunicorn_log_config

    logconfig_dict = gunicorn_log_config("json")
    if not accesslog and logconfig_dict:
        # A logconfig_dict turns gunicorn's access log on; ACCESS_LOG decides, as before.
        logconfig_dict["loggers"]["gunicorn.access"]["level"] = "WARNING"

# Prometheus multi-process mode (app/http/metrics.py): each worker writes its
# metrics to files here and /metrics sums them. Workers inherit it from this
# process, before any of them imports prometheus_client.
_metrics_dir_made = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _metrics_dir_made:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ccserver-metrics-")


def on_starting(server):
    """Start from an empty metrics directory: a previous run's files would be summed in."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink()


def child_exit(server, worker):
    """Forget a dead worker's live gauges, as prometheus_client's multiprocess docs say."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory this file made (one the operator chose stays)."""
    if _metrics_dir_made:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
