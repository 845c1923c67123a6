"""The management API's shapes: the one source of its bodies, responses, limits and schemas.

Request bodies are TypedDicts that pydantic validates strictly: no coercion
("3600" is not an integer, 1 is not true), unknown fields refused, every
problem reported at once as `errors[{field, message}]`. A TypedDict holds only
the fields sent, which is what a PATCH needs. Responses are models read from
a row's attributes. `operation` ties a view to its body, query and response
types; app/api/openapi.py turns the same types into the OpenAPI document, so
the document describes what the views really parse and return.

The console and the CLI validate through these same types.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired, TypeVar

from flask import current_app, request
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainSerializer,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
    with_config,
)
from pydantic import ValidationError as PydanticError
from pydantic_core import PydanticCustomError, core_schema
from typing_extensions import TypedDict
from werkzeug.exceptions import UnsupportedMediaType

from app.audit.events import AuditAction
from app.clients import federation
from app.clients import keys as client_keys
from app.clients.hashing import SECRET_PREFIX
from app.clients.secrets import DEFAULT_GRACE_PERIOD, MAX_GRACE_PERIOD, MAX_SECRET_LIFETIME
from app.clients.service import (
    ACCOUNT_MANAGEMENT_SCOPES,
    CLIENT_DEFAULTS,
    MANAGEMENT_SCOPES,
    SYSTEM_ACCOUNT,
)
from app.errors import BadRequest, ValidationError
from app.federation import verify
from app.models import KEY_STATUSES
from app.models import Client as ClientRow
from app.models.client import (
    ACCOUNT_ID_MAX_LENGTH,
    AUDIENCE_MAX_LENGTH,
    CLIENT_TYPES,
    DESCRIPTION_MAX_LENGTH,
    FRIENDLY_NAME_MAX_LENGTH,
    MAX_AUDIENCES,
    MAX_SCOPES,
    MAX_TAGS,
    MAX_TTL,
    MIN_TTL,
    NAME_MAX_LENGTH,
    OWNER_MAX_LENGTH,
    SAN_MAX_LENGTH,
    SCOPE_MAX_LENGTH,
    SECURITY_PROFILES,
    SUBJECT_DN_MAX_LENGTH,
    TAG_MAX_LENGTH,
)
from app.models.federated_credential import (
    DEFAULT_TOKEN_AGE,
    FEDERATED_AUDIENCE_MAX_LENGTH,
    ISSUER_MAX_LENGTH,
    JWKS_URI_MAX_LENGTH,
    MAX_TOKEN_AGE,
    MIN_TOKEN_AGE,
    SUBJECT_MAX_LENGTH,
)
from app.models.resource_server import (
    IDENTIFIER_MAX_LENGTH,
    MAX_RS_SCOPES,
    RS_NAME_MAX_LENGTH,
    RS_SCOPE_DESCRIPTION_MAX_LENGTH,
)
from app.models.secret import SECRET_DESCRIPTION_MAX_LENGTH
from app.oauth.rfc8705 import parse_subject_dn
from app.protocol import AUTH_METHODS, SIGNING_ALGS
from app.timeutil import isoformat

T = TypeVar("T")
Errors = list[dict[str, str]]

# --- Field types -------------------------------------------------------------------------------

NAME_PATTERN = rf"^[a-z0-9][a-z0-9_-]{{0,{NAME_MAX_LENGTH - 1}}}$"
ACCOUNT_PATTERN = rf"^[a-z0-9][a-z0-9_-]{{0,{ACCOUNT_ID_MAX_LENGTH - 1}}}$"
NAME_PREFIX_PATTERN = rf"^[a-z0-9_-]{{1,{NAME_MAX_LENGTH}}}$"
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN_PATTERN = rf"^[\x21\x23-\x5b\x5d-\x7e]{{1,{SCOPE_MAX_LENGTH}}}$"
# Free text, but never control characters (PostgreSQL JSONB refuses NUL outright).
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
# An audience goes into the space-separated `aud` request parameter: no spaces either.
AUDIENCE_PATTERN = r"^[^\x00-\x20\x7f]*$"
# RFC 3339 UTC with a Z suffix, as every time this API writes.
TIME_SCHEMA = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$",
}
MAX_LIMIT, DEFAULT_LIMIT = 1000, 20
MAX_ASSERTION_LENGTH = verify.MAX_ASSERTION_LENGTH
#: Why a dry run tried no credential (docs/api.md §2.8).
NOT_FEDERATED = "not_federated"
DRY_RUN_ERRORS = (verify.MALFORMED, verify.NO_CREDENTIALS, NOT_FEDERATED)
MAX_CURSOR_LENGTH = 512


@dataclass(frozen=True)
class OneOf:
    """A string that must be one of `values`: an `enum` in the document."""

    values: tuple[str, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.literal_schema(list(self.values))


def _no_repeats(items: list[T]) -> list[T]:
    if len(set(items)) != len(items):
        raise PydanticCustomError("unique_items", "must not repeat an item")
    return items


def _unique(most: int) -> Any:
    """Metadata of an array of at most `most` distinct items."""
    return Field(max_length=most, json_schema_extra={"uniqueItems": True})


Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
AccountId = Annotated[str, StringConstraints(pattern=ACCOUNT_PATTERN)]
FriendlyName = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=FRIENDLY_NAME_MAX_LENGTH, pattern=NO_CONTROL_PATTERN
    ),
    Field(description="Defaults to name."),
]
Description = Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX_LENGTH)] | None
Owner = (
    Annotated[
        str,
        StringConstraints(min_length=1, max_length=OWNER_MAX_LENGTH, pattern=NO_CONTROL_PATTERN),
    ]
    | None
)
Tag = Annotated[
    str, StringConstraints(min_length=1, max_length=TAG_MAX_LENGTH, pattern=NO_CONTROL_PATTERN)
]
Scope = Annotated[str, StringConstraints(pattern=SCOPE_TOKEN_PATTERN)]
Audience = Annotated[
    str, StringConstraints(min_length=1, max_length=AUDIENCE_MAX_LENGTH, pattern=AUDIENCE_PATTERN)
]
ClientType = Annotated[str, OneOf(CLIENT_TYPES)]
Tags = Annotated[list[Tag], _unique(MAX_TAGS), AfterValidator(_no_repeats)]
Scopes = Annotated[
    list[Scope],
    _unique(MAX_SCOPES),
    AfterValidator(_no_repeats),
    Field(description="Management scopes only for admin clients (keys:* only in system)."),
]
Audiences = Annotated[list[Audience], _unique(MAX_AUDIENCES), AfterValidator(_no_repeats)]
Ttl = Annotated[int, Field(ge=MIN_TTL, le=MAX_TTL)]
AllowedAuthMethods = (
    Annotated[
        list[Annotated[str, OneOf(AUTH_METHODS)]],
        Field(min_length=1, max_length=len(AUTH_METHODS), json_schema_extra={"uniqueItems": True}),
        AfterValidator(_no_repeats),
        Field(
            description="null: any method the client has credentials for; else only these "
            "(any other is 401 invalid_client)."
        ),
    ]
    | None
)


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise PydanticCustomError("ip_address", "must be an IPv4 or IPv6 address") from exc


def _subject_dn(value: str) -> str:
    try:
        parse_subject_dn(value)
    except ValueError as exc:
        raise PydanticCustomError(
            "subject_dn",
            "must be an RFC 4514 DN such as CN=client,O=Acme,C=DE (no spaces around ',')",
        ) from exc
    return value


BoundFlag = Annotated[
    bool,
    Field(description="Every token must be sender-constrained this way (docs/api.md §1.1, §1.2)."),
]
SubjectDn = (
    Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=SUBJECT_DN_MAX_LENGTH, pattern=NO_CONTROL_PATTERN
        ),
        AfterValidator(_subject_dn),
        Field(description="tls_client_auth: the certificate's subject DN (RFC 4514 string)."),
    ]
    | None
)
SanText = Annotated[
    str, StringConstraints(min_length=1, max_length=SAN_MAX_LENGTH, pattern=NO_CONTROL_PATTERN)
]
SanDns = (
    Annotated[
        SanText, Field(description="tls_client_auth: a dNSName SAN the certificate must hold.")
    ]
    | None
)
SanUri = (
    Annotated[
        SanText,
        Field(description="tls_client_auth: a URI SAN (uniformResourceIdentifier) it must hold."),
    ]
    | None
)
SanIp = (
    Annotated[
        SanText,
        AfterValidator(_ip_address),
        Field(description="tls_client_auth: an iPAddress SAN the certificate must hold."),
    ]
    | None
)
SanEmail = (
    Annotated[
        SanText, Field(description="tls_client_auth: an rfc822Name SAN the certificate must hold.")
    ]
    | None
)
SecurityProfile = (
    Annotated[
        str,
        OneOf(SECURITY_PROFILES),
        Field(description="fapi2: the FAPI 2.0 Security Profile's rules; null: none."),
    ]
    | None
)
Time = Annotated[datetime, PlainSerializer(isoformat, return_type=str), WithJsonSchema(TIME_SCHEMA)]
ReadOnly = Field(json_schema_extra={"readOnly": True})
STRICT = ConfigDict(strict=True, extra="forbid")

# --- Request bodies ----------------------------------------------------------------------------


@with_config(STRICT)
class _ClientName(TypedDict):
    name: Name


@with_config(STRICT)
class _OptionalClientName(TypedDict, total=False):
    name: Name


@with_config(STRICT)
class _ClientFields(TypedDict, total=False):
    friendly_name: FriendlyName
    description: Description
    tags: Tags
    client_type: ClientType
    owner: Owner
    scopes: Scopes
    audiences: Audiences
    access_token_ttl: Ttl
    locked: bool
    disabled: bool
    allowed_auth_methods: AllowedAuthMethods
    dpop_bound_access_tokens: BoundFlag
    tls_client_certificate_bound_access_tokens: BoundFlag
    tls_client_auth_subject_dn: SubjectDn
    tls_client_auth_san_dns: SanDns
    tls_client_auth_san_uri: SanUri
    tls_client_auth_san_ip: SanIp
    tls_client_auth_san_email: SanEmail
    security_profile: SecurityProfile


@with_config(STRICT)
class ClientPatch(_OptionalClientName, _ClientFields):
    """Only the fields sent change."""


@with_config(STRICT)
class ClientPut(_ClientName, _ClientFields):
    """Every mutable field; an omitted optional field is reset to its default."""


@with_config(STRICT)
class ClientCreate(ClientPut, total=False):
    account_id: Annotated[
        AccountId, Field(description="System admins only; others create in their own account.")
    ]
    create_secret: Annotated[
        bool,
        Field(
            description="false: the client gets no secret (it will use keys), and the "
            "answer has no client_secret or secret_id.",
            json_schema_extra={"default": True},
        ),
    ]


@with_config(STRICT)
class SecretCreate(TypedDict, total=False):
    description: Annotated[str, StringConstraints(max_length=SECRET_DESCRIPTION_MAX_LENGTH)] | None
    expires_in: (
        Annotated[
            int,
            Field(
                ge=60,
                le=MAX_SECRET_LIFETIME,
                description="Seconds until the secret expires; omitted or null: never.",
            ),
        ]
        | None
    )


@with_config(STRICT)
class SecretRotate(TypedDict, total=False):
    grace_period: Annotated[
        int,
        Field(
            ge=0,
            le=MAX_GRACE_PERIOD,
            description="Seconds the other active secrets keep working.",
            json_schema_extra={"default": DEFAULT_GRACE_PERIOD},
        ),
    ]


@with_config(ConfigDict(strict=True, extra="allow"))
class PublicJWK(TypedDict):
    """A public JWK (RFC 7517); the key service decides which keys it accepts."""

    kty: str
    kid: NotRequired[str]


@with_config(STRICT)
class KeyCreate(TypedDict, total=False):
    """With public_jwk: register it. Empty: the server makes an Ed25519 pair."""

    public_jwk: PublicJWK
    expires_in: (
        Annotated[int, Field(ge=client_keys.MIN_EXPIRES_IN, le=client_keys.MAX_EXPIRES_IN)] | None
    )


@with_config(STRICT)
class SigningKeyRotate(TypedDict):
    """No fields; the body may be empty."""


# Federated credentials (docs/api.md §1.3, §2.8).


def _claim_rule(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) > federation.CLAIM_VALUE_MAX_LENGTH:
            raise PydanticCustomError(
                "claim_rule", f"must be at most {federation.CLAIM_VALUE_MAX_LENGTH} characters"
            )
        return value
    if (
        isinstance(value, list)
        and 0 < len(value) <= federation.MAX_CLAIM_VALUES
        and all(isinstance(v, str) and len(v) <= federation.CLAIM_VALUE_MAX_LENGTH for v in value)
    ):
        return _no_repeats(value)
    raise PydanticCustomError(
        "claim_rule",
        f"must be a string or a list of 1 to {federation.MAX_CLAIM_VALUES} strings",
    )


_CLAIM_STRING = {"type": "string", "maxLength": federation.CLAIM_VALUE_MAX_LENGTH}
# One validator, so an error names the claim and not pydantic's union member.
ClaimRule = Annotated[
    Any,
    AfterValidator(_claim_rule),
    WithJsonSchema(
        {
            "anyOf": [
                _CLAIM_STRING,
                {
                    "type": "array",
                    "items": _CLAIM_STRING,
                    "minItems": 1,
                    "maxItems": federation.MAX_CLAIM_VALUES,
                    "uniqueItems": True,
                },
            ]
        }
    ),
]
ClaimRules = Annotated[
    dict[str, ClaimRule],
    Field(
        max_length=federation.MAX_CLAIMS,
        description="Claim -> the required string, or a list of allowed strings; "
        "every entry must match.",
    ),
]
FederationUrl = Annotated[
    str, StringConstraints(min_length=1, max_length=JWKS_URI_MAX_LENGTH, pattern=AUDIENCE_PATTERN)
]
FederatedSubject = Annotated[
    str, StringConstraints(min_length=1, max_length=SUBJECT_MAX_LENGTH, pattern=NO_CONTROL_PATTERN)
]


@with_config(ConfigDict(strict=True, extra="allow"))
class InlineJWKS(TypedDict):
    """A JWK Set (RFC 7517 §5) of the issuer's public keys; the service decides which it accepts."""

    keys: Annotated[list[PublicJWK], Field(min_length=1, max_length=federation.MAX_JWKS_KEYS)]


@with_config(STRICT)
class FederatedCredentialCreate(TypedDict):
    """Give exactly one of subject and subject_pattern; jwks_uri or jwks, or neither (discovery)."""

    name: Name
    issuer: Annotated[
        str,
        StringConstraints(min_length=1, max_length=ISSUER_MAX_LENGTH, pattern=AUDIENCE_PATTERN),
        Field(description="The JWT's iss: an https URL (http too with FEDERATION_ALLOW_INSECURE)."),
    ]
    subject: NotRequired[FederatedSubject | None]
    subject_pattern: NotRequired[
        Annotated[
            FederatedSubject,
            Field(
                description="Matches sub as a whole: * any run of characters (/ and : "
                "included), ? one character, everything else literal."
            ),
        ]
        | None
    ]
    claims: NotRequired[ClaimRules]
    audience: NotRequired[
        Annotated[
            str,
            StringConstraints(
                min_length=1, max_length=FEDERATED_AUDIENCE_MAX_LENGTH, pattern=AUDIENCE_PATTERN
            ),
            Field(description="Must be in the JWT's aud; default: this server's issuer."),
        ]
    ]
    jwks_uri: NotRequired[FederationUrl | None]
    jwks: NotRequired[InlineJWKS | None]
    max_token_age: NotRequired[
        Annotated[
            int,
            Field(
                ge=MIN_TOKEN_AGE,
                le=MAX_TOKEN_AGE,
                description="Seconds since iat (or, without iat, until exp) at most.",
                json_schema_extra={"default": DEFAULT_TOKEN_AGE},
            ),
        ]
    ]
    single_use: NotRequired[
        Annotated[
            bool,
            Field(
                description="Each jti is accepted once (the JWT must have one).",
                json_schema_extra={"default": False},
            ),
        ]
    ]


@with_config(STRICT)
class FederatedCredentialTest(TypedDict):
    # No maxLength: one longer than the token endpoint takes is answered as it
    # would be there, `"error": "malformed"`.
    assertion: Annotated[
        str,
        StringConstraints(min_length=1),
        Field(
            description="The platform's JWT; checked, never stored, logged or consumed. "
            f"Longer than {MAX_ASSERTION_LENGTH} characters: malformed, as at the token endpoint."
        ),
    ]


# Resource servers (docs/api.md §2.7).


def _distinct_values(items: list[Any]) -> list[Any]:
    if len({item["value"] for item in items}) != len(items):
        raise PydanticCustomError("unique_items", "must not repeat a scope value")
    return items


@with_config(STRICT)
class ResourceServerScope(TypedDict):
    value: Scope
    description: NotRequired[
        Annotated[str, StringConstraints(max_length=RS_SCOPE_DESCRIPTION_MAX_LENGTH)] | None
    ]


RSName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=RS_NAME_MAX_LENGTH, pattern=NO_CONTROL_PATTERN),
]
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=AUDIENCE_PATTERN),
    Field(description="The audience (aud) of its tokens; unique on the server, immutable."),
]
RSScopes = Annotated[
    list[ResourceServerScope],
    Field(max_length=MAX_RS_SCOPES, description="Empty: the API accepts any scope."),
    AfterValidator(_distinct_values),
]
OptionalTtl = Annotated[
    int | None, Field(ge=MIN_TTL, le=MAX_TTL, description="Caps the token lifetime; null: none.")
]
SharedFlag = Annotated[
    bool, Field(description="System admins only: usable by every account (system account only).")
]


@with_config(STRICT)
class _ResourceServerFields(TypedDict, total=False):
    description: Description
    scopes: RSScopes
    access_token_ttl: OptionalTtl
    dpop_bound_access_tokens: BoundFlag
    tls_client_certificate_bound_access_tokens: BoundFlag
    shared: SharedFlag
    identifier: Annotated[Identifier, Field(description="Immutable: only its current value.")]


@with_config(STRICT)
class ResourceServerPatch(_ResourceServerFields, total=False):
    """Only the fields sent change."""

    name: RSName


@with_config(STRICT)
class ResourceServerPut(_ResourceServerFields):
    """Every mutable field; an omitted optional field is reset to its default."""

    name: RSName


@with_config(STRICT)
class ResourceServerCreate(ResourceServerPut):
    identifier: Identifier  # type: ignore[misc]
    account_id: NotRequired[
        Annotated[
            AccountId,
            Field(description="System admins only; others create in their own account."),
        ]
    ]


@with_config(STRICT)
class ResourceServerQuery(TypedDict, total=False):
    limit: Limit
    cursor: Cursor
    account_id: Annotated[AccountId, Field(description="System admins only: one account's.")]
    name_prefix: Annotated[
        str,
        StringConstraints(min_length=1, max_length=RS_NAME_MAX_LENGTH, pattern=NO_CONTROL_PATTERN),
        Field(description="Names starting with this."),
    ]


READ_ONLY_RESOURCE_SERVER_FIELDS = ("id", "created_at", "updated_at")


#: The fields a client body may set, and those only the server writes.
MUTABLE_CLIENT_FIELDS: tuple[str, ...] = tuple(ClientPatch.__annotations__)
READ_ONLY_CLIENT_FIELDS = ("id", "account_id", "created_at", "updated_at")
#: Fields a body may not set because the server writes them (named so in errors[]).
READ_ONLY: dict[Any, tuple[str, ...]] = {
    ClientCreate: READ_ONLY_CLIENT_FIELDS,
    ClientPut: READ_ONLY_CLIENT_FIELDS,
    ClientPatch: READ_ONLY_CLIENT_FIELDS,
    ResourceServerCreate: READ_ONLY_RESOURCE_SERVER_FIELDS,
    ResourceServerPut: (*READ_ONLY_RESOURCE_SERVER_FIELDS, "account_id"),
    ResourceServerPatch: (*READ_ONLY_RESOURCE_SERVER_FIELDS, "account_id"),
}

# --- Query strings -----------------------------------------------------------------------------


def _limit(raw: str) -> int:
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise PydanticCustomError(
            "limit", "must be an integer from 1 to {most}", {"most": MAX_LIMIT}
        )
    return int(raw)


Limit = Annotated[
    str,
    AfterValidator(_limit),
    WithJsonSchema(
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}
    ),
    Field(description="Page size."),
]
# decode_cursor enforces the length, so that any bad cursor is one invalid_cursor.
Cursor = Annotated[
    str,
    Field(
        description="next_cursor of the previous page.",
        json_schema_extra={"maxLength": MAX_CURSOR_LENGTH},
    ),
]


@with_config(STRICT)
class AuditQuery(TypedDict, total=False):
    limit: Limit
    cursor: Cursor
    account_id: Annotated[AccountId, Field(description="System admins only: one account's.")]


@with_config(STRICT)
class ClientQuery(AuditQuery, total=False):
    tag: Annotated[Tag, Field(description="Only clients with this tag.")]
    client_type: Annotated[ClientType, Field(description="Only this type.")]
    name_prefix: Annotated[
        str,
        StringConstraints(pattern=NAME_PREFIX_PATTERN),
        Field(description="Names starting with this."),
    ]


# --- Responses ---------------------------------------------------------------------------------

NewSecretValue = Annotated[
    str,
    Field(
        pattern=f"^{SECRET_PREFIX}[A-Za-z0-9_-]{{43,}}$",
        description="The plaintext secret; shown in this response only.",
    ),
]
ROWS = ConfigDict(from_attributes=True, extra="forbid")


class Client(BaseModel):
    """A client as the API shows it; never secrets or their hashes."""

    model_config = ROWS

    id: Annotated[str, ReadOnly]
    account_id: Annotated[str, ReadOnly]
    name: Name
    friendly_name: FriendlyName
    description: Description
    tags: Tags
    client_type: ClientType
    owner: Owner
    scopes: Scopes
    audiences: Audiences
    access_token_ttl: Ttl
    locked: bool
    disabled: bool
    allowed_auth_methods: AllowedAuthMethods
    dpop_bound_access_tokens: BoundFlag
    tls_client_certificate_bound_access_tokens: BoundFlag
    tls_client_auth_subject_dn: SubjectDn
    tls_client_auth_san_dns: SanDns
    tls_client_auth_san_uri: SanUri
    tls_client_auth_san_ip: SanIp
    tls_client_auth_san_email: SanEmail
    security_profile: SecurityProfile
    created_at: Annotated[Time, ReadOnly]
    updated_at: Annotated[Time, ReadOnly]


class NewClient(Client):
    """A new client with its first secret, shown this once (none with create_secret false)."""

    # Omitted when no secret was made, never null (exclude_if).
    client_secret: NewSecretValue = Field(default=None, exclude_if=lambda v: v is None)  # type: ignore[assignment]
    secret_id: str = Field(default=None, exclude_if=lambda v: v is None)  # type: ignore[assignment]


class ClientPage(BaseModel):
    model_config = ROWS

    data: list[Client]
    next_cursor: Annotated[str | None, Field(description="Opaque; null on the last page.")]


class ResourceServer(BaseModel):
    """A resource server: an API tokens are for."""

    model_config = ROWS

    id: Annotated[str, ReadOnly]
    account_id: Annotated[str, ReadOnly]
    identifier: Identifier
    name: RSName
    description: Description
    scopes: RSScopes
    access_token_ttl: OptionalTtl
    dpop_bound_access_tokens: BoundFlag
    tls_client_certificate_bound_access_tokens: BoundFlag
    shared: SharedFlag
    created_at: Annotated[Time, ReadOnly]
    updated_at: Annotated[Time, ReadOnly]


class ResourceServerPage(BaseModel):
    model_config = ROWS

    data: list[ResourceServer]
    next_cursor: Annotated[str | None, Field(description="Opaque; null on the last page.")]


class Secret(BaseModel):
    """A secret's metadata: never the secret or its hash."""

    model_config = ROWS

    id: str
    description: str | None
    hint: Annotated[str, Field(min_length=4, max_length=4, description="Last 4 characters.")]
    created_at: Time
    expires_at: Annotated[Time | None, Field(description="null: never expires.")]
    last_used_at: Annotated[
        Time | None,
        Field(
            description="Last successful authentication, written at most every "
            "LAST_USED_RESOLUTION seconds (default 60)."
        ),
    ]


class NewSecret(Secret):
    secret: NewSecretValue


class RotatedSecret(NewSecret):
    """A rotation's new secret, and when the secrets it replaced stop working."""

    #: The rotation time plus the grace period: equal to created_at without grace.
    old_secrets_expire_at: Time


class SecretList(BaseModel):
    model_config = ROWS

    data: list[Secret]


class Key(BaseModel):
    """A client's public key for private_key_jwt."""

    model_config = ROWS

    kid: str
    alg: Annotated[str, OneOf(SIGNING_ALGS)]
    public_jwk: PublicJWK
    created_at: Time
    expires_at: Time | None
    last_used_at: Time | None


class NewKey(Key):
    """A new key; the private half only when the server made the pair, shown this once."""

    private_jwk: Annotated[
        dict[str, Any], Field(description="Only when the server made the key pair.")
    ] = Field(default=None, exclude_if=lambda v: v is None)  # type: ignore[arg-type]
    # Omitted when absent, never null (exclude_if), so the document types them non-null.
    private_key_pem: Annotated[str, Field(description="Shown this once.")] = Field(  # type: ignore[assignment]
        default=None, exclude_if=lambda v: v is None
    )


class KeyList(BaseModel):
    model_config = ROWS

    data: list[Key]


class FederatedCredential(BaseModel):
    """A federated credential (docs/api.md §2.8)."""

    model_config = ROWS

    id: Annotated[str, ReadOnly]
    name: Name
    issuer: str
    subject: str | None
    subject_pattern: str | None
    claims: dict[str, str | list[str]]
    audience: str
    jwks_uri: str | None
    jwks: dict[str, Any] | None
    max_token_age: Annotated[int, Field(ge=MIN_TOKEN_AGE, le=MAX_TOKEN_AGE)]
    single_use: bool
    created_at: Annotated[Time, ReadOnly]
    last_used_at: Annotated[
        Time | None,
        Field(
            description="Last successful authentication, written at most every "
            "LAST_USED_RESOLUTION seconds (default 60)."
        ),
    ]


class FederatedCredentialList(BaseModel):
    model_config = ROWS

    data: list[FederatedCredential]


class FederatedCheck(BaseModel):
    """One credential's outcome in a dry run."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    matched: bool
    failed_check: Annotated[
        Annotated[str, OneOf(verify.CHECKS)] | None,
        Field(description="The first check that failed, in the order they run; null: matched."),
    ]
    detail: Annotated[
        str | None, Field(description="Which claim, or what about the keys or algorithm.")
    ]


class FederatedTestResult(BaseModel):
    """A dry run: which credential would accept the assertion, or why each would not."""

    model_config = ConfigDict(extra="forbid")

    matched: bool
    credential_id: str | None
    credential_name: str | None
    error: Annotated[
        Annotated[str, OneOf(DRY_RUN_ERRORS)] | None,
        Field(description="Why no credential was tried at all; null when they were."),
    ]
    results: list[FederatedCheck]


class SigningKey(BaseModel):
    """A server signing key: status and times, never key material."""

    model_config = ROWS

    kid: str
    alg: Annotated[str, OneOf(SIGNING_ALGS)]
    status: Annotated[str, OneOf(KEY_STATUSES)]
    created_at: Time
    activated_at: Time | None
    retires_at: Time | None


class SigningKeyList(BaseModel):
    model_config = ROWS

    data: list[SigningKey]


class AuditEvent(BaseModel):
    model_config = ROWS

    id: int
    at: Time
    actor: Annotated[str, Field(description="Acting client id, or cli.")]
    action: AuditAction
    target: str
    account_id: str


class AuditPage(BaseModel):
    model_config = ROWS

    data: list[AuditEvent]
    next_cursor: Annotated[str | None, Field(description="Opaque; null on the last page.")]


class FieldError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details (rendered by app/errors.py)."""

    model_config = ConfigDict(extra="forbid")

    type: str
    title: str
    status: Annotated[int, Field(ge=400, le=599)]
    detail: str
    code: Annotated[str, Field(description="Machine-readable, e.g. client_locked.")]
    errors: list[FieldError] = Field(default=None, exclude_if=lambda v: v is None)  # type: ignore[arg-type]


# Documented here, produced by the discovery and health views.


class PublishedKey(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        # Private members must never appear (RFC 7517 §4 and §6).
        json_schema_extra={
            "not": {"anyOf": [{"required": [m]} for m in ("d", "p", "q", "dp", "dq", "qi")]}
        },
    )

    kid: str
    kty: str
    alg: Annotated[str, OneOf(SIGNING_ALGS)]
    use: Literal["sig"]


class JWKS(BaseModel):
    model_config = ConfigDict(extra="allow")

    keys: list[PublishedKey]


AuthMethods = list[Annotated[str, OneOf(AUTH_METHODS)]]
SigningAlgs = list[Annotated[str, OneOf(SIGNING_ALGS)]]


class ServerMetadata(BaseModel):
    """RFC 8414 authorization server metadata."""

    model_config = ConfigDict(extra="allow")

    issuer: str
    token_endpoint: str
    jwks_uri: str
    grant_types_supported: list[str]
    token_endpoint_auth_methods_supported: AuthMethods
    token_endpoint_auth_signing_alg_values_supported: SigningAlgs
    introspection_endpoint: str
    revocation_endpoint: str
    scopes_supported: list[str]
    response_types_supported: list[str]


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str


# --- Reading requests --------------------------------------------------------------------------

JSON_MIMETYPES = ("application/json", "application/merge-patch+json")


@functools.cache
def adapter(schema: Any) -> TypeAdapter:
    """The (cached) pydantic validator of a schema type."""
    return TypeAdapter(schema)


def _field(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "body"


# Unknown and read-only fields first, then missing ones, then bad values.
_RANK = {"extra_forbidden": 0, "missing": 1}


def errors_of(
    error: PydanticError, *, read_only: Iterable[str] = (), unknown: str = "is not a known field"
) -> Errors:
    """pydantic's errors as the API's `errors[{field, message}]`."""
    found = []
    for item in error.errors(include_url=False, include_input=False):
        name = _field(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            message = "is read-only" if name in read_only else unknown
        elif kind == "missing":
            message = "is required"
        elif kind == "string_pattern_mismatch":
            message = f"must match {item['ctx']['pattern']}"
        else:
            message = item["msg"]
        found.append((_RANK.get(kind, 2), {"field": name, "message": message}))
    return [entry for _, entry in sorted(found, key=lambda pair: pair[0])]


# Characters no string of any body may hold, whatever its field: a lone UTF-16
# surrogate is not a Unicode scalar value (RFC 8259 §8.2: such a string's
# behaviour is unpredictable) and cannot be encoded as UTF-8, so it fails at
# the database, the log or the template; PostgreSQL refuses NUL in text and
# jsonb alike. `json.loads` turns "\\ud800" and "\\u0000" escapes into both.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_errors(value: object, loc: tuple[str | int, ...] = ()) -> Errors:
    """`errors[]` for every string in a parsed body (names included) with a NUL or a lone surrogate.

    One check for every field of every body, before the field's own rules,
    so a new field is covered without saying so.
    """
    found: Errors = []
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            found.append({"field": _field(loc), "message": UNSTORABLE_MESSAGE})
    elif isinstance(value, dict):
        for name, item in value.items():
            if isinstance(name, str) and _UNSTORABLE.search(name):
                # Never echo the bad name: it could not be encoded in the answer.
                found.append({"field": _field(loc), "message": "has a field name " + UNSTORABLE})
                continue
            found += unstorable_errors(item, (*loc, name))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found += unstorable_errors(item, (*loc, index))
    return found


UNSTORABLE = "with a NUL character or a lone surrogate (U+0000, U+D800..U+DFFF)"
UNSTORABLE_MESSAGE = "must not contain a NUL character or a lone surrogate (U+0000, U+D800..U+DFFF)"


def check(schema: Any, value: object, *, read_only: Iterable[str] = ()) -> tuple[Any, Errors]:
    """(the valid value, []) or (None, its errors) against a schema type.

    A string holding what no field may hold (`unstorable_errors`) is refused
    first, for every schema: the API's bodies, the console's forms and the
    CLI's options all come through here.
    """
    unstorable = unstorable_errors(value)
    if unstorable:
        return None, unstorable
    try:
        return adapter(schema).validate_python(value), []
    except PydanticError as error:
        return None, errors_of(error, read_only=read_only)


def validate(
    schema: Any, value: object, *, read_only: Iterable[str] = (), detail: str | None = None
) -> Any:
    """The value, valid against a schema type.

    :raise ValidationError: 400 with every problem found.
    """
    valid, errors = check(schema, value, read_only=read_only)
    if errors:
        raise ValidationError(errors, detail)
    return valid


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 §4: with duplicate names parsers disagree on the value; refuse
    # rather than let a proxy and this server read different bodies.
    body = dict(pairs)
    if len(body) != len(pairs):
        raise ValueError("duplicate name in a JSON object")
    return body


def json_body(*, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object.

    :param optional: an empty body (any or no Content-Type) counts as `{}`.
    :raise UnsupportedMediaType: 415 when the body is not declared as JSON.
    :raise BadRequest: 400 when it is not valid JSON or not an object.
    """
    raw = request.get_data(cache=True)  # 413 past MAX_CONTENT_LENGTH
    if optional and not raw.strip():
        return {}
    if request.mimetype not in JSON_MIMETYPES:
        raise UnsupportedMediaType("The request body must be application/json.")
    try:
        body = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_keys
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest("The request body is not valid JSON.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_body")
    return body


def query_args(schema: Any) -> dict[str, Any]:
    """The query string, valid against a TypedDict of its parameters.

    :raise ValidationError: 400 for unknown, repeated or invalid parameters.
    """
    args = request.args
    unstorable = [e for k in args for v in args.getlist(k) for e in unstorable_errors({k: v})]
    if unstorable:
        raise ValidationError(unstorable, "The query string is invalid.")
    repeated = [
        {"field": name, "message": "must be given at most once"}
        for name in args
        if len(args.getlist(name)) > 1
    ]
    try:
        valid = adapter(schema).validate_python(args.to_dict())
        errors = repeated
    except PydanticError as error:
        valid = None
        errors = errors_of(error, unknown="is not a known query parameter") + repeated
    if errors:
        raise ValidationError(errors, "The query string is invalid.")
    return valid


# --- Operations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """What the document says of one view: its body, query, success response and errors."""

    operation_id: str
    tag: str
    status: int = 200
    response: type[BaseModel] | None = None
    body: Any = None
    body_optional: bool = False
    body_types: tuple[str, ...] = ("application/json",)
    query: Any = None
    headers: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()
    if_match: bool = False
    description: str = ""


def operation(operation_id: str, *, tag: str, **details: Any) -> Callable:
    """Decorator: the view's body (passed as `body`) and query (as `query`) are validated
    against the declared types, which are the ones the OpenAPI document shows.

    Put it below `require_scope`, so that a caller without a token learns nothing
    about the body rules.
    """
    op = Operation(operation_id, tag, **details)

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if op.query is not None:
                kwargs["query"] = query_args(op.query)
            if op.body is not None:
                body = json_body(optional=op.body_optional)
                kwargs["body"] = validate(op.body, body, read_only=READ_ONLY.get(op.body, ()))
            return view(*args, **kwargs)

        wrapper.operation = op  # type: ignore[attr-defined]
        return wrapper

    return decorator


# --- Writing responses -------------------------------------------------------------------------


class _Extended:
    """A row's attributes with a few more beside them (a new secret's plaintext)."""

    def __init__(self, row: object, extra: dict[str, Any]) -> None:
        self._row = row
        self._extra = extra

    def __getattr__(self, name: str) -> Any:
        if name in self._extra:
            return self._extra[name]
        return getattr(self._row, name)


def dump(schema: type[BaseModel], source: object, **extra: Any) -> dict[str, Any]:
    """A row, or a dict of rows, (and `extra` fields) as the response model writes it.

    The model reads the row's attributes and checks them against the very
    schema the document shows, so a response cannot leave the documented shape.
    """
    if extra:
        source = _Extended(source, extra)
    return schema.model_validate(source).model_dump()


def client_to_dict(client: ClientRow) -> dict[str, Any]:
    """A client as the API shows it; never secrets or their hashes."""
    return dump(Client, client)


def validate_name(value: object, field: str = "name") -> Errors:
    """Problems of a client name (for the CLI)."""
    _, errors = check(Name, value)
    return [{**e, "field": field} for e in errors]


def validate_account_id(value: object, field: str = "account_id") -> Errors:
    """Problems of an account id (for the CLI and the listings)."""
    _, errors = check(AccountId, value)
    return [{**e, "field": field} for e in errors]


# --- Client bodies: the rules that span fields ----------------------------------------------------


def scope_rule_errors(account_id: str, client_type: str, scopes: list[str]) -> Errors:
    """Only admin clients hold management scopes; keys:* only in the system account."""
    management = [s for s in scopes if s in MANAGEMENT_SCOPES]
    if not management:
        return []
    if client_type != "admin":
        return [
            {"field": "scopes", "message": f"{management[0]!r} may only be given to admin clients"}
        ]
    allowed = MANAGEMENT_SCOPES if account_id == SYSTEM_ACCOUNT else ACCOUNT_MANAGEMENT_SCOPES
    for scope in management:
        if scope not in allowed:
            return [
                {
                    "field": "scopes",
                    "message": f"{scope!r} is only for clients of the system account",
                }
            ]
    return []


def management_audience_errors(client_type: str, audiences: list[str]) -> Errors:
    """Only admin clients list the management API's audience (docs/api.md §2.1)."""
    if client_type != "admin" and current_app.config["MANAGEMENT_AUDIENCE"] in audiences:
        return [{"field": "audiences", "message": "the management audience is for admin clients"}]
    return []


#: The body schema of each way to write a client.
CLIENT_BODIES: dict[str, Any] = {
    "create": ClientCreate,
    "replace": ClientPut,
    "update": ClientPatch,
}


def client_values(
    body: dict[str, Any],
    mode: str,
    *,
    current: ClientRow | None = None,
    account_id: str,
    may_set_account: bool = False,
) -> tuple[dict[str, Any], str]:
    """The column values and account of a valid CLIENT_BODIES[mode] body.

    `mode` is "create" (POST), "replace" (PUT: omitted optional fields take
    their defaults) or "update" (PATCH: only the fields sent). Rules that span
    fields are checked on the client as it would be after the change. Whether
    the caller may make that client is app.clients.policy's (403, not 400).

    :raise ValidationError: 400 for a rule the body breaks.
    """
    values = dict(body)
    if "account_id" in values:
        if not may_set_account:
            raise ValidationError([{"field": "account_id", "message": "is read-only"}])
        account_id = values.pop("account_id")
    if mode in ("create", "replace"):
        values = {**CLIENT_DEFAULTS, **values}
        values.setdefault("friendly_name", values["name"])
        for name in ("tags", "scopes", "audiences"):
            values[name] = list(values[name])  # never the shared default list
        merged = values
    else:
        assert current is not None
        merged = {f: getattr(current, f) for f in MUTABLE_CLIENT_FIELDS} | values
    errors = scope_rule_errors(account_id, merged["client_type"], merged["scopes"] or [])
    errors += management_audience_errors(merged["client_type"], merged["audiences"] or [])
    if errors:
        raise ValidationError(errors)
    return values, account_id


def validate_client(body: object, mode: str, **rules: Any) -> tuple[dict[str, Any], str]:
    """client_values of a body not yet validated (the console's forms).

    :raise ValidationError: 400 with every problem found.
    """
    valid, errors = check(CLIENT_BODIES[mode], body, read_only=READ_ONLY_CLIENT_FIELDS)
    if errors:
        raise ValidationError(errors)
    return client_values(valid, mode, **rules)
