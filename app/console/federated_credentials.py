"""Console pages for a client's federated credentials (docs/api.md §2.8, docs/federation.md).

List, add (a form of the API's fields, or a platform preset), and delete
after a confirmation page. Every form becomes the API's body, judged by its
schema, and goes through the same service (app.clients.federation) with the
signed-in admin as the caller, so tenancy, the privilege rule, the lock and
the 50-credential limit are the API's. Presets and the rule in plain words
come from app.clients.federation_presets, shared with the docs.
"""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, flash, g, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from app.api import schemas
from app.clients import federation as federation_service
from app.clients import policy, service
from app.clients.federation_presets import (
    PRESETS,
    build_credential,
    keys_in_words,
    rule_in_words,
)
from app.console import bp
from app.console.auth import login_required, require
from app.errors import AppError, BadRequest, NotFound, ValidationError
from app.extensions import db
from app.models import Client, FederatedCredential
from app.models.federated_credential import DEFAULT_TOKEN_AGE

#: The key sources the generic form offers, as the API reads them (§2.8).
KEY_SOURCES = [
    ("discovery", "Discovered from the issuer (OpenID Connect discovery)"),
    ("jwks_uri", "Fetched from a JWK Set URL (jwks_uri; a SPIFFE bundle endpoint too)"),
    ("jwks", "Given here (inline JWKS)"),
]
TEXT_FIELDS = ("name", "issuer", "audience", "subject", "jwks_uri")


def _client(client_id: str, *, for_update: bool = False) -> Client:
    """:raise NotFound: also for another account's client, as in the API."""
    return service.get_client(g.caller.account_filter(), client_id, for_update=for_update)


def _messages(error: AppError) -> list[str]:
    if error.errors:
        return [f"{e['field']}: {e['message']}" for e in error.errors]
    return [error.detail]


def _number(text: str) -> int | str:
    """An int; anything else as typed, so the schema names the field."""
    text = text.strip()
    return int(text) if text.isdigit() and len(text) < 10 else text


def claims_from_text(text: str) -> dict[str, Any]:
    """`claim = value`, one a line; a claim on several lines allows each of its values.

    :raise ValidationError: a line without `=`.
    """
    claims: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, equals, value = line.partition("=")
        if not equals or not name.strip():
            raise ValidationError(
                [{"field": "claims", "message": f"line {number}: write it as claim = value"}]
            )
        name, value = name.strip(), value.strip()
        if name not in claims:
            claims[name] = value
        elif isinstance(claims[name], list):
            claims[name].append(value)
        else:
            claims[name] = [claims[name], value]
    return claims


def claims_text(claims: dict[str, Any]) -> str:
    """The inverse of `claims_from_text`."""
    lines = []
    for name, wanted in claims.items():
        for value in wanted if isinstance(wanted, list) else [wanted]:
            lines.append(f"{name} = {value}")
    return "\n".join(lines)


def credential_body(form: MultiDict) -> dict[str, Any]:
    """The API body of the generic form: the API's schema and the service then judge it."""
    body: dict[str, Any] = {}
    for field in TEXT_FIELDS:
        value = (form.get(field) or "").strip()
        if value:
            body[field] = value
    if "subject" in body and form.get("subject_kind") == "pattern":
        body["subject_pattern"] = body.pop("subject")
    claims = claims_from_text(form.get("claims") or "")
    if claims:
        body["claims"] = claims
    source = form.get("key_source") or "discovery"
    if source not in dict(KEY_SOURCES):
        raise ValidationError([{"field": "key_source", "message": "choose one of the offered"}])
    if source != "jwks_uri":
        body.pop("jwks_uri", None)
    elif "jwks_uri" not in body:
        raise ValidationError([{"field": "jwks_uri", "message": "give the JWK Set URL"}])
    if source == "jwks":
        text = (form.get("jwks") or "").strip()
        try:
            body["jwks"] = json.loads(text)
        except ValueError as exc:
            raise ValidationError(
                [{"field": "jwks", "message": 'must be a JSON Web Key Set: {"keys": [...]}'}]
            ) from exc
    age = (form.get("max_token_age") or "").strip()
    if age:
        body["max_token_age"] = _number(age)
    body["single_use"] = form.get("single_use") == "on"
    return body


def _preset_body(preset_key: str, form: MultiDict) -> dict[str, Any]:
    age = (form.get("max_token_age") or "").strip()
    number = _number(age) if age else None
    if isinstance(number, str):
        raise ValidationError(
            [{"field": "max_token_age", "message": "must be a number of seconds"}]
        )
    return build_credential(
        preset_key,
        form,
        name=form.get("name") or "",
        audience=form.get("audience") or "",
        max_token_age=number,
    )


def _form_defaults(preset_key: str | None) -> dict[str, Any]:
    if preset_key is None:
        return {
            "key_source": "discovery",
            "subject_kind": "exact",
            "max_token_age": DEFAULT_TOKEN_AGE,
        }
    preset = PRESETS[preset_key]
    values: dict[str, Any] = {"max_token_age": preset.max_token_age}
    values.update({f.name: f.default for f in preset.fields if f.default})
    return values


def _form_page(client: Client, preset_key: str | None, form: dict, **extra: Any):
    return render_template(
        "console/federated_credential_new.html",
        client=client,
        preset=PRESETS.get(preset_key or ""),
        form=form,
        key_sources=KEY_SOURCES,
        server_issuer=current_app.config["ISSUER"],
        errors=extra.pop("errors", []),
        **extra,
    )


def _preset_key(value: str | None) -> str | None:
    if not value:
        return None
    if value not in PRESETS:
        raise NotFound("No such preset.", code="preset_not_found")
    return value


@bp.get("/clients/<client_id>/federated-credentials")
@login_required
def list_federated_credentials(client_id: str):
    """The client's federated credentials, each rule in plain words, and the ways to add one."""
    require("clients:read")
    client = _client(client_id)
    credentials = federation_service.list_credentials(client)
    return render_template(
        "console/federated_credentials.html",
        client=client,
        credentials=[(c, rule_in_words(c), keys_in_words(c)) for c in credentials],
        presets=PRESETS.values(),
        limit=federation_service.MAX_CREDENTIALS,
        can_write="clients:write" in g.caller.scopes and policy.may_manage(g.caller.scopes, client),
    )


@bp.get("/clients/<client_id>/federated-credentials/new")
@login_required
def new_federated_credential(client_id: str):
    """The add form: the API's fields, or a preset's terms (?preset=github|gitlab|...)."""
    require("clients:write")
    preset_key = _preset_key(request.args.get("preset"))
    client = _client(client_id)
    policy.ensure_may_manage(g.caller.scopes, client)
    return _form_page(client, preset_key, _form_defaults(preset_key))


@bp.post("/clients/<client_id>/federated-credentials/new")
@login_required
def create_federated_credential(client_id: str):
    """Preview the credential the form makes, or add it."""
    require("clients:write")
    preset_key = _preset_key(request.form.get("preset"))
    preview = request.form.get("action") == "preview"
    try:
        if preset_key is None:
            raw = credential_body(request.form)
        else:
            raw = _preset_body(preset_key, request.form)
        body = schemas.validate(schemas.FederatedCredentialCreate, raw)
        # The row lock serializes adds per client: the fifty-credential limit holds.
        client = _client(client_id, for_update=not preview)
        policy.ensure_may_manage(g.caller.scopes, client)
        if preview:
            # The service's rules and defaults, nothing stored.
            values = federation_service.credential_values(dict(body))
            shown = {k: v for k, v in values.items() if v is not None}
            db.session.rollback()
            return _form_page(
                client,
                preset_key,
                request.form.to_dict(),
                preview=rule_in_words(values),
                preview_keys=keys_in_words(values),
                preview_json=json.dumps(shown, indent=2, sort_keys=True),
            )
        credential = federation_service.add_credential(client, dict(body), g.caller.client_id)
        db.session.commit()
    except NotFound:
        raise
    except AppError as error:
        db.session.rollback()
        if error.status == 403:
            raise
        client = _client(client_id)
        page = _form_page(client, preset_key, request.form.to_dict(), errors=_messages(error))
        return page, error.status
    flash(f"Federated credential {credential.name} added: {rule_in_words(credential)}", "success")
    return redirect(url_for("console.list_federated_credentials", client_id=client.id), code=303)


def _credential(client: Client, credential_id: str) -> FederatedCredential:
    for credential in federation_service.list_credentials(client):
        if credential.id == credential_id:
            return credential
    raise NotFound("No such federated credential.", code="federated_credential_not_found")


@bp.get("/clients/<client_id>/federated-credentials/<credential_id>/delete")
@login_required
def confirm_delete_federated_credential(client_id: str, credential_id: str):
    """Ask before deleting: show what stops working."""
    require("clients:write")
    client = _client(client_id)
    policy.ensure_may_manage(g.caller.scopes, client)
    credential = _credential(client, credential_id)
    return render_template(
        "console/federated_credential_delete.html",
        client=client,
        credential=credential,
        rule=rule_in_words(credential),
    )


@bp.post("/clients/<client_id>/federated-credentials/<credential_id>/delete")
@login_required
def delete_federated_credential(client_id: str, credential_id: str):
    """Delete a credential once its name is typed; assertions it accepted fail from now on."""
    require("clients:write")
    client = _client(client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    credential = _credential(client, credential_id)
    if request.form.get("confirm_name") != credential.name:
        raise BadRequest("Type the credential's name to confirm the deletion.")
    name = credential.name
    federation_service.delete_credential(client, credential_id, g.caller.client_id)
    db.session.commit()
    flash(f"Federated credential {name} deleted.", "success")
    return redirect(url_for("console.list_federated_credentials", client_id=client.id), code=303)
