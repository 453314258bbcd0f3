"""Schemathesis over every operation of the OpenAPI document: no input makes the service answer 5xx.

In-process (ASGI) against the service as `okr serve` composes it (`services.bootstrap`): SQLite
stores, the real Kafka broker, and the command consumer, relay, projector and scorer running. Before
fuzzing, a few objectives, key results, a KPI binding and KPI events are stored and projected;
generated path parameters are sometimes swapped for their ids (random UUIDs alone would only ever
reach "not found") and generated text sometimes sent inside an otherwise valid body (random key
results almost never pass the quality rules), so fuzzed data reaches the domain, the stores and the
projector. Checks: no 5xx, answers as documented, JSON only; then the projection must catch up with
everything stored. A second pass without a key expects 401 everywhere but `/health`.

Schemathesis' engine runs the phases (examples, coverage, fuzzing) as its command line does; its
pytest plugin (`from_fixture`) does not run under pytest 9.2. Generation is derandomized with a
fixed seed, so a run in CI fuzzes exactly what it fuzzed here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import CONTENT_TYPE_LATEST
from schemathesis import Case
from schemathesis.core.result import Ok
from schemathesis.engine import Status
from schemathesis.engine import events as engine_events
from schemathesis.python import asgi
from schemathesis.specs.openapi.schemas import OpenApiSchema

from events import commands as wire
from projections.views import ReadStore
from services.bootstrap import service_jobs
from services.commands.application import OkrApplication
from services.http.app import create_app
from services.kafka.admin import ensure_topics
from services.projector_service import open_read_store
from services.scoring.scorer import kpi_reader
from services.settings import Settings
from tests import kpi_support, seed
from tests.auth_support import auth_headers

pytestmark = pytest.mark.filterwarnings(
    # schemathesis' own strategies use `random`; nothing of ours does
    "ignore::hypothesis.errors.HypothesisDeprecationWarning"
)

ADMIN = auth_headers("admin")
SEED = 20260701
MAX_EXAMPLES = 50
"""Per operation, for the fuzzing phase; the examples and coverage phases come on top."""
DEADLINE_S = 90.0
ACTOR = "fuzz@example.com"
KPI_KEY = "fuzz.sales.units"


CHECKS = ("not_a_server_error", "response_schema_conformance", "json_only")


def fuzz_config(headers: dict[str, str]) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": headers,
            "generation": {
                "deterministic": True,
                "max-examples": MAX_EXAMPLES,
                "database": "none",  # nothing replayed from earlier runs: only the seed decides
                "with-security-parameters": False,  # the key comes from `headers`, not generated
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            # Examples, coverage (boundary and invalid values of every parameter) and fuzzing;
            # the stateful phase is left out: it follows links the document does not declare.
            "phases": {"stateful": {"enabled": False}},
        }
    )


CONFIG = fuzz_config(ADMIN)
ANONYMOUS_CONFIG = fuzz_config({})
ANONYMOUS_EXAMPLES = 3
"""Without a key, a few requests per operation are enough to see each one refuse."""

MAX_WAIT_S = 30.0


@dataclass(frozen=True)
class Target:
    objective_id: UUID
    key_result_ids: tuple[UUID, ...]
    version: int


@dataclass(frozen=True)
class Seeded:
    """Objectives that exist, for generated path parameters to hit. Closing, archiving and
    removing key results get their own, so they cannot end the fuzzing of the others early."""

    active: Target
    """Active, every kind of key result, one checked in, one bound to `KPI_KEY`."""
    draft: Target
    """A draft aligned to `active`."""
    disposable: Target
    """Active, for the operations that end an objective or remove its key results."""

    @property
    def all(self) -> tuple[Target, ...]:
        return (self.active, self.draft, self.disposable)


def handle(application: OkrApplication, objective_id: UUID | None, body: wire.CommandBody) -> int:
    result = application.handle(
        wire.Command(
            command_id=str(uuid.uuid4()), objective_id=objective_id, actor=ACTOR, body=body
        )
    )
    assert result.status == "accepted", result
    assert result.version is not None
    return result.version


def create(
    application: OkrApplication,
    key_results: list[wire.KeyResultDefinition],
    *,
    activate: bool = True,
    parent_id: UUID | None = None,
) -> Target:
    objective_id = uuid.uuid4()
    version = handle(
        application,
        None,
        wire.CreateObjective(
            objective_id=objective_id,
            title="Grow product X",
            owner=ACTOR,
            team="sales",
            period_start=seed.QUARTER_START,
            period_end=seed.QUARTER_END,
            parent_id=parent_id,
            key_results=key_results,
        ),
    )
    if activate:
        version = handle(application, objective_id, wire.ActivateObjective())
    created = application.get_objective(objective_id)
    assert created is not None
    return Target(objective_id, tuple(kr.key_result_id for kr in created.key_results), version)


def seed_objectives(application: OkrApplication) -> Seeded:
    active = create(
        application,
        [
            seed.SALES.as_definition(),
            seed.CHURN.as_definition(),
            seed.PURCHASE_PATH.as_definition(),
            seed.NPS.as_definition(),
        ],
    )
    sales, churn = active.key_result_ids[:2]
    handle(application, active.objective_id, wire.CheckIn(key_result_id=sales, value=1100))
    bound = wire.BindKpi(key_result_id=churn, kpi_key=KPI_KEY, aggregation="latest")
    active = replace(active, version=handle(application, active.objective_id, bound))
    draft = create(
        application, [seed.NPS.as_definition()], activate=False, parent_id=active.objective_id
    )
    disposable = create(application, [seed.NPS.as_definition(), seed.SALES.as_definition()])
    return Seeded(active, draft, disposable)


async def poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def wait_until_served(
    settings: Settings, application: OkrApplication, store: ReadStore, seeded: Seeded
) -> None:
    """Projected objectives, a bound KPI with observations: the reads have something to read."""
    for target in seeded.all:
        await poll(
            lambda target=target: (
                (store.objective_version(target.objective_id) or 0) >= target.version
            ),
            f"objective {target.objective_id} projected at version {target.version}",
        )
    await kpi_support.produce(
        settings,
        [
            kpi_support.as_message(kpi_support.kpi_event(KPI_KEY, value, observed_at=at))
            for value, at in ((7.5, kpi_support.at(0)), (7.1, kpi_support.at(60)))
        ],
    )
    reader = kpi_reader(application)
    await poll(lambda: reader.stats([KPI_KEY])[KPI_KEY].accepted == 2, "KPI events scored")


def ends_or_removes(operation: schemathesis.APIOperation) -> bool:
    method, path = operation.method.upper(), operation.path
    return path.endswith(("/close", "/archive")) or (
        method == "DELETE" and path.endswith("{key_result_id}")
    )


def with_seeded_ids(seeded: Seeded) -> Callable[..., st.SearchStrategy[dict[str, Any] | None]]:
    """A `flatmap_path_parameters` hook: the generated parameters, or the same with seeded ids."""

    def flatmap_path_parameters(
        context: schemathesis.HookContext, path_parameters: dict[str, Any] | None
    ) -> st.SearchStrategy[dict[str, Any] | None]:
        if not path_parameters:
            return st.just(path_parameters)
        assert context.operation is not None
        if ends_or_removes(context.operation):
            targets: tuple[Target, ...] = (seeded.disposable,)
        else:
            targets = (seeded.active, seeded.draft)
        variants = [path_parameters]
        for target in targets:
            if "key_result_id" in path_parameters:
                variants += [
                    {
                        **path_parameters,
                        "objective_id": str(target.objective_id),
                        "key_result_id": str(kr),
                    }
                    for kr in target.key_result_ids
                ]
            elif "objective_id" in path_parameters:
                variants.append({**path_parameters, "objective_id": str(target.objective_id)})
        if "kpi_key" in path_parameters:
            variants.append({**path_parameters, "kpi_key": KPI_KEY})
        return st.sampled_from(variants)

    return flatmap_path_parameters


VALID_OBJECTIVE: dict[str, Any] = {
    "title": "Grow product X",
    "owner": ACTOR,
    "team": "sales",
    "period_start": seed.QUARTER_START.isoformat(),
    "period_end": seed.QUARTER_END.isoformat(),
    "key_results": [seed.NPS.as_json()],
}
VALID_KEY_RESULT: dict[str, Any] = seed.NPS.as_json()
BODY_SKELETONS = {
    ("POST", "/objectives"): VALID_OBJECTIVE,
    ("POST", "/lint"): VALID_OBJECTIVE,
    ("POST", "/objectives/{objective_id}/key-results"): VALID_KEY_RESULT,
    ("PUT", "/objectives/{objective_id}/key-results/{key_result_id}"): VALID_KEY_RESULT,
}
"""Bodies random data almost never makes valid (the quality rules refuse unmeasurable key
results): `flatmap_body` also sends them valid, with the generated values of the fields the
generated body has, so generated text and numbers reach the code behind the validation."""


def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    assert context.operation is not None
    skeleton = BODY_SKELETONS.get((context.operation.method.upper(), context.operation.path))
    if skeleton is None or not isinstance(body, dict):
        return st.just(body)
    return st.sampled_from([body, {**skeleton, **body}, skeleton | _texts_of(body)])


FREE_TEXT = frozenset({"title", "description", "owner", "team", "metric"})


def _texts_of(body: dict[str, Any]) -> dict[str, Any]:
    """The generated free text only: what the quality rules do not judge."""
    return {key: value for key, value in body.items() if key in FREE_TEXT}


def map_query(
    _context: schemathesis.HookContext, query: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A read asking for a version the event store has waits for the projector as long as the
    API allows, so a fuzzed `wait=0` racing the projector cannot flake the run with a 503."""
    if (
        query
        and query.get("min_version") is not None
        and isinstance(query.get("wait"), int | float)
    ):
        return {**query, "wait": MAX_WAIT_S}
    return query


NOT_JSON = {
    "/metrics": {CONTENT_TYPE_LATEST},
    "/audit/export": {"application/x-ndjson", "text/csv; charset=utf-8"},
    "/audit/checkpoints/latest": {"text/plain; charset=utf-8"},
    "/audit/checkpoints/{tree_size}": {"text/plain; charset=utf-8"},
}
"""The answers that are not JSON, none of them a type a browser renders as a page: Prometheus
text (label values from settings and Kafka), the audit export's downloads, and signed checkpoints
(C2SP signed notes: text whose every line the service wrote)."""


@schemathesis.check
def json_only(_ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Case) -> None:
    """Whatever text a request carried, the answer is JSON, never a page a browser renders."""
    content_type = response.headers.get("content-type", ["(none)"])[0]
    allowed = NOT_JSON.get(case.operation.path, set()) | {"application/json"}
    assert content_type in allowed, f"{case.operation.label} answered {content_type}"


@pytest.fixture
def served(settings: Settings) -> Iterator[FastAPI]:
    """A running service with seeded, projected data; its lifespan runs in schemathesis' event
    loop thread (started by the first schema load, where every fuzzed request then runs)."""
    asyncio.run(ensure_topics(settings))
    application = OkrApplication(settings)
    store = open_read_store(settings)
    try:
        seeded = seed_objectives(application)
        app = create_app(
            settings, application=application, background=service_jobs(settings), read_store=store
        )
        app.state.seeded = seeded
        try:
            schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG, headers=ADMIN)
            asyncio.run(wait_until_served(settings, application, store, seeded))
            yield app
        finally:
            asgi.shutdown_lifespans()
    finally:
        store.close()
        application.close()


def aimed(app: FastAPI) -> OpenApiSchema:
    """The app's schema, with the hooks that aim generated requests at the seeded data."""
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG, headers=ADMIN)
    loaded.hook(with_seeded_ids(app.state.seeded))
    loaded.hook(map_query)
    loaded.hook(flatmap_body)
    return loaded


@dataclass
class FuzzRun:
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    """(operation, status) -> how many requests got that answer."""
    failures: list[str] = field(default_factory=list)
    """Each failed check with a curl command that replays it."""


def fuzz(schema: OpenApiSchema) -> FuzzRun:
    """Every phase over every operation, as the schemathesis command line runs them."""
    run = FuzzRun()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, engine_events.ScenarioFinished):
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    run.answers[(event.recorder.label, interaction.response.status_code)] += 1
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        info = check.failure_info
                        run.failures.append(
                            f"{event.label}: {info.failure.title}\n{info.code_sample}"
                        )
        elif isinstance(event, engine_events.NonFatalError | engine_events.FatalError):
            run.failures.append(f"{getattr(event, 'label', 'engine')}: {event.info.message}")
    return run


def projected_everything(application: OkrApplication, store: ReadStore) -> bool:
    """Every objective in the event store is in the projection at its stored version: nothing the
    fuzzer stored stopped the relay or the projector (a failure there answers no request)."""
    stored: dict[UUID, int] = {}
    for notifications in application.notification_pages():
        for notification in notifications:
            stored[notification.originator_id] = notification.originator_version
    return all((store.objective_version(i) or 0) >= v for i, v in stored.items())


@pytest.mark.slow
def test_no_input_makes_any_operation_answer_a_server_error(served: FastAPI) -> None:
    schema = aimed(served)
    labels = {result.ok().label for result in schema.get_all_operations() if isinstance(result, Ok)}
    assert len(labels) >= 20
    run = fuzz(schema)
    assert not run.failures, "\n\n".join(sorted(set(run.failures)))
    assert {label for label, _ in run.answers} == labels, "every operation was fuzzed"
    assert sum(run.answers.values()) >= len(labels) * MAX_EXAMPLES
    writes = {
        label
        for (label, status) in run.answers
        if 200 <= status < 300 and "{objective_id}" in label and not label.startswith("GET")
    }
    assert len(writes) >= 3, f"writes on seeded objectives reached the domain: {writes}"
    application, store = served.state.application, served.state.read_store
    asyncio.run(poll(lambda: projected_everything(application, store), "the projection"))


@pytest.mark.slow
def test_without_a_key_every_operation_but_health_answers_401(served: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", served, config=ANONYMOUS_CONFIG, headers=ADMIN
    )
    for result in schema.get_all_operations():
        assert isinstance(result, Ok)
        operation = result.ok()

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=ANONYMOUS_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def anonymous(case: Case) -> None:
            response = case.call()
            expected = 200 if case.operation.path == "/health" else 401
            assert response.status_code == expected, (case.operation.label, response.text)

        anonymous()


def test_the_fuzz_run_is_seeded_and_derandomized() -> None:
    for config in (CONFIG, ANONYMOUS_CONFIG):
        assert config.seed == SEED
        assert config.projects.get_default().get_hypothesis_settings().derandomize
