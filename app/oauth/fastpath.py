"""POST /oauth2/token, /oauth2/introspect and /oauth2/revoke served in front of Flask's dispatch.

Through Flask a token request builds a Request, matches the URL map, runs
the request hooks through LocalProxies and builds a Response with
werkzeug's Headers: about 40% of the CPU a token costs in process.
`TokenFastPath` wraps `app.wsgi_app` and answers a *simple* request to one
of the three OAuth endpoints a client or resource server calls per token
itself, in an app context only, with the same AuthorizationServer, grant or
endpoint, and request pipeline (app.http.pipeline); everything else goes to
Flask untouched.

Simple means POST to exactly one of the three paths with a Content-Length of ASCII
digits no larger than MAX_CONTENT_LENGTH, no Transfer-Encoding, and the
content type application/x-www-form-urlencoded (judged as werkzeug judges a
mimetype). Odd requests (chunked, oversized, another content type, ...) thus
keep Flask's answers and error bodies. A request also goes to Flask while
the app carries any request hook, URL preprocessor or request signal
receiver besides the pipeline's three hooks (tests add recorders; an
init_app may add a hook), or when Flask's test client wants the request
context kept.

Flask's three hooks run the app's request observers; this path runs the
same `Pipeline` object: `before` before the grant, `after` on the response,
`teardown` at the end, then the app context's own teardown (session
removal) when it pops. An observer added to the pipeline or changed in its
module thus acts on both paths; there is no second copy to keep in step. An
exception is handed to Flask's own error handling in a request context made
for it, so a database outage or a bug is answered exactly as before (503 or
500 under /oauth2, or raised under TESTING).

There is no `flask.request` here: code on the token path reads the request
from the FormRequest it is given, and its address from app.http.client_address
(`client_address()`, `request_environ()`), which work on both paths.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from flask import Flask
from flask import Response as FlaskResponse
from flask.signals import request_finished, request_started, request_tearing_down
from werkzeug.datastructures import EnvironHeaders
from werkzeug.wrappers import Response as WerkzeugResponse

from app.http.observer import HeaderList, RequestView, ResponseView, response_json
from app.http.pipeline import attach, pipeline_of
from app.oauth import views
from app.oauth.requests import (
    ENDPOINT_PATHS,
    FORM_CONTENT_TYPE,
    PlainResponse,
    RawFormRequest,
    flask_response,
)
from app.oauth.server import AuthorizationServer
from app.runtime import runtime_of

TOKEN_PATH = ENDPOINT_PATHS["token"]
_DEFAULT_CONTENT_TYPE = f"{FlaskResponse.default_mimetype}; charset=utf-8"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class Route:
    """One endpoint this path serves: its URL, Flask's endpoint and view for it, and its answer."""

    path: str
    #: Flask's endpoint name for the path (None: no such route, Flask answers everything).
    endpoint: str | None
    #: The view Flask would call; a different one there means Flask must answer.
    view: Callable[..., Any]
    answer: Callable[[RawFormRequest], PlainResponse]

    @property
    def blueprint(self) -> str | None:
        return self.endpoint.rpartition(".")[0] if self.endpoint else None


def routes_of(app: Flask, server: AuthorizationServer) -> dict[str, Route]:
    """The fast path's routes, each matched against the app's URL map once."""

    def endpoint_of(path: str) -> str | None:
        try:
            return app.url_map.bind("localhost").match(path, "POST")[0]
        except Exception:  # noqa: BLE001 - no such route: Flask answers it
            return None

    made = [
        (TOKEN_PATH, views.issue_token, server.create_token_response),
        (
            ENDPOINT_PATHS["introspection"],
            views.introspect_token,
            lambda raw: server.create_endpoint_response("introspection", raw),
        ),
        (
            ENDPOINT_PATHS["revocation"],
            views.revoke_token,
            lambda raw: server.create_endpoint_response("revocation", raw),
        ),
    ]
    return {path: Route(path, endpoint_of(path), view, answer) for path, view, answer in made}


class TokenFastPath:
    """WSGI middleware: simple token, introspection and revocation requests served here."""

    def __init__(self, app: Flask, wsgi_app: WSGIApp) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        server = runtime_of(app).oauth
        assert server is not None  # config_oauth runs before install
        self.server = server
        self.pipeline = pipeline_of(app)
        # The one hook of each kind Flask may run for this endpoint: the pipeline's.
        before, after, teardown = self.pipeline.flask_hooks
        self.before, self.after, self.teardown = [before], [after], [teardown]
        self.routes = routes_of(app, server)

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        route = self.routes.get(environ.get("PATH_INFO", ""))
        length = self._simple_length(environ, route) if route is not None else None
        if route is None or length is None:
            return self.wsgi_app(environ, start_response)
        body = _read_body(environ, length)
        if body is None:
            return self.wsgi_app(environ, start_response)
        return self._serve(environ, start_response, body, route)

    def _simple_length(self, environ: dict, route: Route) -> int | None:
        """The body length of a request to `route` this path may serve, else None."""
        if environ.get("REQUEST_METHOD") != "POST":
            return None
        raw = environ.get("CONTENT_LENGTH")
        if not raw or not raw.isascii() or not raw.isdigit():
            return None
        if "HTTP_TRANSFER_ENCODING" in environ or "werkzeug.debug.preserve_context" in environ:
            return None
        # werkzeug's Request.mimetype: the part before ';', stripped, lower-cased.
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip(" \t").lower()
        if mimetype != FORM_CONTENT_TYPE:
            return None
        limit = self.app.config["MAX_CONTENT_LENGTH"]
        length = int(raw)
        if limit is None or length > limit or not self._flask_would_do_the_same(route):
            return None
        return length

    def _flask_would_do_the_same(self, route: Route) -> bool:
        """True while Flask would run no hook but the pipeline's (which this path runs too)."""
        app = self.app
        blueprint = route.blueprint
        return (
            route.endpoint is not None
            and app.view_functions.get(route.endpoint) is route.view
            and app.before_request_funcs.get(None) == self.before
            and app.after_request_funcs.get(None) == self.after
            and app.teardown_request_funcs.get(None) == self.teardown
            and not app.url_value_preprocessors.get(None)
            and not app.url_value_preprocessors.get(blueprint)
            and not app.before_request_funcs.get(blueprint)
            and not app.after_request_funcs.get(blueprint)
            and not app.teardown_request_funcs.get(blueprint)
            and app.config["TRUSTED_HOSTS"] is None
            and not request_started.receivers
            and not request_finished.receivers
            and not request_tearing_down.receivers
        )

    def _serve(
        self, environ: dict, start_response: StartResponse, body: bytes, route: Route
    ) -> Iterable[bytes]:
        app = self.app
        pipeline = self.pipeline
        # As Flask's full_dispatch_request: setup methods refuse from now on.
        app._got_first_request = True
        ctx = app.app_context()
        ctx.push()
        ctx_g = ctx.g
        # client_address() and the rate limiter find the environ here (app.http.client_address).
        ctx_g.wsgi_environ = environ
        headers = EnvironHeaders(environ)
        request = RequestView(environ, "POST", route.path, route.endpoint, headers, body)
        # Should Flask answer after all, its hooks see this view and what `before` kept on it.
        attach(ctx_g, request)
        error: BaseException | None = None
        flask_took_over = False
        try:
            try:
                pipeline.before(request)
                plain = route.answer(RawFormRequest("POST", headers, body))
            except Exception as exc:  # noqa: BLE001 - Flask's handlers decide
                flask_took_over = True
                app_iter, error = self._flask_answers(exc, environ, start_response, body, False)
                return app_iter
            try:
                status, response_headers = self._after(request, plain)
            except Exception as exc:  # noqa: BLE001 - as an after_request hook raising
                flask_took_over = True
                app_iter, error = self._flask_answers(exc, environ, start_response, body, True)
                return app_iter
            start_response(status, response_headers)
            return [plain.body]
        except BaseException as exc:
            error = exc
            raise
        finally:
            # As RequestContext.pop: the app context goes even if a teardown raises.
            try:
                if not flask_took_over:
                    pipeline.teardown(request, error)
            finally:
                ctx.pop(error)

    def _after(
        self, request: RequestView, plain: PlainResponse
    ) -> tuple[str, list[tuple[str, str]]]:
        """Status line and headers, as the view's Response and Flask's after hooks make them."""
        headers = HeaderList(list(plain.headers))
        # What werkzeug's Response adds to the view's headers: its default type
        # for a body that names none (a revocation's empty 200), and the length.
        if headers.get("Content-Type") is None:
            headers.set("Content-Type", _DEFAULT_CONTENT_TYPE)
        headers.set("Content-Length", str(len(plain.body)))
        response = ResponseView(plain.status, headers, lambda: response_json(flask_response(plain)))
        self.pipeline.after(request, response)
        return _status_line(plain.status), headers.pairs

    def _flask_answers(
        self,
        exc: Exception,
        environ: dict,
        start_response: StartResponse,
        body: bytes,
        after_hooks_failed: bool,
    ) -> tuple[Iterable[bytes], BaseException | None]:
        """Answer an exception the way Flask.wsgi_app would, in a request context made for it.

        The request context shares the pushed app context (and so `g`: the
        request view with its id and timer, and the authenticated client),
        so the pipeline's after hook logs and counts the error response as
        it would have. Returns the response iterable and the error teardown
        functions saw.
        """
        app = self.app
        environ["wsgi.input"] = io.BytesIO(body)  # the hooks may read the body again
        ctx = app.request_context(environ)
        ctx.push()
        error: BaseException | None = None
        try:
            try:
                if after_hooks_failed:
                    # Flask's finalize_request raised: wsgi_app's handle_exception gets it.
                    raise exc
                response = app.finalize_request(app.handle_user_exception(exc))
            except Exception as unhandled:  # noqa: BLE001 - Flask's 500 handling
                error = unhandled
                response = app.handle_exception(unhandled)
            except BaseException as fatal:
                error = fatal
                raise
            return response(environ, start_response), error
        finally:
            if error is not None and app.should_ignore_error(error):
                error = None
            ctx.pop(error)


def _read_body(environ: dict, length: int) -> bytes | None:
    """Exactly `length` bytes of the body, or None with the input left as Flask would find it.

    A server that sets wsgi.input_terminated ends the stream itself and
    werkzeug reads such a stream to its end: one byte more is asked for, and a
    body that is not `length` bytes long goes to Flask with what was read.
    """
    stream = environ["wsgi.input"]
    want = length + 1 if environ.get("wsgi.input_terminated") else length
    chunks: list[bytes] = []
    got = 0
    try:
        while got < want:
            chunk = stream.read(want - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except (OSError, ValueError):
        # A client that went away mid-body: Flask reads on and answers as it does.
        environ["wsgi.input"] = _Unread(b"".join(chunks), stream)
        return None
    data = b"".join(chunks) if len(chunks) != 1 else chunks[0]
    if got != length:
        environ["wsgi.input"] = _Unread(data, stream)
        return None
    return data


class _Unread(io.RawIOBase):
    """The bytes already read from a WSGI input, then the rest of that input."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@lru_cache(maxsize=64)
def _status_line(status: int) -> str:
    # werkzeug's wording ("401 UNAUTHORIZED"), as Flask's Response sends it.
    return WerkzeugResponse(status=status).status


def install(app: Flask) -> None:
    """Put the fast path in front of the app's WSGI dispatch."""
    app.wsgi_app = TokenFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
