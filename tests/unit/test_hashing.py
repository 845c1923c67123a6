"""Unit tests: app.clients.secrets, generating, hashing and verifying client secrets.

A fixed pepper stands in for SECRET_PEPPER; the HMAC is the real one (the
known answer below is RFC 4231's test case 2).
"""

from __future__ import annotations

import base64
import hmac
import os
import re

import pytest

from app.clients import hashing
from app.clients.hashing import (
    generate_secret,
    hash_secret,
    load_pepper,
    secret_hint,
    verify_secret,
)

PEPPER = b"unit-test-pepper"
SECRET_RE = re.compile(r"^ccs_[A-Za-z0-9_-]{43}$")


# --- generate_secret ----------------------------------------------------------


def test_a_secret_is_the_prefix_and_32_random_bytes():
    secret = generate_secret()
    assert SECRET_RE.fullmatch(secret)
    raw = base64.urlsafe_b64decode(secret.removeprefix("ccs_") + "=")
    assert len(raw) == 32


def test_secrets_do_not_repeat():
    made = {generate_secret() for _ in range(1000)}
    assert len(made) == 1000


# --- hash_secret --------------------------------------------------------------


def test_hash_is_hmac_sha256_hex():
    # RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert hash_secret("what do ya want for nothing?", b"Jefe") == expected


def test_hash_depends_on_secret_and_pepper():
    secret = generate_secret()
    digest = hash_secret(secret, PEPPER)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert hash_secret(secret, PEPPER) == digest
    assert hash_secret(secret, b"another-pepper") != digest
    assert hash_secret(secret[:-1], PEPPER) != digest


@pytest.mark.parametrize("odd", ["", "\x00", "é", "\ud800", "a" * 70_000])
def test_any_presented_string_hashes(odd):
    """What a client sends in Basic or a form may be anything; it hashes, never raises."""
    assert len(hash_secret(odd, PEPPER)) == 64


def test_lone_surrogates_do_not_collide_with_replacement_characters():
    assert hash_secret("\ud800", PEPPER) != hash_secret("\ufffd", PEPPER)
    assert hash_secret("\ud800", PEPPER) != hash_secret("?", PEPPER)


# --- secret_hint --------------------------------------------------------------


def test_hint_is_the_last_four_characters():
    assert secret_hint("ccs_abcdefWXYZ") == "WXYZ"
    secret = generate_secret()
    assert secret.endswith(secret_hint(secret)) and len(secret_hint(secret)) == 4


# --- verify_secret ------------------------------------------------------------


def test_verify_finds_the_matching_hash():
    secrets = [generate_secret() for _ in range(3)]
    hashes = [hash_secret(s, PEPPER) for s in secrets]
    for index, secret in enumerate(secrets):
        assert verify_secret(secret, PEPPER, hashes) == index


def test_verify_refuses_wrong_secret_wrong_pepper_and_no_hashes():
    secret = generate_secret()
    hashes = [hash_secret(secret, PEPPER)]
    assert verify_secret(generate_secret(), PEPPER, hashes) is None
    assert verify_secret(secret, b"another-pepper", hashes) is None
    assert verify_secret(secret, PEPPER, []) is None
    # The stored hash itself is not a password.
    assert verify_secret(hashes[0], PEPPER, hashes) is None


def test_verify_reports_the_first_of_equal_hashes():
    secret = generate_secret()
    other = hash_secret(generate_secret(), PEPPER)
    mine = hash_secret(secret, PEPPER)
    assert verify_secret(secret, PEPPER, [other, mine, mine]) == 1


def test_verify_compares_every_hash_in_constant_time(monkeypatch):
    """No early exit: the number of comparisons does not depend on where the match is."""
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hashing.hmac, "compare_digest", spy)
    secret = generate_secret()
    hashes = [hash_secret(secret, PEPPER)] + [hash_secret(generate_secret(), PEPPER)] * 4
    assert verify_secret(secret, PEPPER, hashes) == 0
    assert len(calls) == 5
    calls.clear()
    assert verify_secret(generate_secret(), PEPPER, hashes) is None
    assert len(calls) == 5


# --- load_pepper --------------------------------------------------------------


def test_a_configured_pepper_is_used_as_given(tmp_path):
    assert load_pepper("configured-pepper", str(tmp_path)) == b"configured-pepper"
    assert not (tmp_path / "pepper").exists()


def test_without_configuration_a_pepper_file_is_made_once(tmp_path):
    keys_dir = tmp_path / "keys"
    first = load_pepper(None, str(keys_dir))
    path = keys_dir / "pepper"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(first) == 64 and bytes.fromhex(first.decode())
    # Every later start (and every other process on this KEYS_DIR) reads the same one.
    assert load_pepper(None, str(keys_dir)) == first
    assert load_pepper("", str(keys_dir)) == first


def test_an_empty_pepper_file_is_refused(tmp_path):
    (tmp_path / "pepper").write_text("\n")
    with pytest.raises(RuntimeError, match="empty"):
        load_pepper(None, str(tmp_path))


def test_an_existing_pepper_file_is_read_not_replaced(tmp_path):
    (tmp_path / "pepper").write_text("kept-from-before-and-32-bytes-long\n")
    os.chmod(tmp_path / "pepper", 0o600)
    assert load_pepper(None, str(tmp_path)) == b"kept-from-before-and-32-bytes-long"
