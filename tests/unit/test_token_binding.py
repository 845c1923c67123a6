"""RFC 7800 `cnf` and the token type of a bound token (app.oauth.rfc9068)."""

from __future__ import annotations

from app.oauth.rfc9068 import token_type


def test_a_dpop_key_confirmation_makes_a_dpop_token():
    assert token_type({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}) == "DPoP"


def test_a_certificate_confirmation_or_none_is_a_bearer_token():
    assert token_type({"cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}}) == (
        "Bearer"
    )
    assert token_type({}) == "Bearer"
    assert token_type({"cnf": "jkt"}) == "Bearer"
