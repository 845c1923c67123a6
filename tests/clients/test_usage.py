"""last_used_at is written within LAST_USED_RESOLUTION with no later request (app.clients.usage)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import ClientSecret
from tests.conftest import basic_auth

RESOLUTION = 1


@pytest.fixture
def app_config(base_config, migrated) -> dict:
    return {**base_config, "LAST_USED_RESOLUTION": RESOLUTION}


def last_used(app, client_id: str):
    with app.app_context():
        value = db.session.scalar(
            sa.select(ClientSecret.last_used_at).where(ClientSecret.client_id == client_id)
        )
        db.session.remove()
        return value


def test_one_token_request_is_written_within_the_resolution_without_another_request(
    app, client, factory
):
    cid, secret = factory.client("acme")
    usage = app.extensions["ccserver"].usage
    with app.app_context():
        usage.flush(db.engine)  # a flush just now: the request's own teardown is not due
    started = time.monotonic()
    response = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(cid, secret),
    )
    assert response.status_code == 200
    if time.monotonic() - started < RESOLUTION:
        assert last_used(app, cid) is None  # not written by the request itself
    written = None
    while written is None and time.monotonic() - started < RESOLUTION + 3:
        time.sleep(0.05)
        written = last_used(app, cid)
    assert written is not None
    # The flusher writes once the note is due: one resolution, plus scheduling slack.
    assert time.monotonic() - started < RESOLUTION + 1.5


def test_the_flusher_stops_cleanly_and_a_new_note_starts_another(app, client, factory):
    cid, secret = factory.client("acme")
    usage = app.extensions["ccserver"].usage
    assert usage.flusher() is None  # nothing noted yet: no thread

    def token() -> None:
        response = client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers=basic_auth(cid, secret),
        )
        assert response.status_code == 200

    token()
    first = usage.flusher()
    assert first is not None and not first.stopped
    usage.stop()
    first.join(2)
    assert first.stopped and not first._thread.is_alive()
    token()
    second = usage.flusher()
    assert second is not None and second is not first and not second.stopped
    with app.app_context():
        db.engine.dispose()  # as a test's teardown or a forked worker does
    second.join(2)
    assert second.stopped and not second._thread.is_alive()


def test_an_older_note_never_moves_last_used_at_back(app, factory):
    cid, _ = factory.client("acme")
    usage = app.extensions["ccserver"].usage
    with app.app_context():
        secret_id = db.session.scalar(
            sa.select(ClientSecret.id).where(ClientSecret.client_id == cid)
        )
        usage.secret_used(secret_id)
        newer = usage._secrets[secret_id]
        usage.flush(db.engine)
        usage._secrets[secret_id] = newer.replace(year=newer.year - 1)  # another worker's, older
        usage.flush(db.engine)
        usage.stop()
    assert last_used(app, cid) == newer
