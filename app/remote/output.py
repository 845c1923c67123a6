"""Printing results: `--format table` (a header row, then one row per item), `json` or `yaml`.

JSON and YAML print the API's objects as they came; a table picks columns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click
import yaml

FORMATS = ("table", "json", "yaml")

Column = tuple[str, Callable[[dict[str, Any]], Any]]


def field(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda item: item.get(name)


def cell(value: Any) -> str:
    """A value as one table cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    # One line per row, whatever a description holds.
    return " ".join(str(value).split()) or "-"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def dump(data: Any, fmt: str) -> str:
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")
    return json.dumps(data, indent=2, ensure_ascii=False)


def emit_list(items: list[dict[str, Any]], columns: Sequence[Column], fmt: str) -> None:
    """A listing: a table with a header row, or the items as a JSON or YAML array."""
    if fmt != "table":
        click.echo(dump(items, fmt))
        return
    header = [name for name, _ in columns]
    rows = [[cell(get(item)) for _, get in columns] for item in items]
    click.echo(table(rows, header))


def emit_object(item: dict[str, Any], fmt: str) -> None:
    """One object: FIELD/VALUE rows, or the object as JSON or YAML."""
    if fmt != "table":
        click.echo(dump(item, fmt))
        return
    rows = [[key, cell(value)] for key, value in item.items()]
    click.echo(table(rows, ["FIELD", "VALUE"]))


def note(message: str) -> None:
    """A remark for the person at the terminal: stderr, so stdout stays parseable."""
    click.echo(message, err=True)
