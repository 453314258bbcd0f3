"""The HTTP application: built from `Settings`, connecting to nothing until its lifespan starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from fastapi import FastAPI

from projections.views import ReadStore
from services.api import as_of, asyncapi, commands, health, kpis, lint, metrics, reads
from services.api.errors import install_error_handlers
from services.application import OkrApplication
from services.kafka_admin import ensure_topics
from services.projector_service import open_read_store
from services.settings import Settings
from services.tasks import running

log = logging.getLogger(__name__)

TOPIC_RETRY_S = 5.0


async def keep_trying_to_ensure_topics(settings: Settings) -> None:
    """Writes never wait for Kafka, so a broker that is down at start is retried, not fatal."""
    while True:
        try:
            await ensure_topics(settings)
        except Exception as error:
            log.warning("topics not ensured yet (%s); retrying in %ss", error, TOPIC_RETRY_S)
            await asyncio.sleep(TOPIC_RETRY_S)
        else:
            return


BackgroundJob = Callable[[OkrApplication], Coroutine[Any, Any, None]]
"""A long-running part of the process (a Kafka consumer, the relay) sharing the application."""


def create_app(
    settings: Settings,
    application: OkrApplication | None = None,
    background: Sequence[BackgroundJob] = (),
    read_store: ReadStore | None = None,
) -> FastAPI:
    """The HTTP app; `background` jobs (Kafka consumers, relay) run for the app's lifetime."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "application", None) is None:
            app.state.application = await asyncio.to_thread(OkrApplication, settings)
        application = app.state.application
        owns_read_store = app.state.read_store is None
        if owns_read_store:
            app.state.read_store = await asyncio.to_thread(open_read_store, settings)
        jobs = [keep_trying_to_ensure_topics(settings), *(job(application) for job in background)]
        try:
            async with running(*jobs):
                yield
        finally:
            if owns_read_store:
                await asyncio.to_thread(app.state.read_store.close)
                app.state.read_store = None

    app = FastAPI(
        title="OKR Ledger",
        version="0.1.0",
        description="Event-sourced objectives and key results, scored live from KPI events.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.application = application
    app.state.read_store = read_store
    app.include_router(health.router)
    app.include_router(commands.router)
    app.include_router(reads.router)
    app.include_router(kpis.router)
    app.include_router(lint.router)
    app.include_router(as_of.router)
    app.include_router(metrics.router)
    app.include_router(asyncapi.router)
    install_error_handlers(app)
    return app
