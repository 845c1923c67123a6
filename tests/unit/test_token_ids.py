"""Token ids carry their issue time to the millisecond (app.oauth.rfc9068.new_jti)."""

from __future__ import annotations

import secrets

from app.oauth.rfc9068 import issued_ms, new_jti


def test_the_issue_time_is_read_back_to_the_millisecond():
    issued = 1_796_000_000.1234
    jti = new_jti(issued)
    assert len(jti) == 22
    assert issued_ms(jti, int(issued)) == 1_796_000_000_123


def test_ids_made_in_one_millisecond_differ():
    assert len({new_jti(1_796_000_000.5) for _ in range(1000)}) == 1000


def test_a_random_id_of_an_older_token_counts_from_the_start_of_its_iat_second():
    for _ in range(50):
        assert issued_ms(secrets.token_urlsafe(16), 1_796_000_000) == 1_796_000_000_000


def test_an_id_whose_time_is_far_from_iat_is_not_believed():
    jti = new_jti(1_796_000_000.5)
    assert issued_ms(jti, 1_796_000_100) == 1_796_000_100_000


def test_any_other_id_and_no_iat():
    assert issued_ms("short", 1_796_000_000) == 1_796_000_000_000
    assert issued_ms("!" * 22, 5) == 5_000
    assert issued_ms("x", None) is None
