"""Option values checked before anything is sent, each error naming its option.

Only what a person mistypes often is checked here (names, numbers, files);
every other rule is the server's, and its answer names the option too
(`Api.name_field`). No message quotes a regular expression.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from app.remote.errors import UsageError

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
NAME_RULE = (
    "must be 1 to 63 characters: lowercase letters, digits, '_' and '-',"
    " starting with a letter or digit"
)
MIN_TTL, MAX_TTL = 60, 86400
MAX_LIMIT = 1000


def option_name(param: click.Parameter) -> str:
    """The option as the user typed it: its longest flag."""
    flags = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return flags[0] if flags else (param.name or "value")


def check_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A client, account or credential name.

    :raise UsageError: not a valid name.
    """
    if value is not None and not NAME.fullmatch(value):
        raise UsageError(f"{option_name(param)}: {NAME_RULE} (got {value!r})")
    return value


def int_range(low: int, high: int) -> Callable[[click.Context, click.Parameter, Any], int | None]:
    """A callback checking an integer option (given as text) lies in low..high."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
        if value is None:
            return None
        if not re.fullmatch(r"[0-9]{1,9}", value.strip()) or not low <= int(value) <= high:
            raise UsageError(
                f"{option_name(param)}: must be a whole number from {low} to {high} (got {value!r})"
            )
        return int(value)

    return check


def optional_ttl(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """A token lifetime, or "" / "none" for no cap (resource servers)."""
    if value is not None and value.strip().lower() in ("", "none"):
        return ""
    return int_range(MIN_TTL, MAX_TTL)(ctx, param, value)


def text_or_null(value: str | None) -> str | None:
    """An optional text field: "" clears it (null)."""
    return value if value else None


def listed(values: Sequence[str]) -> list[str] | None:
    """A repeatable option: not given (None), `""` alone (the empty list), or the values."""
    if not values:
        return None
    if list(values) == [""]:
        return []
    return list(values)


def read_json_file(path: str, option: str) -> Any:
    """A JSON document from a file (`-`: stdin).

    :raise UsageError: unreadable, or not JSON.
    """
    text = read_text(path, option)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option}: {path} is not valid JSON ({exc.msg})") from exc


def read_text(path: str, option: str) -> str:
    """A file's text (`-`: stdin).

    :raise UsageError: the file cannot be read.
    """
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option}: cannot read {path} ({type(exc).__name__})") from exc


def require_some(values: dict[str, Any], what: str) -> None:
    """An update must change something.

    :raise UsageError: no option was given.
    """
    if not values:
        raise UsageError(f"nothing to change: give at least one option of `{what}` (see --help)")
