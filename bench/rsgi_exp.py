"""Experiment: the WSGI app called on granian's RSGI loop thread (no blocking-thread hand-off)."""

import io
import sys

from wsgi import app as wsgi_app

BASE = {
    "GATEWAY_INTERFACE": "CGI/1.1",
    "SCRIPT_NAME": "",
    "SERVER_SOFTWARE": "Granian",
    "wsgi.errors": sys.stderr,
    "wsgi.input_terminated": True,
    "wsgi.multiprocess": False,
    "wsgi.multithread": False,
    "wsgi.run_once": False,
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
}


class Response:
    __slots__ = ("status", "headers")

    def __call__(self, status, headers, exc_info=None):
        self.status = int(status[:3])
        self.headers = headers


async def app(scope, proto):
    body = await proto()
    env = dict(BASE)
    host, _, port = scope.server.rpartition(":")
    env["SERVER_NAME"] = host
    env["SERVER_PORT"] = port
    env["REQUEST_METHOD"] = scope.method
    env["PATH_INFO"] = scope.path
    env["QUERY_STRING"] = scope.query_string
    env["REMOTE_ADDR"] = scope.client.rpartition(":")[0]
    env["SERVER_PROTOCOL"] = "HTTP/1.1"
    for key, value in scope.headers.items():
        if key == "content-type":
            env["CONTENT_TYPE"] = value
        elif key == "content-length":
            env["CONTENT_LENGTH"] = value
        else:
            env["HTTP_" + key.upper().replace("-", "_")] = value
    env["wsgi.input"] = io.BytesIO(body)
    resp = Response()
    out = wsgi_app(env, resp)
    try:
        data = b"".join(out)
    finally:
        close = getattr(out, "close", None)
        if close:
            close()
    proto.response_bytes(resp.status, resp.headers, data)
