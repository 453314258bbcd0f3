"""Hostile input over HTTP: oversized bodies, markup, SQL-looking and odd Unicode text, NUL.

Text is data: whatever a client sends in a text field comes back from every read exactly as sent
(same code points), as JSON, and nothing of it is ever executed, on both stores. The one character
refused is NUL (PostgreSQL cannot store it), with a 422 that says so, on both stores alike.
Oversized bodies are refused with 413 before they are read.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import psycopg
import pytest

from events.commands import CreateObjective
from events.kpi import KpiEvent
from services.commands.application import OkrApplication
from services.http.app import create_app
from services.kafka.admin import ensure_topics
from services.projector_service import run_projector_job
from services.relay.publisher import run_relay
from services.settings import Settings
from services.stores import is_postgres, postgres_location, sqlite_path
from tests import seed
from tests.auth_support import PRINCIPALS, auth_headers

ADMIN = auth_headers("admin")
MIB = 1024 * 1024

HOSTILE: dict[str, str] = {
    "markup": "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "sql_events": "'; DROP TABLE stored_events; --",
    "sql_objectives": "Robert'); DROP TABLE objectives;--",
    "rtl": "\u202egpj.exe\u202c \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u200f!",
    "unicode": "\U0001f3af e\u0301 \u200b\ufeff \U0001d518\U0001d52b \u2028\u2029 "
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "controls": "tab\t nl\n cr\r bell\x07 esc\x1b[31m del\x7f nel\x85",
    "escapes": '\\u0000 \\x00 %00 &lt;b&gt; &amp; ${7*7} {{7*7}} %s %n "quoted" `tick`',
}
"""Named so that a failure says which string came back changed."""

READ_TABLES = ("objectives", "key_results", "score_timeline", "audit")


def events_table(url: str) -> str:
    """eventsourcing names the PostgreSQL table after the application, SQLite's is fixed."""
    return f"{OkrApplication.name.lower()}_events" if is_postgres(url) else "stored_events"


# --- the service ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP app with the relay and the projector running, as `okr serve` has them."""
    await ensure_topics(settings)
    app = create_app(
        settings,
        background=[partial(run_relay, settings), partial(run_projector_job, settings)],
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://okr", headers=ADMIN
        ) as client:
            yield client


@pytest.fixture
async def api(store_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(store_settings) as client:
        yield client


def as_json(response: httpx.Response, status: int) -> Any:
    """The body of a JSON answer; never HTML, whatever text it carries."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    assert response.headers["x-content-type-options"] == "nosniff"
    return response.json()


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a JSON document, at any depth."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def objective_body(text: str, **fields: Any) -> dict[str, Any]:
    return {
        "title": text[:200],
        "description": text,
        "owner": text[:200],
        "team": text[:200],
        "period_start": seed.QUARTER_START.isoformat(),
        "period_end": seed.QUARTER_END.isoformat(),
        "key_results": [
            seed.NPS.as_json(title=text[:200], metric=text[:100]),
            seed.SALES.as_json(),
        ],
        **fields,
    }


async def write(
    api: httpx.AsyncClient, method: str, path: str, status: int = 200, **kwargs: Any
) -> dict[str, Any]:
    body: dict[str, Any] = as_json(await api.request(method, path, **kwargs), status)
    assert body["status"] == "accepted", body
    return body


async def read(api: httpx.AsyncClient, path: str, **params: Any) -> Any:
    return as_json(await api.get(path, params=params), 200)


# --- verbatim text --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    text: str
    objective_id: str
    key_result_id: str
    version: int


async def write_everywhere(api: httpx.AsyncClient, text: str) -> Written:
    """`text` in every text field a client can write: objective, key result, check-in note,
    decision reasons (as header and as query), retrospective, idempotency key when it fits."""
    headers = {"Idempotency-Key": text} if text.isascii() and text.isprintable() else {}
    created = await write(
        api, "POST", "/objectives", 201, json=objective_body(text), headers=headers
    )
    objective_id = created["objective_id"]
    view = await read(api, f"/objectives/{objective_id}", min_version=1)
    key_result_id = view["key_results"][0]["key_result_id"]
    kr_path = f"/objectives/{objective_id}/key-results/{key_result_id}"
    await write(api, "POST", f"/objectives/{objective_id}/activate")
    await write(api, "POST", f"{kr_path}/check-ins", json={"value": 70, "note": text})
    await write(
        api,
        "PUT",
        kr_path,
        json=seed.NPS.as_json(title=text[:200], metric=text[:100], target=90.0),
        headers={"X-Reason": quote(text, safe="")},  # headers are Latin-1: percent-encoded
    )
    closed = await write(
        api,
        "POST",
        f"/objectives/{objective_id}/close",
        json={"retrospective": text},
        params={"reason": text},
    )
    return Written(text, objective_id, key_result_id, closed["version"])


def assert_objective_verbatim(objective: Mapping[str, Any], text: str) -> None:
    for field in ("title", "owner", "team"):
        assert objective[field] == text[:200], field
    assert objective["description"] == text
    assert objective["retrospective"] == text


def assert_key_result_verbatim(key_result: Mapping[str, Any], text: str) -> None:
    assert key_result["title"] == text[:200]
    assert key_result["metric"] == text[:100]


async def assert_read_back_verbatim(api: httpx.AsyncClient, written: Written) -> None:
    text, objective_id = written.text, written.objective_id
    view = await read(api, f"/objectives/{objective_id}", min_version=written.version)
    assert_objective_verbatim(view["objective"], text)
    assert_key_result_verbatim(view["key_results"][0], text)

    listed = await read(api, "/objectives", owner=text[:200], team=text[:200])
    assert [item["objective_id"] for item in listed["items"]] == [objective_id]
    assert_objective_verbatim(listed["items"][0], text)

    timeline = await read(api, f"/objectives/{objective_id}/timeline")
    check_in = next(row for row in timeline if row["cause"] == "check_in")
    assert check_in["detail"]["note"] == text

    history = await read(api, f"/objectives/{objective_id}/history")
    reasons = [entry["reason"] for entry in history if entry["reason"] is not None]
    assert reasons == [text, text], "the target change and the closing, each with its reason"
    assert all(entry["actor"] == PRINCIPALS["admin"] for entry in history)
    created = history[0]
    if text.isascii() and text.isprintable():
        assert created["command_id"] == text
    assert text[:200] in strings_in(created["changes"]), "the creation lists what it set"

    as_of = await read(api, f"/objectives/{objective_id}/as-of", version=written.version)
    assert_objective_verbatim(as_of, text)
    assert_key_result_verbatim(as_of["key_results"][0], text)


def table_counts(settings: Settings) -> dict[str, int]:
    """Rows per table of both stores, read straight from the databases."""
    counts: dict[str, int] = {}
    for url, tables in (
        (settings.event_store_url, {"stored_events": events_table(settings.event_store_url)}),
        (settings.read_store_url, {table: table for table in READ_TABLES}),
    ):
        for name, table in tables.items():
            statement = f"SELECT COUNT(*) FROM {table}"  # constant names, no input
            if is_postgres(url):
                with psycopg.connect(postgres_location(url).conninfo) as connection:
                    row = connection.execute(statement).fetchone()
            else:
                with contextlib.closing(sqlite3.connect(sqlite_path(url))) as connection:
                    row = connection.execute(statement).fetchone()
            assert row is not None
            counts[name] = int(row[0])
    return counts


async def test_markup_and_sql_come_back_verbatim_from_every_read_and_execute_nothing(
    api: httpx.AsyncClient, store_settings: Settings
) -> None:
    written = [await write_everywhere(api, text) for text in HOSTILE.values()]
    for each in written:
        await assert_read_back_verbatim(api, each)
    counts = table_counts(store_settings)
    assert counts["objectives"] == len(HOSTILE)
    assert counts["key_results"] == 2 * len(HOSTILE)
    assert counts["stored_events"] >= 5 * len(HOSTILE)


async def test_text_at_the_length_limits_comes_back_whole(api: httpx.AsyncClient) -> None:
    """Limits count characters, not bytes: astral characters (4 UTF-8 bytes) fill them too."""
    short, long = "\U0001f3af" * 200, ("<\u202e'\U0001f3af;" * 1000)[:5000]
    assert len(long) == 5000
    body = objective_body(long, title=short, owner=short, team=short)
    body["key_results"][0] |= {"title": short, "metric": "\U0001f3af" * 100}
    created = await write(api, "POST", "/objectives", 201, json=body)
    objective_id = created["objective_id"]
    view = await read(api, f"/objectives/{objective_id}", min_version=1)
    assert view["objective"]["description"] == long
    assert {view["objective"][field] for field in ("title", "owner", "team")} == {short}
    assert view["key_results"][0]["title"] == short
    assert view["key_results"][0]["metric"] == "\U0001f3af" * 100
    as_of = await read(api, f"/objectives/{objective_id}/as-of", version=1)
    assert as_of["description"] == long and as_of["title"] == short

    too_long = objective_body(long + "x", title=short + "x")
    refused = as_json(await api.post("/objectives", json=too_long), 422)
    assert {(p["code"], p["field"]) for p in refused["problems"]} == {
        ("string_too_long", "body.title"),
        ("string_too_long", "body.description"),
    }


# --- NUL: refused, the same way on both stores ----------------------------------------------------


def nul_problem(body: Mapping[str, Any], field: str, error: str = "invalid_command") -> None:
    assert body["error"] == error
    assert {"code": "nul_character", "field": field} in [
        {"code": p["code"], "field": p["field"]} for p in body["problems"]
    ], body
    assert "NUL" in body["message"] or any("NUL" in p["message"] for p in body["problems"])


async def test_nul_in_text_is_refused_with_422_on_both_stores(
    api: httpx.AsyncClient, store_settings: Settings
) -> None:
    before = table_counts(store_settings)
    refused = as_json(await api.post("/objectives", json=objective_body("a\x00b")), 422)
    for field in ("body.title", "body.description", "body.owner", "body.team"):
        nul_problem(refused, field)
    nul_problem(refused, "body.key_results.0.title")
    nul_problem(refused, "body.key_results.0.metric")

    created = await write(api, "POST", "/objectives", 201, json=objective_body("fine"))
    objective_id = created["objective_id"]
    view = await read(api, f"/objectives/{objective_id}", min_version=1)
    kr_path = f"/objectives/{objective_id}/key-results/{view['key_results'][0]['key_result_id']}"
    note = await api.post(f"{kr_path}/check-ins", json={"value": 1, "note": "\x00"})
    nul_problem(as_json(note, 422), "body.note")
    for reason in ({"headers": {"X-Reason": "why%00not"}}, {"params": {"reason": "why\x00"}}):
        archived = await api.post(f"/objectives/{objective_id}/archive", **reason)
        nul_problem(as_json(archived, 422), "reason")
    keyed = await api.post(
        "/objectives", json=objective_body("fine"), headers={"Idempotency-Key": "k\x00"}
    )
    nul_problem(as_json(keyed, 422), "command_id")
    after = table_counts(store_settings)
    assert after["stored_events"] == before["stored_events"] + 1, "only the one valid create"


async def test_nul_in_read_filters_and_keys_is_refused_with_422_on_both_stores(
    api: httpx.AsyncClient,
) -> None:
    listed = await api.get("/objectives", params={"owner": "a\x00", "team": "\x00"})
    body = as_json(listed, 422)
    nul_problem(body, "query.owner", "invalid_query")
    nul_problem(body, "query.team", "invalid_query")
    for path in ("/kpis/a%00b", "/kpis/a%00b/series", "/kpis/a%00b/key-results"):
        refused = as_json(await api.get(path), 422)
        assert refused["problems"][0]["field"] == "path.kpi_key", path


def test_kpi_events_with_nul_are_refused_by_the_contract() -> None:
    """The scorer dead-letters what the contract refuses; NUL would otherwise reach its tables."""
    event = {
        "event_id": "e-1",
        "kpi_key": "nps",
        "value": 1,
        "observed_at": "2026-08-01T00:00:00Z",
        "source": "survey",
    }
    KpiEvent.model_validate_json(orjson.dumps(event))
    for field, value in (
        ("event_id", "e\x00"),
        ("source", "s\x00"),
        ("unit", "\x00"),
        ("dimensions", {"region": "\x00"}),
        ("dimensions", {"\x00": "emea"}),
    ):
        with pytest.raises(ValueError, match="NUL"):
            KpiEvent.model_validate_json(orjson.dumps({**event, field: value}))


def test_the_contract_documents_the_nul_rule_for_clients() -> None:
    title = CreateObjective.model_json_schema()["properties"]["title"]
    assert title["pattern"] == r"^[^\x00]*$"


# --- oversized bodies: 413, unread ----------------------------------------------------------------


class CountingBody:
    """A request body sent in chunks without Content-Length (chunked), counting what was read."""

    def __init__(self, chunk: bytes, chunks: int) -> None:
        self.chunk, self.chunks, self.read = chunk, chunks, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.read += 1
            yield self.chunk


def padded(body: Mapping[str, Any], size: int) -> bytes:
    """Valid JSON of exactly `size` bytes: trailing whitespace is allowed in JSON."""
    encoded = orjson.dumps(body)
    assert len(encoded) <= size
    return encoded + b" " * (size - len(encoded))


def assert_too_large(response: httpx.Response, limit: int) -> None:
    body = as_json(response, 413)
    assert body["error"] == "body_too_large"
    assert body["problems"] == [
        {
            "code": "body_too_large",
            "field": "(body)",
            "message": f"the request body is larger than the limit of {limit} bytes",
        }
    ]


@pytest.fixture
def application(settings: Settings) -> Iterator[OkrApplication]:
    application = OkrApplication(settings)
    yield application
    application.close()


@pytest.fixture
async def command_api(
    settings: Settings, application: OkrApplication
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with the default settings (1 MiB), no background jobs: bodies are all it sees."""
    assert settings.max_body_bytes == MIB
    app = create_app(settings, application=application)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://okr", headers=ADMIN) as c:
        yield c


async def test_a_declared_body_over_the_limit_gets_413_without_being_read(
    command_api: httpx.AsyncClient, application: OkrApplication
) -> None:
    body = CountingBody(b" ", 2 * MIB)
    response = await command_api.post(
        "/objectives",
        content=body,
        headers={"Content-Type": "application/json", "Content-Length": str(MIB + 1)},
    )
    assert_too_large(response, MIB)
    assert response.headers["connection"] == "close"
    assert body.read == 0
    assert application.last_notification_id() == 0


async def test_a_chunked_body_over_the_limit_is_cut_off_at_the_limit(
    command_api: httpx.AsyncClient, application: OkrApplication
) -> None:
    chunk = 64 * 1024
    body = CountingBody(b" " * chunk, 10 * MIB // chunk)
    response = await command_api.post(
        "/objectives", content=body, headers={"Content-Type": "application/json"}
    )
    assert_too_large(response, MIB)
    assert body.read == MIB // chunk + 1, "read up to the chunk that crossed the limit, no more"
    assert application.last_notification_id() == 0


async def test_a_body_exactly_at_the_limit_is_accepted(
    command_api: httpx.AsyncClient, application: OkrApplication
) -> None:
    exactly = padded(objective_body("at the limit"), MIB)
    response = await command_api.post(
        "/objectives", content=exactly, headers={"Content-Type": "application/json"}
    )
    assert as_json(response, 201)["status"] == "accepted"

    one_more = padded(objective_body("one byte over"), MIB + 1)
    response = await command_api.post(
        "/objectives", content=one_more, headers={"Content-Type": "application/json"}
    )
    assert_too_large(response, MIB)
    assert application.last_notification_id() == 1


async def test_the_limit_is_a_setting(settings: Settings, application: OkrApplication) -> None:
    small = settings.model_copy(update={"max_body_bytes": 600})
    app = create_app(small, application=application)
    transport = httpx.ASGITransport(app=app)
    json_headers = {**ADMIN, "Content-Type": "application/json"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://okr", headers=json_headers
    ) as client:
        fits = padded(objective_body("small"), 600)
        assert as_json(await client.post("/objectives", content=fits), 201)["version"] == 1
        assert_too_large(await client.post("/objectives", content=padded({}, 601)), 600)
