"""The dashboard in a real browser: Debian's headless Chromium, driven by selenium.

The browser is `/usr/bin/chromium` with `/usr/bin/chromedriver` (`apt-get install chromium
chromium-driver`; `scripts/test.sh` installs them when it runs as root). Selenium is told both
paths, so its manager never downloads a browser. Without them the tests are skipped, and under
`CI=true` they fail, as a missing broker does (tests/conftest.py).

Each module starts a real `okr serve` (the e2e tests' way: tests/e2e/conftest.py) on its own
topics and stores, with the test keys of tests/auth_support.py, and writes a small ledger
through the HTTP API: a company objective, a sales objective aligned to it with the seed's
key results (one bound to a KPI), and a draft.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from services.settings import Settings
from tests import seed
from tests.auth_support import API_KEYS, INLINE_API_KEYS, KAFKA_PRINCIPAL, auth_headers
from tests.conftest import unavailable
from tests.e2e.conftest import RunningService, start_serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
KPI_KEY_PREFIX = "browser.sales"


def quarter_of(day: date) -> tuple[date, date]:
    first_month = 3 * ((day.month - 1) // 3) + 1
    start = date(day.year, first_month, 1)
    after = date(day.year + (first_month == 10), (first_month + 2) % 12 + 1, 1)
    return start, after - timedelta(days=1)


@dataclass
class Dashboard(RunningService):
    """A running `okr serve` and the ledger written into it."""

    settings: Settings = field(kw_only=True)
    ids: dict[str, str] = field(default_factory=dict)
    kpi_key: str = ""

    def api(self, role: str = "editor") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=auth_headers(role), timeout=30)

    def objective(self, name: str) -> dict[str, Any]:
        with self.api("reader") as client:
            response = client.get(f"/objectives/{self.ids[name]}")
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body


def start_service(settings: Settings, workdir: Path) -> Dashboard:
    running = start_serving(settings, workdir)
    return Dashboard(running.url, running.process, running.log, settings=settings)


def write_ledger(dashboard: Dashboard) -> None:
    """Company <- Sales (active: sales KR bound to a KPI, NPS checked in), and a draft."""
    start, end = quarter_of(datetime.now(UTC).date())
    dashboard.kpi_key = f"{KPI_KEY_PREFIX}.{uuid.uuid4().hex[:8]}"
    period = {"period_start": start.isoformat(), "period_end": end.isoformat()}
    sales_kr = seed.SALES.as_json(deadline=end)
    nps_kr = seed.NPS.as_json(deadline=end)
    with dashboard.api("editor") as api:

        def create(body: dict[str, Any]) -> dict[str, Any]:
            response = api.post("/objectives", json=body)
            assert response.status_code == 201, response.text
            result: dict[str, Any] = response.json()
            return result

        company = create(
            {
                "title": "Win the mid-market",
                "owner": "ceo",
                "team": "board",
                **period,
                "key_results": [{**nps_kr, "title": "Raise company NPS to 80"}],
            }
        )
        sales = create(
            {
                "title": "Grow product X",
                "owner": "alice",
                "team": "sales",
                "parent_id": company["objective_id"],
                **period,
                "key_results": [sales_kr, nps_kr],
            }
        )
        draft = create(
            {
                "title": "Cut churn",
                "owner": "bob",
                "team": "care",
                **period,
                "key_results": [seed.CHURN.as_json(deadline=end)],
            }
        )
        sid = sales["objective_id"]
        sales_kr_id, nps_kr_id = sales["key_result_ids"]
        for objective_id in (company["objective_id"], sid):
            assert api.post(f"/objectives/{objective_id}/activate").status_code == 200
        bound = api.put(
            f"/objectives/{sid}/key-results/{sales_kr_id}/kpi",
            json={"kpi_key": dashboard.kpi_key, "aggregation": "sum"},
        )
        assert bound.status_code == 200, bound.text
        checked = api.post(
            f"/objectives/{sid}/key-results/{nps_kr_id}/check-ins",
            json={"value": 71, "confidence": 0.7, "note": "June survey"},
        )
        assert checked.status_code == 200, checked.text
        version = checked.json()["version"]
        seen = api.get(f"/objectives/{sid}", params={"min_version": version, "wait": 20})
        assert seen.status_code == 200, seen.text
        seen = api.get(f"/objectives/{draft['objective_id']}", params={"min_version": 1})
        assert seen.status_code == 200, seen.text
    dashboard.ids = {
        "company": company["objective_id"],
        "sales": sid,
        "draft": draft["objective_id"],
        "sales_kr": sales_kr_id,
        "nps_kr": nps_kr_id,
    }


def browser_settings(kafka_bootstrap: str, workdir: Path) -> Settings:
    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        # Not the `t<hex>.` of tests/conftest.py: a test session that ends on a shared broker
        # deletes those, and this module's service must keep its topics while it runs.
        topic_prefix=f"browser{uuid.uuid4().hex[:10]}.",
        topic_partitions=3,
        event_store_url=f"sqlite:///{workdir / 'events.sqlite'}",
        read_store_url=f"sqlite:///{workdir / 'read.sqlite'}",
        api_keys=INLINE_API_KEYS,
        api_keys_file=workdir / "api-keys.json",
        kafka_command_principals=KAFKA_PRINCIPAL,
    )


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        unavailable(
            f"no headless browser: {', '.join(missing)} missing "
            "(apt-get install chromium chromium-driver, or scripts/test.sh as root)"
        )
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="module")
def dashboard(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, chromium: tuple[Path, Path]
) -> Iterator[Dashboard]:
    workdir = tmp_path_factory.mktemp("dashboard")
    running = start_service(browser_settings(kafka_bootstrap, workdir), workdir)
    try:
        write_ledger(running)
        yield running
    finally:
        running.stop()
        delete_topics(running.settings)


def delete_topics(settings: Settings) -> None:
    async def delete() -> None:
        admin = AIOKafkaAdminClient(**settings.kafka_client_options())
        await admin.start()
        try:
            names = [n for n in await admin.list_topics() if n.startswith(settings.topic_prefix)]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    try:
        asyncio.run(delete())
    except Exception as error:  # cleanup only
        warnings.warn(f"topics of {settings.topic_prefix} not deleted: {error}", stacklevel=1)


def new_driver(language: str = "en-US,en") -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        f"--lang={language.split(',')[0]}",
    ):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    return driver


@pytest.fixture
def browser(chromium: tuple[Path, Path]) -> Iterator[WebDriver]:
    driver = new_driver()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def french_browser(chromium: tuple[Path, Path]) -> Iterator[WebDriver]:
    driver = new_driver("fr-FR,fr")
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(driver: WebDriver, dashboard: Dashboard, role: str, path: str = "/ui/") -> None:
    driver.get(f"{dashboard.url}/ui/login?next={path}")
    field_ = driver.find_element(By.ID, "api_key")
    field_.clear()
    field_.send_keys(API_KEYS[role])
    field_.submit()
    wait(driver, lambda d: "/ui/login" not in d.current_url, "signed in")


def wait(
    driver: WebDriver,
    condition: Callable[[WebDriver], Any],
    what: str,
    timeout: float = 10.0,
    poll: float = 0.05,
) -> Any:
    """Poll `condition`; an element the live page replaced between finding and reading it
    (stale) is polled again, like one not there yet."""
    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=poll,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(condition, message=f"waiting for: {what}")
