"""Integration: /metrics counts OAuth outcomes, latency and key age, and leaks nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.http.metrics import OAUTH_ENDPOINTS
from tests.conftest import basic_auth, free_port

ROOT = Path(__file__).resolve().parents[2]


def scrape(http) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics keyed by (name, sorted labels)."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.get_data(as_text=True))


def parse(text: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


TOKEN = "ccserver_token_requests_total"


def test_token_outcomes_by_auth_method(client, factory):
    cid, secret = factory.client(scopes=["read"])
    before = scrape(client)

    factory.token(cid, secret)
    client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret},
    )
    client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(cid, "ccs_wrong"),
    )
    client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "admin"},
        headers=basic_auth(cid, secret),
    )
    client.post("/oauth2/token", data={"grant_type": "password"}, headers=basic_auth(cid, secret))

    after = scrape(client)

    def delta(outcome, method):
        labels = {"endpoint": "token", "outcome": outcome, "auth_method": method}
        return value(after, TOKEN, **labels) - value(before, TOKEN, **labels)

    assert delta("success", "client_secret_basic") == 1
    assert delta("success", "client_secret_post") == 1
    assert delta("invalid_client", "client_secret_basic") == 1
    assert delta("invalid_scope", "client_secret_basic") == 1
    assert delta("unsupported_grant_type", "client_secret_basic") == 1


def test_every_counted_oauth_endpoint_exists(app):
    """Each endpoint name OAUTH_ENDPOINTS counts names a registered view."""
    assert set(OAUTH_ENDPOINTS) <= set(app.view_functions)
    assert sorted(OAUTH_ENDPOINTS.values()) == ["introspect", "revoke", "token"]


def test_latency_histogram_per_endpoint(client, factory):
    cid, secret = factory.client()
    name = "ccserver_http_request_duration_seconds_count"
    before = value(scrape(client), name, endpoint="oauth.issue_token")
    factory.token(cid, secret)
    factory.token(cid, secret)
    after = scrape(client)
    assert value(after, name, endpoint="oauth.issue_token") == before + 2
    assert value(after, "ccserver_http_request_duration_seconds_bucket",
                 endpoint="oauth.issue_token", le="+Inf") >= 2  # fmt: skip
    # Unknown paths share one series instead of one per path.
    client.get("/no/such/path/" + os.urandom(4).hex())
    assert value(scrape(client), name, endpoint="unmatched") >= 1


def test_signing_key_age_and_counts(client):
    samples = scrape(client)
    age = value(samples, "ccserver_signing_key_age_seconds", status="current")
    assert 0 <= age < 300
    assert value(samples, "ccserver_signing_keys", status="current") == 1
    assert value(samples, "ccserver_signing_keys", status="next") == 1


def test_rate_limit_rejections_are_counted(make_app, factory):
    limited = make_app(AUTH_FAILURE_LIMIT_CLIENT=2).test_client()
    cid, secret = factory.client()
    before = scrape(limited)
    for _ in range(2):
        response = limited.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers=basic_auth(cid, "ccs_wrong"),
        )
        assert response.status_code == 401
    response = limited.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic_auth(cid, secret)
    )
    assert response.status_code == 429
    after = scrape(limited)
    name = "ccserver_rate_limit_rejections_total"
    assert value(after, name) == value(before, name) + 1
    labels = {"endpoint": "token", "outcome": "rate_limited", "auth_method": "client_secret_basic"}
    assert value(after, TOKEN, **labels) == value(before, TOKEN, **labels) + 1


def test_no_secret_token_or_client_id_in_metrics(client, factory):
    cid, secret = factory.client()
    token = factory.token(cid, secret)["access_token"]
    client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": cid, "client_secret": "ccs_x"},
    )
    text = client.get("/metrics").get_data(as_text=True)
    for needle in (cid, secret, token, "ccs_x"):
        assert needle not in text


@pytest.mark.slow
def test_gunicorn_workers_are_summed(tmp_path):
    """Integration: two gunicorn workers; every scrape sees the sum of both."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'metrics.db'}",
        "KEYS_DIR": str(tmp_path / "keys"),
        "SECRET_PEPPER": "metrics-test-pepper-not-for-production",
        "ISSUER": f"http://127.0.0.1:{port}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "WORKERS": "2",
        "THREADS": "2",
        "REDIS_URL": "",
    }
    env.pop("TEST_REDIS_URL", None)
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    for args in (["db", "upgrade"], ["keys", "init"]):
        subprocess.run(flask + args, env=env, cwd=ROOT, check=True, capture_output=True)
    server_log = tmp_path / "gunicorn.log"
    log_file = server_log.open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        with requests.Session() as http:
            for _ in range(20):
                # A new connection each time so both workers take some.
                response = requests.post(
                    base + "/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    headers={**basic_auth("nobody", "ccs_wrong"), "Connection": "close"},
                    timeout=5,
                )
                assert response.status_code == 401
            for _ in range(6):
                scrape = http.get(base + "/metrics", headers={"Connection": "close"}, timeout=5)
                assert scrape.status_code == 200, server_log.read_text()[-3000:]
                samples = parse(scrape.text)
                labels = {
                    "endpoint": "token",
                    "outcome": "invalid_client",
                    "auth_method": "client_secret_basic",
                }
                # Whichever worker answers, it reports both workers' counts.
                assert value(samples, TOKEN, **labels) == 20
        files = list((tmp_path / "prom").glob("*.db"))
        assert files, "workers wrote no metric files"
    finally:
        # SIGINT: gunicorn's quick shutdown; the graceful one waits for keep-alives.
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        log_file.close()
