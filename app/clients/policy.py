"""Rules every change to a client obeys, whichever face (API, console, CLI) asks."""

from __future__ import annotations

from app.errors import Conflict
from app.models import Client


def ensure_unlocked(client: Client) -> None:
    """Refuse a change to a locked client (docs/api.md §2.1).

    :raise Conflict: client_locked.
    """
    if client.locked:
        raise Conflict(
            'The client is locked; unlock it with {"locked": false} first.',
            code="client_locked",
        )
