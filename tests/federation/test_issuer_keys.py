"""Integration: IssuerKeyCache against real local issuers (pytest-httpserver, plain http
under FEDERATION_ALLOW_INSECURE's policy), with an injected clock for lifetimes."""

from __future__ import annotations

import json
import logging
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from prometheus_client import REGISTRY
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from app import create_app
from app.extensions import db
from app.federation.issuer_keys import IssuerKeyCache, IssuerKeysUnavailable, issuer_keys
from app.settings import SettingsError, build_settings

_PRIVATE: dict[str, ec.EllipticCurvePrivateKey] = {}


def _key(kid: str) -> ec.EllipticCurvePrivateKey:
    if kid not in _PRIVATE:
        _PRIVATE[kid] = ec.generate_private_key(ec.SECP256R1())
    return _PRIVATE[kid]


def jwks(*kids: str) -> dict:
    return {
        "keys": [
            {**ECAlgorithm.to_jwk(_key(kid).public_key(), as_dict=True), "kid": kid, "use": "sig"}
            for kid in kids
        ]
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock) -> IssuerKeyCache:
    return IssuerKeyCache(allow_insecure=True, clock=clock)


def serve(server: HTTPServer, path: str, document, *, status=200, cache_control=None) -> None:
    server.clear_all_handlers()
    headers = {"Cache-Control": cache_control} if cache_control else None
    server.expect_request(path).respond_with_json(document, status=status, headers=headers)


def hits(server: HTTPServer, path: str) -> int:
    return sum(1 for request, _ in server.log if request.path == path)


def fetches(document: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "ccserver_federation_key_fetches_total", {"document": document, "outcome": outcome}
    )
    return value or 0.0


def stale_uses() -> float:
    return REGISTRY.get_sample_value("ccserver_federation_stale_key_uses_total") or 0.0


ISSUER = "https://issuer.example"


def test_keys_are_fetched_once_and_served_from_the_cache(httpserver, cache, clock):
    serve(httpserver, "/jwks", jwks("a", "b"), cache_control="max-age=600")
    uri = httpserver.url_for("/jwks")
    keys = cache.signing_keys(ISSUER, jwks_uri=uri, kid=None)
    assert sorted(key.key_id for key in keys) == ["a", "b"]
    assert all(isinstance(key, jwt.PyJWK) for key in keys)
    [key] = cache.signing_keys(ISSUER, jwks_uri=uri, kid="b")
    assert key.key_id == "b"
    # The key verifies what its private half signs.
    token = jwt.encode({"sub": "x"}, _key("b"), algorithm="ES256", headers={"kid": "b"})
    assert jwt.decode(token, key.key, algorithms=["ES256"])["sub"] == "x"
    clock.advance(599)
    cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    assert hits(httpserver, "/jwks") == 1
    clock.advance(2)
    cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    assert hits(httpserver, "/jwks") == 2


@pytest.mark.parametrize(
    ("cache_control", "lifetime"),
    [
        ("max-age=5", 60),
        ("max-age=0", 60),
        ("public, max-age=999999", 86400),
        (None, 300),
        ("no-store", 300),
        ("max-age=1800", 1800),
    ],
)
def test_the_lifetime_is_bounded_to_60_s_through_24_h(
    httpserver, cache, clock, cache_control, lifetime
):
    serve(httpserver, "/jwks", jwks("a"), cache_control=cache_control)
    uri = httpserver.url_for("/jwks")
    cache.signing_keys(ISSUER, jwks_uri=uri, kid=None)
    clock.advance(lifetime - 1)
    cache.signing_keys(ISSUER, jwks_uri=uri, kid=None)
    assert hits(httpserver, "/jwks") == 1
    clock.advance(1)
    cache.signing_keys(ISSUER, jwks_uri=uri, kid=None)
    assert hits(httpserver, "/jwks") == 2


def test_an_unknown_kid_refetches_at_most_once_per_30_s(httpserver, cache, clock):
    serve(httpserver, "/jwks", jwks("a"), cache_control="max-age=3600")
    uri = httpserver.url_for("/jwks")
    cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    clock.advance(30)
    with pytest.raises(IssuerKeysUnavailable, match="no key with kid 'new'"):
        cache.signing_keys(ISSUER, jwks_uri=uri, kid="new")
    assert hits(httpserver, "/jwks") == 2  # one refetch for the unknown kid
    for _ in range(5):
        with pytest.raises(IssuerKeysUnavailable):
            cache.signing_keys(ISSUER, jwks_uri=uri, kid="new")
        with pytest.raises(IssuerKeysUnavailable):
            cache.signing_keys(ISSUER, jwks_uri=uri, kid="other")
        clock.advance(5)
    assert hits(httpserver, "/jwks") == 2  # 25 s later: none more
    # The issuer rotates; 30 s after the last fetch the new kid is fetched.
    serve(httpserver, "/jwks", jwks("a", "new"), cache_control="max-age=3600")
    clock.advance(5)
    [key] = cache.signing_keys(ISSUER, jwks_uri=uri, kid="new")
    assert key.key_id == "new"
    assert hits(httpserver, "/jwks") == 3


def test_a_failed_refresh_keeps_the_stale_keys_for_a_bounded_time(httpserver, cache, clock, caplog):
    serve(httpserver, "/jwks", jwks("a"), cache_control="max-age=60")
    uri = httpserver.url_for("/jwks")
    cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    serve(httpserver, "/jwks", {"error": "down"}, status=503)
    clock.advance(61)
    before = stale_uses()
    with caplog.at_level(logging.WARNING, logger="app.federation.issuer_keys"):
        [key] = cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    assert key.key_id == "a"
    assert stale_uses() == before + 1
    assert hits(httpserver, "/jwks") == 2
    assert "https://issuer.example" in caplog.text
    assert "503" in caplog.text
    assert "still using the 1 keys" in caplog.text
    # No new try before 30 s, however many requests come.
    for _ in range(10):
        cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    assert hits(httpserver, "/jwks") == 2
    clock.advance(30)
    cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    assert hits(httpserver, "/jwks") == 3
    # Up to 24 h past expiry, not beyond.
    clock.now = 1000 + 60 + 24 * 3600 - 1
    cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    clock.advance(1)
    with pytest.raises(IssuerKeysUnavailable, match="503"):
        cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")


def test_keys_come_back_when_the_issuer_does(httpserver, cache, clock, caplog):
    serve(httpserver, "/jwks", jwks("a"), cache_control="max-age=60")
    uri = httpserver.url_for("/jwks")
    cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    serve(httpserver, "/jwks", {}, status=500)
    clock.advance(61)
    cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    serve(httpserver, "/jwks", jwks("b"), cache_control="max-age=60")
    clock.advance(30)
    with caplog.at_level(logging.INFO, logger="app.federation.issuer_keys"):
        assert [key.key_id for key in cache.signing_keys(ISSUER, jwks_uri=uri, kid=None)] == ["b"]
    assert "again" in caplog.text


def test_an_issuer_never_reached_is_tried_again_after_30_s(httpserver, cache, clock):
    serve(httpserver, "/jwks", {}, status=500)
    uri = httpserver.url_for("/jwks")
    with pytest.raises(IssuerKeysUnavailable, match="500") as caught:
        cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    assert uri in caught.value.reason
    for _ in range(3):
        with pytest.raises(IssuerKeysUnavailable, match="500"):
            cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    assert hits(httpserver, "/jwks") == 1
    serve(httpserver, "/jwks", jwks("a"))
    clock.advance(30)
    assert cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    assert hits(httpserver, "/jwks") == 2


@pytest.fixture
def threaded_server():
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.mark.parametrize("status", [200, 500])
def test_one_fetch_in_flight_however_many_threads_wait(threaded_server, status):
    calls = []

    def slow(request: Request) -> Response:
        calls.append(request.path)
        time.sleep(0.3)
        body = jwks("a") if status == 200 else {}
        return Response(json.dumps(body), status, content_type="application/json")

    threaded_server.expect_request("/jwks").respond_with_handler(slow)
    cache = IssuerKeyCache(allow_insecure=True)
    uri = threaded_server.url_for("/jwks")
    start = threading.Barrier(16)
    results: list[object] = []

    def ask() -> None:
        start.wait()
        try:
            results.append(cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")[0].key_id)
        except IssuerKeysUnavailable as exc:
            results.append(exc.reason)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["/jwks"]
    assert len(results) == 16
    if status == 200:
        assert set(results) == {"a"}
    else:
        assert len(set(results)) == 1 and "500" in results[0]


def test_the_cache_holds_a_bounded_number_of_issuers(httpserver, clock):
    cache = IssuerKeyCache(allow_insecure=True, clock=clock, max_entries=3)
    serve(httpserver, "/jwks", jwks("a"))
    uri = httpserver.url_for("/jwks")
    for n in range(5):
        cache.signing_keys(f"https://issuer{n}.example", jwks_uri=uri, kid="a")
    assert len(cache) == 3
    assert hits(httpserver, "/jwks") == 5
    cache.signing_keys("https://issuer4.example", jwks_uri=uri, kid="a")  # still cached
    assert hits(httpserver, "/jwks") == 5
    cache.signing_keys("https://issuer0.example", jwks_uri=uri, kid="a")  # was dropped
    assert hits(httpserver, "/jwks") == 6


def test_the_default_bound_is_1000_issuers():
    from app.federation.issuer_keys import MAX_ENTRIES

    assert MAX_ENTRIES == 1000


def test_each_jwks_uri_of_an_issuer_is_cached_apart(httpserver, cache):
    # Another tenant's credential naming the same issuer with its own
    # jwks_uri must not lend its keys to this one.
    httpserver.expect_request("/mine").respond_with_json(jwks("mine"))
    httpserver.expect_request("/theirs").respond_with_json(jwks("theirs"))
    mine = httpserver.url_for("/mine")
    cache.signing_keys(ISSUER, jwks_uri=httpserver.url_for("/theirs"), kid="theirs")
    with pytest.raises(IssuerKeysUnavailable):
        cache.signing_keys(ISSUER, jwks_uri=mine, kid="theirs")
    assert cache.signing_keys(ISSUER, jwks_uri=mine, kid="mine")


def test_private_key_material_is_refused(httpserver, cache):
    leaky = jwks("a")
    leaky["keys"][0]["d"] = ECAlgorithm.to_jwk(_key("a"), as_dict=True)["d"]
    serve(httpserver, "/jwks", leaky)
    before = fetches("jwks", "private_key")
    with pytest.raises(IssuerKeysUnavailable, match="private members") as caught:
        IssuerKeyCache(allow_insecure=True).signing_keys(
            ISSUER, jwks_uri=httpserver.url_for("/jwks"), kid="a"
        )
    assert leaky["keys"][0]["d"] not in caught.value.reason
    assert fetches("jwks", "private_key") == before + 1


def test_fetches_are_counted_by_document_and_outcome(httpserver, cache, clock):
    ok, failed = fetches("jwks", "ok"), fetches("jwks", "http_error")
    serve(httpserver, "/jwks", jwks("a"))
    uri = httpserver.url_for("/jwks")
    cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")
    cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")  # cached: no fetch
    serve(httpserver, "/jwks", {}, status=404)
    clock.advance(300)
    cache.signing_keys(ISSUER, jwks_uri=uri, kid="a")  # stale
    assert (fetches("jwks", "ok"), fetches("jwks", "http_error")) == (ok + 1, failed + 1)


def test_every_outcome_label_is_from_the_fixed_set():
    from app.federation.fetch import FETCH_OUTCOMES

    for metric in REGISTRY.collect():
        if metric.name == "ccserver_federation_key_fetches":
            for sample in metric.samples:
                assert set(sample.labels) == {"document", "outcome"}
                assert sample.labels["outcome"] in FETCH_OUTCOMES
                assert sample.labels["document"] in ("jwks", "discovery")


# --- without FEDERATION_ALLOW_INSECURE ----------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "outcome"),
    [
        ("http://issuer.example/jwks", "refused_url"),
        ("https://127.0.0.1/jwks", "refused_address"),
        ("https://10.0.0.1/jwks", "refused_address"),
        ("https://[::1]/jwks", "refused_address"),
        ("https://169.254.169.254/jwks", "refused_address"),
        ("https://[::ffff:127.0.0.1]/jwks", "refused_address"),
        ("https://localhost/jwks", "refused_address"),
    ],
)
def test_the_production_cache_refuses_non_public_targets(uri, outcome, caplog):
    before = fetches("jwks", outcome)
    with (
        caplog.at_level(logging.WARNING, logger="app.federation.issuer_keys"),
        pytest.raises(IssuerKeysUnavailable) as caught,
    ):
        IssuerKeyCache().signing_keys(ISSUER, jwks_uri=uri, kid="a")
    assert fetches("jwks", outcome) == before + 1
    assert caught.value.reason
    assert "issuer.example" in caplog.text  # the issuer and the reason, for the operator


@pytest.mark.parametrize("kid", [7, ["a"], "x\nforged log line"])
def test_an_odd_kid_is_reported_not_crashed_on(httpserver, cache, kid, caplog):
    serve(httpserver, "/jwks", jwks("a"))
    with pytest.raises(IssuerKeysUnavailable) as caught:
        cache.signing_keys(ISSUER, jwks_uri=httpserver.url_for("/jwks"), kid=kid)
    assert "\n" not in caught.value.reason


@pytest.mark.parametrize("issuer", [None, ["https://issuer.example"], 42])
def test_an_issuer_that_is_not_a_string_is_refused(issuer):
    with pytest.raises(IssuerKeysUnavailable, match="not a string"):
        IssuerKeyCache().signing_keys(issuer, jwks_uri=None, kid=None)


def test_an_overlong_issuer_is_refused_without_a_fetch():
    with pytest.raises(IssuerKeysUnavailable, match="longer"):
        IssuerKeyCache().signing_keys("https://x.example/" + "a" * 3000, jwks_uri=None, kid=None)


# --- OpenID Connect discovery ------------------------------------------------------------------


def _discovery(server: HTTPServer, issuer_path: str, document, cache_control="max-age=3600"):
    server.expect_request(f"{issuer_path}/.well-known/openid-configuration").respond_with_json(
        document, headers={"Cache-Control": cache_control}
    )


def test_keys_are_found_by_discovery_and_the_document_is_cached(httpserver, cache, clock):
    issuer = httpserver.url_for("/tenant")
    _discovery(httpserver, "/tenant", {"issuer": issuer, "jwks_uri": httpserver.url_for("/k")})
    httpserver.expect_request("/k").respond_with_json(
        jwks("a"), headers={"Cache-Control": "max-age=120"}
    )
    before = fetches("discovery", "ok")
    assert cache.signing_keys(issuer, jwks_uri=None, kid="a")[0].key_id == "a"
    assert fetches("discovery", "ok") == before + 1
    clock.advance(31)  # an unknown kid refetches the keys, not the discovery document
    with pytest.raises(IssuerKeysUnavailable):
        cache.signing_keys(issuer, jwks_uri=None, kid="b")
    clock.advance(120)  # the keys expire; the document (an hour) does not
    cache.signing_keys(issuer, jwks_uri=None, kid="a")
    assert hits(httpserver, "/tenant/.well-known/openid-configuration") == 1
    assert hits(httpserver, "/k") == 3
    clock.advance(3600)
    cache.signing_keys(issuer, jwks_uri=None, kid="a")
    assert hits(httpserver, "/tenant/.well-known/openid-configuration") == 2


@pytest.mark.parametrize(
    "named",
    [
        "https://evil.example",
        "{base}/tenant/",  # identical means identical (OpenID Connect Discovery §4.3)
        "{base}/other",
        None,
    ],
)
def test_discovery_naming_another_issuer_is_refused(httpserver, cache, named):
    issuer = httpserver.url_for("/tenant")
    base = issuer.removesuffix("/tenant")
    document = {"jwks_uri": httpserver.url_for("/k")}
    if named is not None:
        document["issuer"] = named.format(base=base)
    _discovery(httpserver, "/tenant", document)
    httpserver.expect_request("/k").respond_with_json(jwks("a"))
    before = fetches("discovery", "issuer_mismatch")
    with pytest.raises(IssuerKeysUnavailable, match="names issuer"):
        cache.signing_keys(issuer, jwks_uri=None, kid="a")
    assert fetches("discovery", "issuer_mismatch") == before + 1
    assert hits(httpserver, "/k") == 0


@pytest.mark.parametrize("jwks_uri", [None, 42, ""])
def test_discovery_without_a_jwks_uri_is_refused(httpserver, cache, jwks_uri):
    issuer = httpserver.url_for("/tenant")
    document = {"issuer": issuer}
    if jwks_uri is not None:
        document["jwks_uri"] = jwks_uri
    _discovery(httpserver, "/tenant", document)
    with pytest.raises(IssuerKeysUnavailable, match="jwks_uri"):
        cache.signing_keys(issuer, jwks_uri=None, kid="a")


def test_discovery_that_fails_later_keeps_the_jwks_uri_it_named(httpserver, cache, clock):
    issuer = httpserver.url_for("/tenant")
    _discovery(
        httpserver,
        "/tenant",
        {"issuer": issuer, "jwks_uri": httpserver.url_for("/k")},
        cache_control="max-age=60",
    )
    httpserver.expect_request("/k").respond_with_json(
        jwks("a"), headers={"Cache-Control": "max-age=60"}
    )
    cache.signing_keys(issuer, jwks_uri=None, kid="a")
    httpserver.clear_all_handlers()
    httpserver.expect_request("/tenant/.well-known/openid-configuration").respond_with_data(
        "", status=500
    )
    httpserver.expect_request("/k").respond_with_json(jwks("b"))
    clock.advance(61)
    assert cache.signing_keys(issuer, jwks_uri=None, kid="b")[0].key_id == "b"


def test_discovery_is_refused_for_a_non_public_issuer_without_the_flag():
    before = fetches("discovery", "refused_address")
    with pytest.raises(IssuerKeysUnavailable, match="loopback"):
        IssuerKeyCache().signing_keys("https://127.0.0.1", jwks_uri=None, kid="a")
    assert fetches("discovery", "refused_address") == before + 1


# --- in the app -----------------------------------------------------------------------------


def _dispose(app) -> None:
    with app.app_context():
        db.engine.dispose()


def test_the_app_holds_one_cache_and_is_loud_about_the_insecure_flag(base_config, migrated, caplog):
    with caplog.at_level(logging.WARNING, logger="app"):
        app = create_app(dict(base_config, FEDERATION_ALLOW_INSECURE=True))
    assert "FEDERATION_ALLOW_INSECURE=1" in caplog.text
    assert "NEVER for production" in caplog.text
    with app.app_context():
        assert issuer_keys() is issuer_keys()
        assert issuer_keys().policy.allow_insecure is True
    _dispose(app)


def test_the_insecure_flag_is_off_by_default(base_config, migrated, caplog, monkeypatch):
    with caplog.at_level(logging.WARNING, logger="app"):
        app = create_app(dict(base_config))
    assert "FEDERATION_ALLOW_INSECURE" not in caplog.text
    with app.app_context():
        assert issuer_keys().policy.allow_insecure is False
        assert issuer_keys().policy.timeout == 3.0
    _dispose(app)
    monkeypatch.setenv("FEDERATION_ALLOW_INSECURE", "1")
    app = create_app(dict(base_config))
    with app.app_context():
        assert issuer_keys().policy.allow_insecure is True
    _dispose(app)


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_the_insecure_flag_is_0_or_1(monkeypatch, value):
    monkeypatch.setenv("FEDERATION_ALLOW_INSECURE", value)
    with pytest.raises(SettingsError, match="FEDERATION_ALLOW_INSECURE"):
        build_settings()
