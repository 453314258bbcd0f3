"""The HTTP application: built from `Settings`, connecting to nothing until its lifespan starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from fastapi import Depends, FastAPI

from projections.job_health import JobBoard, context_reporting_to
from projections.views import ReadStore
from services import web
from services.access.keys import ApiKeys
from services.commands.application import OkrApplication
from services.http import (
    as_of,
    asyncapi,
    audit,
    body_limit,
    commands,
    docs,
    headers,
    health,
    kpis,
    lint,
    metrics,
    reads,
)
from services.http.auth import (
    ACCESS_RESPONSES,
    PUBLIC_PATHS,
    AuthenticateFirstMiddleware,
    install_access_error_handler,
    refuse_unprotected_routes,
    requires,
)
from services.http.errors import install_error_handlers
from services.kafka.admin import ensure_topics
from services.operations.health_monitor import HealthMonitor
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


def _log_access(keys: ApiKeys) -> None:
    count = len(keys.entries())
    if count:
        log.info("%d API keys accepted (file %s and OKR_API_KEYS)", count, keys.path)
    else:
        log.warning(
            "no API keys configured: every request but /health gets 401; create one with "
            "`okr keys add --principal NAME --role admin` (it goes to %s)",
            keys.path,
        )


BackgroundJob = Callable[[OkrApplication], Coroutine[Any, Any, None]]
"""A long-running part of the process (a Kafka consumer, the relay) sharing the application."""


def create_app(
    settings: Settings,
    application: OkrApplication | None = None,
    background: Sequence[BackgroundJob] = (),
    read_store: ReadStore | None = None,
    live: web.LiveFeed | None = None,
) -> FastAPI:
    """The HTTP app; `background` jobs (Kafka consumers, relay) run for the app's lifetime;
    `live` is what the projector tells the dashboard's open pages."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "application", None) is None:
            app.state.application = await asyncio.to_thread(OkrApplication, settings)
        application = app.state.application
        _log_access(app.state.api_keys)
        owns_read_store = app.state.read_store is None
        if owns_read_store:
            app.state.read_store = await asyncio.to_thread(open_read_store, settings)
        # Every job reports to the app's board; the monitor probes for /health and /metrics.
        app.state.health = HealthMonitor(settings, application, settings.health_interval_s)
        jobs = [
            keep_trying_to_ensure_topics(settings),
            app.state.health.run(),
            *(job(application) for job in background),
        ]
        try:
            async with running(*jobs, context=context_reporting_to(app.state.jobs)):
                await app.state.health.first_round()  # so /health knows from the first request
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
        # Served again by `docs.router`, behind a key: FastAPI's own routes cannot be guarded.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.api_keys = ApiKeys.from_settings(settings)
    app.state.application = application
    app.state.read_store = read_store
    app.state.jobs = JobBoard()  # what each background job is doing: /health, /metrics
    app.state.health = None  # the health monitor, while the lifespan runs
    app.include_router(health.router)  # the one route open to anonymous callers
    write, read = [Depends(requires("write"))], [Depends(requires("read"))]
    app.include_router(commands.router, dependencies=write, responses=ACCESS_RESPONSES)
    readers = (
        reads.router,
        kpis.router,
        lint.router,
        as_of.router,
        metrics.router,
        asyncapi.router,
    )
    for router in readers:
        app.include_router(router, dependencies=read, responses=ACCESS_RESPONSES)
    app.include_router(docs.router, dependencies=read)
    app.include_router(audit.router, responses=ACCESS_RESPONSES)  # requires("audit") itself
    web.install(app, live)  # the dashboard: /ui/, its session guard accepted by the check below
    refuse_unprotected_routes(app, PUBLIC_PATHS | web.public_paths())
    install_error_handlers(app)
    install_access_error_handler(app)
    app.add_middleware(body_limit.BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(AuthenticateFirstMiddleware, own_guard_prefixes=web.OWN_GUARD_PREFIXES)
    app.add_middleware(headers.SecurityHeadersMiddleware)  # added last: runs first
    return app
