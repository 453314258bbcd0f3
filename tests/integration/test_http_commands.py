"""The HTTP command API over the real application, on both event stores (SQLite and PostgreSQL).

Every refusal is checked twice: for its status and code, and for having written nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from domain.objective import Objective
from services.commands.application import OkrApplication
from services.http.app import create_app
from services.settings import Settings
from tests import seed
from tests.auth_support import PRINCIPALS, auth_headers

ACTOR = PRINCIPALS["editor"]
"""The principal of the editor key every request sends: the actor recorded on its events."""

SALES = seed.SALES.as_json()
CHURN = seed.CHURN.as_json()
NPS = seed.NPS.as_json()
PURCHASE_PATH = seed.PURCHASE_PATH.as_json()
LEAD_GENERATION = seed.LEAD_GENERATION.as_json()
CHURN_OBSTACLES = seed.CHURN_OBSTACLES.as_json()

UNMEASURABLE = seed.unmeasurable_problems()


def objective(*key_results: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "title": "Win the mid-market",
        "owner": ACTOR,
        "team": "growth",
        "period_start": seed.QUARTER_START.isoformat(),
        "period_end": seed.QUARTER_END.isoformat(),
        "key_results": list(key_results),
        **fields,
    }


def if_match(version: int) -> dict[str, str]:
    return {"If-Match": f'"{version}"'}


@dataclass
class Api:
    """A client of the command API that also sees the application's store, to prove no writes."""

    client: httpx.AsyncClient
    application: OkrApplication

    async def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        role: str = "editor",
    ) -> httpx.Response:
        sent = auth_headers(role)
        return await self.client.request(
            method, path, json=body, headers={**sent, **(headers or {})}, params=params
        )

    async def create(self, *key_results: Mapping[str, Any]) -> tuple[str, list[str]]:
        """A draft objective at version 1; returns its id and its key results' ids."""
        response = await self.send("POST", "/objectives", objective(*key_results))
        objective_id: str = accepted(response, 201, 1)["objective_id"]
        created = await self.load(objective_id)
        return objective_id, [str(kr.key_result_id) for kr in created.key_results]

    async def create_active(self, *key_results: Mapping[str, Any]) -> tuple[str, list[str]]:
        objective_id, key_result_ids = await self.create(*key_results)
        accepted(await self.send("POST", f"/objectives/{objective_id}/activate"), 200, 2)
        return objective_id, key_result_ids

    async def load(self, objective_id: str) -> Objective:
        found = await asyncio.to_thread(self.application.get_objective, UUID(objective_id))
        assert found is not None
        return found

    async def stored_events(self) -> int:
        return await asyncio.to_thread(self.application.last_notification_id)

    @contextlib.asynccontextmanager
    async def writes_nothing(self) -> AsyncIterator[None]:
        before = await self.stored_events()
        yield
        assert await self.stored_events() == before


def accepted(response: httpx.Response, status: int, version: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "accepted"
    assert body["version"] == version
    assert response.headers["ETag"] == f'"{version}"'
    return body


def refused(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    assert body["problems"], "a refusal names its problems"
    return body


def problem_fields(body: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {(problem["code"], problem["field"]) for problem in body["problems"]}


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def application(store_settings: Settings) -> Iterator[OkrApplication]:
    application = OkrApplication(store_settings)
    yield application
    application.close()


@pytest.fixture
async def api(store_settings: Settings, application: OkrApplication) -> AsyncIterator[Api]:
    app = create_app(store_settings, application=application)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://okr") as client:
        yield Api(client, application)


# --- creation and the quality rules ---------------------------------------------------------------


async def test_create_answers_201_at_version_1(api: Api) -> None:
    response = await api.send("POST", "/objectives", objective(NPS))
    body = accepted(response, 201, 1)
    assert body["events"] == ["ObjectiveCreated"]
    assert response.headers["Location"] == f"/objectives/{body['objective_id']}"
    stored = await asyncio.to_thread(list, api.application.events.get(UUID(body["objective_id"])))
    assert [(type(e).__name__, e.actor) for e in stored] == [("ObjectiveCreated", ACTOR)]


async def test_create_and_add_answer_the_new_key_results_ids(api: Api) -> None:
    """A client checks in right after creating, without a read to learn the ids."""
    key = {"Idempotency-Key": f"create-{uuid4()}"}
    created = accepted(
        await api.send("POST", "/objectives", objective(SALES, NPS, CHURN), headers=key), 201, 1
    )
    stored = await api.load(created["objective_id"])
    assert created["key_result_ids"] == [str(kr.key_result_id) for kr in stored.key_results]
    assert created["key_result_id"] is None, "several were made: the list names them"
    replayed = await api.send("POST", "/objectives", objective(SALES, NPS, CHURN), headers=key)
    assert replayed.json()["key_result_ids"] == created["key_result_ids"]

    path = f"/objectives/{created['objective_id']}"
    added = accepted(await api.send("POST", f"{path}/key-results", PURCHASE_PATH), 200, 2)
    last = (await api.load(created["objective_id"])).key_results[-1]
    assert added["key_result_id"] == str(last.key_result_id)
    assert added["key_result_ids"] == [added["key_result_id"]]
    accepted(await api.send("POST", f"{path}/activate"), 200, 3)
    check_in = f"{path}/key-results/{created['key_result_ids'][1]}/check-ins"
    accepted(await api.send("POST", check_in, {"value": 70}), 200, 4)


@pytest.mark.parametrize(
    ("key_result", "resolved"),
    [
        (SALES, {"target": 1300, "relative_target": "+30%"}),
        (CHURN, {"target": 7.6}),
        (NPS, {"target": 80}),
        (PURCHASE_PATH, {"target_low": 3, "target_high": 4, "target": None}),
    ],
    ids=["sales", "churn", "nps", "purchase-path"],
)
async def test_the_seeds_good_key_results_are_accepted(
    api: Api, key_result: Mapping[str, Any], resolved: Mapping[str, Any]
) -> None:
    objective_id, _ = await api.create(key_result)
    spec = (await api.load(objective_id)).key_results[0].spec
    assert {name: getattr(spec, name) for name in resolved} == resolved


@pytest.mark.parametrize(
    "key_result", [LEAD_GENERATION, CHURN_OBSTACLES], ids=["lead-generation", "churn-obstacles"]
)
async def test_the_seeds_bad_key_results_are_refused_with_every_problem(
    api: Api, key_result: Mapping[str, Any]
) -> None:
    async with api.writes_nothing():
        response = await api.send("POST", "/objectives", objective(key_result))
    assert problem_fields(refused(response, 422, "quality_rejected")) == UNMEASURABLE


async def test_every_schema_error_of_a_request_is_listed(api: Api) -> None:
    broken = {
        "title": "",
        "owner": "x" * 201,
        "period_start": "someday",
        "key_results": [{"title": "NPS", "kind": "sideways", "weight": 0}],
        "colour": "red",
    }
    async with api.writes_nothing():
        response = await api.send("POST", "/objectives", broken)
    fields = {field for _, field in problem_fields(refused(response, 422, "invalid_command"))}
    assert fields == {
        "body.title",
        "body.owner",
        "body.team",
        "body.period_start",
        "body.period_end",
        "body.key_results.0.kind",
        "body.key_results.0.weight",
        "body.colour",
    }


async def test_bodies_take_json_types_as_they_are_and_every_problem_is_listed(api: Api) -> None:
    """No coercion: a number in a string, a boolean, a moment for a day are mistakes to name."""
    objective_id, [nps_id] = await api.create_active(NPS)
    check_ins = f"/objectives/{objective_id}/key-results/{nps_id}/check-ins"
    lax_key_result = {**NPS, "baseline": "62", "target": True, "weight": "2"}
    lax = objective(lax_key_result, period_start="2026-10-01T00:00:00Z", period_end=20261231)
    async with api.writes_nothing():
        as_text = await api.send("POST", check_ins, {"value": "12"})
        as_bool = await api.send("POST", check_ins, {"value": True, "confidence": "0.5"})
        created = await api.send("POST", "/objectives", lax)
        revised = await api.send(
            "PATCH", f"/objectives/{objective_id}", {"period_end": "2026-09-30T00:00:00"}
        )
        added = await api.send("POST", f"/objectives/{objective_id}/key-results", lax_key_result)
        linted = await api.send("POST", "/lint", lax, role="reader")
    assert problem_fields(refused(as_text, 422, "invalid_command")) == {
        ("float_type", "body.value")
    }
    assert problem_fields(refused(as_bool, 422, "invalid_command")) == {
        ("float_type", "body.value"),
        ("float_type", "body.confidence"),
    }
    key_result_problems = {"baseline", "target", "weight"}
    assert {field for _, field in problem_fields(refused(created, 422, "invalid_command"))} == {
        "body.period_start",
        "body.period_end",
        *(f"body.key_results.0.{name}" for name in key_result_problems),
    }
    assert problem_fields(refused(revised, 422, "invalid_command")) == {
        ("date_parsing", "body.period_end")
    }
    assert {field for _, field in problem_fields(refused(added, 422, "invalid_command"))} == {
        f"body.{name}" for name in key_result_problems
    }
    assert linted.status_code == 422, linted.text
    accepted(await api.send("POST", check_ins, {"value": 12, "confidence": 1}), 200, 3)


async def test_a_body_that_is_not_json_is_400(api: Api) -> None:
    """Unreadable is not invalid: 422 is for JSON that breaks the contract."""
    answers = []
    for content in (b"{not json", b"\xff\xfe{}"):
        async with api.writes_nothing():
            response = await api.client.post(
                "/objectives",
                content=content,
                headers={**auth_headers("editor"), "Content-Type": "application/json"},
            )
        answers.append(refused(response, 400, "bad_request"))
    assert problem_fields(answers[0]) == {("json_invalid", "body")}
    assert "position 1" in answers[0]["problems"][0]["message"]


async def test_every_operation_that_takes_a_body_documents_400_and_413(api: Api) -> None:
    document = (await api.send("GET", "/openapi.json", role="reader")).json()
    with_body = {
        f"{method.upper()} {path}": operation["responses"]
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    assert len(with_body) == 10, sorted(with_body)
    undocumented = {
        name: sorted(set(("400", "413")) - responses.keys())
        for name, responses in with_body.items()
        if not {"400", "413"} <= responses.keys()
    }
    assert undocumented == {}
    refusal = {"$ref": "#/components/schemas/RejectionBody"}
    for responses in with_body.values():
        for status in ("400", "413"):
            assert responses[status]["content"]["application/json"]["schema"] == refusal


async def test_malformed_version_and_reason_are_named(api: Api) -> None:
    objective_id, _ = await api.create(NPS)
    async with api.writes_nothing():
        response = await api.send(
            "POST",
            f"/objectives/{objective_id}/archive",
            headers={"If-Match": '"one"', "X-Reason": "x" * 5001},
            params={"expected_version": -1},
        )
    fields = {field for _, field in problem_fields(refused(response, 422, "invalid_command"))}
    assert fields == {"header.if-match", "header.x-reason", "query.expected_version"}


async def test_a_reason_or_version_given_twice_must_agree(api: Api) -> None:
    objective_id, _ = await api.create(NPS)
    archive = f"/objectives/{objective_id}/archive"
    async with api.writes_nothing():
        reasons = await api.send("POST", archive, headers={"X-Reason": "a"}, params={"reason": "b"})
        versions = await api.send(
            "POST", archive, headers=if_match(1), params={"expected_version": 2}
        )
    assert problem_fields(refused(reasons, 422, "invalid_command")) == {
        ("conflicting_values", "query.reason")
    }
    assert problem_fields(refused(versions, 422, "invalid_command")) == {
        ("conflicting_values", "query.expected_version")
    }


async def test_lint_reports_every_problem_and_writes_nothing(api: Api) -> None:
    async with api.writes_nothing():
        bad = await api.send("POST", "/lint", objective(CHURN_OBSTACLES), role="reader")
        good = await api.send("POST", "/lint", objective(SALES, PURCHASE_PATH), role="reader")
    assert bad.status_code == 200, bad.text
    report = bad.json()
    assert report["ok"] is False
    assert problem_fields(report) == UNMEASURABLE
    assert ("activity_wording", "key_results[0].title") in problem_fields(
        {"problems": report["warnings"]}
    )
    assert good.json() == {"ok": True, "problems": [], "warnings": []}


# --- the life of an objective ---------------------------------------------------------------------


async def test_an_objective_lives_from_draft_to_archive(api: Api) -> None:
    objective_id, [sales_id] = await api.create(SALES)
    path = f"/objectives/{objective_id}"

    added = accepted(await api.send("POST", f"{path}/key-results", NPS), 200, 2)
    nps = f"{path}/key-results/{added['key_result_id']}"
    binding = {"kpi_key": "nps", "aggregation": "latest"}
    accepted(await api.send("PUT", f"{nps}/kpi", binding), 200, 3)
    accepted(await api.send("DELETE", f"{nps}/kpi"), 200, 4)
    accepted(await api.send("POST", f"{path}/activate"), 200, 5)
    check_in = {"value": 1120, "confidence": 0.8, "note": "summer promo"}
    accepted(await api.send("POST", f"{path}/key-results/{sales_id}/check-ins", check_in), 200, 6)

    sales = f"{path}/key-results/{sales_id}"
    higher = {**SALES, "relative_target": "+40%"}
    async with api.writes_nothing():
        refused(await api.send("PUT", sales, higher), 422, "reason_required")
    reason = {"X-Reason": "the launch in Spain doubles the market"}
    accepted(await api.send("PUT", sales, higher, headers=reason), 200, 7)
    in_french = {"X-Reason": "le NPS passe au T4, d%C3%A9cid%C3%A9 en comit%C3%A9"}
    accepted(await api.send("DELETE", nps, headers=in_french), 200, 8)
    retrospective = {"retrospective": "Spain carried the quarter"}
    closing = {"reason": "quarter over"}
    accepted(await api.send("POST", f"{path}/close", retrospective, params=closing), 200, 9)
    accepted(await api.send("POST", f"{path}/archive", headers={"X-Reason": "done"}), 200, 10)

    final = await api.load(objective_id)
    assert final.status == "archived"
    assert final.retrospective == "Spain carried the quarter"
    [kept] = final.key_results
    assert (kept.spec.target, kept.current, kept.binding) == (1400, 1120, None)
    stored = await asyncio.to_thread(list, api.application.events.get(UUID(objective_id)))
    assert [event.reason for event in stored if event.reason] == [
        "the launch in Spain doubles the market",
        "le NPS passe au T4, décidé en comité",
        "quarter over",
        "done",
    ]


async def test_revise_and_align_use_their_bodies(api: Api) -> None:
    parent_id, _ = await api.create(NPS)
    child_id, _ = await api.create(SALES)
    path = f"/objectives/{child_id}"
    accepted(await api.send("PATCH", path, {"title": "Win Iberia"}, headers=if_match(1)), 200, 2)
    accepted(await api.send("POST", f"{path}/align", {"parent_id": parent_id}), 200, 3)
    child = await api.load(child_id)
    assert (child.title, str(child.parent_id)) == ("Win Iberia", parent_id)


# --- concurrency and idempotency ------------------------------------------------------------------


@pytest.mark.parametrize(
    "expect_version",
    [
        lambda v: {"headers": {"If-Match": f'"{v}"'}},
        lambda v: {"headers": {"If-Match": str(v)}},
        lambda v: {"params": {"expected_version": v}},
    ],
    ids=["quoted-if-match", "bare-if-match", "query"],
)
async def test_a_stale_version_is_409_and_writes_nothing(api: Api, expect_version: Any) -> None:
    objective_id, _ = await api.create(NPS)
    path = f"/objectives/{objective_id}"
    accepted(await api.send("PATCH", path, {"title": "First"}, **expect_version(1)), 200, 2)
    async with api.writes_nothing():
        stale = await api.send("PATCH", path, {"title": "Second"}, **expect_version(1))
    refused(stale, 409, "version_conflict")
    assert (await api.load(objective_id)).title == "First"


async def test_racing_writers_on_one_version_lose_no_update(api: Api) -> None:
    objective_id, [nps_id] = await api.create_active(NPS)
    check_ins = f"/objectives/{objective_id}/key-results/{nps_id}/check-ins"
    values = [float(63 + writer) for writer in range(8)]
    before = await api.stored_events()

    responses = await asyncio.gather(
        *(api.send("POST", check_ins, {"value": value}, headers=if_match(2)) for value in values)
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [409] * 7, [r.text for r in responses]
    winner = next(value for value, r in zip(values, responses, strict=True) if r.is_success)
    final = await api.load(objective_id)
    assert (final.version, final.key_results[0].current) == (3, winner)
    assert await api.stored_events() == before + 1


async def test_a_retried_idempotency_key_replays_the_first_answer(api: Api) -> None:
    key = {"Idempotency-Key": f"create-{uuid4()}"}
    first = await api.send("POST", "/objectives", objective(NPS), headers=key)
    accepted(first, 201, 1)
    async with api.writes_nothing():
        again = await api.send("POST", "/objectives", objective(NPS), headers=key)
    assert again.status_code == 201
    assert again.json() == {**first.json(), "replayed": True}
    assert again.headers["ETag"] == first.headers["ETag"]


async def test_an_idempotency_key_reused_for_another_request_is_refused(api: Api) -> None:
    key = {"Idempotency-Key": f"create-{uuid4()}"}
    accepted(await api.send("POST", "/objectives", objective(NPS), headers=key), 201, 1)
    async with api.writes_nothing():
        other = await api.send("POST", "/objectives", objective(SALES), headers=key)
    refused(other, 422, "idempotency_key_reused")


async def test_an_idempotency_key_is_the_principals_own(api: Api) -> None:
    """Another principal's key is none of the caller's business: the same key from someone else
    is a new request, neither refused (which would tell the key exists) nor replayed."""
    key = {"Idempotency-Key": f"create-{uuid4()}"}
    editors = accepted(await api.send("POST", "/objectives", objective(NPS), headers=key), 201, 1)
    services = await api.send("POST", "/objectives", objective(NPS), headers=key, role="service")
    other_request = await api.send(
        "POST", "/objectives", objective(SALES), headers=key, role="admin"
    )
    for response in (services, other_request):
        body = accepted(response, 201, 1)
        assert body["replayed"] is False
        assert body["objective_id"] != editors["objective_id"]
    async with api.writes_nothing():
        again = await api.send("POST", "/objectives", objective(NPS), headers=key)
        reused = await api.send("POST", "/objectives", objective(SALES), headers=key)
    assert again.json() == {**editors, "replayed": True}
    refused(reused, 422, "idempotency_key_reused")


# --- refusals by state ----------------------------------------------------------------------------


async def test_unknown_objective_or_key_result_is_404(api: Api) -> None:
    objective_id, _ = await api.create(NPS)
    async with api.writes_nothing():
        missing_objective = await api.send("PATCH", f"/objectives/{uuid4()}", {"title": "X"})
        missing_key_result = await api.send(
            "DELETE", f"/objectives/{objective_id}/key-results/{uuid4()}", headers={"X-Reason": "x"}
        )
    refused(missing_objective, 404, "objective_not_found")
    refused(missing_key_result, 404, "key_result_not_found")


async def test_a_check_in_on_a_draft_is_409(api: Api) -> None:
    objective_id, [nps_id] = await api.create(NPS)
    async with api.writes_nothing():
        response = await api.send(
            "POST", f"/objectives/{objective_id}/key-results/{nps_id}/check-ins", {"value": 70}
        )
    refused(response, 409, "invalid_transition")


async def test_a_comment_is_taken_on_a_draft_and_an_active_objective_not_on_a_closed_one(
    api: Api,
) -> None:
    objective_id, [nps_id] = await api.create(NPS)
    comments = f"/objectives/{objective_id}/key-results/{nps_id}/comments"
    body = accepted(await api.send("POST", comments, {"text": "Survey in the field"}), 200, 2)
    assert body["events"] == ["KeyResultCommented"]
    accepted(await api.send("POST", f"/objectives/{objective_id}/activate"), 200, 3)
    accepted(await api.send("POST", comments, {"text": "Slips a week"}), 200, 4)
    stored = await asyncio.to_thread(list, api.application.events.get(UUID(objective_id)))
    assert [(e.actor, getattr(e.payload(), "text", None)) for e in stored[-3:]] == [
        (ACTOR, "Survey in the field"),
        (ACTOR, None),
        (ACTOR, "Slips a week"),
    ]
    async with api.writes_nothing():
        unknown = await api.send(
            "POST", f"/objectives/{objective_id}/key-results/{uuid4()}/comments", {"text": "?"}
        )
    refused(unknown, 404, "key_result_not_found")
    accepted(await api.send("POST", f"/objectives/{objective_id}/close?reason=q"), 200, 5)
    async with api.writes_nothing():
        finished = await api.send("POST", comments, {"text": "too late"})
    refused(finished, 409, "invalid_transition")


@pytest.mark.parametrize(
    ("text", "code"),
    [("", "string_too_short"), ("x" * 2001, "string_too_long"), ("a\x00b", "nul_character")],
    ids=["empty", "too long", "nul"],
)
async def test_a_comment_is_1_to_2000_characters_of_text(api: Api, text: str, code: str) -> None:
    objective_id, [nps_id] = await api.create(NPS)
    comments = f"/objectives/{objective_id}/key-results/{nps_id}/comments"
    async with api.writes_nothing():
        response = await api.send("POST", comments, {"text": text})
    assert problem_fields(refused(response, 422, "invalid_command")) == {(code, "body.text")}
    async with api.writes_nothing():
        blank = await api.send("POST", comments, {"text": "   "})
    refused(blank, 422, "rule_violation")
    accepted(await api.send("POST", comments, {"text": "é" * 2000}), 200, 2)


async def test_numbers_and_days_beyond_what_the_stores_hold_are_refused_not_crashed(
    api: Api,
) -> None:
    objective_id, _ = await api.create(NPS)
    huge = str(2**70)
    async with api.writes_nothing():
        far_future = await api.send(
            "POST",
            "/objectives",
            objective(NPS, period_start="9999-01-01", period_end="9999-12-31"),
        )
        huge_query = await api.send(
            "POST", f"/objectives/{objective_id}/activate", params={"expected_version": huge}
        )
        huge_header = await api.send(
            "POST", f"/objectives/{objective_id}/activate", headers={"If-Match": f'"{huge}"'}
        )
        as_of = await api.send("GET", f"/objectives/{objective_id}/as-of", params={"version": huge})
    assert {("body", "period_start"), ("body", "period_end")} <= {
        (problem["field"].split(".")[0], problem["field"].split(".")[-1])
        for problem in refused(far_future, 422, "invalid_command")["problems"]
    }
    for response in (huge_query, huge_header, as_of):
        assert response.status_code == 422, response.text


async def test_a_store_outage_is_a_503_to_retry_not_a_500(api: Api) -> None:
    from eventsourcing.persistence import OperationalError

    def unavailable(*_: Any, **__: Any) -> Any:
        raise OperationalError("database is locked")

    objective_id, _ = await api.create(NPS)
    original = api.application.handle
    api.application.handle = unavailable  # type: ignore[method-assign]
    try:
        response = await api.send("POST", f"/objectives/{objective_id}/activate")
    finally:
        api.application.handle = original  # type: ignore[method-assign]
    assert refused(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "1"
