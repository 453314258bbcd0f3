"""The dashboard, driven in headless Chromium against a real `okr serve` (see conftest.py)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from events import topics
from tests import seed
from tests.auth_support import API_KEYS, PRINCIPALS
from tests.browser.conftest import Dashboard, sign_in, wait
from tests.kafka_support import produce

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow]


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def present(driver: WebDriver, css: str) -> bool:
    return bool(driver.find_elements(By.CSS_SELECTOR, css))


def post_from_page(driver: WebDriver, path: str, fields: dict[str, str]) -> dict[str, object]:
    """A request a script on the page could forge: same origin, the session cookie attached."""
    result: dict[str, object] = driver.execute_async_script(
        """
        const [path, fields, done] = arguments;
        fetch(path, {method: 'POST', credentials: 'same-origin',
                     body: new URLSearchParams(fields), redirect: 'manual'})
          .then(r => r.text().then(t => done({status: r.status, text: t})))
          .catch(e => done({status: -1, text: String(e)}));
        """,
        path,
        fields,
    )
    return result


# --- sign in ---


def test_sign_in_with_a_wrong_key_then_the_right_one_then_sign_out(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    browser.get(f"{dashboard.url}/ui/")
    assert "/ui/login" in browser.current_url, "a page asks for a key first"
    browser.find_element(By.ID, "api_key").send_keys("okr_not_a_key")
    browser.find_element(By.ID, "api_key").submit()
    wait(browser, lambda d: present(d, "#login-error"), "the refusal")
    assert "not valid" in text(browser, "#login-error")
    assert "Traceback" not in browser.page_source
    assert browser.get_cookie("okr_session") is None

    sign_in(browser, dashboard, "editor")
    cookie = browser.get_cookie("okr_session")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert 0 < cookie["expiry"] - time.time() <= 8 * 3600 + 60, "the session expires"
    assert API_KEYS["editor"] not in cookie["value"], "the key itself never leaves the form"
    assert browser.execute_script("return document.cookie").find("okr_session") < 0
    assert PRINCIPALS["editor"] in text(browser, ".who")

    browser.find_element(By.ID, "logout").click()
    wait(browser, lambda d: "/ui/login" in d.current_url, "signed out")
    assert browser.get_cookie("okr_session") is None
    browser.get(f"{dashboard.url}/ui/")
    assert "/ui/login" in browser.current_url


# --- overview ---


def test_the_overview_shows_the_scores_the_api_gives_as_an_alignment_tree(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    sign_in(browser, dashboard, "reader")
    sales = dashboard.objective("sales")
    node = browser.find_element(By.CSS_SELECTOR, f'[data-objective="{dashboard.ids["sales"]}"]')
    shown = node.find_element(By.CSS_SELECTOR, ".obj-score .score").text
    assert float(shown.replace("\u202f", "")) == pytest.approx(
        sales["objective"]["score"], abs=0.05
    )
    pace_word = sales["pace"].replace("_", " ")
    assert pace_word in node.find_element(By.CSS_SELECTOR, ".obj-score .pace").text
    assert len(node.find_elements(By.CSS_SELECTOR, "ul.krs > li")) == 2, "its key results, small"
    company = browser.find_element(
        By.CSS_SELECTOR, f'[data-objective="{dashboard.ids["company"]}"]'
    )
    assert node in company.find_elements(By.CSS_SELECTOR, "ul.children > li.node"), "aligned"

    Select(browser.find_element(By.ID, "f-team")).select_by_visible_text("sales")
    browser.find_element(By.CSS_SELECTOR, ".filters button").click()
    wait(browser, lambda d: "team=sales" in d.current_url, "the team filter")
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".obj-title > a")]
    assert titles == ["Grow product X"]
    assert "aligned" in text(browser, ".tag"), "its parent is filtered out, and it says so"

    Select(browser.find_element(By.ID, "f-team")).select_by_index(0)
    Select(browser.find_element(By.ID, "f-status")).select_by_value("draft")
    browser.find_element(By.CSS_SELECTOR, ".filters button").click()
    wait(browser, lambda d: "status=draft" in d.current_url, "the status filter")
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".obj-title > a")]
    assert titles == ["Cut churn"]


# --- an objective ---


def test_the_objective_page_says_what_moved_each_point_and_who_decided_what(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    sign_in(browser, dashboard, "reader", f"/ui/objectives/{dashboard.ids['sales']}")
    labels = [
        e.get_attribute("textContent")
        for e in browser.find_elements(By.CSS_SELECTOR, "#chart svg circle title")
    ]
    assert any(
        re.search(r"check-in by alice@example.com: 71 \(June survey\)", s or "") for s in labels
    )
    assert any("created by alice@example.com" in (s or "") for s in labels)
    nps_chart = browser.find_element(By.ID, f"chart-{dashboard.ids['nps_kr']}")
    assert nps_chart.find_elements(By.CSS_SELECTOR, "circle.point.check_in")

    row = browser.find_element(By.ID, f"kr-{dashboard.ids['nps_kr']}")
    cells = [c.text for c in row.find_elements(By.CSS_SELECTOR, "td")]
    assert cells[0] == "71" and cells[1] == "80" and cells[3] == "70 %", cells

    history = text(browser, "#history")
    for event in ("ObjectiveCreated", "ObjectiveActivated", "KpiBound", "ProgressCheckedIn"):
        assert event in history
    assert "status: draft → active" in history
    assert "ada" not in history and PRINCIPALS["editor"] in history

    badge = text(browser, "#integrity")
    assert "Chain verified" in badge and "4 events checked" in badge
    assert not present(browser, "form[data-versioned]"), "a reader gets no write control"


def test_as_of_shows_the_state_at_a_version_and_at_a_moment(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    oid = dashboard.ids["sales"]
    sign_in(browser, dashboard, "reader", f"/ui/objectives/{oid}")
    version = browser.find_element(By.ID, "asof-version")
    version.send_keys("2")
    version.submit()
    wait(browser, lambda d: present(d, "#as-of"), "the state at version 2")
    assert "Version 2" in text(browser, "#as-of") and "active" in text(browser, "#as-of")
    assert text(browser, "#as-of-score") == "0"

    browser.get(f"{dashboard.url}/ui/objectives/{oid}?at=2001-01-01T00:00:00&tz=0")
    assert "did not exist yet" in text(browser, "#as-of-section .error")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    browser.get(f"{dashboard.url}/ui/objectives/{oid}?at={now}&tz=0")
    assert "Version 4" in text(browser, "#as-of")


# --- editors ---


def open_update(browser: WebDriver, kr_id: str) -> None:
    form = browser.find_element(By.ID, f"form-checkin-{kr_id}")
    details = form.find_element(By.XPATH, "./ancestor::details")
    if not details.get_attribute("open"):
        details.find_element(By.TAG_NAME, "summary").click()


def points_of(browser: WebDriver, kr_id: str) -> int:
    return len(browser.find_elements(By.CSS_SELECTOR, f"#chart-{kr_id} circle.point"))


def test_an_editor_checks_in_and_the_chart_gains_a_point(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    oid, kr = dashboard.ids["sales"], dashboard.ids["nps_kr"]
    sign_in(browser, dashboard, "editor", f"/ui/objectives/{oid}")
    before = points_of(browser, kr)
    open_update(browser, kr)
    browser.find_element(By.ID, f"checkin-{kr}-value").send_keys("75")
    browser.find_element(By.ID, f"checkin-{kr}-confidence").send_keys("80")
    browser.find_element(By.ID, f"checkin-{kr}-note").send_keys("July survey")
    browser.find_element(By.CSS_SELECTOR, f"#form-checkin-{kr} button").click()
    wait(browser, lambda d: present(d, "#notice"), "the check-in's notice")
    assert "Check-in recorded" in text(browser, "#notice")
    assert points_of(browser, kr) == before + 1
    row = browser.find_element(By.ID, f"kr-{kr}")
    assert row.find_element(By.CSS_SELECTOR, "td.current").text == "75"
    labels = [
        e.get_attribute("textContent")
        for e in browser.find_elements(By.CSS_SELECTOR, f"#chart-{kr} circle title")
    ]
    assert any("check-in by alice@example.com: 75 (July survey)" in (s or "") for s in labels)
    assert dashboard.objective("sales")["key_results"][1]["confidence"] == 0.8


def test_an_editor_revises_a_target_with_its_reason_and_binds_and_unbinds_a_kpi(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    oid, kr = dashboard.ids["sales"], dashboard.ids["nps_kr"]
    sign_in(browser, dashboard, "editor", f"/ui/objectives/{oid}")
    open_update(browser, kr)
    target = browser.find_element(By.ID, f"revise-{kr}-target")
    target.clear()
    target.send_keys("85")
    browser.find_element(By.ID, f"revise-{kr}-reason").send_keys("Board raised the bar")
    browser.find_element(By.CSS_SELECTOR, f"#form-revise-{kr} button").click()
    wait(browser, lambda d: present(d, "#notice"), "the revision")
    assert "Target revised" in text(browser, "#notice")
    history = text(browser, "#history")
    assert "Board raised the bar" in history and "80 → 85" in history

    open_update(browser, kr)
    browser.find_element(By.ID, f"bind-{kr}-kpi").send_keys("survey.nps")
    Select(browser.find_element(By.ID, f"bind-{kr}-agg")).select_by_value("avg")
    browser.find_element(By.CSS_SELECTOR, f"#form-bind-{kr} button").click()
    wait(browser, lambda d: "KPI bound" in text(d, "#notice"), "the binding")
    assert "survey.nps" in browser.find_element(By.ID, f"kr-{kr}").text

    open_update(browser, kr)
    browser.find_element(By.CSS_SELECTOR, f"#form-unbind-{kr} button").click()
    wait(browser, lambda d: "KPI unbound" in text(d, "#notice"), "the unbinding")
    assert "survey.nps" not in browser.find_element(By.ID, f"kr-{kr}").text
    assert dashboard.objective("sales")["key_results"][1]["kpi_key"] is None


def test_an_editor_activates_a_draft_then_closes_it_with_a_retrospective(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    oid = dashboard.ids["draft"]
    sign_in(browser, dashboard, "editor", f"/ui/objectives/{oid}")
    browser.find_element(By.ID, "activate").click()
    wait(browser, lambda d: present(d, "#notice"), "the activation")
    assert "Objective activated" in text(browser, "#notice")
    assert "ACTIVE" in text(browser, "#head").upper()

    # A closing without its reason is refused next to the form, nothing lost.
    browser.find_element(By.CSS_SELECTOR, ".actions details summary").click()
    browser.find_element(By.ID, "close-retro").send_keys("Churn fell thanks to the new onboarding")
    browser.execute_script("document.getElementById('close-reason').removeAttribute('required')")
    browser.find_element(By.ID, "close").click()
    wait(browser, lambda d: present(d, "#err-close"), "the refusal without a reason")
    assert "reason" in text(browser, "#err-close").lower()
    retro = browser.find_element(By.ID, "close-retro").get_attribute("value")
    assert retro == "Churn fell thanks to the new onboarding", "what was typed is kept"

    browser.find_element(By.ID, "close-reason").send_keys("Quarter review")
    browser.find_element(By.ID, "close").click()
    wait(browser, lambda d: present(d, "#notice"), "the closing")
    assert "Objective closed" in text(browser, "#notice")
    body = dashboard.objective("draft")["objective"]
    assert body["status"] == "closed"
    assert body["retrospective"] == "Churn fell thanks to the new onboarding"
    assert "Quarter review" in text(browser, "#history")
    assert not present(browser, "form[data-versioned]"), "a closed objective takes no more"


def test_a_stale_form_is_refused_with_a_conflict_not_a_lost_update(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    oid, kr = dashboard.ids["sales"], dashboard.ids["nps_kr"]
    sign_in(browser, dashboard, "editor", f"/ui/objectives/{oid}")
    open_update(browser, kr)
    target = browser.find_element(By.ID, f"revise-{kr}-target")
    target.clear()
    target.send_keys("90")  # the form is now dirty: live updates leave it alone
    browser.find_element(By.ID, f"revise-{kr}-reason").send_keys("stretch")
    with dashboard.api("admin") as api:  # someone else, meanwhile
        moved = api.post(
            f"/objectives/{oid}/key-results/{kr}/check-ins", json={"value": 77, "note": "elsewhere"}
        )
        assert moved.status_code == 200
    wait(browser, lambda d: present(d, f"#form-revise-{kr} .form-stale"), "the stale warning")
    browser.find_element(By.CSS_SELECTOR, f"#form-revise-{kr} button").click()
    wait(browser, lambda d: present(d, f"#err-revise-{kr}"), "the conflict")
    assert "Nothing was saved" in text(browser, f"#err-revise-{kr}")
    assert dashboard.objective("sales")["key_results"][1]["target"] != 90
    assert browser.find_element(By.ID, f"revise-{kr}-target").get_attribute("value") == "90"


# --- readers and forgeries ---


def test_a_reader_sees_no_write_control_and_a_forged_write_is_refused(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    oid, kr = dashboard.ids["sales"], dashboard.ids["nps_kr"]
    sign_in(browser, dashboard, "reader", f"/ui/objectives/{oid}")
    assert not present(browser, "form[data-versioned]")
    assert not present(browser, 'a[href="/ui/objectives/new"]')
    assert not present(browser, 'a[href="/ui/audit"]')
    before = dashboard.objective("sales")["objective"]["version"]
    csrf = browser.find_element(By.TAG_NAME, "body").get_attribute("data-csrf") or ""
    forged = post_from_page(
        browser,
        f"/ui/objectives/{oid}/check-in",
        {"csrf_token": csrf, "key_result_id": kr, "value": "99"},
    )
    assert forged["status"] == 403
    assert "may not" in str(forged["text"])
    browser.get(f"{dashboard.url}/ui/objectives/new")
    assert "may not" in text(browser, ".error")
    assert dashboard.objective("sales")["objective"]["version"] == before


def test_a_form_without_its_csrf_token_is_refused(dashboard: Dashboard, browser: WebDriver) -> None:
    oid, kr = dashboard.ids["sales"], dashboard.ids["nps_kr"]
    sign_in(browser, dashboard, "editor", f"/ui/objectives/{oid}")
    before = dashboard.objective("sales")["objective"]["version"]
    for token in ({}, {"csrf_token": "forged"}):
        refused = post_from_page(
            browser, f"/ui/objectives/{oid}/check-in", {**token, "key_result_id": kr, "value": "1"}
        )
        assert refused["status"] == 403
        assert "Nothing was saved" in str(refused["text"])
    assert dashboard.objective("sales")["objective"]["version"] == before
    # Another site's page never gets the cookie sent along (SameSite=Strict): checked by the
    # cookie's flag in the sign-in test; without it, the request is refused as signed out.
    anonymous = httpx.post(
        f"{dashboard.url}/ui/objectives/{oid}/check-in", data={"key_result_id": kr, "value": "1"}
    )
    assert anonymous.status_code == 401


# --- a new objective ---


def issues_for(browser: WebDriver, field_: str) -> list[str]:
    box = browser.find_element(By.CSS_SELECTOR, f'[data-issues-for="{field_}"]')
    return [p.text for p in box.find_elements(By.TAG_NAME, "p")]


def linted(browser: WebDriver) -> int:
    form = browser.find_element(By.ID, "new-objective")
    return int(form.get_attribute("data-linted") or 0)


def type_and_wait(browser: WebDriver, element_id: str, value: str) -> None:
    """Type as a person does (emptying the field first, as select-all and delete would)."""
    before = linted(browser)
    browser.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = '';"
        "e.dispatchEvent(new Event('input', {bubbles: true}));",
        element_id,
    )
    if value:
        browser.find_element(By.ID, element_id).send_keys(value)
    wait(browser, lambda d: linted(d) > before, f"the lint after typing in {element_id}")


def test_the_new_objective_form_shows_problems_as_the_user_types_and_creates_a_good_one(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    sign_in(browser, dashboard, "editor", "/ui/objectives/new")
    type_and_wait(browser, "title", "Grow product X again")
    type_and_wait(browser, "team", "sales")
    type_and_wait(browser, "kr-0-title", "Increase lead generation")
    assert any("no measurable target" in m for m in issues_for(browser, "key_results[0].target"))
    assert any("no metric" in m for m in issues_for(browser, "key_results[0].metric"))
    assert any("no baseline" in m for m in issues_for(browser, "key_results[0].baseline"))
    assert any("no deadline" in m for m in issues_for(browser, "key_results[0].deadline"))
    target = browser.find_element(By.ID, "kr-0-target")
    assert target.get_attribute("aria-invalid") == "true"
    guide = text(browser, ".guide")
    assert "Increase lead generation" in guide and "Reduce total churn by 5 %" in guide

    type_and_wait(browser, "kr-0-title", "Increase sales of product X by 30 % by Q3")
    type_and_wait(browser, "kr-0-metric", "units")
    type_and_wait(browser, "kr-0-baseline", "1000")
    type_and_wait(browser, "kr-0-relative_target", "+30%")
    end = browser.find_element(By.ID, "period_end").get_attribute("value") or ""
    browser.execute_script(
        "const d = document.getElementById('kr-0-deadline'); d.value = arguments[0];"
        "d.dispatchEvent(new Event('input', {bubbles: true}));",
        end,
    )
    wait(browser, lambda d: "✔" in text(d, "#lint-status"), "a clean report")
    assert all(not p.text for p in browser.find_elements(By.CSS_SELECTOR, ".issues p.problem"))
    assert not browser.find_elements(By.CSS_SELECTOR, ".issues p")
    browser.find_element(By.ID, "create").click()
    wait(browser, lambda d: present(d, "#notice"), "the new objective's page")
    assert "Objective created" in text(browser, "#notice")
    assert text(browser, "#objective-title") == "Grow product X again"
    row = browser.find_element(By.CSS_SELECTOR, ".krs-table tbody tr")
    assert "1\u202f300" in row.text, "+30 % of 1000 resolved to an absolute target"


def test_a_key_result_block_can_be_added_and_a_range_shows_its_bounds(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    sign_in(browser, dashboard, "editor", "/ui/objectives/new")
    browser.find_element(By.ID, "add-kr").click()
    wait(browser, lambda d: present(d, "#kr-1-title"), "a second key result")
    Select(browser.find_element(By.ID, "kr-1-kind")).select_by_value("range")
    assert browser.find_element(By.ID, "kr-1-target_low").is_displayed()
    assert not browser.find_element(By.ID, "kr-1-target").is_displayed()


# --- French ---


FRENCH_SEED = [
    # title, kind, metric, baseline, relative target, well defined
    (seed.SALES.french, "increase", "unités", "1000", "+30%", True),
    (seed.CHURN.french, "decrease", "% de désabonnement mensuel", "8", "-5%", True),
    (seed.LEAD_GENERATION.french, "increase", "", "", "", False),
    (seed.CHURN_OBSTACLES.french, "increase", "", "", "", False),
]


def test_the_french_page_and_form_judge_the_seeds_four_examples_as_the_seed_does(
    dashboard: Dashboard, french_browser: WebDriver
) -> None:
    browser = french_browser
    sign_in(browser, dashboard, "editor", "/ui/objectives/new")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
    assert "Nouvel objectif" in text(browser, "h1")
    assert "Se déconnecter" in text(browser, "#logout")
    type_and_wait(browser, "title", "Croissance du produit X")
    type_and_wait(browser, "team", "ventes")
    end = browser.find_element(By.ID, "period_end").get_attribute("value") or ""
    judged = {}
    for title, kind, metric, baseline, relative, good in FRENCH_SEED:
        type_and_wait(browser, "kr-0-title", title)
        Select(browser.find_element(By.ID, "kr-0-kind")).select_by_value(kind)
        for element_id, value in (
            ("kr-0-baseline", baseline),
            ("kr-0-relative_target", relative),
            ("kr-0-metric", metric),
        ):
            type_and_wait(browser, element_id, value)
        browser.execute_script(
            "const d = document.getElementById('kr-0-deadline'); d.value = arguments[0];"
            "d.dispatchEvent(new Event('input', {bubbles: true}));",
            end if good else "",
        )
        time.sleep(0.6)  # the last lint answers after its 250 ms pause
        problems = [p.text for p in browser.find_elements(By.CSS_SELECTOR, ".issues p.problem")]
        warnings = [p.text for p in browser.find_elements(By.CSS_SELECTOR, ".issues p.warning")]
        judged[title] = (problems, warnings)
    sales, churn, leads, obstacles = (judged[t[0]] for t in FRENCH_SEED)
    assert sales == ([], []) and churn == ([], []), "well defined: no problem, no warning"
    assert any("attente mesurable" in p for p in leads[0]), leads
    assert leads[1] == []
    assert any("décrit une activité, pas un résultat" in w for w in obstacles[1]), obstacles
    assert any("attente mesurable" in p for p in obstacles[0])

    browser.find_element(By.CSS_SELECTOR, '.langs a[lang="en"]').click()
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en", "EN")
    assert "New objective" in text(browser, "h1")


def test_the_overview_in_french_from_the_browsers_language(
    dashboard: Dashboard, french_browser: WebDriver
) -> None:
    sign_in(french_browser, dashboard, "reader")
    assert "Objectifs" in text(french_browser, "h1")
    assert "Vue d’ensemble" in text(french_browser, "nav")
    assert "objectifs" in text(french_browser, "#summary")


# --- KPIs and audit ---


def publish_kpi(dashboard: Dashboard, value: float, event_id: str | None = None) -> str:
    event_id = event_id or f"browser-{uuid.uuid4().hex}"
    event = {
        "event_id": event_id,
        "kpi_key": dashboard.kpi_key,
        "value": value,
        "observed_at": datetime.now(UTC).isoformat(),
        "source": "browser-test",
    }
    message = (dashboard.kpi_key.encode(), json.dumps(event).encode(), [])
    asyncio.run(produce(dashboard.settings, topics.KPI_EVENTS, [message]))
    return event_id


def test_kpi_pages_show_counters_the_series_and_the_key_results_fed(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    first = publish_kpi(dashboard, 40)
    publish_kpi(dashboard, 60)
    publish_kpi(dashboard, 60, event_id=first)  # a duplicate: counted apart
    sign_in(browser, dashboard, "reader", "/ui/kpis")

    def counted(d: WebDriver) -> bool:
        d.refresh()
        rows = d.find_elements(By.CSS_SELECTOR, f'tr[data-kpi="{dashboard.kpi_key}"]')
        return bool(rows) and rows[0].find_element(By.CSS_SELECTOR, ".accepted").text == "2"

    wait(browser, counted, "the KPI counted", timeout=20, poll=0.5)
    browser.find_element(By.LINK_TEXT, dashboard.kpi_key).click()
    wait(browser, lambda d: present(d, "#kpi-accepted"), "the KPI page")
    assert text(browser, "#kpi-accepted") == "2"
    assert text(browser, "#kpi-latest") == "60"
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart circle.point")) == 2
    feeds = text(browser, "#feeds-h + table")
    assert "Grow product X" in feeds and "sum" in feeds


def test_an_auditor_runs_verify_and_downloads_an_export(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    sign_in(browser, dashboard, "auditor", "/ui/audit")
    browser.find_element(By.ID, "verify").click()
    wait(browser, lambda d: present(d, "#verify-report"), "the verify report", timeout=60)
    report = text(browser, "#verify-report")
    assert "Intact" in report and "objectives" in report.lower()
    assert not present(browser, 'a[href="/ui/objectives/new"]'), "an auditor writes nothing"

    cookie = browser.get_cookie("okr_session")
    assert cookie is not None
    export = httpx.get(
        f"{dashboard.url}/ui/audit/export",
        params={"since": "2000-01-01T00:00:00", "tz": "0", "format": "jsonl"},
        cookies={"okr_session": cookie["value"]},
        timeout=30,
    )
    assert export.status_code == 200
    assert "attachment" in export.headers["content-disposition"]
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert {line["objective_id"] for line in lines} >= {dashboard.ids["sales"]}

    sign_in(browser, dashboard, "editor", "/ui/audit")
    assert "may not" in text(browser, ".error"), "the audit pages are for auditors"


def test_the_api_docs_load_from_the_service_itself(
    dashboard: Dashboard, browser: WebDriver
) -> None:
    sign_in(browser, dashboard, "reader", "/ui/docs")
    wait(browser, lambda d: present(d, ".swagger-ui .info .title"), "Swagger UI", timeout=20)
    assert "OKR Ledger" in text(browser, ".swagger-ui .info .title")
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert loaded and all(name.startswith(dashboard.url) for name in loaded), loaded
    docs = httpx.get(
        f"{dashboard.url}/docs", headers={"Authorization": f"Bearer {API_KEYS['reader']}"}
    )
    assert "cdn" not in docs.text.lower() and "/docs/assets/swagger-ui-bundle.js" in docs.text
    asset = httpx.get(
        f"{dashboard.url}/docs/assets/swagger-ui-bundle.js",
        headers={"Authorization": f"Bearer {API_KEYS['reader']}"},
    )
    assert asset.status_code == 200 and len(asset.content) > 100_000
