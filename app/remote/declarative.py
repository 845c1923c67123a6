"""`ccserver apply` and `ccserver export`: the server made to match a file (docs/cli.md#apply).

The file names resource servers by `identifier`, clients by `name` within
one account, and each client's federated credentials by `name`. What it
manages, and so what apply may delete:

- an object the file names is created when missing and changed where a
  field the entry gives differs (fields the entry leaves out stay as they
  are); with `absent: true` it is deleted;
- with `prune: true` at the top, the file is the whole account: every
  client and resource server of the account it does not name is deleted,
  and so is every federated credential, of a client it names, that the
  client's entry does not list. The admin client apply runs as is never
  deleted; nor are other accounts' shared resource servers.

Secrets never appear in the file (an entry holding one is refused); a
client that apply creates gets a secret, printed once, unless its entry
says `create_secret: false`. Federated credentials cannot be changed in
place (docs/api.md §2.8 has no update), so a changed one is deleted and
made again: "replace" in the plan.

Every check of a value is the server's; apply checks only the file's
shape, and names the entry in every error the server reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import yaml

from app.remote.errors import ApiError, UsageError
from app.remote.http import Api

VERSION = 1
TOP_KEYS = ("version", "account", "prune", "resource_servers", "clients")
#: Fields the server writes: never in the file, never compared.
CLIENT_READ_ONLY = ("id", "account_id", "created_at", "updated_at")
RS_READ_ONLY = ("id", "account_id", "created_at", "updated_at")
FED_READ_ONLY = ("id", "created_at", "last_used_at")
#: Keys that say how to apply an entry, not what the object holds.
DIRECTIVES = ("absent", "create_secret", "federated_credentials")
FEDERATED_PATH = "/api/v1/clients/{client_id}/federated-credentials"
SECRET_KEYS = ("client_secret", "secret", "secrets", "secret_id", "private_key_pem", "private_jwk")
# Lists the server treats as sets; `audiences` is ordered (the first is the default).
UNORDERED = ("tags", "scopes", "allowed_auth_methods")
# docs/api.md §2.8: the public members a stored JWK keeps.
JWK_MEMBERS = ("kty", "kid", "alg", "use", "key_ops", "n", "e", "crv", "x", "y")
HEADER = (
    "# ccserver apply file (docs/cli.md#apply).\n"
    "# `ccserver apply -f FILE --dry-run` shows what applying it would change.\n"
    "# Secrets are never written here. `prune: true` would delete what this file does not name.\n"
)


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


# --- reading the file --------------------------------------------------------------------------


@dataclass
class Desired:
    account: str | None
    prune: bool
    resource_servers: list[dict[str, Any]]
    clients: list[dict[str, Any]]


def parse(document: Any, source: str) -> Desired:
    """The file's wishes, its shape checked.

    :raise UsageError: naming the entry and key at fault.
    """
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise UsageError(f"{source}: expected a mapping with `clients:` and `resource_servers:`")
    unknown = [k for k in document if k not in TOP_KEYS]
    if unknown:
        raise UsageError(
            f"{source}: unknown top-level key {unknown[0]!r} (known: {', '.join(TOP_KEYS)})"
        )
    if document.get("version", VERSION) != VERSION:
        raise UsageError(f"{source}: version: must be {VERSION}")
    account = document.get("account")
    if account is not None and not isinstance(account, str):
        raise UsageError(f"{source}: account: must be an account id")
    prune = document.get("prune", False)
    if not isinstance(prune, bool):
        raise UsageError(f"{source}: prune: must be true or false")
    servers = _entries(document, "resource_servers", "identifier", source)
    clients = _entries(document, "clients", "name", source)
    for client in clients:
        where = f"{source}: clients[{client['name']}]"
        _check_flags(client, where)
        creds = client.get("federated_credentials")
        if creds is None:
            continue
        if not isinstance(creds, list):
            raise UsageError(f"{where}.federated_credentials: must be a list")
        client["federated_credentials"] = _list_of(creds, "name", f"{where}.federated_credentials")
        for cred in client["federated_credentials"]:
            _check_flags(cred, f"{where}.federated_credentials[{cred['name']}]")
    for server in servers:
        _check_flags(server, f"{source}: resource_servers[{server['identifier']}]")
    return Desired(account, prune, servers, clients)


def _entries(document: dict[str, Any], key: str, name: str, source: str) -> list[dict[str, Any]]:
    items = document.get(key) or []
    if not isinstance(items, list):
        raise UsageError(f"{source}: {key}: must be a list")
    return _list_of(items, name, f"{source}: {key}")


def _list_of(items: list[Any], name: str, where: str) -> list[dict[str, Any]]:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise UsageError(f"{where}[{index}]: must be a mapping")
        key = item.get(name)
        if not isinstance(key, str) or not key:
            raise UsageError(f"{where}[{index}]: `{name}` is required")
        if key in seen:
            raise UsageError(f"{where}[{key}]: named twice")
        seen.add(key)
        secret = next((k for k in item if k in SECRET_KEYS), None)
        if secret is not None:
            raise UsageError(
                f"{where}[{key}].{secret}: secrets never go in the file"
                " (apply prints a new client's secret once; use `ccserver secrets`)"
            )
    return items


def _check_flags(entry: dict[str, Any], where: str) -> None:
    for flag in ("absent", "create_secret"):
        if flag in entry and not isinstance(entry[flag], bool):
            raise UsageError(f"{where}.{flag}: must be true or false")
    for key in CLIENT_READ_ONLY + FED_READ_ONLY:
        if key in entry and key != "account_id":
            raise UsageError(f"{where}.{key}: is written by the server, not by the file")
    if "account_id" in entry:
        raise UsageError(f"{where}.account_id: the account is the file's `account:`")


# --- comparing ---------------------------------------------------------------------------------


def _norm(name: str, value: Any) -> Any:
    if isinstance(value, list) and name in UNORDERED and all(isinstance(v, str) for v in value):
        return sorted(value)
    if name == "scopes" and isinstance(value, list) and all(isinstance(v, dict) for v in value):
        # A resource server's scopes: descriptions default to null.
        items = [{"value": v.get("value"), "description": v.get("description")} for v in value]
        return sorted(items, key=lambda v: str(v["value"]))
    if name == "jwks" and isinstance(value, dict) and isinstance(value.get("keys"), list):
        keys = [
            {m: k[m] for m in JWK_MEMBERS if m in k} if isinstance(k, dict) else k
            for k in value["keys"]
        ]
        return {"keys": keys}
    return value


def differences(
    entry: dict[str, Any], current: dict[str, Any], skip: tuple[str, ...]
) -> dict[str, Any]:
    """The fields the entry gives whose value differs from the server's."""
    return {
        k: v
        for k, v in entry.items()
        if k not in skip and k not in DIRECTIVES and _norm(k, v) != _norm(k, current.get(k))
    }


# --- the plan ----------------------------------------------------------------------------------

# Order of the steps: what others depend on comes first.
RS_WRITE, CLIENT_UNLOCK, CLIENT_WRITE, FED_DELETE, FED_CREATE, CLIENT_LOCK = range(6)
CLIENT_DELETE, RS_DELETE = 6, 7
SYMBOL = {"create": "+", "update": "~", "delete": "-", "replace": "-/+"}


@dataclass
class Step:
    phase: int
    run: Callable[[], None]


@dataclass
class Change:
    action: str
    kind: str
    key: str
    detail: str = ""

    def line(self) -> str:
        text = f"{SYMBOL[self.action]} {self.action} {self.kind} {self.key}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass
class Plan:
    changes: list[Change]
    steps: list[Step]
    #: Lines for the person applying: new secrets (printed once) and what was done.
    report: list[str]

    def add(self, change: Change, *steps: Step) -> None:
        self.changes.append(change)
        self.steps.extend(steps)

    def run(self) -> None:
        for step in sorted(self.steps, key=lambda s: s.phase):
            step.run()


class Planner:
    """Compares the file with the server and plans the calls that make them equal."""

    def __init__(self, api: Api, desired: Desired) -> None:
        self.api = api
        self.desired = desired
        self.plan = Plan([], [], [])
        self.account = desired.account or _caller_account(api)
        #: Client ids by name: those that exist, and those that apply creates.
        self.client_ids: dict[str, str] = {}

    def _call(self, where: str, method: str, path: str, body: Any = None) -> Any:
        self.api.name_field = lambda f: f"{where}.{f}" if f else where
        return self.api.call(method, path, body=body)

    def make(self) -> Plan:
        """The plan; nothing changes on the server.

        :raise ApiError: the file asks for what the server cannot do (before any change).
        """
        uses_federation = any(c.get("federated_credentials") for c in self.desired.clients)
        if uses_federation and not self.api.offers(FEDERATED_PATH):
            raise ApiError(
                "the file has federated_credentials, but this server has no federated"
                f" credentials API ({FEDERATED_PATH} is not in its OpenAPI document)",
                404,
                "not_found",
            )
        servers = {
            rs["identifier"]: rs
            for rs in self.api.every("/resource-servers", {"account_id": self.account})
            if rs.get("account_id") == self.account
        }
        clients = {c["name"]: c for c in self.api.every("/clients", {"account_id": self.account})}
        self.client_ids = {name: c["id"] for name, c in clients.items()}
        self._resource_servers(servers)
        for entry in self.desired.clients:
            self._client(entry, clients.get(entry["name"]))
        if self.desired.prune:
            named = {c["name"] for c in self.desired.clients}
            self_id = self.api.settings.client_id
            for name in sorted(set(clients) - named):
                if clients[name]["id"] == self_id:
                    continue  # never the admin client this run authenticates as
                self._delete_client(clients[name])
            wanted = {rs["identifier"] for rs in self.desired.resource_servers}
            for identifier in sorted(set(servers) - wanted):
                self._delete_rs(servers[identifier])
        return self.plan

    # resource servers

    def _resource_servers(self, servers: dict[str, dict[str, Any]]) -> None:
        for entry in self.desired.resource_servers:
            identifier = entry["identifier"]
            where = f"resource_servers[{identifier}]"
            current = servers.get(identifier)
            if entry.get("absent"):
                if current is not None:
                    self._delete_rs(current)
                continue
            body = {k: v for k, v in entry.items() if k not in DIRECTIVES}
            if current is None:
                if self.account != _caller_account(self.api):
                    body["account_id"] = self.account

                def create(body: dict[str, Any] = body, where: str = where) -> None:
                    self._call(where, "POST", "/resource-servers", body)
                    self.plan.report.append(f"created resource server {body['identifier']}")

                self.plan.add(
                    Change("create", "resource server", identifier), Step(RS_WRITE, create)
                )
                continue
            changed = differences(entry, current, RS_READ_ONLY + ("identifier",))
            if changed:

                def update(
                    rs: dict[str, Any] = current,
                    changed: dict[str, Any] = changed,
                    where: str = where,
                ) -> None:
                    self._call(where, "PATCH", _path("resource-servers", rs["id"]), changed)
                    self.plan.report.append(f"updated resource server {rs['identifier']}")

                detail = ", ".join(changed)
                self.plan.add(
                    Change("update", "resource server", identifier, detail), Step(RS_WRITE, update)
                )

    def _delete_rs(self, rs: dict[str, Any]) -> None:
        def delete() -> None:
            where = f"resource_servers[{rs['identifier']}]"
            self._call(where, "DELETE", _path("resource-servers", rs["id"]))
            self.plan.report.append(f"deleted resource server {rs['identifier']}")

        self.plan.add(
            Change("delete", "resource server", rs["identifier"]), Step(RS_DELETE, delete)
        )

    # clients

    def _client(self, entry: dict[str, Any], current: dict[str, Any] | None) -> None:
        name = entry["name"]
        where = f"clients[{name}]"
        if entry.get("absent"):
            if current is not None:
                self._delete_client(current)
            return
        fields = {k: v for k, v in entry.items() if k not in DIRECTIVES}
        if current is None:
            body = dict(fields)
            if entry.get("create_secret") is False:
                body["create_secret"] = False
            if self.account != _caller_account(self.api):
                body["account_id"] = self.account
            lock_later = bool(body.get("locked")) and bool(entry.get("federated_credentials"))
            if lock_later:
                body["locked"] = False  # locked only after its credentials are made

            def create(body: dict[str, Any] = body, where: str = where) -> None:
                made = self._call(where, "POST", "/clients", body)
                self.client_ids[body["name"]] = made["id"]
                self.plan.report.append(f"created client {body['name']} (id {made['id']})")
                if "client_secret" in made:
                    self.plan.report.append(
                        f"  client_secret: {made['client_secret']}  (shown once: store it now)"
                    )

            steps = [Step(CLIENT_WRITE, create)]
            if lock_later:
                steps.append(Step(CLIENT_LOCK, self._lock_new(where, name)))
            self.plan.add(Change("create", "client", name), *steps)
            self._credentials(entry, None, locked=False)
            return
        changed = differences(fields, current, CLIENT_READ_ONLY + ("name",))
        locked_now = bool(current.get("locked"))
        locked_after = changed.get("locked", locked_now)
        others = {k: v for k, v in changed.items() if k != "locked"}
        creds_change = self._credentials(entry, current, locked=locked_now and locked_after)
        if locked_now and locked_after and others:
            raise ApiError(
                f"{where}: the client is locked; set `locked: false` in the file to change"
                f" {', '.join(others)}",
                409,
                "client_locked",
            )
        if not changed:
            return
        client_id = current["id"]
        steps = []
        if locked_now and not locked_after:
            steps.append(Step(CLIENT_UNLOCK, self._patch(where, client_id, {"locked": False})))
        if others:
            steps.append(Step(CLIENT_WRITE, self._patch(where, client_id, others)))
        if locked_after and not locked_now:
            # Last, after the credentials of this run: a locked client refuses them.
            phase = CLIENT_LOCK if creds_change else CLIENT_WRITE
            steps.append(Step(phase, self._patch(where, client_id, {"locked": True})))
        self.plan.add(Change("update", "client", name, ", ".join(changed)), *steps)

    def _lock_new(self, where: str, name: str) -> Callable[[], None]:
        def lock() -> None:
            self._patch(where, self.client_ids[name], {"locked": True})()

        return lock

    def _patch(self, where: str, client_id: str, body: dict[str, Any]) -> Callable[[], None]:
        def patch() -> None:
            self._call(where, "PATCH", _path("clients", client_id), body)
            self.plan.report.append(f"updated {where} ({', '.join(body)})")

        return patch

    def _delete_client(self, client: dict[str, Any]) -> None:
        where = f"clients[{client['name']}]"
        if client.get("locked"):
            raise ApiError(
                f"{where}: the client is locked; unlock it (`ccserver clients unlock"
                f" {client['id']}`) before apply deletes it",
                409,
                "client_locked",
            )

        def delete() -> None:
            self._call(where, "DELETE", _path("clients", client["id"]))
            self.plan.report.append(f"deleted client {client['name']}")

        self.plan.add(Change("delete", "client", client["name"]), Step(CLIENT_DELETE, delete))

    # federated credentials

    def _credentials(
        self, entry: dict[str, Any], client: dict[str, Any] | None, *, locked: bool
    ) -> bool:
        """Plans the client's federated credentials; whether any changes."""
        wanted = entry.get("federated_credentials")
        if wanted is None and not (self.desired.prune and client is not None):
            return False
        name = entry["name"]
        current: dict[str, dict[str, Any]] = {}
        if client is not None:
            listed = list_credentials(self.api, client["id"])
            if listed is None:
                if wanted:
                    raise ApiError(
                        f"clients[{name}].federated_credentials: this server has no"
                        " federated credentials API (docs/api.md §2.8)",
                        404,
                        "not_found",
                    )
                return False
            current = {c["name"]: c for c in listed}
        changes = 0
        named = set()
        for cred in wanted or []:
            named.add(cred["name"])
            where = f"clients[{name}].federated_credentials[{cred['name']}]"
            have = current.get(cred["name"])
            key = f"{cred['name']} of client {name}"
            if cred.get("absent"):
                if have is not None:
                    changes += 1
                    self.plan.add(
                        Change("delete", "federated credential", key),
                        Step(FED_DELETE, self._delete_cred(name, have, where)),
                    )
                continue
            body = {k: v for k, v in cred.items() if k not in DIRECTIVES}
            if have is None:
                changes += 1
                self.plan.add(
                    Change("create", "federated credential", key),
                    Step(FED_CREATE, self._create_cred(name, body, where)),
                )
                continue
            changed = differences(body, have, FED_READ_ONLY + ("name",))
            if changed:
                changes += 1
                self.plan.add(
                    Change("replace", "federated credential", key, ", ".join(changed)),
                    Step(FED_DELETE, self._delete_cred(name, have, where)),
                    Step(FED_CREATE, self._create_cred(name, body, where)),
                )
        if self.desired.prune:
            for cred_name in sorted(set(current) - named):
                changes += 1
                where = f"clients[{name}].federated_credentials[{cred_name}]"
                self.plan.add(
                    Change("delete", "federated credential", f"{cred_name} of client {name}"),
                    Step(FED_DELETE, self._delete_cred(name, current[cred_name], where)),
                )
        if changes and locked:
            raise ApiError(
                f"clients[{name}]: the client is locked; set `locked: false` in the file to"
                " change its federated credentials",
                409,
                "client_locked",
            )
        return bool(changes)

    def _create_cred(self, client: str, body: dict[str, Any], where: str) -> Callable[[], None]:
        def create() -> None:
            path = _path("clients", self.client_ids[client], "federated-credentials")
            self._call(where, "POST", path, body)
            self.plan.report.append(f"created federated credential {body['name']} of {client}")

        return create

    def _delete_cred(self, client: str, cred: dict[str, Any], where: str) -> Callable[[], None]:
        def delete() -> None:
            path = _path("clients", self.client_ids[client], "federated-credentials", cred["id"])
            self._call(where, "DELETE", path)
            self.plan.report.append(f"deleted federated credential {cred['name']} of {client}")

        return delete


def _caller_account(api: Api) -> str:
    api.token()
    account = api.claims.get("account_id")
    if not isinstance(account, str):
        raise UsageError("the admin token names no account: give `account:` in the file")
    return account


def list_credentials(api: Api, client_id: str) -> list[dict[str, Any]] | None:
    """A client's federated credentials; None when the server has no such API (404 route)."""
    try:
        page = api.call("GET", _path("clients", client_id, "federated-credentials"))
    except ApiError as exc:
        # An unknown route is "not_found"; a missing client is "client_not_found".
        if exc.status in (404, 405) and exc.code in ("not_found", "method_not_allowed", None):
            return None
        raise
    return list(page["data"])


# --- export ------------------------------------------------------------------------------------


def export(api: Api, account: str | None) -> str:
    """The account's clients, resource servers and federated credentials as an apply file."""
    account = account or _caller_account(api)
    servers = [
        _first("identifier", {k: v for k, v in rs.items() if k not in RS_READ_ONLY})
        for rs in api.every("/resource-servers", {"account_id": account})
        if rs.get("account_id") == account
    ]
    clients = []
    supported = True
    for client in api.every("/clients", {"account_id": account}):
        entry = _first("name", {k: v for k, v in client.items() if k not in CLIENT_READ_ONLY})
        if supported:
            creds = list_credentials(api, client["id"])
            if creds is None:
                supported = False
            else:
                entry["federated_credentials"] = sorted(
                    (
                        _first("name", {k: v for k, v in c.items() if k not in FED_READ_ONLY})
                        for c in creds
                    ),
                    key=lambda c: str(c["name"]),
                )
        clients.append(entry)
    document = {
        "version": VERSION,
        "account": account,
        "resource_servers": sorted(servers, key=lambda rs: str(rs["identifier"])),
        "clients": sorted(clients, key=lambda c: str(c["name"])),
    }
    return HEADER + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _first(key: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with its key field first, as a person reads it."""
    return {key: entry[key], **{k: v for k, v in entry.items() if k != key}}


def load(text: str, source: str) -> Desired:
    """An apply file's text, parsed and its shape checked.

    :raise UsageError: not YAML, or not the shape of an apply file.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{source}: not valid YAML{where}") from exc
    return parse(document, source)
