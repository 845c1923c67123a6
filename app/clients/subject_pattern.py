"""`subject_pattern` of a federated credential (docs/api.md §1.3).

`*` matches any run of characters (`/` and `:` included), `?` exactly one,
and every other character only itself; the pattern must match the whole
`sub`. The pattern is split at its `*`s into pieces of fixed length, each
compiled from re.escape'd characters and `.` alone, and matched left to
right: the first piece at the start, the last at the end, each middle piece
at its leftmost place after the previous one (leftmost is always right, as
a later `*` can absorb what an earlier choice skipped). No regular
expression ever holds a repetition, so no input can make it backtrack; the
cost is at most the subject's length times the pattern's.
"""

from __future__ import annotations

import re

WILDCARDS = frozenset("*?")


class SubjectPattern:
    """A compiled subject_pattern."""

    __slots__ = ("_pieces", "_widths", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        pieces = text.split("*")
        self._widths = tuple(len(piece) for piece in pieces)
        self._pieces = tuple(
            re.compile("".join("." if ch == "?" else re.escape(ch) for ch in piece), re.DOTALL)
            for piece in pieces
        )

    def __repr__(self) -> str:
        return f"SubjectPattern({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubjectPattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def matches(self, subject: str) -> bool:
        pieces, widths = self._pieces, self._widths
        if len(pieces) == 1:
            return pieces[0].fullmatch(subject) is not None
        end = len(subject) - widths[-1]
        if end < widths[0]:
            return False
        if pieces[0].match(subject, 0, widths[0]) is None:
            return False
        if pieces[-1].fullmatch(subject, end) is None:
            return False
        position = widths[0]
        for piece in pieces[1:-1]:
            found = piece.search(subject, position, end)
            if found is None:
                return False
            position = found.end()
        return True


def has_literal(text: str) -> bool:
    """Whether a pattern has a character that is not a wildcard."""
    return any(ch not in WILDCARDS for ch in text)
