"""End to end: a real headless Chromium (Debian's) drives the console over real HTTP.

The app runs in a werkzeug server thread on a loopback port; Playwright for
Python drives /usr/bin/chromium (no browser download). Screenshots of each
main page land in the test's tmp_path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests

from tests.conftest import basic_auth

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)",
    ),
]


@pytest.fixture
def app_config(live_config) -> dict:
    return live_config


@pytest.fixture
def base_url(live_url) -> str:
    return live_url


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_console_end_to_end(browser, base_url, factory, tmp_path: Path):
    admin_id, admin_secret = factory.admin("system")
    shots = tmp_path / "screenshots"
    shots.mkdir()

    context = browser.new_context(viewport={"width": 1366, "height": 820})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    foreign, problems = [], []
    page.on(
        "request",
        lambda r: None if r.url.startswith((base_url, "data:")) else foreign.append(r.url),
    )
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # Sign in with the keyboard only: labels, tab order and Enter must work.
    page.goto(f"{base_url}/console/")
    assert page.url.startswith(f"{base_url}/console/signin")
    page.screenshot(path=shots / "signin.png", full_page=True)
    page.get_by_label("Client id").focus()
    page.keyboard.type(admin_id)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "client_secret"
    page.keyboard.type(admin_secret)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base_url}/console/clients")
    assert page.get_by_role("heading", name="Clients").is_visible()
    page.screenshot(path=shots / "clients.png", full_page=True)

    # Register the API its client will get tokens for (docs/api.md §2.7).
    page.get_by_role("link", name="Resource servers").click()
    page.get_by_role("link", name="New resource server").click()
    page.get_by_role("textbox", name="Account").fill("acme")
    page.get_by_label("Identifier", exact=False).fill("https://api.example.com")
    page.get_by_label("Name", exact=True).fill("Example API")
    page.get_by_label("Scopes", exact=False).fill("read Read things\nwrite")
    page.get_by_role("button", name="Register").click()
    page.get_by_role("heading", name="Example API").wait_for()
    page.screenshot(path=shots / "resource_server.png", full_page=True)

    # Create a client; its secret is shown once, with a working copy button.
    page.get_by_role("link", name="New client").first.click()
    page.get_by_label("Name", exact=False).first.fill("browser-made")
    page.get_by_label("Display name").fill("Made in the browser")
    page.get_by_label("Allowed scopes").fill("read write")
    page.get_by_label("Audiences").fill("https://api.example.com")
    page.get_by_label("Tags").fill("e2e")
    page.get_by_label("Account").fill("acme")
    page.screenshot(path=shots / "client_new.png", full_page=True)
    page.get_by_role("button", name="Create client").click()
    page.get_by_role("heading", name="Client browser-made created").wait_for()
    secret = page.get_by_label("Client secret").input_value()
    client_id = page.locator("#shown-client-id").inner_text().strip()
    assert secret.startswith("ccs_")
    page.get_by_role("button", name="Copy secret").click()
    page.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    page.screenshot(path=shots / "secret_shown.png", full_page=True)

    token_url = f"{base_url}/oauth2/token"
    form = {"grant_type": "client_credentials"}
    response = requests.post(token_url, data=form, auth=(client_id, secret), timeout=5)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "read write"

    # Rotate without grace: the new secret works, the old one stops at once.
    page.get_by_role("link", name="Done: back to browser-made").click()
    page.wait_for_url(f"{base_url}/console/clients/{client_id}")
    page.screenshot(path=shots / "client_detail.png", full_page=True)
    page.get_by_label("Grace period for the old secrets").select_option("0")
    page.get_by_role("button", name="Rotate secret…").click()
    # Rotation asks first: the confirmation page says what happens to the old secret.
    page.get_by_role("heading", name="Rotate the secret of browser-made?").wait_for()
    page.get_by_text("Every other secret stops working at once.").wait_for()
    page.screenshot(path=shots / "confirm_rotate.png", full_page=True)
    page.get_by_role("button", name="Rotate secret", exact=True).click()
    page.get_by_role("heading", name="Secret rotated").wait_for()
    page.get_by_text("The old secret stopped working now.").wait_for()
    rotated = page.get_by_label("Client secret").input_value()
    assert rotated != secret
    assert requests.post(token_url, data=form, auth=(client_id, rotated), timeout=5).ok
    response = requests.post(token_url, data=form, auth=(client_id, secret), timeout=5)
    assert response.status_code == 401
    # A refresh of the shown secret neither shows it again nor rotates again.
    page.reload()
    page.wait_for_url(f"{base_url}/console/clients/{client_id}#secrets")
    page.get_by_text("A new secret is shown only once").wait_for()
    assert rotated not in page.content()
    assert requests.post(token_url, data=form, auth=(client_id, rotated), timeout=5).ok

    # Lock it in the console; the management API then refuses changes (409).
    page.get_by_role("button", name="Lock").click()
    page.get_by_text("Locked: no change is possible").wait_for()
    page.screenshot(path=shots / "client_locked.png", full_page=True)
    api_token = requests.post(
        token_url, data=form, headers=basic_auth(admin_id, admin_secret), timeout=5
    ).json()["access_token"]
    response = requests.patch(
        f"{base_url}/api/v1/clients/{client_id}",
        json={"description": "changed"},
        headers={"Authorization": f"Bearer {api_token}"},
        timeout=5,
    )
    assert response.status_code == 409
    assert response.json()["code"] == "client_locked"

    page.get_by_role("link", name="Delete…").click()
    page.screenshot(path=shots / "confirm_delete.png", full_page=True)
    page.get_by_role("link", name="Cancel").click()

    page.get_by_role("link", name="Audit log").click()
    page.wait_for_url(f"{base_url}/console/audit")
    audit_text = page.locator("main").inner_text()
    for action in ("client.created", "secret.rotated", "client.updated"):
        assert action in audit_text
    # Actors and targets by name, linked, the id in the title.
    assert page.locator(f'a[title="{admin_id}"]').count() > 0
    assert page.locator(f'a[title="{client_id}"]').first.inner_text() == "browser-made"
    page.get_by_label("Action").select_option("secret.rotated")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*/console/audit\?action=secret\.rotated.*"))
    assert page.locator("tbody tr").count() == 1
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    exported = Path(download.value.path()).read_text()
    assert "secret.rotated" in exported and "client.created" not in exported
    assert secret not in exported and rotated not in exported
    page.screenshot(path=shots / "audit.png", full_page=True)

    # A form post that carries the session cookie but no CSRF token is refused.
    cookies = {c["name"]: c["value"] for c in context.cookies(f"{base_url}/console/")}
    assert "ccserver_console" in cookies
    forged = requests.post(
        f"{base_url}/console/clients/{client_id}/state",
        data={"action": "unlock"},
        cookies=cookies,
        allow_redirects=False,
        timeout=5,
    )
    assert forged.status_code == 403
    forged = requests.post(
        f"{base_url}/console/clients/new",
        data={"name": "csrf-less", "csrf_token": "guess"},
        cookies=cookies,
        allow_redirects=False,
        timeout=5,
    )
    assert forged.status_code == 403
    page.goto(f"{base_url}/console/clients?name_prefix=csrf")
    assert "csrf-less" not in page.locator("tbody").inner_text()
    page.goto(f"{base_url}/console/clients/{client_id}")
    assert page.get_by_role("button", name="Unlock").is_visible()

    # Sign out: the session is gone, pages lead back to sign-in.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/console/signin.*"))
    assert page.get_by_text("You are signed out.").is_visible()
    page.goto(f"{base_url}/console/clients")
    assert "/console/signin" in page.url

    assert not foreign, f"the console fetched from another host: {foreign}"
    assert not problems, f"browser errors: {problems}"
    names = sorted(p.name for p in shots.iterdir())
    assert len(names) == 10, names
    for shot in shots.iterdir():
        assert shot.stat().st_size > 5_000
    if os.environ.get("CONSOLE_SCREENSHOTS"):
        # For a human look: CONSOLE_SCREENSHOTS=/some/dir pytest ... copies them there.
        target = Path(os.environ["CONSOLE_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            (target / shot.name).write_bytes(shot.read_bytes())
    context.close()


def test_api_docs_render_offline(browser, base_url, tmp_path: Path):
    """/docs draws the OpenAPI document with the packaged Swagger UI, fetching nothing else."""
    page = browser.new_page(viewport={"width": 1366, "height": 820})
    page.set_default_timeout(15_000)
    foreign, problems = [], []
    page.on(
        "request",
        lambda r: None if r.url.startswith((base_url, "data:")) else foreign.append(r.url),
    )
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(f"{base_url}/docs")
    page.locator(".swagger-ui .info .title").wait_for()
    page.locator(".opblock-summary-path", has_text="/api/v1/clients").first.wait_for()
    page.screenshot(path=tmp_path / "docs.png")
    assert not foreign, f"/docs fetched from another host: {foreign}"
    assert not problems, f"browser errors: {problems}"
    page.close()


def test_console_fits_a_390px_phone(browser, base_url, factory, tmp_path: Path):
    """At 390x844 no page scrolls sideways: wide tables scroll in their wrapper, the nav wraps."""
    admin_id, admin_secret = factory.admin("system")
    cid, _ = factory.client(
        "acme",
        name="a-rather-long-client-name-for-a-phone-screen",
        tags=["production", "payments", "europe-west"],
        scopes=["orders:read", "orders:write", "payments:refund", "reports:export"],
    )
    factory.client("acme", name="second-client")
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto(f"{base_url}/console/signin")
    page.get_by_label("Client id").fill(admin_id)
    page.get_by_label("Client secret").fill(admin_secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/console/clients")

    def fits(name: str) -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        page.screenshot(path=tmp_path / f"{name}-390.png", full_page=True)
        wide = page.evaluate(
            """() => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > 391)
                .map(e => `${e.tagName}.${e.className} ${e.getBoundingClientRect().right}`)
                .slice(0, 12)"""
        )
        assert width <= 390, f"{name}: the page is {width} px wide: {wide}"

    fits("clients")
    # The table itself is wider than the screen and scrolls inside its wrapper.
    wrap = page.locator(".table-wrap").first
    assert wrap.evaluate("el => el.scrollWidth > el.clientWidth")
    nav = page.locator("header.top nav ul")
    assert nav.evaluate("el => el.scrollWidth <= el.clientWidth")  # wrapped, not clipped
    page.goto(f"{base_url}/console/clients/{cid}")
    fits("client_detail")
    for path, name in (
        ("/console/audit", "audit"),
        ("/console/signing-keys", "signing_keys"),
        ("/console/resource-servers", "resource_servers"),
        (f"/console/clients/{cid}/confirm/disable", "confirm_disable"),
    ):
        page.goto(f"{base_url}{path}")
        fits(name)
    assert (tmp_path / "clients-390.png").stat().st_size > 5_000
    context.close()


def test_console_pages_added_for_operators(browser, base_url, factory, tmp_path: Path):
    """A preset federated credential, signing keys, a confirmed disable, audit filter and export."""
    shots = tmp_path / "operators"
    shots.mkdir()
    admin_id, admin_secret = factory.admin("system")
    cid, _ = factory.client("system", name="deployer")
    page = browser.new_page()
    page.set_default_timeout(10_000)
    page.goto(f"{base_url}/console/signin")
    page.get_by_label("Client id").fill(admin_id)
    page.get_by_label("Client secret").fill(admin_secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/console/clients")

    # A GitHub Actions credential from its preset: preview in plain words, then add.
    page.goto(f"{base_url}/console/clients/{cid}/federated-credentials")
    page.get_by_role("link", name="GitHub Actions").click()
    page.locator("#org").fill("acme")
    page.locator("#repo").fill("billing")
    page.locator("#branch").fill("main")
    page.get_by_role("button", name="Preview").click()
    assert "repo:acme/billing:ref:refs/heads/main" in page.content()
    page.screenshot(path=shots / "federated_preview.png", full_page=True)
    page.get_by_role("button", name="Add credential").click()
    page.wait_for_url(re.compile(r".*/federated-credentials$"))
    table = page.locator("#federated-credentials")
    assert "token.actions.githubusercontent.com" in table.inner_text()
    page.screenshot(path=shots / "federated_list.png", full_page=True)

    # Signing keys: read-only, the current key listed.
    page.goto(f"{base_url}/console/signing-keys")
    assert "current" in page.content().lower()
    page.screenshot(path=shots / "signing_keys.png", full_page=True)

    # Disable asks first; confirming disables.
    page.goto(f"{base_url}/console/clients/{cid}/confirm/disable")
    page.screenshot(path=shots / "confirm_disable.png", full_page=True)
    page.locator("form button[type=submit]").last.click()
    page.wait_for_url(re.compile(rf".*/console/clients/{cid}.*"))
    assert "disabled" in page.content().lower()

    # The audit log filtered by target, and its CSV export of the same rows.
    page.goto(f"{base_url}/console/audit")
    page.locator("#target").fill(cid)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()
    rows = page.locator("table tbody tr")
    assert rows.count() >= 2  # the credential added, the client disabled
    page.screenshot(path=shots / "audit_filtered.png", full_page=True)
    export = page.locator("a[href*='export.csv']").first.get_attribute("href")
    assert export is not None and "target=" in export
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    csv_text = requests.get(f"{base_url}{export}", cookies=cookies, timeout=10).text
    assert cid in csv_text and admin_secret not in csv_text
    page.close()
