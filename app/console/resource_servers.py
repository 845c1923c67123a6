"""Console pages for resource servers (docs/api.md §2.7): list, create, edit, delete.

The forms become the API's bodies, judged by its schemas, and go through the
same service functions (app.clients.resource_servers) with the signed-in
admin as the caller, so tenancy and the `shared` rule are the API's.
"""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from app.api import schemas
from app.api.pagination import decode_cursor, encode_cursor
from app.clients import resource_servers as service
from app.console import bp
from app.console.auth import login_required, require
from app.errors import AppError, BadRequest, PreconditionFailed, ValidationError
from app.extensions import db
from app.models import ResourceServer

PAGE_SIZE = 25


def _scopes(text: str) -> list[dict[str, Any]]:
    """One scope a line: its value, then optionally a description."""
    scopes = []
    for line in text.splitlines():
        value, _, description = line.strip().partition(" ")
        if value:
            entry: dict[str, Any] = {"value": value}
            if description.strip():
                entry["description"] = description.strip()
            scopes.append(entry)
    return scopes


def _body(form: MultiDict, *, creating: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "description": form.get("description", "").strip() or None,
        "scopes": _scopes(form.get("scopes", "")),
        "dpop_bound_access_tokens": form.get("dpop_bound_access_tokens") == "on",
        "tls_client_certificate_bound_access_tokens": (
            form.get("tls_client_certificate_bound_access_tokens") == "on"
        ),
    }
    ttl = form.get("access_token_ttl", "").strip()
    body["access_token_ttl"] = int(ttl) if ttl.isdigit() and len(ttl) < 10 else (ttl or None)
    if g.caller.is_system:
        body["shared"] = form.get("shared") == "on"
        if creating and form.get("account_id", "").strip():
            body["account_id"] = form["account_id"].strip()
    if creating:
        body["identifier"] = form.get("identifier", "").strip()
    return body


def _form(rs: ResourceServer | None) -> dict[str, Any]:
    if rs is None:
        return {"scopes": ""}
    return {
        "identifier": rs.identifier,
        "name": rs.name,
        "description": rs.description or "",
        "scopes": "\n".join(
            f"{s['value']} {s.get('description') or ''}".strip() for s in rs.scopes or []
        ),
        "access_token_ttl": "" if rs.access_token_ttl is None else rs.access_token_ttl,
        "dpop_bound_access_tokens": rs.dpop_bound_access_tokens,
        "tls_client_certificate_bound_access_tokens": rs.tls_client_certificate_bound_access_tokens,
        "shared": rs.shared,
    }


def _messages(error: AppError) -> list[str]:
    if error.errors:
        return [f"{e['field']}: {e['message']}" for e in error.errors]
    return [error.detail]


@bp.get("/resource-servers")
@login_required
def list_resource_servers():
    """The caller's account's resource servers and the shared ones, a page at a time."""
    require("clients:read")
    after = None
    if request.args.get("cursor"):
        listing = service.RESOURCE_SERVER_LISTING
        after = service.position_after(decode_cursor(listing, request.args["cursor"]))
    rows = service.list_resource_servers(
        g.caller.account_filter(), after=after, limit=PAGE_SIZE + 1
    )
    next_url = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        cursor = encode_cursor(service.RESOURCE_SERVER_LISTING, service.position(rows[-1]))
        next_url = url_for("console.list_resource_servers", cursor=cursor)
    return render_template(
        "console/resource_servers.html",
        servers=rows,
        next_url=next_url,
        first_url=url_for("console.list_resource_servers") if after else None,
        can_write="clients:write" in g.caller.scopes,
    )


@bp.route("/resource-servers/new", methods=["GET", "POST"])
@login_required
def create_resource_server():
    """Register a resource server."""
    require("clients:write")
    caller = g.caller
    if request.method == "GET":
        return render_template("console/resource_server.html", rs=None, form=_form(None), errors=[])
    try:
        body = schemas.validate(schemas.ResourceServerCreate, _body(request.form, creating=True))
        account_id = body.pop("account_id", caller.account_id)
        rs = service.create_resource_server(
            account_id, body, caller.client_id, caller_is_system=caller.is_system
        )
        db.session.commit()
    except AppError as error:
        db.session.rollback()
        page = render_template(
            "console/resource_server.html",
            rs=None,
            form=request.form.to_dict(),
            errors=_messages(error),
        )
        return page, error.status
    flash(f"Resource server {rs.name} registered.", "success")
    return redirect(url_for("console.show_resource_server", resource_server_id=rs.id), code=303)


@bp.get("/resource-servers/<resource_server_id>")
@login_required
def show_resource_server(resource_server_id: str):
    """One resource server and its edit form."""
    require("clients:read")
    rs = service.get_resource_server(g.caller.account_filter(), resource_server_id)
    return render_template("console/resource_server.html", rs=rs, form=_form(rs), errors=[])


@bp.post("/resource-servers/<resource_server_id>/edit")
@login_required
def update_resource_server(resource_server_id: str):
    """Save the edit form."""
    require("clients:write")
    caller = g.caller
    rs = service.get_resource_server(
        caller.account_filter(), resource_server_id, write=True, for_update=True
    )
    try:
        if request.form.get("version") != str(rs.version):
            raise PreconditionFailed(
                "The resource server changed since this page was loaded; reload it.",
                code="etag_mismatch",
            )
        body = schemas.validate(schemas.ResourceServerPatch, _body(request.form, creating=False))
        changed = service.update_resource_server(
            rs, body, caller.client_id, caller_is_system=caller.is_system
        )
        db.session.commit()
    except (AppError, ValidationError) as error:
        db.session.rollback()
        rs = service.get_resource_server(caller.account_filter(), resource_server_id)
        page = render_template(
            "console/resource_server.html",
            rs=rs,
            form=request.form.to_dict(),
            errors=_messages(error),
        )
        return page, error.status
    flash("Saved." if changed else "Nothing changed.", "success")
    return redirect(url_for("console.show_resource_server", resource_server_id=rs.id), code=303)


@bp.post("/resource-servers/<resource_server_id>/delete")
@login_required
def delete_resource_server(resource_server_id: str):
    """Delete one no client lists in its audiences."""
    require("clients:write")
    rs = service.get_resource_server(
        g.caller.account_filter(), resource_server_id, write=True, for_update=True
    )
    if request.form.get("confirm_identifier") != rs.identifier:
        raise BadRequest("Type the resource server's identifier to confirm the deletion.")
    name = rs.name
    service.delete_resource_server(rs, g.caller.client_id)
    db.session.commit()
    flash(f"Resource server {name} deleted.", "success")
    return redirect(url_for("console.list_resource_servers"), code=303)
