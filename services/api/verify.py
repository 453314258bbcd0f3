"""`GET /audit/verify`: the auditor's tamper check over HTTP, the same as `okr audit verify`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from services.api.auth import requires
from services.audit_verify import VerifyReport, verify

router = APIRouter(prefix="/audit", tags=["audit"], dependencies=[Depends(requires("audit"))])


@router.get(
    "/verify",
    response_model=VerifyReport,
    summary="Check every hash chain of the event store, and okr.events against it",
)
async def verify_history(
    request: Request,
    topic: bool = Query(True, description="Also check the okr.events topic (reads all of it)."),
) -> VerifyReport:
    """200 whatever the verdict: `breaks` names each broken objective and version, empty when
    the history is intact. Reading the whole store (and topic) takes a while on a large one."""
    return await verify(
        request.app.state.settings, request.app.state.application, check_topic=topic
    )
