"""Unit: the client id an OAuth request claims, read to name its failure counter."""

from __future__ import annotations

import base64

import jwt
import pytest

from app.oauth.requests import FormRequest
from app.oauth.throttle import claimed_client_id


def form_request(pairs: list[tuple[str, str]], authorization: str | None = None) -> FormRequest:
    headers = {"Authorization": authorization} if authorization else {}
    return FormRequest("POST", "/oauth2/token", headers, pairs)


def basic(value: str) -> str:
    return "Basic " + base64.b64encode(value.encode()).decode()


def unsigned_assertion(claims: dict) -> str:
    # The claimed id is read without verifying: any key will do here.
    return jwt.encode(claims, "k" * 32, algorithm="HS256")


@pytest.mark.parametrize(
    ("pairs", "authorization", "expected"),
    [
        ([], basic("my+client:secret"), "my client"),  # form-decoded (RFC 6749 §2.3.1)
        ([("client_id", "ignored")], basic("basic-id:s"), "basic-id"),
        ([], basic("no-colon"), None),
        ([], "Basic !!!", None),
        ([], "Bearer abc", None),
        ([("client_id", "posted"), ("client_secret", "s")], None, "posted"),
        ([("client_assertion", unsigned_assertion({"sub": "subject"}))], None, "subject"),
        (
            [("client_assertion", unsigned_assertion({"iss": "x"})), ("client_id", "named")],
            None,
            "named",
        ),
        (
            # Federated (docs/api.md §1.3): the sub is the workload's, client_id the client.
            [
                ("client_assertion", unsigned_assertion({"iss": "https://ci", "sub": "repo:a"})),
                ("client_id", "named"),
            ],
            None,
            "named",
        ),
        (
            [
                ("client_assertion", unsigned_assertion({"iss": "named", "sub": "named"})),
                ("client_id", "named"),
            ],
            None,
            "named",
        ),
        ([("client_assertion", "not-a-jwt")], None, None),
        ([("client_id", "")], None, None),
        ([], None, None),
    ],
)
def test_claimed_client_id(pairs, authorization, expected):
    assert claimed_client_id(form_request(pairs, authorization)) == expected
