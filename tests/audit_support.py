"""A small ledger for the audit tests: two objectives written under a fake clock, one decision per
day, with the hostile strings an auditor's tools must pass through verbatim (markup, spreadsheet
formulas, commas, quotes, newlines, a terminal escape).

Objective A, days 0..5: created with NPS (62 -> 80, weight 1) and sales (1000 -> +30 % = 1300,
weight 2), activated, NPS checked in at 71 (score 50), sales at 1150 (50), the sales target moved
to 1200 with a reason (75), closed with a reason. Objective scores after each version, worked out
from `domain.scoring`: 0, 0, 50/3, 50, 200/3, 200/3. Objective B is created on day 6.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from events import commands as wire
from services.commands.application import OkrApplication
from services.settings import Settings
from tests import seed

START = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MOMENTS = [START + n * DAY for n in range(7)]
"""When A's versions 1..6 and B's version 1 were written."""

HOSTILE_TITLE = 'Grow <script>alert(1)</script> X, "quoted"\nline two \x1b[31m'
FORMULA_REASON = "=cmd|' /C calc'!A0, with commas, \"quotes\"\nand a newline"
FORMULA_ACTOR = "@mallory"
FORMULA_COMMAND = "-2+3"
TARGET_REASON = "Product X supply capped by the new factory's delay"

NPS = seed.NPS.as_definition()
SALES = seed.SALES.as_definition(weight=2)
SALES_REVISED = SALES.model_copy(update={"relative_target": None, "target": 1200})

SCORES = [0.0, 0.0, 50 / 3, 50.0, 200 / 3, 200 / 3]
"""Objective A's score after versions 1..6."""


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Ledger:
    application: OkrApplication
    a: UUID
    b: UUID
    nps_id: UUID
    sales_id: UUID


def write_ledger(settings: Settings) -> Ledger:
    """The application (the caller closes it) after writing both objectives."""
    clock = FakeClock()
    application = OkrApplication(settings, clock=clock)
    a, b = uuid4(), uuid4()

    def run(
        objective_id: UUID,
        body: wire.CommandBody,
        *,
        reason: str | None = None,
        actor: str = "alice",
        command_id: str | None = None,
    ) -> None:
        result = application.handle(
            wire.Command(
                command_id=command_id or str(uuid4()),
                objective_id=objective_id,
                actor=actor,
                reason=reason,
                body=body,
            )
        )
        assert result.status == "accepted", result

    def create(title: str) -> wire.CreateObjective:
        return wire.CreateObjective(
            title=title,
            owner="alice",
            team="sales",
            period_start=seed.QUARTER_START,
            period_end=seed.QUARTER_END,
            key_results=[NPS, SALES],
        )

    run(a, create(HOSTILE_TITLE))
    created = application.get_objective(a)
    assert created is not None
    nps_id, sales_id = (kr.key_result_id for kr in created.key_results)
    steps: list[tuple[wire.CommandBody, str | None]] = [
        (wire.ActivateObjective(), None),
        (wire.CheckIn(key_result_id=nps_id, value=71), None),
        (wire.CheckIn(key_result_id=sales_id, value=1150), None),
        (wire.ReviseKeyResult(key_result_id=sales_id, key_result=SALES_REVISED), TARGET_REASON),
    ]
    for day, (body, reason) in enumerate(steps, start=1):
        clock.now = MOMENTS[day]
        run(a, body, reason=reason)
    clock.now = MOMENTS[5]
    run(
        a,
        wire.CloseObjective(retrospective="<b>bold</b> & 'quoted'"),
        reason=FORMULA_REASON,
        actor=FORMULA_ACTOR,
        command_id=FORMULA_COMMAND,
    )
    clock.now = MOMENTS[6]
    run(b, create("Raise NPS, then sales"))
    return Ledger(application, a, b, nps_id, sales_id)
