"""MAX_CONTENT_LENGTH for bodies sent without a Content-Length (chunked).

Werkzeug refuses a declared Content-Length over the limit with 413 itself,
but stops reading a chunked stream at the limit and hands the view the
truncated body without an error. `StreamedBodyLimit` reads one byte past the
limit before any view so an oversized body is refused instead of silently
cut.
"""

from __future__ import annotations

import io

from flask import current_app
from werkzeug.exceptions import RequestEntityTooLarge

from app.http.observer import RequestView


class StreamedBodyLimit:
    """Request observer: 413 for a chunked body over MAX_CONTENT_LENGTH."""

    def before(self, request: RequestView) -> None:
        """:raise RequestEntityTooLarge: the streamed body is over the limit."""
        environ = request.environ
        if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower() or not environ.get(
            "wsgi.input_terminated"
        ):
            return
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        if limit is None:
            return
        data = environ["wsgi.input"].read(limit + 1)
        if len(data) > limit:
            raise RequestEntityTooLarge()
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; the body is now whole.
        environ.pop("HTTP_TRANSFER_ENCODING", None)
