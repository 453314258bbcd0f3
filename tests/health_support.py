"""The app as `okr serve` runs it, for `/health` and `/metrics` tests: its lifespan started (so
its health monitor probes and its jobs report to its board), and a way to count the probes.

    async with serving(settings) as (app, client):
        probes = count_probes(monkeypatch)
        ...
        assert probes.rounds() <= allowed
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from projections.views import ReadStore
from services import stores
from services.commands.application import OkrApplication
from services.http.app import BackgroundJob, create_app
from services.kafka import admin as kafka_admin
from services.kafka import lag
from services.relay import publisher
from services.settings import Settings
from tests.auth_support import auth_headers
from tests.kafka_support import eventually

READER = auth_headers("reader")


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    application: OkrApplication | None = None,
    background: Sequence[BackgroundJob] = (),
    read_store: ReadStore | None = None,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan running and its health monitor's first round done; an
    anonymous client (send `READER` for a reader's view)."""
    app = create_app(settings, application, background, read_store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://okr") as client:
            monitor = getattr(app.state, "health", None)  # None: an app without one

            async def probed() -> bool:
                return monitor is None or monitor.last is not None

            await eventually(probed, "the health monitor's first round")
            yield app, client


PROBES: dict[str, tuple[Any, str]] = {
    "probe_kafka": (kafka_admin, "probe_kafka"),
    "probe_store": (stores, "probe_store"),
    "kafka_lag": (lag, "kafka_lag"),
    "relay_lag": (publisher, "relay_lag"),
}
"""The functions that do a probe's I/O, where they are defined."""


@dataclass
class ProbeCalls:
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBES, 0))

    def total(self) -> int:
        return sum(self.calls.values())


def count_probes(monkeypatch: pytest.MonkeyPatch) -> ProbeCalls:
    """Count every call of the probe functions, however a module imported them: each module of
    ours that holds one (its defining module, or a `from ... import` of it) gets the counter."""
    counted = ProbeCalls()
    for name, (module, attribute) in PROBES.items():
        original = getattr(module, attribute)
        wrapper = _counting(original, counted, name)
        for loaded_name, loaded in list(sys.modules.items()):
            ours = loaded_name.split(".")[0] in {"services", "projections", "bench"}
            if ours and getattr(loaded, attribute, None) is original:
                monkeypatch.setattr(loaded, attribute, wrapper)
    return counted


def _counting(original: Callable[..., Any], counted: ProbeCalls, name: str) -> Callable[..., Any]:
    if asyncio.iscoroutinefunction(original):

        async def counting_async(*args: Any, **kwargs: Any) -> Any:
            counted.calls[name] += 1
            return await original(*args, **kwargs)

        return counting_async

    def counting(*args: Any, **kwargs: Any) -> Any:
        counted.calls[name] += 1
        return original(*args, **kwargs)

    return counting
