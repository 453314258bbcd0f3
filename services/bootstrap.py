"""The composition root: what an `okr serve` or `okr scorer` process runs, from one `Settings`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

from fastapi import FastAPI

from services.audit.checkpoints import run_checkpointer
from services.commands.application import OkrApplication
from services.commands.consumer import run_command_consumer
from services.http.app import BackgroundJob, create_app
from services.projector_service import run_projector_job
from services.relay.publisher import run_relay
from services.scoring.bindings import run_bindings_follower
from services.scoring.scorer import run_scorer
from services.settings import Settings
from services.web.live import LiveFeed


def service_jobs(settings: Settings, live: LiveFeed | None = None) -> list[BackgroundJob]:
    """Commands in, events out and projected, KPI events scored: all share one application.

    Without the scorer when `okr scorer` runs beside it (`OKR_SERVE_RUNS_SCORER=false`): the
    scorer then has a process, and a GIL, of its own (docs/decisions/0012).
    """
    scoring = scorer_jobs(settings) if settings.serve_runs_scorer else []
    return [*pipeline_jobs(settings, live), *scoring]


def pipeline_jobs(settings: Settings, live: LiveFeed | None = None) -> list[BackgroundJob]:
    """Commands in, events out and projected, the log's checkpoints signed: `okr serve`'s jobs
    besides the scorer's. The projector tells `live` (the dashboard's feed) what each committed
    batch changed."""
    return [
        partial(run_command_consumer, settings),
        partial(run_relay, settings),
        partial(run_projector_job, settings, on_batch=live.projected if live else None),
        partial(run_checkpointer, settings),
    ]


def scorer_jobs(settings: Settings) -> list[BackgroundJob]:
    """KPI events in, bound key results moved: the scorer and the bindings it follows."""
    return [partial(run_scorer, settings), partial(run_bindings_follower, settings)]


async def run_jobs(settings: Settings, jobs: Sequence[BackgroundJob]) -> None:
    """Run background jobs on one application, without HTTP (`okr scorer`), until cancelled."""
    application = await asyncio.to_thread(OkrApplication, settings)
    try:
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(job(application))
    finally:
        application.close()


def build_service(settings: Settings) -> FastAPI:
    live = LiveFeed()
    return create_app(settings, background=service_jobs(settings, live), live=live)
