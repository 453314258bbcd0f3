"""Live pages: a change elsewhere shows on an open page within a second, without reloading, and
the indicator says when the connection to the server is lost."""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser.conftest import Dashboard, sign_in, wait
from tests.browser.test_dashboard import publish_kpi

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow]

WITHIN_S = 1.0


def watch(browser: WebDriver, css: str) -> None:
    """Note in the page when the text at `css` first changes, and mark the page so that a
    reload would show (the mark would be gone)."""
    browser.execute_script(
        """
        const css = arguments[0];
        const first = document.querySelector(css).textContent;
        window.__notReloaded = true;
        window.__changedAt = null;
        window.__watch = setInterval(() => {
          const now = document.querySelector(css);
          if (now && now.textContent !== first && window.__changedAt === null) {
            window.__changedAt = Date.now();
            window.__changedTo = now.textContent;
          }
        }, 5);
        """,
        css,
    )


def changed_at(browser: WebDriver) -> tuple[float, str]:
    found = wait(
        browser,
        lambda d: d.execute_script(
            "return window.__changedAt && [window.__changedAt, window.__changedTo]"
        ),
        "the page to change by itself",
        timeout=15,
    )
    assert browser.execute_script("return window.__notReloaded") is True, "no reload"
    return float(found[0]) / 1000, str(found[1])


def read_model_has(dashboard: Dashboard, kr: int, value: float, timeout: float = 15) -> float:
    """When the read API first shows `value` (the projector committed it): wall time, seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dashboard.objective("sales")["key_results"][kr]["current"] == value:
            return time.time()
        time.sleep(0.01)
    raise AssertionError(f"the read model never showed {value}")


def live(browser: WebDriver) -> None:
    wait(
        browser,
        lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "live",
        "the live indicator",
    )


def test_a_kpi_event_scored_moves_the_open_page_within_a_second(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    kr = dashboard.ids["sales_kr"]
    sign_in(browser, dashboard, "reader", f"/ui/objectives/{dashboard.ids['sales']}")
    live(browser)
    watch(browser, f"#kr-{kr} td.current")
    sent = time.time()
    publish_kpi(dashboard, 120)
    projected = read_model_has(dashboard, 0, 120.0)
    shown, now_text = changed_at(browser)
    assert now_text == "120"
    assert shown - projected < WITHIN_S, f"{shown - projected:.3f} s after the projector's commit"
    print(f"KPI event -> page: {shown - sent:.3f} s (commit -> page {shown - projected:.3f} s)")
    points = browser.find_elements(By.CSS_SELECTOR, f"#chart-{kr} circle.point.kpi title")
    assert any("KPI " in (p.get_attribute("textContent") or "") for p in points)


def test_a_check_in_elsewhere_moves_the_open_overview_within_a_second(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    sign_in(browser, dashboard, "reader")
    live(browser)
    node = f'[data-objective="{dashboard.ids["sales"]}"] .obj-score .score'
    watch(browser, node)
    with dashboard.api("editor") as api:
        kr = dashboard.ids["nps_kr"]
        answer = api.post(
            f"/objectives/{dashboard.ids['sales']}/key-results/{kr}/check-ins", json={"value": 80}
        )
        assert answer.status_code == 200
    projected = read_model_has(dashboard, 1, 80.0)
    shown, _ = changed_at(browser)
    assert shown - projected < WITHIN_S, f"{shown - projected:.3f} s after the projector's commit"


def test_the_indicator_says_the_connection_is_lost_when_the_server_stops(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    sign_in(browser, dashboard, "reader", f"/ui/objectives/{dashboard.ids['sales']}")
    live(browser)
    assert "Live" in browser.find_element(By.ID, "live").text
    started = time.monotonic()
    dashboard.process.terminate()
    wait(
        browser,
        lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "lost",
        "the lost indicator",
    )
    assert "lost" in browser.find_element(By.ID, "live").text.lower()
    dashboard.process.wait(timeout=20)
    assert time.monotonic() - started < 20, "an open page does not hold the server's shutdown"
