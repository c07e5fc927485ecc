"""The web UI in a real browser (Debian's Chromium, driven by Playwright) against the real API,
PostgreSQL, SCP and workers: what clinical staff, admins and auditors do, checked with axe."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import Gateway, free_port
from tests.dicom_data import ct_series
from tests.sinks import StoreSCP
from tests.support import storescu, wait_for

ROOT = Path(__file__).parents[2]
UI = ROOT / "frontend" / "dist"
ARTIFACTS = ROOT / "test-results" / "e2e"
PASSWORD = "a very long test passphrase"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    not (UI / "index.html").exists(), reason="the UI is not built: make frontend-build"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def site(make_gateway: Callable[..., Gateway], tmp_path: Path) -> Iterator[tuple[Gateway, str]]:
    api_port = free_port()
    gw = make_gateway(api={"port": api_port, "ui_dir": str(UI), "workers": 1})
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    for name, role in (("admin", "admin"), ("viewer", "viewer"), ("auditor", "auditor")):
        result = gw.cli("user", "add", name, "--role", role, "--password-file", str(secret))
        assert result.returncode == 0, result.stderr
    gw.start_scp()
    gw.start_ingest()
    gw.start_forward()
    gw.start("api", "api")
    base = f"http://127.0.0.1:{api_port}"

    def up() -> bool:
        try:
            import urllib.request

            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(up, timeout=60, what="the API")
    yield gw, base


def new_page(browser: Browser, base: str, dark: bool = False) -> Page:
    context = browser.new_context(
        base_url=base, viewport={"width": 1280, "height": 900},
        color_scheme="dark" if dark else "light",
    )  # fmt: skip
    return context.new_page()


def login(page: Page, username: str) -> None:
    page.goto("/login")
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def check_page(page: Page, name: str) -> None:
    """No axe violations, and a screenshot kept as a test artifact."""
    page.wait_for_load_state("networkidle")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


def test_a_study_is_followed_from_arrival_to_delivery(
    browser: Browser, site: tuple[Gateway, str], tmp_path: Path
) -> None:
    gw, base = site
    sink = StoreSCP("ARCHIVE", free_port(), tmp_path / "sink").start()
    try:
        gw.add_destination("archive", "ARCHIVE", sink.port)
        gw.add_destination("offline", "OFFLINE", free_port(), "--max-retries", "0")
        gw.add_rule("everything", "--to", "archive", "--to", "offline")
        page = new_page(browser, base)
        login(page, "admin")
        page.goto("/studies")
        expect(page.get_by_test_id("live-status")).to_have_attribute("data-status", "open")

        files = ct_series(tmp_path / "ct", count=3, size=32, patient_name="Doe^Jane")
        assert storescu(gw.port, *files).returncode == 0
        # It appears without a reload, fed by the event stream.
        row = page.get_by_test_id("study-row").first
        expect(row).to_be_visible(timeout=30_000)
        expect(row).to_contain_text("Doe, Jane")  # PN shown as people read it
        check_page(page, "studies")

        wait_for(lambda: len(sink.received()) == 3, what="delivery to the archive")
        wait_for(lambda: gw.delivery_states() == {"sent": 3, "dead": 3}, what="the dead letters")
        page.get_by_test_id("study-link").first.click()
        detail = page.get_by_test_id("study-detail")
        expect(detail).to_be_visible()
        archive = page.locator('[data-testid="study-destination-row"][data-destination="archive"]')
        expect(archive).to_contain_text("sent", timeout=15_000)
        offline = page.locator('[data-testid="study-destination-row"][data-destination="offline"]')
        expect(offline).to_contain_text("dead", timeout=15_000)
        check_page(page, "study-detail")

        # Retry the dead letters from the queue page, with the confirmation bulk actions need.
        page.goto("/queue")
        dead = page.locator('[data-testid="delivery-row"][data-state="dead"]')
        expect(dead.first).to_be_visible(timeout=15_000)
        check_page(page, "queue")
        dead.first.get_by_test_id("delivery-select").check()
        page.get_by_test_id("bulk-retry").click()
        page.get_by_test_id("confirm-ok").click()
        wait_for(
            lambda: (
                gw.sql(
                    "SELECT count(*) FROM delivery_events WHERE reason LIKE 'retried by admin%'"
                )[0][0]
                >= 1
            ),
            what="the retry recorded",
        )

        page.goto("/dashboard")
        expect(page.get_by_test_id("live-status")).to_have_attribute("data-status", "open")
        check_page(page, "dashboard")
    finally:
        sink.stop()


def test_an_admin_configures_a_destination_and_tests_it(
    browser: Browser, site: tuple[Gateway, str], tmp_path: Path
) -> None:
    gw, base = site
    sink = StoreSCP("NEWPACS", free_port(), tmp_path / "sink").start()
    try:
        page = new_page(browser, base)
        login(page, "admin")
        page.goto("/destinations")
        page.get_by_test_id("destination-new").click()
        page.get_by_test_id("dest-name").fill("new-pacs")
        page.get_by_test_id("dest-ae-title").fill("NEWPACS")
        page.get_by_test_id("dest-host").fill("127.0.0.1")
        page.get_by_test_id("dest-port").fill(str(sink.port))
        page.get_by_test_id("dest-save").click()
        row = page.locator('[data-testid="destination-row"][data-name="new-pacs"]')
        expect(row).to_be_visible()
        row.get_by_test_id("destination-test").click()
        expect(page.get_by_test_id("echo-result")).to_have_attribute(
            "data-ok", "true", timeout=20_000
        )
        check_page(page, "destinations")
        assert gw.sql("SELECT ae_title, port FROM destinations WHERE name = 'new-pacs'") == [
            ("NEWPACS", sink.port)
        ]
        for name in ("rules", "users", "settings", "audit", "account"):
            page.goto(f"/{name}")
            check_page(page, name)
        # Dark mode follows the system and passes axe too.
        dark = new_page(browser, base, dark=True)
        login(dark, "admin")
        dark.goto("/dashboard")
        check_page(dark, "dashboard-dark")
    finally:
        sink.stop()


def test_roles_limit_what_the_menu_and_routes_offer(
    browser: Browser, site: tuple[Gateway, str]
) -> None:
    _gw, base = site
    viewer = new_page(browser, base)
    login(viewer, "viewer")
    expect(viewer.get_by_test_id("nav-studies")).to_be_visible()
    expect(viewer.get_by_test_id("nav-users")).to_have_count(0)
    expect(viewer.get_by_test_id("nav-audit")).to_have_count(0)
    viewer.goto("/users")
    expect(viewer.get_by_test_id("forbidden")).to_be_visible()
    check_page(viewer, "forbidden")

    auditor = new_page(browser, base)
    login(auditor, "auditor")
    expect(auditor.get_by_test_id("nav-audit")).to_be_visible()
    expect(auditor.get_by_test_id("nav-studies")).to_have_count(0)
    auditor.goto("/audit")
    auditor.get_by_test_id("audit-verify").click()
    expect(auditor.get_by_test_id("verify-result")).to_have_attribute("data-ok", "true")
    check_page(auditor, "audit")

    login_page = new_page(browser, base)
    login_page.goto("/login")
    login_page.get_by_test_id("login-username").fill("viewer")
    login_page.get_by_test_id("login-password").fill("wrong password")
    login_page.get_by_test_id("login-submit").click()
    expect(login_page.get_by_test_id("login-error")).to_contain_text("Invalid username or password")
    check_page(login_page, "login")


def test_ui_is_served_with_client_side_routes(site: tuple[Gateway, str]) -> None:
    import urllib.request

    _gw, base = site
    with urllib.request.urlopen(f"{base}/studies/42", timeout=10) as response:
        assert 'id="app"' in response.read().decode()
