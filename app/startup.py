"""Start-up failures as one line that names the setting to fix, never a traceback.

A wrong DATABASE_URL, a missing database, an unwritable KEYS_DIR or a bad
setting stops `flask --app wsgi …` and the servers before they do anything.
Python would print the traceback of whichever library noticed first (160
lines for an unknown host); `explain` turns each such error into one line
naming the setting and what to do, and `install_excepthook` prints that line
instead of the traceback when the error reaches the top of the process (the
exit status stays 1). Anything `explain` does not recognise keeps its
traceback: it is a bug, not a setting.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import sqlalchemy as sa

from app.settings import SettingsError

_installed = False


class StartupError(SettingsError):
    """A start-up step failed because of a setting; the message is the one line to print."""


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def _database_problem(error: sa.exc.DBAPIError) -> str:
    detail = _first_line(error)
    lowered = detail.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return (
            f"the database DATABASE_URL names has no schema yet ({detail}):"
            " run `.venv/bin/flask --app wsgi db upgrade` first"
        )
    match = re.search(r'database "([^"]+)" does not exist', detail)
    if match:
        return (
            f"DATABASE_URL: database {match.group(1)!r} does not exist on that server:"
            f" create it (createdb {match.group(1)}) or fix the name in DATABASE_URL"
        )
    if "password authentication failed" in lowered or re.search(r'role "[^"]*" does not', detail):
        return (
            f"DATABASE_URL: the server refused the user or password ({detail}):"
            " fix the credentials in DATABASE_URL"
        )
    if "unable to open database file" in lowered:
        return (
            "DATABASE_URL: cannot open the SQLite file: make its directory writable"
            " by this user or point DATABASE_URL elsewhere"
        )
    return (
        f"DATABASE_URL: cannot connect to the database ({detail}): check the host, port"
        " and name in DATABASE_URL and that the database server is running"
    )


def explain(error: BaseException) -> str | None:
    """The one line to print for a start-up failure, or None when it is not one."""
    if isinstance(error, SettingsError):
        return str(error)
    if isinstance(error, sa.exc.OperationalError | sa.exc.ProgrammingError | sa.exc.InterfaceError):
        return _database_problem(error)
    return None


def _hook(previous):
    def excepthook(
        kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        line = explain(error)
        if line is None:
            previous(kind, error, trace)
            return
        print(f"error: {line}", file=sys.stderr)  # noqa: T201  (the process's last word)

    return excepthook


def install_excepthook() -> None:
    """Print `explain`'s line instead of a traceback for start-up failures (once per process)."""
    global _installed
    if not _installed:
        sys.excepthook = _hook(sys.excepthook)
        _installed = True


@contextmanager
def keys_dir_errors(keys_dir: str) -> Iterator[None]:
    """Turn a file error under KEYS_DIR into a StartupError naming KEYS_DIR and the fix.

    :raise StartupError: KEYS_DIR (or a file in it) cannot be made, read or written.
    """
    try:
        yield
    except OSError as exc:
        where = exc.filename or keys_dir
        raise StartupError(
            f"KEYS_DIR: cannot use {where} ({exc.strerror or exc}): make KEYS_DIR ({keys_dir})"
            " a directory this user owns and may write (mode 0700), or point KEYS_DIR elsewhere"
        ) from None
