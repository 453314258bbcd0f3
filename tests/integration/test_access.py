"""Access control, end to end: the role matrix over every kind of endpoint, the actor always the
key's principal, Kafka commands only from allow-listed principals, keys rotated without restart.

The matrix is data: one `Endpoint` row per kind of endpoint, one caller per role plus anonymous
and a bad key. What each role may do is written here from issue 6, not read from the code, so the
test checks the code against the spec rather than against itself. A row whose route the app does
not serve (yet) is skipped, naming it.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from events import topics
from events.commands import CommandResult
from services import web
from services.access.keys import add_key, revoke_keys
from services.access.principals import Role
from services.cli.main import app as cli
from services.commands.application import OkrApplication
from services.commands.consumer import run_command_consumer
from services.http.app import create_app
from services.http.auth import PUBLIC_PATHS, ServedRoute, served_routes, unprotected_routes
from services.kafka.admin import ensure_topics
from services.kafka.asyncapi import asyncapi_document
from services.projector_service import run_projector_job
from services.relay.publisher import run_relay
from services.settings import Settings
from tests import seed
from tests.auth_support import (
    API_KEYS,
    INLINE_API_KEYS,
    KAFKA_PRINCIPAL,
    PRINCIPALS,
    ROLES,
    auth_headers,
    principal_headers,
)
from tests.kafka_support import Message, produce, read_until, running

CAN: dict[str, set[str]] = {
    "admin": {"read", "write", "audit"},
    "editor": {"read", "write"},
    "service": {"read", "write"},
    "reader": {"read"},
    "auditor": {"read", "audit"},
}
"""Issue 6: reader cannot write; auditor reads history and verifies but cannot write."""

ANONYMOUS, BAD_KEY, WRONG_HEADER = "anonymous", "bad key", "basic auth"
CALLERS: dict[str, dict[str, str]] = {
    ANONYMOUS: {},
    BAD_KEY: {"Authorization": "Bearer okr_this-key-was-never-issued"},
    WRONG_HEADER: {"Authorization": f"Basic {API_KEYS['admin']}"},
    **{role: auth_headers(role) for role in ROLES},
}
"""Who calls: no key, a key nobody issued, a good key in the wrong scheme, then each role."""


def new_objective(title: str = "Grow product X") -> dict[str, Any]:
    return {
        "title": title,
        "owner": "alice",
        "team": "sales",
        "period_start": seed.QUARTER_START.isoformat(),
        "period_end": seed.QUARTER_END.isoformat(),
        "key_results": [seed.SALES.as_json()],
    }


@dataclass(frozen=True)
class Endpoint:
    """One kind of endpoint: how to call it, the permission it needs (None: public) and what it
    answers a caller allowed to use it."""

    method: str
    path: str
    permission: str | None
    ok: int = 200
    body: Callable[[], Any] | None = None
    params: dict[str, str] = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        return self.permission == "write"


ENDPOINTS: dict[str, Endpoint] = {
    "health": Endpoint("GET", "/health", None),
    "list objectives": Endpoint("GET", "/objectives", "read"),
    "read objective": Endpoint("GET", "/objectives/{objective_id}", "read"),
    "timeline": Endpoint("GET", "/objectives/{objective_id}/timeline", "read"),
    "history": Endpoint("GET", "/objectives/{objective_id}/history", "read"),
    "as-of": Endpoint("GET", "/objectives/{objective_id}/as-of", "read", params={"version": "1"}),
    "create objective": Endpoint("POST", "/objectives", "write", 201, body=new_objective),
    "check in": Endpoint(
        "POST",
        "/objectives/{objective_id}/key-results/{key_result_id}/check-ins",
        "write",
        body=lambda: {"value": 1100},
    ),
    "lint": Endpoint("POST", "/lint", "read", body=new_objective),
    "kpis": Endpoint("GET", "/kpis", "read"),
    "metrics": Endpoint("GET", "/metrics", "read"),
    "asyncapi": Endpoint("GET", "/asyncapi.json", "read"),
    "openapi": Endpoint("GET", "/openapi.json", "read"),
    "docs": Endpoint("GET", "/docs", "read"),
    "redoc": Endpoint("GET", "/redoc", "read"),
    "audit history": Endpoint("GET", "/audit/objectives/{objective_id}/history", "audit"),
    "audit export": Endpoint("GET", "/audit/export", "audit"),
    "audit verify": Endpoint("GET", "/audit/verify", "audit", params={"topic": "false"}),
}


def expected_status(caller: str, endpoint: Endpoint) -> int:
    if endpoint.permission is None:
        return endpoint.ok
    if caller not in CAN:
        return 401
    return endpoint.ok if endpoint.permission in CAN[caller] else 403


def serves(app: FastAPI, method: str, path: str) -> bool:
    return any(route.path == path and method in route.methods for route in served_routes(app))


# --- a service with one active objective, shared by the matrix --------------------------------


@dataclass
class Served:
    app: FastAPI
    client: httpx.AsyncClient
    objective_id: str
    key_result_id: str

    @property
    def application(self) -> OkrApplication:
        application: OkrApplication = self.app.state.application
        return application

    async def stored_events(self) -> int:
        return await asyncio.to_thread(self.application.last_notification_id)

    async def call(self, endpoint: Endpoint, headers: dict[str, str]) -> httpx.Response:
        path = endpoint.path.format(
            objective_id=self.objective_id, key_result_id=self.key_result_id
        )
        body = endpoint.body() if endpoint.body is not None else None
        return await self.client.request(
            endpoint.method, path, json=body, params=endpoint.params, headers=headers
        )


def isolated_settings(kafka_bootstrap: str, directory: Path) -> Settings:
    """Like the `settings` fixture, for fixtures that outlive one test."""
    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        topic_partitions=3,
        event_store_url=f"sqlite:///{directory / 'events.sqlite'}",
        read_store_url=f"sqlite:///{directory / 'read.sqlite'}",
        api_keys=INLINE_API_KEYS,
        api_keys_file=directory / "api-keys.json",
        kafka_command_principals=KAFKA_PRINCIPAL,
    )


@pytest.fixture(scope="module")
async def served(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    """The HTTP app with relay and projector, as `okr serve`, and an active objective read back
    from the projection, so every read in the matrix has something to find."""
    settings = isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("access"))
    await ensure_topics(settings)
    app = create_app(
        settings, background=[partial(run_relay, settings), partial(run_projector_job, settings)]
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://okr") as client:
            admin = auth_headers("admin")
            created = await client.post("/objectives", json=new_objective(), headers=admin)
            assert created.status_code == 201, created.text
            objective_id = created.json()["objective_id"]
            activated = await client.post(f"/objectives/{objective_id}/activate", headers=admin)
            assert activated.status_code == 200, activated.text
            view = await client.get(
                f"/objectives/{objective_id}",
                params={"min_version": 2, "wait": 30},
                headers=admin,
            )
            assert view.status_code == 200, view.text
            key_result_id = view.json()["key_results"][0]["key_result_id"]
            yield Served(app, client, objective_id, key_result_id)


# --- the role matrix ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ENDPOINTS))
async def test_role_matrix(served: Served, kind: str) -> None:
    endpoint = ENDPOINTS[kind]
    assert serves(served.app, endpoint.method, endpoint.path), "a matrix row for no route"
    wrong: dict[str, str] = {}
    for caller, headers in CALLERS.items():
        before = await served.stored_events()
        response = await served.call(endpoint, headers)
        expected = expected_status(caller, endpoint)
        if response.status_code != expected:
            wrong[caller] = f"{response.status_code} (expected {expected}): {response.text[:200]}"
            continue
        if expected in (401, 403):
            body = response.json()
            code = "unauthenticated" if expected == 401 else "forbidden"
            assert (body["error"], bool(body["message"]), len(body["problems"])) == (code, True, 1)
            if expected == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer ")
            if endpoint.writes:
                assert await served.stored_events() == before, f"{caller} wrote on a refusal"
    assert wrong == {}, f"{endpoint.method} {endpoint.path}"


def writes(route: ServedRoute) -> bool:
    """A command endpoint, or a dashboard page that sends one (or the form that makes one)."""
    if route.path.startswith("/objectives"):
        return route.methods != ("GET",)
    if route.path.startswith("/ui/objectives"):
        return route.methods != ("GET",) or route.path.endswith("/new")
    return False


def test_every_route_but_health_requires_a_key(served: Served) -> None:
    """The dashboard's sign-in form and assets are its only public paths; its pages check a
    session cookie signed for the same keys, and count as the permission they need."""
    assert unprotected_routes(served.app, PUBLIC_PATHS | web.public_paths()) == []
    for route in served_routes(served.app):
        if route.path == "/health" or route.path in web.public_paths():
            assert route.permissions == frozenset()
        elif route.path.startswith(("/audit/", "/ui/audit")):
            assert route.permissions == {"audit"}, route
        elif writes(route):
            assert route.permissions == {"write"}, route
        else:
            assert route.permissions == {"read"}, route


async def test_every_route_but_health_answers_an_anonymous_caller_401(served: Served) -> None:
    """Whatever the route's parameters or body, refusing the caller comes first."""
    any_id = str(uuid.uuid4())
    answers = {}
    for route in served_routes(served.app):
        if route.path in web.public_paths():
            continue  # the dashboard's sign-in form and its assets
        path = re.sub(r"\{[^}]+\}", any_id, route.path)
        for method in route.methods:
            response = await served.client.request(method, path)
            answers[f"{method} {route.path}"] = response.status_code
    assert answers.pop("GET /health") == 200
    assert answers and set(answers.values()) == {401}, answers


async def test_an_anonymous_caller_learns_nothing_from_bodies_or_paths(served: Served) -> None:
    """401 before the body is parsed or the route matched: not 422 for a broken body, not 404
    for a path that does not exist, not 413 for a huge one."""
    broken = await served.client.post(
        "/objectives", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    nowhere = await served.client.get("/no/such/path")
    huge = await served.client.post("/objectives", content=b"x" * (4 * 1024 * 1024))
    bad_key = await served.client.post(
        "/objectives", content=b"{not json", headers={"Authorization": "Bearer okr_nope"}
    )

    assert [r.status_code for r in (broken, nowhere, huge, bad_key)] == [401] * 4
    unknown = await served.client.get("/no/such/path", headers=auth_headers("reader"))
    assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")
    assert all(r.json()["error"] == "unauthenticated" for r in (broken, nowhere, huge, bad_key))


async def test_a_key_may_also_come_as_x_api_key(served: Served) -> None:
    read = await served.client.get("/objectives", headers={"X-API-Key": API_KEYS["reader"]})
    assert read.status_code == 200, read.text
    both = await served.client.get(
        "/objectives", headers={"X-API-Key": API_KEYS["reader"], **auth_headers("admin")}
    )
    assert both.status_code == 401, "two different keys: which one acts is not guessed"


def bearer(role: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {API_KEYS[role]}")


def x_api_key(role: str) -> tuple[str, str]:
    return ("X-API-Key", API_KEYS[role])


@pytest.mark.parametrize(
    "headers",
    [
        [bearer("admin"), bearer("reader")],
        [bearer("reader"), bearer("admin")],
        [bearer("admin"), bearer("admin")],
        [x_api_key("admin"), x_api_key("reader")],
        [x_api_key("reader"), x_api_key("admin")],
    ],
    ids=[
        "bearer-admin-reader",
        "bearer-reader-admin",
        "bearer-twice",
        "x-api-key",
        "x-api-reverse",
    ],
)
async def test_a_credential_header_sent_twice_is_refused_before_anything_else(
    served: Served, headers: list[tuple[str, str]]
) -> None:
    """Whichever copy a reader took, another reader may take the other: never guess, refuse."""
    before = await served.stored_events()
    write = await served.client.post("/objectives", json=new_objective(), headers=headers)
    broken = await served.client.post(
        "/objectives",
        content=b"{not json",
        headers=[*headers, ("Content-Type", "application/json")],
    )
    nowhere = await served.client.get("/no/such/path", headers=headers)
    assert await served.stored_events() == before
    name = headers[0][0].lower()
    for response in (write, broken, nowhere):
        assert response.status_code == 400, response.text
        assert response.json() == {
            "error": "duplicate_credentials",
            "message": f"the {headers[0][0]} header was sent 2 times: send one key, once",
            "problems": [
                {
                    "code": "duplicate_credentials",
                    "field": f"header.{name}",
                    "message": f"the {headers[0][0]} header was sent 2 times: send one key, once",
                }
            ],
        }


# --- the actor is the key's principal -------------------------------------------------------------


async def test_nothing_in_a_request_can_name_another_actor(served: Served) -> None:
    before = await served.stored_events()
    in_body = await served.client.post(
        "/objectives",
        json={**new_objective(), "actor": "mallory"},
        headers=auth_headers("editor"),
    )
    assert in_body.status_code == 422, in_body.text
    assert {p["field"] for p in in_body.json()["problems"]} == {"body.actor"}
    assert await served.stored_events() == before

    in_header = await served.client.post(
        "/objectives",
        json=new_objective(),
        headers={"X-Actor": "mallory", **auth_headers("service")},
    )
    assert in_header.status_code == 201, in_header.text
    objective_id = uuid.UUID(in_header.json()["objective_id"])
    stored = await asyncio.to_thread(list, served.application.events.get(objective_id))
    assert [event.actor for event in stored] == [PRINCIPALS["service"]]


# --- keys rotated while the service runs ----------------------------------------------------------


async def test_keys_added_and_revoked_in_the_file_apply_without_a_restart(
    settings: Settings,
) -> None:
    keys_file = settings.api_keys_file
    app = create_app(settings.model_copy(update={"api_keys": ""}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://okr") as client:

        async def status(key: str) -> int:
            response = await client.get("/asyncapi.json", headers={"X-API-Key": key})
            return response.status_code

        added = CliRunner().invoke(
            cli,
            ["keys", "add", "--principal", "rota", "--role", "reader", "--file", str(keys_file)],
        )
        assert added.exit_code == 0, added.output
        first = added.stdout.strip()
        assert first.startswith("okr_") and first not in keys_file.read_text()
        assert keys_file.stat().st_mode & 0o777 == 0o600
        assert await status(first) == 200

        second = add_key(keys_file, "rota", Role.READER).key
        assert (await status(first), await status(second)) == (200, 200), "overlap while rotating"
        assert revoke_keys(keys_file, "rota") == 2
        assert (await status(first), await status(second)) == (401, 401)

        third = add_key(keys_file, "rota", Role.READER).key
        assert await status(third) == 200
        keys_file.write_text("[{half-saved", encoding="utf-8")
        assert await status(third) == 200, "a broken file keeps the last good keys"
        keys_file.unlink()
        assert await status(third) == 401, "deleting the file revokes its keys"


# --- Kafka commands carry their sender ----------------------------------------------------------


def kafka_command(body: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    return {"command_id": str(uuid.uuid4()), "body": body, **envelope}


async def test_kafka_commands_only_from_allow_listed_principals_and_as_themselves(
    settings: Settings,
) -> None:
    create = {"type": "create_objective", **new_objective()}
    allowed = kafka_command({**create, "objective_id": str(uuid.uuid4())})
    as_itself = kafka_command({**create, "objective_id": str(uuid.uuid4())}, actor=KAFKA_PRINCIPAL)
    refused: dict[str, tuple[dict[str, Any], list[tuple[str, bytes]]]] = {
        "unknown_principal": (kafka_command(create), principal_headers("billing-service")),
        "no header": (kafka_command(create), []),
        "impersonation": (kafka_command(create, actor="alice@example.com"), principal_headers()),
    }
    messages: list[Message] = [
        (None, orjson.dumps(message), headers) for message, headers in refused.values()
    ]
    messages += [(None, orjson.dumps(m), principal_headers()) for m in (allowed, as_itself)]
    await ensure_topics(settings)
    application = await asyncio.to_thread(OkrApplication, settings)
    try:
        async with running(run_command_consumer(settings, application)) as task:
            await produce(settings, topics.COMMANDS, messages)
            records = await read_until(
                settings, topics.COMMAND_RESULTS, lambda found: len(found) >= 5, watch=task
            )
        stored = await asyncio.to_thread(application.last_notification_id)
        actors = {
            event.actor
            for message in (allowed, as_itself)
            for event in await asyncio.to_thread(
                list, application.events.get(uuid.UUID(message["body"]["objective_id"]))
            )
        }
    finally:
        await asyncio.to_thread(application.close)

    results = {
        result.command_id: result
        for result in (CommandResult.model_validate_json(record.value) for record in records)
    }
    for case, (message, _) in refused.items():
        result = results[message["command_id"]]
        code = "impersonation" if case == "impersonation" else "unknown_principal"
        assert (result.status, result.error) == ("rejected", code), case
        assert result.problems and result.problems[0].message, "the reason is given"
    assert (
        "billing-service"
        in results[refused["unknown_principal"][0]["command_id"]].problems[0].message
    )
    assert results[allowed["command_id"]].status == "accepted"
    assert results[as_itself["command_id"]].status == "accepted"
    assert stored == 2, "nothing written for a refused command"
    assert actors == {KAFKA_PRINCIPAL}


async def test_no_principal_may_send_commands_unless_configured(settings: Settings) -> None:
    closed = settings.model_copy(update={"kafka_command_principals": ""})
    message = kafka_command({"type": "create_objective", **new_objective()})
    await ensure_topics(closed)
    application = await asyncio.to_thread(OkrApplication, closed)
    try:
        async with running(run_command_consumer(closed, application)) as task:
            await produce(
                closed, topics.COMMANDS, [(None, orjson.dumps(message), principal_headers())]
            )
            [record] = await read_until(
                closed, topics.COMMAND_RESULTS, lambda found: len(found) >= 1, watch=task
            )
        assert await asyncio.to_thread(application.last_notification_id) == 0
    finally:
        await asyncio.to_thread(application.close)
    result = CommandResult.model_validate_json(record.value)
    assert (result.status, result.error) == ("rejected", "unknown_principal")


def test_the_asyncapi_contract_tells_senders_about_the_principal_header() -> None:
    document = asyncapi_document()
    message = document["components"]["messages"]["commands:SubscribeMessage"]
    assert message["headers"]["required"] == ["principal"]
    actor = document["components"]["schemas"]["Command"]["properties"]["actor"]
    assert "principal" in actor["description"]
