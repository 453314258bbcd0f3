"""`/audit/objectives/{id}/history` and `/audit/export` for the auditor, on both event stores.

Promised: the history endpoint answers the same document as `okr audit history --format json`;
the export streams the same bytes as `okr audit export`, page by page; refusals come from the one
error table (404 unknown objective, 422 bad or naive time, both as_of and version, bad window);
only a key with the audit permission gets in (401 without a key, 403 for a reader or an editor).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import uuid4

import httpx
import pytest
from typer.testing import CliRunner

from services.audit.export import ExportFormat, exported_pages
from services.audit.history import AuditHistory, read_audit_history
from services.cli.main import app as cli
from services.http import audit
from services.http.app import create_app
from services.settings import Settings
from tests.audit_support import DAY, MOMENTS, Ledger
from tests.auth_support import auth_headers


def app_client(ledger: Ledger, headers: dict[str, str]) -> httpx.AsyncClient:
    app = create_app(ledger.application.settings, ledger.application)
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://okr", headers=headers)


@pytest.fixture
async def client(ledger: Ledger) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(ledger, auth_headers("auditor")) as opened:
        yield opened


def cli_output(settings: Settings, *args: str) -> bytes:
    result = CliRunner().invoke(
        cli, ["audit", *args], env={"OKR_EVENT_STORE_URL": settings.event_store_url}
    )
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


# --- history --------------------------------------------------------------------------------------


async def test_history_is_the_cli_document(
    client: httpx.AsyncClient, ledger: Ledger, store_settings: Settings
) -> None:
    moment = (MOMENTS[2] + DAY / 2).isoformat()
    for params, cli_args in (
        ({}, ()),
        ({"version": "4"}, ("--version", "4")),
        ({"as_of": moment}, ("--as-of", moment)),
    ):
        response = await client.get(f"/audit/objectives/{ledger.a}/history", params=params)
        assert response.status_code == 200, response.text
        body = AuditHistory.model_validate(response.json())
        from_cli = cli_output(
            store_settings, "history", str(ledger.a), "--format", "json", *cli_args
        )
        assert body == AuditHistory.model_validate_json(from_cli)
    at_four = read_audit_history(ledger.application, ledger.a, version=4)
    response = await client.get(f"/audit/objectives/{ledger.a}/history", params={"version": "4"})
    assert AuditHistory.model_validate(response.json()) == at_four


async def test_history_refusals(client: httpx.AsyncClient, ledger: Ledger) -> None:
    path = f"/audit/objectives/{ledger.a}/history"
    before = (MOMENTS[0] - timedelta(seconds=1)).isoformat()
    for url, params in (
        (f"/audit/objectives/{uuid4()}/history", {}),
        (path, {"version": "7"}),
        (path, {"as_of": before}),
    ):
        response = await client.get(url, params=params)
        assert response.status_code == 404, (params, response.text)
        assert response.json()["error"] == "objective_not_found"
    for params in (
        {"as_of": MOMENTS[2].isoformat(), "version": "3"},
        {"as_of": "2026-07-03T12:00:00"},
        {"as_of": "yesterday"},
        {"version": "0"},
    ):
        response = await client.get(path, params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["problems"], response.text
    response = await client.get("/audit/objectives/not-a-uuid/history")
    assert response.status_code == 422


# --- export ---------------------------------------------------------------------------------------


async def test_export_streams_what_the_cli_writes(
    client: httpx.AsyncClient, store_settings: Settings
) -> None:
    window = {"since": MOMENTS[1].isoformat(), "until": MOMENTS[6].isoformat()}
    cli_window = ("--since", window["since"], "--until", window["until"])
    for export_format, media_type in (("jsonl", "application/x-ndjson"), ("csv", "text/csv")):
        for params, cli_args in (({}, ()), (window, cli_window)):
            response = await client.get("/audit/export", params={**params, "format": export_format})
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith(media_type)
            assert f"okr-events.{export_format}" in response.headers["content-disposition"]
            expected = cli_output(store_settings, "export", "--format", export_format, *cli_args)
            assert response.content == expected
    default = await client.get("/audit/export")
    assert default.headers["content-type"].startswith("application/x-ndjson")
    assert len(default.text.splitlines()) == 7


async def test_export_refusals(client: httpx.AsyncClient) -> None:
    for params in (
        {"since": "2026-07-03T12:00:00"},
        {"until": "tomorrow"},
        {"since": MOMENTS[3].isoformat(), "until": MOMENTS[2].isoformat()},
        {"format": "xml"},
    ):
        response = await client.get("/audit/export", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["problems"], response.text


async def test_export_is_sent_a_page_at_a_time(ledger: Ledger) -> None:
    for export_format, header in ((ExportFormat.JSONL, 0), (ExportFormat.CSV, 1)):
        pages = exported_pages(ledger.application, page_size=2)
        chunks = [chunk async for chunk in audit._streamed(pages, export_format)]
        assert len(chunks) == header + 4  # 7 events in pages of 2


# --- access ---------------------------------------------------------------------------------------


async def test_only_keys_with_the_audit_permission_get_in(ledger: Ledger) -> None:
    paths = [f"/audit/objectives/{ledger.a}/history", "/audit/export"]
    roles = (("reader", 403), ("editor", 403), ("service", 403), ("auditor", 200), ("admin", 200))
    for path in paths:
        async with app_client(ledger, {}) as anonymous:
            response = await anonymous.get(path)
            assert response.status_code == 401, response.text
        for role, status in roles:
            async with app_client(ledger, auth_headers(role)) as client:
                response = await client.get(path)
                assert response.status_code == status, (path, role, response.text)
