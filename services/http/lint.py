"""`POST /lint`: the quality report an objective would get, without creating it.

Lets an owner fix every problem of a draft in one pass before sending it; it runs the same rules
as creation (`domain.quality`) and writes nothing.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from domain.objective_events import spec_of
from domain.quality import lint_objective
from events.commands import CreateObjective, Issue
from services.commands.application import issues
from services.http.errors import BODY_RESPONSES, REJECTION_RESPONSES

router = APIRouter(tags=["commands"], responses={422: REJECTION_RESPONSES[422], **BODY_RESPONSES})


class LintReport(BaseModel):
    ok: bool = Field(description="True when creation would pass the quality rules.")
    problems: list[Issue] = Field(description="What makes the objective unmeasurable; blocks it.")
    warnings: list[Issue] = Field(description="Advice: weaker OKR, still accepted.")


@router.post("/lint", summary="Check an objective against the quality rules; writes nothing")
async def lint(body: CreateObjective) -> LintReport:
    report = lint_objective(
        body.title, body.period_start, body.period_end, [spec_of(kr) for kr in body.key_results]
    )
    return LintReport(
        ok=report.ok, problems=issues(report, "problems"), warnings=issues(report, "warnings")
    )
