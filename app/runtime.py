"""Per-process state that create_app builds once: caches, keys, pepper."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from app.clients.records import ClientStore
from app.clients.usage import UsageTracker
from app.signing.keys import KeyRing


@dataclass
class Runtime:
    clients: ClientStore
    keyring: KeyRing
    pepper: bytes
    usage: UsageTracker


def runtime() -> Runtime:
    return current_app.extensions["ccserver"]
