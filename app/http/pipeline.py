"""The request pipeline: one ordered list of request observers, run on every request.

`init_app` below holds the list. Flask runs it through three hooks
registered once (`Pipeline.install`), and app.oauth.fastpath runs the same
`Pipeline` for the token requests it serves without Flask's dispatch, so an
observer added or changed acts on both paths at once. `before` runs first
to last, `after` and `teardown` last to first, as Flask runs hooks
registered one by one: the first observer sees the request first and the
response last. What an observer is and is given: app.http.observer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from flask import Flask, Request, current_app, g, request
from flask import Response as FlaskResponse

from app.extensions import db
from app.http import access_log, body_limit, metrics
from app.http.observer import FlaskRequestView, FlaskResponseView, RequestView, ResponseView
from app.runtime import runtime_of

# The logger this warning has always had (the hook lived in app/__init__.py).
log = logging.getLogger("app")

#: The attribute of `flask.g` that holds the request view of the request being served.
_VIEW = "pipeline_request"


class Pipeline:
    """The app's ordered request observers; itself an observer of the whole list."""

    def __init__(self, observers: Iterable[object]) -> None:
        self.observers: list[object] = []
        self._before: tuple[Callable[..., None], ...] = ()
        self._after: tuple[Callable[..., None], ...] = ()
        self._teardown: tuple[Callable[..., None], ...] = ()
        for observer in observers:
            self.add(observer)
        # Bound once: Flask's hook lists hold these very objects, which is how
        # app.oauth.fastpath tells that no other hook has been added.
        self.flask_hooks = (
            self.flask_before_request,
            self.flask_after_request,
            self.flask_teardown_request,
        )

    def add(self, observer: object, index: int | None = None) -> None:
        """Put `observer` at `index` (default: last); both paths run it from the next request."""
        if index is None:
            self.observers.append(observer)
        else:
            self.observers.insert(index, observer)
        observers = self.observers
        # Bound once here, not looked up on every request.
        self._before = tuple(o.before for o in observers if hasattr(o, "before"))
        self._after = tuple(o.after for o in reversed(observers) if hasattr(o, "after"))
        self._teardown = tuple(o.teardown for o in reversed(observers) if hasattr(o, "teardown"))

    def before(self, request: RequestView) -> None:
        request.started = time.perf_counter()
        for before in self._before:
            before(request)

    def after(self, request: RequestView, response: ResponseView) -> None:
        for after in self._after:
            after(request, response)

    def teardown(self, request: RequestView, error: BaseException | None) -> None:
        for teardown in self._teardown:
            teardown(request, error)

    # -- Flask's hooks: the only request hooks the app registers -------------------------

    def install(self, app: Flask) -> None:
        """Register the Flask hooks that run this pipeline, once per app."""
        before, after, teardown = self.flask_hooks
        app.before_request(before)
        app.after_request(after)
        app.teardown_request(teardown)

    def flask_before_request(self) -> None:
        view = FlaskRequestView(_flask_request())
        setattr(g._get_current_object(), _VIEW, view)  # noqa: SLF001
        self.before(view)

    def flask_after_request(self, response: FlaskResponse) -> FlaskResponse:
        self.after(_current_view(), FlaskResponseView(response))
        return response

    def flask_teardown_request(self, error: BaseException | None) -> None:
        self.teardown(_current_view(), error)


def _current_view() -> RequestView:
    """The view `before` made for this request (or the fast path did); a fresh one if none ran."""
    flask_request = _flask_request()
    view = g.get(_VIEW)
    # An app context a test keeps open spans several requests: check it is this one's.
    if view is None or view.environ is not flask_request.environ:
        view = FlaskRequestView(flask_request)
    return view


def _flask_request() -> Request:
    """The request behind Flask's proxy: the view reads several of its attributes."""
    return request._get_current_object()  # type: ignore[attr-defined]  # noqa: SLF001


def attach(ctx_g: Any, view: RequestView) -> None:
    """Make `view` the current request's view for Flask's hooks (app.oauth.fastpath)."""
    setattr(ctx_g, _VIEW, view)


# -- observers of this package ------------------------------------------------------------


class SecurityHeaders:
    """nosniff everywhere; no-store on /oauth2 and /api answers; HSTS when the issuer is https."""

    def after(self, request: RequestView, response: ResponseView) -> None:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.startswith(("/oauth2/", "/api/")):
            headers.setdefault("Cache-Control", "no-store")
        if current_app.config["ISSUER"].startswith("https://"):
            headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


class Flushable(Protocol):
    def due(self) -> bool: ...

    def flush(self, engine: Any) -> None: ...


class UsageFlush:
    """Write the last_used_at notes (app.clients.usage) once they are due."""

    def __init__(self, usage: Flushable) -> None:
        self.usage = usage

    def teardown(self, request: RequestView, error: BaseException | None) -> None:
        usage = self.usage
        if usage.due():
            try:
                usage.flush(db.engine)
            except Exception:  # noqa: BLE001 - last_used_at is best effort
                log.warning("could not write last_used_at")


def init_app(app: Flask, *, key_schedule: object, usage: Flushable) -> Pipeline:
    """Build the app's one list of request observers and register Flask's hooks over it.

    The domain's observers come from create_app: `key_schedule` from
    app.signing.rotation, `usage` the app's app.clients.usage tracker.
    """
    pipeline = Pipeline(
        [
            # First, so its timer starts before any other observer can fail
            # and its line sees the response after every other change.
            access_log.RequestLog(),
            metrics.RequestMetrics(),
            body_limit.StreamedBodyLimit(),
            key_schedule,
            SecurityHeaders(),
            UsageFlush(usage),
        ]
    )
    pipeline.install(app)
    runtime_of(app).pipeline = pipeline
    return pipeline


def pipeline_of(app: Flask) -> Pipeline:
    """The app's request pipeline (tests add observers to it)."""
    pipeline = runtime_of(app).pipeline
    assert pipeline is not None  # init_app ran in create_app
    return pipeline
