"""`GET /objectives/{id}/as-of`: an objective and its scores as they were, for auditors.

Answered from the event store (`services.audit.past_states`), not from the projections: the audit
question
"what did this objective say, and score, on that day" must not depend on a read model.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime

from events.commands import MAX_VERSION
from services.audit.past_state_view import ObjectiveAsOfBody, as_of_body
from services.audit.past_states import ObjectiveNotFoundAsOfError, objective_as_of
from services.commands.application import OkrApplication
from services.http.commands import get_application
from services.http.errors import REJECTION_RESPONSES

router = APIRouter(tags=["history"], responses=REJECTION_RESPONSES)


def _exactly_one(at: datetime | None, version: int | None) -> None:
    if (at is None) != (version is None):
        return
    raise RequestValidationError(
        [
            {
                "type": "exactly_one_required",
                "loc": ("query", "at" if at is None else "version"),
                "msg": "give exactly one of ?at=ISO-8601 (with a time zone) or ?version=N",
            }
        ]
    )


@router.get(
    "/objectives/{objective_id}/as-of",
    summary="An objective and its scores as they were at a version or a moment",
    response_model=ObjectiveAsOfBody,
)
async def get_objective_as_of(
    objective_id: UUID,
    application: Annotated[OkrApplication, Depends(get_application)],
    at: Annotated[
        AwareDatetime | None,
        Query(description="A moment, ISO 8601 with a time zone, e.g. 2026-08-01T12:00:00Z."),
    ] = None,
    version: Annotated[
        int | None, Query(ge=1, le=MAX_VERSION, description="A version (1, 2, …).")
    ] = None,
) -> ObjectiveAsOfBody:
    _exactly_one(at, version)
    found = await asyncio.to_thread(
        objective_as_of, application, objective_id, at=at, version=version
    )
    if found is None:
        when = f"at version {version}" if version is not None else f"at {at}"
        raise ObjectiveNotFoundAsOfError(objective_id, when)
    return as_of_body(found)
