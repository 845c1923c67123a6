"""What a request observer is and what it is given (the pipeline is app.http.pipeline).

An observer is any object with some of three methods:

    before(request)            before the view; may raise (Flask's handlers answer)
    after(request, response)   once the response is made; may change its headers
    teardown(request, error)   when the request ends, whatever happened

`request` is a `RequestView` and `response` a `ResponseView`: plain values
(environ, method, path, endpoint, headers, body; status, headers, JSON
body), no Flask proxies, so that the token fast path (app.oauth.fastpath)
can make them without a Flask request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from flask import Response
from werkzeug.datastructures import EnvironHeaders


class Headers(Protocol):
    """What observers may do to response headers; werkzeug's Headers and `HeaderList` agree."""

    def set(self, _key: str, _value: Any, /) -> None: ...

    def setdefault(self, key: str, default: Any) -> Any: ...


class RequestView:
    """A request as observers see it.

    Observers may keep their own per-request state as further attributes.
    """

    #: perf_counter() when the pipeline began on this request; None if it never did.
    started: float | None = None
    #: The id the access log settled on (app.http.access_log), echoed in X-Request-ID.
    request_id: str | None = None

    def __init__(
        self,
        environ: dict,
        method: str,
        path: str,
        endpoint: str | None,
        headers: EnvironHeaders,
        body: bytes = b"",
    ) -> None:
        self.environ = environ
        self.method = method
        self.path = path
        #: The Flask endpoint the URL matched; None when nothing matched.
        self.endpoint = endpoint
        self.headers = headers
        self._body = body

    @property
    def content_length(self) -> int | None:
        return len(self._body)

    def body(self) -> bytes:
        """The request body.

        :raise werkzeug.exceptions.ClientDisconnected: shorter than its Content-Length.
        """
        return self._body


class FlaskRequestView(RequestView):
    """The view of a Flask request; its body is read only if an observer asks."""

    def __init__(self, flask_request: Any) -> None:
        super().__init__(
            flask_request.environ,
            flask_request.method,
            flask_request.path,
            flask_request.endpoint,
            flask_request.headers,
        )
        self._request = flask_request

    @property
    def content_length(self) -> int | None:
        # Asked only now: app.http.body_limit may still set CONTENT_LENGTH, and
        # werkzeug keeps the first value it reads.
        return self._request.content_length

    def body(self) -> bytes:
        return self._request.get_data(cache=True)


class ResponseView:
    """A response as observers see it: status, headers to change, the body as JSON."""

    def __init__(self, status: int, headers: Headers, json: Callable[[], object]) -> None:
        self.status = status
        self.headers = headers
        self._json = json

    def json(self) -> object:
        """The body as Flask's get_json(silent=True) reads it; None if it is not JSON."""
        return self._json()


class FlaskResponseView(ResponseView):
    """The view of a Flask Response; its headers are the response's own."""

    def __init__(self, response: Response) -> None:
        self.status = response.status_code
        self.headers = response.headers
        self._response = response

    def json(self) -> object:
        return response_json(self._response)


def response_json(response: Response) -> object:
    """The JSON body of a response as Response.get_json(silent=True) reads it; None if odd."""
    try:
        return response.get_json(silent=True)
    except Exception:  # noqa: BLE001 - a streamed or odd body is just "not JSON"
        return None


class HeaderList:
    """Response headers as a list of pairs, changed as werkzeug's Headers changes them."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get(self, key: str, default: Any = None) -> Any:
        lower = key.lower()
        for name, value in self.pairs:
            if name.lower() == lower:
                return value
        return default

    def set(self, key: str, value: str, /) -> None:
        """Replace the first `key`, drop the others; append when absent."""
        pairs = self.pairs
        lower = key.lower()
        for index, (name, _) in enumerate(pairs):
            if name.lower() == lower:
                pairs[index] = (key, value)
                rest = pairs[index + 1 :]
                pairs[index + 1 :] = [item for item in rest if item[0].lower() != lower]
                return
        pairs.append((key, value))

    def setdefault(self, key: str, default: str) -> str:
        """The first value of `key`; `default`, appended, when absent."""
        value = self.get(key)
        if value is not None:
            return value
        self.pairs.append((key, default))
        return default
