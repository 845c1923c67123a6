"""Integration: keyset paging and filters of GET /api/v1/clients (docs/api.md §2.1)."""

from __future__ import annotations

import base64
import threading
from urllib.parse import parse_qs, urlparse

from app.clients.service import create_client
from app.extensions import db
from app.runtime import runtime

API = "/api/v1/clients"


def bulk(app, account: str, count: int, prefix: str = "c", **fields) -> list[str]:
    """Create clients through the service layer in one transaction; returns their ids."""
    ids = []
    with app.app_context():
        for i in range(count):
            client, _s, _p = create_client(
                account, {"name": f"{prefix}{i:04d}", **fields}, "test", runtime().pepper
            )
            ids.append(client.id)
        db.session.commit()
    return ids


def walk(http, headers, query: str = "") -> tuple[list[str], list[int]]:
    """Follow next_cursor to the end; returns (ids in order, page sizes)."""
    ids: list[str] = []
    sizes: list[int] = []
    url = f"{API}?{query}"
    while True:
        response = http.get(url, headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        ids.extend(c["id"] for c in body["data"])
        sizes.append(len(body["data"]))
        if body["next_cursor"] is None:
            assert "Link" not in response.headers
            return ids, sizes
        link = response.headers["Link"]
        assert link.endswith('>; rel="next"')
        target = urlparse(link[1 : link.index(">")])
        assert parse_qs(target.query)["cursor"] == [body["next_cursor"]]
        url = f"{target.path}?{target.query}"


def test_default_limit_and_full_walk(client, app, factory):
    headers = factory.admin_headers("acme")
    # The admin itself is in acme too: 45 + 1 clients.
    made = bulk(app, "acme", 45)
    first = client.get(API, headers=headers).get_json()
    assert len(first["data"]) == 20 and first["next_cursor"]
    ids, sizes = walk(client, headers, "limit=7")
    assert sizes == [7] * 6 + [4]
    assert len(ids) == len(set(ids)) == 46
    assert set(made) <= set(ids)
    # Stable order: creation time, then id; the same walk twice is identical.
    assert walk(client, headers, "limit=7")[0] == ids
    assert walk(client, headers, "limit=1000")[0] == ids


def test_exact_multiple_has_no_empty_last_page(client, app, factory):
    headers = factory.admin_headers("acme")
    bulk(app, "acme", 9)
    ids, sizes = walk(client, headers, "limit=5")
    assert sizes == [5, 5]


BAD_QUERIES = [
    "limit=0",
    "limit=1001",
    "limit=-1",
    "limit=abc",
    "limit=1.5",
    "limit=",
    "limit=99999999999999999999",
    "limit=%201",
    "limit=1&limit=2",
    "client_type=root",
    "name_prefix=",
    "name_prefix=ABC",
    "name_prefix=a%25",
    "name_prefix=" + "a" * 64,
    "tag=",
    "tag=" + "t" * 65,
    "tag=%00",
    "tag=a%0Ab",
    "name_prefix=%00",
    "unknown=1",
    "account_id=globex",
]


def test_bad_query_is_400(client, factory):
    headers = factory.admin_headers("acme")
    for query in BAD_QUERIES:
        response = client.get(f"{API}?{query}", headers=headers)
        assert response.status_code == 400, (query, response.get_json())
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["errors"], query


def test_garbage_and_tampered_cursors_are_400(client, app, factory):
    headers = factory.admin_headers("acme")
    bulk(app, "acme", 3)
    cursor = client.get(f"{API}?limit=1", headers=headers).get_json()["next_cursor"]
    payload, tag = cursor.split(".")
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    forged_payload = base64.urlsafe_b64encode(raw.replace(b"[", b"[1")).rstrip(b"=").decode()
    audit_cursor = None
    system = factory.admin_headers("system")
    audit = client.get("/api/v1/audit-events?limit=1", headers=system).get_json()
    audit_cursor = audit["next_cursor"]
    assert audit_cursor
    for bad in (
        "garbage",
        "",
        ".",
        "a.b.c",
        f"{forged_payload}.{tag}",
        f"{payload}.{tag[:-2]}AA",
        f"{payload}x.{tag}",
        cursor + "A",
        "%00",
        "é",
        "x" * 5000,
        audit_cursor,  # a cursor of another listing
    ):
        response = client.get(API, headers=headers, query_string={"cursor": bad})
        assert response.status_code == 400, bad
        assert response.get_json()["code"] == "invalid_cursor"
    assert client.get(API, headers=headers, query_string={"cursor": cursor}).status_code == 200


def test_filters(client, app, factory):
    headers = factory.admin_headers("acme")
    bulk(app, "acme", 3, prefix="red_", tags=["red", "x"])
    bulk(app, "acme", 2, prefix="red", tags=["blue"])  # "red0000": not matching "red_"
    bulk(app, "acme", 2, prefix="blue-", client_type="admin", tags=["%", "red_"])
    bulk(app, "globex", 2, prefix="red_", tags=["red"])

    def names(query):
        return sorted(
            c["name"] for c in client.get(f"{API}?{query}", headers=headers).get_json()["data"]
        )

    assert names("tag=red") == ["red_0000", "red_0001", "red_0002"]
    assert names("tag=%25") == ["blue-0000", "blue-0001"]
    assert names("tag=re") == []
    # "_" is a literal in name_prefix, not a LIKE wildcard.
    assert names("name_prefix=red_") == ["red_0000", "red_0001", "red_0002"]
    assert names("name_prefix=red") == ["red0000", "red0001", "red_0000", "red_0001", "red_0002"]
    assert names("client_type=admin&name_prefix=blue") == ["blue-0000", "blue-0001"]
    assert names("tag=red&name_prefix=blue") == []
    assert "red_0000" not in names("client_type=admin")
    # Filters carry over to the next page through the Link header.
    ids, sizes = walk(client, headers, "tag=red&limit=2")
    assert sizes == [2, 1]


def test_account_filter_for_system_admins(client, app, factory):
    system = factory.admin_headers("system")
    acme = factory.admin_headers("acme")
    bulk(app, "acme", 2)
    bulk(app, "globex", 3)
    ids, _ = walk(client, system, "account_id=globex")
    assert len(ids) == 3
    all_ids, _ = walk(client, system, "limit=2")
    assert len(all_ids) == 2 + 3 + 2  # + the acme and system admins
    # An account admin may name its own account (a no-op) but no other.
    assert len(walk(client, acme, "account_id=acme")[0]) == 3
    assert client.get(f"{API}?account_id=globex", headers=acme).status_code == 400
    for bad in ("%00", "", "Bad", "a" * 65):
        assert client.get(f"{API}?account_id={bad}", headers=system).status_code == 400, bad
    assert walk(client, system, "account_id=nobody")[0] == []


def test_paging_while_clients_are_created_and_deleted(app, factory):
    """A writer thread inserts and deletes while a reader pages: nobody twice, none lost."""
    headers = factory.admin_headers("acme")
    # Churn comes first in the order: deleting it would shift every stable
    # client back a slot under OFFSET paging and make some go missing.
    churn = bulk(app, "acme", 40, prefix="churn")
    stable = set(bulk(app, "acme", 200, prefix="stable"))
    deleted: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        http = app.test_client()
        try:
            i = 0
            while not stop.is_set() and i < 200:
                response = http.post(API, json={"name": f"new{i:04d}"}, headers=headers)
                assert response.status_code == 201
                if churn:
                    victim = churn.pop(0)
                    assert http.delete(f"{API}/{victim}", headers=headers).status_code == 204
                    deleted.append(victim)
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reader = app.test_client()
        seen, sizes = walk(reader, headers, "limit=9")
        deleted_while_paging = len(deleted)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert len(seen) == len(set(seen)), "a client appeared twice"
    assert stable <= set(seen), "a client present throughout went missing"
    assert all(size == 9 for size in sizes[:-1])
    assert deleted_while_paging > 0, "the writer never ran while the reader paged"
