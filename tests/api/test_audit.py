"""Integration: GET /api/v1/audit-events (docs/api.md §2.5) and what client changes record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt

from tests.api.test_paging import bulk

AUDIT = "/api/v1/audit-events"
API = "/api/v1/clients"


def caller_id(headers: dict[str, str]) -> str:
    token = headers["Authorization"].split()[1]
    return jwt.decode(token, options={"verify_signature": False})["client_id"]


def test_client_changes_are_recorded(client, factory):
    headers = factory.admin_headers("acme")
    actor = caller_id(headers)
    created = client.post(API, json={"name": "audited"}, headers=headers).get_json()
    url = f"{API}/{created['id']}"
    client.patch(url, json={"description": "d"}, headers=headers)
    client.put(url, json={"name": "audited"}, headers=headers)
    client.delete(url, headers=headers)
    response = client.get(AUDIT, headers=headers)
    assert response.status_code == 200
    events = [e for e in response.get_json()["data"] if e["target"] == created["id"]]
    assert [e["action"] for e in events] == [
        "client.deleted",
        "client.updated",
        "client.updated",
        "client.created",
    ]
    for event in events:
        assert set(event) == {"id", "at", "actor", "action", "target", "account_id"}
        assert event["actor"] == actor and event["account_id"] == "acme"
        at = datetime.strptime(event["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert abs(datetime.now(UTC) - at) < timedelta(minutes=1)
    assert created["client_secret"] not in response.get_data(as_text=True)


def test_rejected_changes_record_nothing(client, factory):
    headers = factory.admin_headers("acme")
    created = client.post(API, json={"name": "x", "locked": True}, headers=headers).get_json()
    before = client.get(AUDIT, headers=headers).get_json()["data"]
    client.post(API, json={"name": "x"}, headers=headers)  # name_taken
    client.patch(f"{API}/{created['id']}", json={"description": "d"}, headers=headers)  # locked
    client.patch(f"{API}/{created['id']}", json={"tags": "bad"}, headers=headers)  # invalid
    assert client.get(AUDIT, headers=headers).get_json()["data"] == before


def test_paged_newest_first(client, app, factory):
    headers = factory.admin_headers("system")
    bulk(app, "acme", 25)
    seen = []
    url = f"{AUDIT}?limit=10"
    sizes = []
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        body = response.get_json()
        seen.extend(e["id"] for e in body["data"])
        sizes.append(len(body["data"]))
        if body["next_cursor"]:
            link = response.headers["Link"]
            assert link.endswith('>; rel="next"')
            url = link[1 : link.index(">")]
        else:
            assert "Link" not in response.headers
            url = None
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen)) == 26  # 25 clients + the system admin
    assert sizes == [10, 10, 6]


def test_bad_queries(client, factory):
    headers = factory.admin_headers("acme")
    for query in ("limit=0", "limit=x", "limit=1001", "cursor=garbage", "cursor=W10.AAAA", "x=1"):
        response = client.get(f"{AUDIT}?{query}", headers=headers)
        assert response.status_code == 400, query
        assert response.mimetype == "application/problem+json"


def test_requires_audit_read(client, factory):
    headers = factory.admin_headers("acme", scopes=["clients:read", "clients:write"])
    response = client.get(AUDIT, headers=headers)
    assert response.status_code == 403
    assert client.get(AUDIT).status_code == 401
