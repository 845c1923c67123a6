"""What can go wrong, each with the exit code a script sees (docs/cli.md#exit-codes).

    CliError
     ├── UsageError      2  a bad option, argument, profile or apply file
     ├── ApiError        1  the server refused the request (4xx)
     ├── AuthError       3  no admin token: wrong credentials, not an admin, 401
     └── Unreachable     4  no answer, not HTTP, or a 5xx

Click's own usage errors exit 2 as well.
"""

from __future__ import annotations

OK, API_ERROR, USAGE, AUTH_FAILURE, UNREACHABLE = 0, 1, 2, 3, 4


class CliError(Exception):
    """A failure reported as one line on stderr and an exit code."""

    exit_code = API_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CliError):
    exit_code = USAGE


class ApiError(CliError):
    """A 4xx answer; `status` and `code` come from its problem+json body."""

    exit_code = API_ERROR

    def __init__(self, message: str, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AuthError(CliError):
    exit_code = AUTH_FAILURE


class Unreachable(CliError):
    exit_code = UNREACHABLE
