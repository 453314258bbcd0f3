"""`/audit/checkpoints` and `/audit/proofs`: the transparency log for auditors, over HTTP.

The answers are the files `okr audit checkpoint`, `prove` and `consistency` print: a signed note
(`text/plain`) and proof JSON that `okr audit check` (or any RFC 9162 / C2SP verifier) checks
offline with the verifier key. Every route needs the `audit` permission.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from events.commands import MAX_VERSION, Issue
from services.audit.proofs import (
    ProofUnavailableError,
    consistency_proof,
    inclusion_proof,
    kept_checkpoint,
)
from services.commands.application import OkrApplication
from services.commands.rejections import Rejection
from services.http.auth import requires
from services.http.commands import get_application
from services.http.errors import REJECTION_RESPONSES, rejection_response
from services.transparency.tlog_check import MAX_TREE_SIZE

router = APIRouter(
    prefix="/audit",
    tags=["audit"],
    responses=REJECTION_RESPONSES,
    dependencies=[Depends(requires("audit"))],
)

ApplicationDep = Annotated[OkrApplication, Depends(get_application)]
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
    kept = await asyncio.to_thread(kept_checkpoint, application, None)
    return PlainTextResponse(
        kept.note, headers={"X-Tree-Size": str(kept.tree_size)}, media_type=NOTE_MEDIA_TYPE
    )


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
