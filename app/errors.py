"""Application errors and the handlers that render them.

Hierarchy::

    AppError                      problem+json, status 500
    ├── ValidationError           400, with errors[] (field, message)
    ├── BadRequest                400
    ├── Unauthorized              401, WWW-Authenticate: Bearer ...
    ├── Forbidden                 403, WWW-Authenticate: Bearer error="insufficient_scope"
    ├── NotFound                  404
    ├── Conflict                  409 (name_taken, client_locked, too_many_secrets, ...)
    ├── PreconditionFailed        412
    └── ServiceUnavailable        503

A database DataError (a value the column cannot hold) is answered 400 and an
IntegrityError 409: caused by the input, never an outage (503).

Services raise these; handlers registered once in create_app render them as
RFC 9457 problem+json. Under /oauth2 Authlib renders RFC 6749 errors itself;
generic HTTP errors there (413, 405, ...) are rendered in RFC 6749 shape too.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from app.extensions import db

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


class AppError(Exception):
    status = 500
    code = "internal_error"
    title = "Internal Server Error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code:
            self.code = code
        self.errors = errors
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"about:blank#{self.code}" if self.code else "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors:
            body["errors"] = self.errors
        return body


class ValidationError(AppError):
    status = 400
    code = "validation_error"
    title = "Bad Request"

    def __init__(self, errors: list[dict[str, str]], detail: str | None = None) -> None:
        super().__init__(detail or "The request body is invalid.", errors=errors)


class BadRequest(AppError):
    status = 400
    code = "bad_request"
    title = "Bad Request"


class Unauthorized(AppError):
    status = 401
    code = "invalid_token"
    title = "Unauthorized"


class Forbidden(AppError):
    status = 403
    code = "insufficient_scope"
    title = "Forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"
    title = "Not Found"


class Conflict(AppError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PreconditionFailed(AppError):
    status = 412
    code = "precondition_failed"
    title = "Precondition Failed"


class ServiceUnavailable(AppError):
    status = 503
    code = "service_unavailable"
    title = "Service Unavailable"


def problem(error: AppError) -> Response:
    """Render an AppError as an RFC 9457 response."""
    response = jsonify(error.to_dict())
    response.status_code = error.status
    response.mimetype = PROBLEM
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _is_oauth_path() -> bool:
    return request.path.startswith("/oauth2/")


_OAUTH_ERRORS = {
    413: "invalid_request",
    415: "invalid_request",
    405: "invalid_request",
    404: "invalid_request",
    429: "slow_down",
    503: "temporarily_unavailable",
}


def oauth_error(status: int, description: str, headers: dict[str, str] | None = None) -> Response:
    """An RFC 6749 §5.2 error body for failures Authlib does not render."""
    body = {
        "error": _OAUTH_ERRORS.get(status, "invalid_request"),
        "error_description": description,
    }
    if status >= 500 and status != 503:
        body["error"] = "server_error"
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    """Render every error as problem+json (or RFC 6749 JSON under /oauth2)."""

    # Runs before Flask-SQLAlchemy's own teardown (Flask calls them in reverse).
    @app.teardown_appcontext
    def close_session_quietly(_exc: BaseException | None) -> None:
        try:
            db.session.remove()
        except DBAPIError as error:
            # The connection died after the response was made (database
            # restarted, backend killed): the rollback on close fails. The
            # response stands; forget the session rather than raise past it.
            log.warning("could not close a database session: %s", type(error).__name__)
            db.session.registry.clear()

    @app.errorhandler(AppError)
    def handle_app_error(error: AppError) -> Response:
        if _is_oauth_path():
            return oauth_error(error.status, error.detail, error.headers)
        return problem(error)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException) -> Response:
        status = error.code or 500
        description = error.description or error.name
        if status == 413:
            description = "The request body is larger than 64 KiB."
        if _is_oauth_path():
            response = oauth_error(status, description)
        else:
            err = AppError(description, code=error.name.lower().replace(" ", "_"))
            err.status = status
            err.title = error.name
            response = problem(err)
        # RFC 9110 §15.5.6: a 405 MUST list the allowed methods.
        valid_methods = getattr(error, "valid_methods", None)
        if valid_methods:
            response.headers["Allow"] = ", ".join(valid_methods)
        return response

    # Errors the database raises because of what the request sent are not
    # outages: a 503 with Retry-After would have the client retry the same bad
    # input. DataError: a value the column cannot hold (PostgreSQL refuses NUL
    # in text, an out-of-range number). IntegrityError: a constraint the
    # service did not foresee (a concurrent write of the same unique name).
    # OperationalError, InterfaceError and the rest stay 503 below.
    @app.errorhandler(DataError)
    def handle_bad_value(error: DataError) -> Response:
        db.session.rollback()
        log.warning("database refused a value: %s", type(error.orig).__name__)
        err = BadRequest("A value in the request cannot be stored.", code="invalid_value")
        if _is_oauth_path():
            return oauth_error(400, err.detail)
        return problem(err)

    @app.errorhandler(IntegrityError)
    def handle_constraint(error: IntegrityError) -> Response:
        db.session.rollback()
        log.warning("database constraint refused a change: %s", type(error.orig).__name__)
        err = Conflict("The change conflicts with the stored data.", code="conflict")
        if _is_oauth_path():
            return oauth_error(400, err.detail)
        return problem(err)

    # A pool with no free connection within pool_timeout is an overload, not
    # a bug: answer 503 and let the client retry, as for a database outage.
    @app.errorhandler(PoolTimeoutError)
    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def handle_database_down(error: Exception) -> Response:
        db.session.rollback()
        log.error("database unavailable: %s", type(error).__name__)
        err = ServiceUnavailable(
            "The database is unavailable; retry later.", headers={"Retry-After": "1"}
        )
        if _is_oauth_path():
            return oauth_error(503, err.detail, err.headers)
        return problem(err)

    @app.errorhandler(500)
    def handle_internal_error(error: Exception) -> Response:
        db.session.rollback()
        if _is_oauth_path():
            body = oauth_error(500, "The server encountered an internal error.")
            return body
        return problem(AppError("The server encountered an internal error."))
