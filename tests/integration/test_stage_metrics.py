"""The scorer's stage timings: every batch observes each of its stages once, with its size.

Driven as the scorer's own tests drive it (tests/kpi_support.py): objectives bound to KPIs, KPI
records handed to `score_batch` or produced onto the real broker, the stored positions waited
for. Each test gives the jobs a board of their own, so nothing else's batches are counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest

from projections.backoff import Backoff
from projections.job_health import JobBoard, context_reporting_to
from projections.projector import Message as Record  # a consumed record, as `score_batch` reads it
from projections.stage_timings import SCORER, STAGES
from services.commands.application import OkrApplication
from services.kafka.admin import ensure_topics
from services.kafka.dead_letters import DeadLetterPublisher
from services.scoring.bindings import follow_bindings
from services.scoring.scorer import run_scorer, score_batch
from services.settings import Settings
from services.tasks import running
from tests.kafka_support import eventually
from tests.kpi_support import (
    CollectedLetters,
    as_message,
    create_bound_objective,
    kpi,
    kpi_event,
    last_offsets,
    produce,
    scored_up_to,
)

BATCHES = "okr_stage_duration_seconds_count"
ITEMS = "okr_stage_batch_size_sum"


def observed(board: JobBoard, job: str) -> dict[str, tuple[float, float]]:
    """Per stage of `job` on `board`: (batches, items) observed so far."""
    found = {
        (s.name, s.labels["stage"]): s.value
        for family in board.stages.collect()
        for s in family.samples
        if s.labels.get("job") == job
    }
    return {
        stage: (found[(BATCHES, stage)], found[(ITEMS, stage)])
        for name, stage in found
        if name == BATCHES
    }


async def test_a_scored_batch_observes_each_of_its_stages_once_with_its_records(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    application = open_application()
    units = kpi("sales.units")
    create_bound_objective(application, [(units, "sum"), (units, "latest")])
    await asyncio.to_thread(follow_bindings, application)
    records = [
        Record("kpi.events", 0, offset, orjson.dumps(kpi_event(units, 2))) for offset in range(7)
    ]
    letters = CollectedLetters()
    board = JobBoard()

    report = await asyncio.create_task(
        score_batch(application, records, DeadLetterPublisher(store_settings, letters.send)),
        context=context_reporting_to(board),
    )

    assert (report.accepted, report.progress_events) == (7, 2)
    # No consumer: fetched and committed by nobody; read, prepared, planned and saved here.
    assert observed(board, SCORER) == {
        stage: (1, 7) for stage in ("decode", "prepare", "plan", "save")
    }
    assert letters.values == []


@pytest.mark.parametrize("worker_from", [0, 1], ids=["read in the scorer", "prepared in a worker"])
async def test_the_running_scorer_observes_every_stage_of_every_batch(
    settings: Settings, worker_from: int
) -> None:
    """Prepared in a worker process, a batch's reading and preparing are timed there and
    observed in the scorer's process, on its board."""
    settings = settings.model_copy(update={"scorer_worker_from": worker_from, "scorer_workers": 1})
    await ensure_topics(settings)
    application = OkrApplication(settings)
    try:
        units, nps = kpi("sales.units"), kpi("nps")
        create_bound_objective(application, [(units, "sum"), (nps, "avg")])
        await asyncio.to_thread(follow_bindings, application)
        sent = [as_message(kpi_event(key, n)) for n in range(20) for key in (units, nps)]
        written = await produce(settings, sent)
        board = JobBoard()
        scoring = run_scorer(settings, application, backoff=Backoff(first_s=0.05, max_s=0.5))
        async with running(scoring, context=context_reporting_to(board)):
            await scored_up_to(application, settings, last_offsets(written))

            async def every_batch_committed() -> bool:
                stages = observed(board, SCORER)
                return "fetch" in stages and stages.get("commit") == stages["fetch"]

            await eventually(every_batch_committed, "the last batch's offsets committed")
    finally:
        application.close()

    stages = observed(board, SCORER)
    batches, records = stages["fetch"]
    assert batches >= 1 and records == len(sent)
    assert stages == dict.fromkeys(STAGES[SCORER], (batches, len(sent)))
