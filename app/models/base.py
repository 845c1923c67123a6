"""The class every model derives from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.extensions import db

if TYPE_CHECKING:
    # Flask-SQLAlchemy builds db.Model at run time from app.extensions.Base
    # (adding its query property and bind key), so a type checker cannot see
    # it; to one it is that declarative base.
    from app.extensions import Base as Model
else:
    Model = db.Model

__all__ = ["Model"]
