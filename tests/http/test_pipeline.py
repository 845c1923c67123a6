"""The request pipeline: one ordered list of observers, run by Flask and by the token fast path.

Integration tests send the same token request through the app (the fast
path) and through Flask's own wsgi_app, as tests/oauth/test_fastpath.py
does; unit tests cover the pipeline's order and its header list.
"""

from __future__ import annotations

import pytest
from werkzeug.datastructures import Headers
from werkzeug.exceptions import Forbidden

from app.http.observer import HeaderList, RequestView
from app.http.pipeline import Pipeline, pipeline_of
from tests.conftest import basic_auth
from tests.oauth.test_fastpath import GRANT, call, environ, watch
from tests.oauth.test_fastpath import access_lines as access_lines  # noqa: F401 (fixture)


class Recorder:
    """An observer a test adds: notes what it sees and marks the response."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def before(self, request) -> None:
        self.seen.append(("before", request.method, request.path, request.endpoint))

    def after(self, request, response) -> None:
        self.seen.append(("after", response.status, response.json().keys()))
        response.headers.set("X-Observed", request.path)

    def teardown(self, request, error) -> None:
        self.seen.append(("teardown", error))


def test_flask_runs_the_pipeline_and_no_other_app_hook(app):
    """Every app-wide request hook is the pipeline's: there is no second list to drift."""
    before, after, teardown = pipeline_of(app).flask_hooks
    assert app.before_request_funcs[None] == [before]
    assert app.after_request_funcs[None] == [after]
    assert app.teardown_request_funcs[None] == [teardown]


def test_the_app_observers_in_order(app):
    names = [type(observer).__name__ for observer in pipeline_of(app).observers]
    assert names == [
        "RequestLog",
        "RequestMetrics",
        "StreamedBodyLimit",
        "KeySchedule",
        "SecurityHeaders",
        "UsageFlush",
    ]


def test_an_added_observer_runs_on_both_paths(app, factory, access_lines, monkeypatch):  # noqa: F811
    cid, secret = factory.client()
    recorder = Recorder()
    pipeline_of(app).add(recorder)
    dispatched = watch(app, monkeypatch)
    answers = []
    for wsgi in (app.wsgi_app, app.wsgi_app.wsgi_app):  # the fast path, then Flask
        recorder.seen.clear()
        answer = call(wsgi, environ(GRANT, basic_auth(cid, secret)), access_lines)
        answers.append((answer, list(recorder.seen)))
    assert dispatched == ["/oauth2/token"]  # only the second went through Flask
    (fast, fast_seen), (slow, slow_seen) = answers
    assert fast.status == slow.status == "200 OK"
    assert fast_seen == slow_seen
    assert fast_seen[0] == ("before", "POST", "/oauth2/token", "oauth.issue_token")
    assert fast_seen[1][:2] == ("after", 200)
    assert fast_seen[2] == ("teardown", None)
    # Its header lands in the same place on both paths: last in the list, its
    # `after` runs first, before the security headers and the access log's id.
    names = [name for name, _ in fast.headers]
    assert names == [name for name, _ in slow.headers]
    assert names.index("X-Observed") < names.index("X-Content-Type-Options")
    assert names[-1] == "X-Request-ID"
    assert dict(fast.headers)["X-Observed"] == "/oauth2/token"


class Refuses:
    def before(self, request) -> None:
        raise Forbidden("not today")


def test_an_observer_that_raises_is_answered_by_flask_both_ways(
    app,
    factory,
    access_lines,  # noqa: F811
    monkeypatch,
):
    cid, secret = factory.client()
    pipeline_of(app).add(Refuses())
    dispatched = watch(app, monkeypatch)
    fast = call(app.wsgi_app, environ(GRANT, basic_auth(cid, secret)), access_lines)
    slow = call(app.wsgi_app.wsgi_app, environ(GRANT, basic_auth(cid, secret)), access_lines)
    assert dispatched == ["/oauth2/token"]
    assert fast.status == slow.status == "403 FORBIDDEN"
    assert fast.body == slow.body
    assert [n for n, _ in fast.headers] == [n for n, _ in slow.headers]
    assert fast.log["status"] == slow.log["status"] == 403
    assert fast.counted == slow.counted


def test_other_requests_see_the_added_observer(app, client):
    recorder = Recorder()
    pipeline_of(app).add(recorder, index=0)
    response = client.get("/healthz")
    assert response.headers["X-Observed"] == "/healthz"
    assert [entry[0] for entry in recorder.seen] == ["before", "after", "teardown"]


# --- unit: order and headers -------------------------------------------------------------


class Named:
    def __init__(self, name: str, log: list) -> None:
        self.name = name
        self.log = log

    def before(self, request) -> None:
        self.log.append(("before", self.name))

    def after(self, request, response) -> None:
        self.log.append(("after", self.name))

    def teardown(self, request, error) -> None:
        self.log.append(("teardown", self.name))


class AfterOnly:
    def __init__(self, log: list) -> None:
        self.log = log

    def after(self, request, response) -> None:
        self.log.append(("after", "only"))


def test_before_runs_first_to_last_after_and_teardown_last_to_first():
    """Unit: as Flask runs hooks registered one by one; missing methods are skipped."""
    log: list = []
    pipeline = Pipeline([Named("a", log), AfterOnly(log), Named("b", log)])
    pipeline.add(Named("first", log), index=0)
    request = RequestView({}, "GET", "/", None, Headers())
    pipeline.before(request)
    pipeline.after(request, None)
    pipeline.teardown(request, None)
    assert log == [
        ("before", "first"),
        ("before", "a"),
        ("before", "b"),
        ("after", "b"),
        ("after", "only"),
        ("after", "a"),
        ("after", "first"),
        ("teardown", "b"),
        ("teardown", "a"),
        ("teardown", "first"),
    ]
    assert request.started is not None


@pytest.mark.parametrize(
    "start",
    [
        [],
        [("Content-Type", "application/json")],
        [("X-A", "1"), ("x-a", "2"), ("Other", "o"), ("X-A", "3")],
        [("Cache-Control", "no-cache"), ("Pragma", "no-cache")],
    ],
)
def test_header_list_changes_as_werkzeug_headers_do(start):
    """Unit: the fast path's header list and Flask's Headers end alike."""
    ours, theirs = HeaderList(list(start)), Headers(list(start))
    steps = [
        ("setdefault", "x-a", "default"),
        ("set", "Cache-Control", "no-store"),
        ("setdefault", "X-Content-Type-Options", "nosniff"),
        ("set", "X-A", "new"),
        ("setdefault", "Cache-Control", "ignored"),
    ]
    for method, name, value in steps:
        assert getattr(ours, method)(name, value) == getattr(theirs, method)(name, value)
        assert ours.pairs == theirs.to_wsgi_list()
        assert ours.get(name.upper()) == theirs.get(name.upper())
