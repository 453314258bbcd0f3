"""The HTTP application: built from `Settings`, connecting to nothing until its lifespan starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.api import health
from services.kafka_admin import ensure_topics
from services.settings import Settings

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


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        topics_task = asyncio.create_task(keep_trying_to_ensure_topics(settings))
        try:
            yield
        finally:
            topics_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await topics_task

    app = FastAPI(
        title="OKR Ledger",
        version="0.1.0",
        description="Event-sourced objectives and key results, scored live from KPI events.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(health.router)
    return app
