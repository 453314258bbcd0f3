"""Screenshots of the dashboard for the README, taken by the tests' headless Chromium.

    .venv/bin/python scripts/screenshots.py [--kafka 127.0.0.1:9092] [--out docs/screenshots]

It starts its own `okr serve` (fresh SQLite stores in a temporary folder, topics under a prefix of
their own, an admin key made for it) against the Kafka broker given (or OKR_KAFKA_BOOTSTRAP_SERVERS,
or 127.0.0.1:9092: `okr kafka start`), plays `okr demo` against it (the seed's scenario, KPI events
moving the scores), aligns the demo's objectives to a company objective and checks one key result
in, then signs in with Debian's chromium (/usr/bin/chromium, /usr/bin/chromedriver) and saves a
PNG per page. The service is stopped and its topics deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.access.keys import add_key  # noqa: E402
from services.access.principals import Role  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH = 1280


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def service(kafka: str, workdir: Path) -> Iterator[tuple[str, str, str]]:
    """A started `okr serve`: (url, admin key, topic prefix)."""
    keys_file = workdir / "api-keys.json"
    admin = add_key(keys_file, "ada", Role.ADMIN).key
    prefix = f"shots{uuid.uuid4().hex[:8]}."
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OKR_")}
    env |= {
        "OKR_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "OKR_TOPIC_PREFIX": prefix,
        "OKR_TOPIC_PARTITIONS": "3",
        "OKR_EVENT_STORE_URL": f"sqlite:///{workdir / 'events.sqlite'}",
        "OKR_READ_STORE_URL": f"sqlite:///{workdir / 'read.sqlite'}",
        "OKR_API_KEYS_FILE": str(keys_file),
        "OKR_HTTP_HOST": "127.0.0.1",
        "OKR_HTTP_PORT": str(port),
    }
    log = (workdir / "service.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "serve"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"okr serve exited: see {workdir / 'service.log'}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("okr serve did not get healthy in 60 s")
            time.sleep(0.3)
        yield url, admin, prefix
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        asyncio.run(delete_topics(kafka, prefix))


async def delete_topics(kafka: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        names = [n for n in await admin.list_topics() if n.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


def scenario(url: str, key: str, kafka: str, prefix: str, seconds: int) -> dict[str, str]:
    """The demo, then a company objective the demo's objectives align to, and a check-in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OKR_")}
    env |= {"OKR_KAFKA_BOOTSTRAP_SERVERS": kafka, "OKR_TOPIC_PREFIX": prefix}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "demo",
            "--seconds",
            str(seconds),
            "--url",
            url,
            "--api-key",
            key,
        ],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    demo = api.get("/objectives", params={"limit": 50}).json()["items"]
    start, end = demo[0]["period_start"], demo[0]["period_end"]
    company = api.post(
        "/objectives",
        json={
            "title": "Grow a loyal customer base",
            "description": "The company objective the teams' objectives align to.",
            "owner": "ceo",
            "team": "leadership",
            "period_start": start,
            "period_end": end,
            "key_results": [
                {
                    "title": "Raise NPS to 80",
                    "metric": "NPS points",
                    "baseline": 62,
                    "target": 80,
                    "deadline": end,
                },
                {
                    "title": "Reduce total churn by 5 %",
                    "kind": "decrease",
                    "metric": "% monthly churn",
                    "baseline": 8,
                    "relative_target": "-5%",
                    "deadline": end,
                },
            ],
        },
    ).json()
    company_id = company["objective_id"]
    api.post(f"/objectives/{company_id}/activate")
    nps, churn = company["key_result_ids"]
    api.post(
        f"/objectives/{company_id}/key-results/{nps}/check-ins",
        json={"value": 70, "confidence": 0.7, "note": "Q survey"},
    )
    last = api.post(
        f"/objectives/{company_id}/key-results/{churn}/check-ins",
        json={"value": 7.8, "confidence": 0.6, "note": "first month"},
    ).json()
    for objective in demo:
        api.post(f"/objectives/{objective['objective_id']}/align", json={"parent_id": company_id})
    api.post(
        "/objectives",
        json={
            "title": "Launch the partner programme",
            "owner": "dana",
            "team": "partners",
            "period_start": start,
            "period_end": end,
            "key_results": [
                {
                    "title": "Sign 12 partners",
                    "metric": "partners",
                    "baseline": 0,
                    "target": 12,
                    "deadline": end,
                }
            ],
        },
    )
    api.get(f"/objectives/{company_id}", params={"min_version": last["version"], "wait": 20})
    sales = next(o for o in demo if "sales" in o["title"].lower())
    return {"company": company_id, "sales": sales["objective_id"]}


def driver(language: str) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},900",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def sign_in(browser: WebDriver, url: str, key: str) -> None:
    browser.get(f"{url}/ui/login")
    browser.find_element(By.ID, "api_key").send_keys(key)
    browser.find_element(By.ID, "api_key").submit()
    WebDriverWait(browser, 10).until(lambda d: "/ui/login" not in d.current_url)


def shoot(browser: WebDriver, path: Path, max_height: int = 2200) -> None:
    """The page's whole height (up to `max_height`), through the DevTools protocol: a headless
    window cannot grow past its screen."""
    time.sleep(0.8)  # the live indicator connects
    metrics = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})
    height = min(int(metrics["cssContentSize"]["height"]), max_height)
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    time.sleep(0.3)
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    path.write_bytes(base64.b64decode(shot["data"]))
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def screenshots(url: str, key: str, ids: dict[str, str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    browser = driver("en-US,en")
    try:
        browser.get(f"{url}/ui/login")
        shoot(browser, out / "login.png", max_height=700)
        sign_in(browser, url, key)
        shoot(browser, out / "overview.png")
        browser.get(f"{url}/ui/objectives/{ids['sales']}")
        shoot(browser, out / "objective.png", max_height=2600)
        browser.get(f"{url}/ui/objectives/new")
        title = browser.find_element(By.ID, "kr-0-title")
        browser.find_element(By.ID, "title").send_keys("Grow the pipeline")
        browser.find_element(By.ID, "team").send_keys("marketing")
        title.send_keys("Increase lead generation")
        WebDriverWait(browser, 10).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".issues p.problem")
        )
        shoot(browser, out / "new-objective.png")
        browser.get(f"{url}/ui/kpis")
        shoot(browser, out / "kpis.png")
        browser.get(f"{url}/ui/kpis/sales.product_x.units")
        shoot(browser, out / "kpi.png")
        browser.get(f"{url}/ui/audit")
        browser.find_element(By.ID, "verify").click()
        WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "verify-report"))
        shoot(browser, out / "audit.png", max_height=900)
    finally:
        browser.quit()
    french = driver("fr-FR,fr")
    try:
        sign_in(french, url, key)
        french.get(f"{url}/ui/objectives/{ids['company']}")
        shoot(french, out / "objective-fr.png", max_height=1500)
    finally:
        french.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kafka", default=os.environ.get("OKR_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--seconds", type=int, default=15, help="how long the demo plays")
    args = parser.parse_args()
    for program in (CHROMIUM, CHROMEDRIVER):
        if not Path(program).exists():
            raise SystemExit(f"{program} is missing: apt-get install chromium chromium-driver")
    with (
        tempfile.TemporaryDirectory(prefix="okr-shots-") as folder,
        service(args.kafka, Path(folder)) as (url, key, prefix),
    ):
        ids = scenario(url, key, args.kafka, prefix, args.seconds)
        screenshots(url, key, ids, args.out.resolve())


if __name__ == "__main__":
    main()
