"""Facts about the deployment itself that every instance checks when it starts."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Model
from app.models.types import UTCDateTime
from app.timeutil import utcnow

#: The name of the row holding the pepper's fingerprint (app/clients/pepper.py).
PEPPER_FINGERPRINT = "pepper_fingerprint"


class ServerSetting(Model):
    """One value per name, written once; never a secret (docs/security.md#the-pepper)."""

    __tablename__ = "server_settings"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
