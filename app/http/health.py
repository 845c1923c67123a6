"""Operational endpoints: liveness and readiness (docs/api.md)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify

from app.extensions import db
from app.runtime import runtime

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """200 while the process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """200 only when the database answers and this instance can sign with the current key."""
    checks = {"database": False, "signing_key": False}
    try:
        db.session.execute(sa.text("SELECT 1"))
        checks["database"] = True
        checks["signing_key"] = runtime().keyring.reload().ready
    except sa.exc.SQLAlchemyError:
        db.session.rollback()
    ready = all(checks.values())
    response = jsonify({"status": "ready" if ready else "unavailable", "checks": checks})
    response.status_code = 200 if ready else 503
    return response
