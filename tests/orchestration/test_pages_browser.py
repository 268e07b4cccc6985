"""The approval pages in a real browser: headless Chromium (Debian ``chromium`` + ``chromium-driver``) driven by
selenium, signing in through the app's own sign-in (``/api/auth/login`` -> the Entra emulator's https sign-in page ->
``/api/auth/callback``, cookies and redirects as the browser handles them), on a 390 px phone and a 1200 px desktop.
The emulator's certificate comes from a throw-away loopback authority the browser is told to accept.

``make test`` installs Chromium when it is missing (Makefile, ``chromium`` target). Without it these tests fail
in CI (``CI=true``) and are skipped, saying why, on a developer machine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from localdev.emulators.graph import LOCAL_PASSWORD, MFA_CODE, PEOPLE
from tests.conftest import wait_for
from tests.orchestration.helpers import link_for, links_in, review_link

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--ignore-certificate-errors")  # the Entra emulator's loopback certificate
pytestmark = pytest.mark.e2e


def _available() -> str | None:
    """Why the browser tests cannot run, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements-dev.txt)"
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return "Debian packages chromium and chromium-driver are not installed (make chromium)"
    return None


@pytest.fixture(scope="module")
def browsers():
    missing = _available()
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests cannot run in CI: {missing}")
        pytest.skip(missing)

    @contextmanager
    def open_browser(width: int, height: int) -> Iterator:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        profile = tempfile.mkdtemp(prefix="chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--window-size={max(width, 800)},{height}", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        if width < 800:  # a phone: mobile layout rules (a page without a viewport meta is laid out 980 px wide)
            options.add_experimental_option("mobileEmulation", {"deviceMetrics": {
                "width": width, "height": height, "pixelRatio": 3.0, "mobile": True, "touch": True}})
        # The browser's own time zone, so the page's local-time rendering is visible (CET, not UTC).
        service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "TZ": "Europe/Berlin"})
        driver = webdriver.Chrome(options=options, service=service)
        driver.set_page_load_timeout(60)
        try:
            yield driver
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)

    return open_browser


def sign_in(driver, upn: str, *, mfa: bool = True) -> None:
    """On the Entra sign-in page the app redirected to: name, password, authenticator code (``mfa``), Sign in."""
    from selenium.webdriver.common.by import By

    wait_for(lambda: driver.find_elements(By.NAME, "login"), timeout=30)
    assert driver.current_url.startswith("https://") and "/oauth2/v2.0/authorize?" in driver.current_url
    driver.find_element(By.NAME, "login").send_keys(upn)
    driver.find_element(By.NAME, "password").send_keys(LOCAL_PASSWORD)
    if mfa:
        driver.find_element(By.NAME, "otp").send_keys(MFA_CODE)
    driver.find_element(By.ID, "signin").click()


def layout(driver) -> dict:
    return driver.execute_script(
        "var b=document.querySelector('button');var t=document.querySelector('time[data-local]');"
        "return {inner: window.innerWidth, scroll: document.documentElement.scrollWidth,"
        "viewport: (document.querySelector('meta[name=viewport]')||{}).content || null,"
        "button: b ? b.getBoundingClientRect().height : null, buttonRight: b ? b.getBoundingClientRect().right : null,"
        "time: t ? t.textContent : null, heading: document.querySelector('h1').textContent};")


def subscribe(host, callbacks, incident) -> str:
    url = callbacks.new_url()
    response = host.post("orchestration/approvals", {"callbackUrl": url, "incident": incident,
                                                     "question": "Block the user and the IP?"})
    assert response.status_code == 201, response.text
    return url


@pytest.mark.parametrize("width", [390, 1200])
def test_an_approver_signs_in_reads_the_targets_and_decides(clean_stack, host, callbacks, incident, browsers, width):
    from selenium.webdriver.common.by import By

    url = subscribe(host, callbacks, incident)
    link = link_for(links_in(clean_stack.outbox.to("alice@contoso.com")[0]["body"]), "Block")
    with browsers(width, 844) as driver:
        driver.get(link)  # not signed in: the page sends the browser to the app's sign-in, and on to Entra
        sign_in(driver, "alice@contoso.com")
        wait_for(lambda: "Confirm: Block" in driver.title, timeout=30)
        page = layout(driver)
        assert page["viewport"] == "width=device-width, initial-scale=1"
        assert page["inner"] == width and page["scroll"] <= page["inner"], page  # no horizontal overflow
        assert page["button"] >= 44 and page["buttonRight"] <= page["inner"], page
        assert "CET" in page["time"] or "GMT+1" in page["time"], page  # the deadline in the reader's time zone
        text = driver.find_element(By.TAG_NAME, "body").text
        assert "Adele Vance (adele.vance@contoso.com)" in text and "IPs to block" in text
        assert "Alice Approver" in text and "UTC" in text
        session = driver.get_cookie("SentinelPlaybooksSession")  # the app's own session, as the browser keeps it
        assert session["httpOnly"] and session["sameSite"] == "Lax" and session["path"] == "/api"
        driver.find_element(By.CSS_SELECTOR, "button[value=Block]").click()
        wait_for(lambda: "Recorded: Block" in driver.title, timeout=30)
        assert layout(driver)["scroll"] <= width
    (callback,) = wait_for(lambda: callbacks.bodies(url))
    assert callback["decision"] == "Block" and callback["decidedById"] == PEOPLE[0][0]


def test_a_signed_in_channel_member_who_is_not_an_approver_is_refused(clean_stack, host, callbacks, incident,
                                                                       browsers):
    from selenium.webdriver.common.by import By

    url = subscribe(host, callbacks, incident)
    review = review_link(json.dumps(clean_stack.teams.cards[0]))
    with browsers(390, 844) as driver:
        driver.get(review)
        sign_in(driver, "mallory@contoso.com")
        wait_for(lambda: "Not allowed" in driver.title, timeout=30)
        text = driver.find_element(By.TAG_NAME, "body").text
        assert "not an approver" in text and "Who may decide" in text and "Bob Approver (bob@contoso.com)" in text
        assert driver.find_elements(By.TAG_NAME, "button") == []
        page = layout(driver)
        assert page["scroll"] <= page["inner"] == 390
    assert callbacks.bodies(url) == []


def test_yes_it_was_me_steps_up_to_a_fresh_multi_factor_sign_in(clean_stack, host, callbacks, incident, browsers):
    """The user's own answer on a phone: a sign-in without the authenticator cannot say Yes; the page's own link
    asks Entra for a new sign-in with it (prompt=login, the MFA authentication context) and comes back."""
    import re

    from selenium.webdriver.common.by import By

    response = host.post("response/entra/ask-user", {"callbackUrl": callbacks.new_url(), "incident": incident})
    assert response.status_code == 201, response.text
    (mail,) = wait_for(lambda: clean_stack.outbox.to("adele.vance@contoso.com"))
    (link,) = re.findall(r'href="([^"]+/api/response/entra/ask-user/[0-9a-f]{32}\?[^"]+)"', mail["body"])
    with browsers(390, 844) as driver:
        driver.get(link.replace("&amp;", "&"))
        sign_in(driver, "adele.vance@contoso.com", mfa=False)
        wait_for(lambda: "Was this you?" in driver.title, timeout=30)
        driver.find_element(By.CSS_SELECTOR, "button[value=Yes]").click()
        wait_for(lambda: "Not allowed" in driver.title, timeout=30)
        assert "multi-factor" in driver.find_element(By.TAG_NAME, "body").text
        assert layout(driver)["scroll"] <= 390
        driver.find_element(By.LINK_TEXT, "Sign in again with your authenticator").click()
        sign_in(driver, "adele.vance@contoso.com")  # Entra asks again (prompt=login), this time with the code
        wait_for(lambda: "Was this you?" in driver.title, timeout=30)
        driver.find_element(By.CSS_SELECTOR, "button[value=Yes]").click()
        wait_for(lambda: "Answer recorded" in driver.title, timeout=30)
    assert clean_stack.entra.sign_in.redemptions[-1]["acrs"] == ["c1"]
