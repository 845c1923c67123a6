"""Cost of reading and writing one management API body, per request (microseconds).

    .venv/bin/python -m bench.schema_cost

Reads a typical client-create body the way the views do (JSON with duplicate
names refused, then strict validation against app/api/schemas.py) and writes a
client the way responses do, beside the alternatives that were weighed:
pydantic's own JSON parser (which keeps the last of duplicate names, so it
cannot refuse them) and msgspec (measured only when it is installed; it is not
a dependency). No database: the client row is a transient ORM object.
"""

from __future__ import annotations

import json
import timeit
from datetime import UTC, datetime
from typing import Annotated

from app.api import schemas
from app.models import Client
from app.timeutil import isoformat

BODY = json.dumps(
    {
        "name": "reader-01",
        "friendly_name": "Report reader",
        "description": "Reads reports.",
        "tags": ["prod", "reports"],
        "client_type": "standard",
        "owner": "ops@example.com",
        "scopes": ["reports:read", "reports:list"],
        "audiences": ["https://api.example.com"],
        "access_token_ttl": 900,
    }
).encode()
SECRET_BODY = json.dumps({"description": "ci deploy", "expires_in": 86400}).encode()
NOW = datetime.now(UTC)
ROW = Client(
    id="8f1c3a5e-0000-4000-8000-000000000000",
    account_id="acme",
    name="reader-01",
    friendly_name="Report reader",
    description=None,
    tags=["prod", "reports"],
    client_type="standard",
    owner=None,
    scopes=["reports:read"],
    audiences=["https://api.example.com"],
    access_token_ttl=900,
    locked=False,
    disabled=False,
    created_at=NOW,
    updated_at=NOW,
    version=1,
)


try:
    import msgspec
except ImportError:  # not a dependency: measured only where installed
    msgspec = None

if msgspec is not None:

    def _text(most: int, pattern: str | None = None) -> object:
        return Annotated[str, msgspec.Meta(max_length=most, pattern=pattern)]

    _Name = _text(63, schemas.NAME_PATTERN)
    _Free = _text(200, schemas.NO_CONTROL_PATTERN)
    _Long = _text(2000)
    _Tag = _text(64, schemas.NO_CONTROL_PATTERN)
    _Owner = _text(254)
    _Scope = _text(128, schemas.SCOPE_TOKEN_PATTERN)
    _Audience = _text(1024, schemas.AUDIENCE_PATTERN)
    _Ttl = Annotated[int, msgspec.Meta(ge=60, le=86400)]

    class MsgspecClient(msgspec.Struct, forbid_unknown_fields=True):
        """ClientCreate as a msgspec Struct (strict JSON decoding by default)."""

        name: _Name  # type: ignore[valid-type]
        friendly_name: _Free = ""  # type: ignore[valid-type]
        description: _Long | None = None  # type: ignore[valid-type]
        tags: list[_Tag] = []  # type: ignore[valid-type]
        client_type: str = "standard"
        owner: _Owner | None = None  # type: ignore[valid-type]
        scopes: list[_Scope] = []  # type: ignore[valid-type]
        audiences: list[_Audience] = []  # type: ignore[valid-type]
        access_token_ttl: _Ttl = 3600


def parse(raw: bytes) -> dict:
    """What json_body does after the Content-Type check."""
    return json.loads(
        raw.decode("utf-8"),
        parse_constant=schemas._reject_constant,
        object_pairs_hook=schemas._unique_keys,
    )


def hand_client_dict(client: Client) -> dict:
    """The hand-written serializer the response models replaced."""
    return {
        "id": client.id,
        "account_id": client.account_id,
        "name": client.name,
        "friendly_name": client.friendly_name,
        "description": client.description,
        "tags": list(client.tags or []),
        "client_type": client.client_type,
        "owner": client.owner,
        "scopes": list(client.scopes or []),
        "audiences": list(client.audiences or []),
        "access_token_ttl": client.access_token_ttl,
        "locked": bool(client.locked),
        "disabled": bool(client.disabled),
        "created_at": isoformat(client.created_at),
        "updated_at": isoformat(client.updated_at),
    }


def cases() -> dict[str, object]:
    create = schemas.adapter(schemas.ClientCreate)
    secret = schemas.adapter(schemas.SecretCreate)

    def read_client() -> object:
        body = create.validate_python(parse(BODY))
        return schemas.client_values(body, "create", account_id="acme")

    found: dict[str, object] = {
        "json parse, duplicates refused (client body)": lambda: parse(BODY),
        "read client body: parse + strict pydantic + rules (used)": read_client,
        "read secret body: parse + strict pydantic (used)": lambda: secret.validate_python(
            parse(SECRET_BODY)
        ),
        "pydantic validate_json, strict (keeps duplicates)": lambda: create.validate_json(BODY),
        "write client: response model (used)": lambda: schemas.dump(schemas.Client, ROW),
        "write client: hand-written dict (before)": lambda: hand_client_dict(ROW),
    }
    if msgspec is None:
        return found
    decoder = msgspec.json.Decoder(MsgspecClient)
    found["msgspec decode + validate (keeps duplicates; not a dependency)"] = lambda: (
        decoder.decode(BODY)
    )
    return found


def page_cases() -> dict[str, object]:
    rows = [ROW] * 1000
    return {
        "write a 1000-client page: response models (used)": lambda: schemas.dump(
            schemas.ClientPage, {"data": rows, "next_cursor": None}
        ),
        "write a 1000-client page: hand-written dicts (before)": lambda: [
            hand_client_dict(row) for row in rows
        ],
    }


def main() -> None:
    for number, found in ((20_000, cases()), (20, page_cases())):
        for label, call in found.items():
            best = min(timeit.repeat(call, number=number, repeat=5)) / number
            print(f"{best * 1e6:8.1f} us  {label}")


if __name__ == "__main__":
    main()
