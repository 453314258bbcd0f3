"""`/audit`: what an auditor reads over HTTP, from the event store (never the read models).

`GET /audit/objectives/{id}/history` answers the same document as `okr audit history --format json`
(`services.audit.history.AuditHistory`); `GET /audit/export` streams what `okr audit export` writes
(`services.audit.export`), page by page, so an export of the whole store never sits in memory;
`GET /audit/verify` is `okr audit verify`. `/audit/checkpoints` and `/audit/proofs` answer what
`okr audit checkpoint`, `prove` and `consistency` print: a signed note (UTF-8 text) and proof JSON
that `okr audit check` (or any RFC 9162 / C2SP verifier) checks offline with the verifier key.
Every route needs the `audit` permission.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import AwareDatetime

from events.commands import MAX_VERSION, Issue
from services.audit.export import (
    MEDIA_TYPES,
    ExportedEvent,
    ExportFormat,
    check_window,
    export_end,
    exported_pages,
    header,
    render_page,
)
from services.audit.history import AuditHistory, read_audit_history
from services.audit.proofs import (
    ProofUnavailableError,
    consistency_proof,
    inclusion_proof,
    kept_checkpoint,
)
from services.audit.verify import VerifyReport, verify
from services.commands.application import OkrApplication
from services.commands.rejections import Rejection
from services.http.auth import requires
from services.http.commands import get_application
from services.http.errors import REJECTION_RESPONSES, rejection_response
from services.transparency.log_store import StoredCheckpoint
from services.transparency.tlog_check import MAX_TREE_SIZE

router = APIRouter(
    prefix="/audit",
    tags=["audit"],
    responses=REJECTION_RESPONSES,
    dependencies=[Depends(requires("audit"))],
)

ApplicationDep = Annotated[OkrApplication, Depends(get_application)]


@router.get(
    "/objectives/{objective_id}/history",
    summary="Every decision of an objective, before -> after, with its state and scores then",
    response_model=AuditHistory,
)
async def get_audit_history(
    objective_id: UUID,
    application: ApplicationDep,
    as_of: Annotated[
        AwareDatetime | None,
        Query(description="Up to this moment, ISO 8601 with a time zone, e.g. 2026-08-01T12:00Z."),
    ] = None,
    version: Annotated[
        int | None, Query(ge=1, le=MAX_VERSION, description="Up to this version.")
    ] = None,
) -> AuditHistory:
    if as_of is not None and version is not None:
        raise RequestValidationError(
            [
                {
                    "type": "at_most_one_allowed",
                    "loc": ("query", "version"),
                    "msg": "give at most one of ?as_of= and ?version= (neither: up to now)",
                }
            ]
        )
    return await asyncio.to_thread(
        read_audit_history, application, objective_id, as_of=as_of, version=version
    )


@router.get(
    "/export",
    summary="Every stored event with since <= occurred_at < until, in store order, streamed",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One event per line (JSON Lines) or row (CSV, with a header row); "
            "fields as `ExportedEvent`. CSV cells that a spreadsheet would run as a formula are "
            "prefixed with a single quote.",
            "content": {media_type: {} for media_type in MEDIA_TYPES.values()},
        }
    },
)
async def export_events(
    application: ApplicationDep,
    since: Annotated[
        AwareDatetime | None, Query(description="From this moment, included (open if left out).")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="To this moment, excluded (open if left out).")
    ] = None,
    export_format: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.JSONL,
) -> StreamingResponse:
    check_window(since, until)
    # Read where the export ends before answering: a store that is down gets a 503, not a 200
    # cut short, and events stored while streaming are left to the next export.
    stop = await asyncio.to_thread(export_end, application)
    pages = exported_pages(application, since=since, until=until, stop=stop)
    extension = export_format.value
    return StreamingResponse(
        _streamed(pages, export_format),
        media_type=MEDIA_TYPES[export_format],
        headers={"Content-Disposition": f'attachment; filename="okr-events.{extension}"'},
    )


@router.get(
    "/verify",
    response_model=VerifyReport,
    summary="Check every hash chain of the event store, and okr.events against it",
)
async def verify_history(
    request: Request,
    application: ApplicationDep,
    topic: bool = Query(True, description="Also check the okr.events topic (reads all of it)."),
) -> VerifyReport:
    """200 whatever the verdict: `breaks` names each broken objective and version, empty when
    the history is intact (`okr audit verify`). Reading the whole store (and topic) takes a
    while on a large one."""
    return await verify(request.app.state.settings, application, check_topic=topic)


async def _streamed(
    pages: Iterator[list[ExportedEvent]], export_format: ExportFormat
) -> AsyncIterator[str]:
    """Each page read in a worker thread (the event store is blocking), then sent."""
    if first := header(export_format):
        yield first
    while (page := await asyncio.to_thread(next, pages, None)) is not None:
        yield render_page(page, export_format)


# --- the transparency log: checkpoints and proofs (docs/decisions/0020) ---------------------------

NOTE_MEDIA_TYPE = "text/plain; charset=utf-8"
"""A signed note is UTF-8 text (C2SP signed-note defines no media type of its own)."""
PROOF_JSON: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/json": {}},
        "description": "The proof, as `okr audit check` reads it.",
    }
}


def _unavailable(error: ProofUnavailableError) -> JSONResponse:
    message = str(error)
    return rejection_response(
        Rejection(
            404, "not_found", message, [Issue(code="not_found", field="(query)", message=message)]
        )
    )


@router.get(
    "/checkpoints/latest",
    summary="The newest signed checkpoint of the log (C2SP tlog-checkpoint as a signed note)",
    response_class=PlainTextResponse,
)
async def latest_checkpoint(application: ApplicationDep) -> PlainTextResponse:
    return _note(await asyncio.to_thread(kept_checkpoint, application, None))


@router.get(
    "/checkpoints/{tree_size}",
    summary="The kept checkpoint of that tree size",
    response_class=PlainTextResponse,
)
async def checkpoint_of_size(
    tree_size: Annotated[int, Path(ge=0, le=MAX_TREE_SIZE)], application: ApplicationDep
) -> Any:
    try:
        kept = await asyncio.to_thread(kept_checkpoint, application, tree_size)
    except ProofUnavailableError as error:
        return _unavailable(error)
    return _note(kept)


def _note(kept: StoredCheckpoint) -> PlainTextResponse:
    """A kept checkpoint as its signed note, its tree size also in a header."""
    return PlainTextResponse(
        kept.note, headers={"X-Tree-Size": str(kept.tree_size)}, media_type=NOTE_MEDIA_TYPE
    )


@router.get(
    "/proofs/inclusion",
    summary="That an objective's event at a version is in the log, as a kept checkpoint says",
    responses=PROOF_JSON,
)
async def prove_inclusion(
    application: ApplicationDep,
    objective_id: Annotated[UUID, Query()],
    version: Annotated[int, Query(ge=1, le=MAX_VERSION)],
    tree_size: Annotated[
        int | None,
        Query(
            ge=0, le=MAX_TREE_SIZE, description="A kept checkpoint's size (default: the newest)."
        ),
    ] = None,
) -> Any:
    try:
        proof = await asyncio.to_thread(
            inclusion_proof, application, objective_id, version, tree_size=tree_size
        )
    except ProofUnavailableError as error:
        return _unavailable(error)
    return Response(proof.to_json(), media_type="application/json")


@router.get(
    "/proofs/consistency",
    summary="That the log at one checkpoint extends the log at an older one",
    responses=PROOF_JSON,
)
async def prove_consistency(
    application: ApplicationDep,
    from_size: Annotated[
        int, Query(alias="from", ge=0, le=MAX_TREE_SIZE, description="The older checkpoint's size.")
    ],
    to_size: Annotated[
        int | None,
        Query(
            alias="to", ge=0, le=MAX_TREE_SIZE, description="The newer one's (default: the newest)."
        ),
    ] = None,
) -> Any:
    def prove() -> Any:
        old = kept_checkpoint(application, from_size)
        return consistency_proof(application, old.note, to_size)

    try:
        proof = await asyncio.to_thread(prove)
    except ProofUnavailableError as error:
        return _unavailable(error)
    return Response(proof.to_json(), media_type="application/json")
