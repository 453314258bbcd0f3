"""The HTTP command endpoints: parse, build a `Command`, hand it to the application, answer.

Each endpoint only says which command body its path and JSON make; `CommandRunner` does the rest
once (envelope, thread hop, status, ETag), so HTTP and Kafka commands run the same code path.
Refusals are raised as domain or validation errors and answered by `services.http.errors`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field

from events.commands import (
    MAX_VERSION,
    ActivateObjective,
    AddKeyResult,
    Aggregation,
    AlignObjective,
    ArchiveObjective,
    BindKpi,
    CheckIn,
    CloseObjective,
    Command,
    CommandBody,
    CommandResult,
    CommentKeyResult,
    CommentText,
    Contract,
    CreateObjective,
    KeyResultDefinition,
    KpiKey,
    LongText,
    Number,
    RemoveKeyResult,
    ReviseKeyResult,
    ReviseObjective,
    UnbindKpi,
)
from services.commands.application import OkrApplication
from services.http.auth import Principal, requires
from services.http.errors import BODY_RESPONSES, REJECTION_RESPONSES

router = APIRouter(prefix="/objectives", tags=["commands"], responses=REJECTION_RESPONSES)

T = TypeVar("T")

VERSION_TAG = r'^(?:"\d{1,18}"|\d{1,18})$'


# --- the request parts every command shares -------------------------------------------------------


def _one_of(name: str, header: T | None, query: T | None) -> T | None:
    """A value may come as a header or a query parameter; two different ones are a mistake."""
    if header is not None and query is not None and header != query:
        raise RequestValidationError(
            [
                {
                    "type": "conflicting_values",
                    "loc": ("query", name),
                    "msg": f"the header says {header!r} and the query {query!r}: give one",
                }
            ]
        )
    return header if header is not None else query


def get_reason(
    x_reason: Annotated[
        str | None,
        Header(
            max_length=5000,
            description="Why (percent-encoded UTF-8 for non-ASCII text); required to change a "
            "target, remove a key result, close or archive.",
        ),
    ] = None,
    reason: Annotated[
        str | None, Query(max_length=5000, description="Same as X-Reason, as a query parameter.")
    ] = None,
) -> str | None:
    """HTTP headers are Latin-1, so a French reason travels percent-encoded and is decoded here."""
    header = unquote(x_reason) if x_reason is not None else None
    return _one_of("reason", header, reason)


def get_expected_version(
    if_match: Annotated[
        str | None,
        Header(pattern=VERSION_TAG, description='Version the objective must be at, e.g. "3".'),
    ] = None,
    expected_version: Annotated[
        int | None,
        Query(ge=0, le=MAX_VERSION, description="Same as If-Match, as a query parameter."),
    ] = None,
) -> int | None:
    header = int(if_match.strip('"')) if if_match is not None else None
    return _one_of("expected_version", header, expected_version)


def get_command_id(
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="Repeat a request with the same key to get its first answer again.",
        ),
    ] = None,
) -> str:
    return idempotency_key if idempotency_key is not None else str(uuid4())


def get_application(request: Request) -> OkrApplication:
    application: OkrApplication = request.app.state.application
    return application


@dataclass(frozen=True)
class CommandRunner:
    """Everything but the body of a command, taken from the request; runs bodies it is given."""

    application: OkrApplication
    command_id: str
    actor: str
    reason: str | None
    expected_version: int | None

    async def handle(self, objective_id: UUID | None, body: CommandBody) -> CommandResult:
        """The command applied (or replayed); refusals and outages are raised."""
        command = Command(
            command_id=self.command_id,
            objective_id=objective_id,
            expected_version=self.expected_version,
            actor=self.actor,
            reason=self.reason,
            body=body,
        )
        return await asyncio.to_thread(self.application.handle, command)

    async def run(
        self, objective_id: UUID | None, body: CommandBody, status_code: int = status.HTTP_200_OK
    ) -> JSONResponse:
        result = await self.handle(objective_id, body)
        return JSONResponse(
            result.model_dump(mode="json"),
            status_code=status_code,
            headers=_headers(result, created=status_code == status.HTTP_201_CREATED),
        )


def _headers(result: CommandResult, created: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    if result.version is not None:
        headers["ETag"] = f'"{result.version}"'
    if created and result.objective_id is not None:
        headers["Location"] = f"/objectives/{result.objective_id}"
    return headers


def command_runner(
    application: Annotated[OkrApplication, Depends(get_application)],
    command_id: Annotated[str, Depends(get_command_id)],
    principal: Annotated[Principal, Depends(requires("write"))],
    reason: Annotated[str | None, Depends(get_reason)],
    expected_version: Annotated[int | None, Depends(get_expected_version)],
) -> CommandRunner:
    """The actor is the API key's principal: nothing in the request (header, body) can name
    anyone else."""
    return CommandRunner(application, command_id, principal.name, reason, expected_version)


Runner = Annotated[CommandRunner, Depends(command_runner)]


# --- bodies whose wire command also needs an id from the path -------------------------------------


class KpiBindingRequest(Contract):
    kpi_key: KpiKey
    aggregation: Aggregation = Field(
        "latest", description="How the KPI's values over the objective's period become the KR's."
    )


class CheckInRequest(Contract):
    value: Number = Field(description="The key result's current value, in its metric.")
    confidence: Number | None = Field(None, ge=0, le=1, description="0..1, how sure the owner is.")
    note: LongText = ""


class CommentRequest(Contract):
    text: CommentText = Field(description="The comment, 1 to 2000 characters.")


def _with_key_result(key_result_id: UUID, request: Contract) -> dict[str, Any]:
    return {"key_result_id": key_result_id, **request.model_dump()}


# --- endpoints ------------------------------------------------------------------------------------

OBJECTIVE = "/{objective_id}"
KEY_RESULT = "/{objective_id}/key-results/{key_result_id}"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an objective",
    response_model=CommandResult,
    responses=BODY_RESPONSES,
)
async def create_objective(body: CreateObjective, runner: Runner) -> JSONResponse:
    return await runner.run(body.objective_id, body, status.HTTP_201_CREATED)


@router.patch(
    OBJECTIVE,
    summary="Revise an objective's title, owner, team or period",
    response_model=CommandResult,
    responses=BODY_RESPONSES,
)
async def revise_objective(
    objective_id: UUID, body: ReviseObjective, runner: Runner
) -> JSONResponse:
    return await runner.run(objective_id, body)


@router.post(
    OBJECTIVE + "/align",
    summary="Align to a parent objective",
    response_model=CommandResult,
    responses=BODY_RESPONSES,
)
async def align_objective(objective_id: UUID, body: AlignObjective, runner: Runner) -> JSONResponse:
    return await runner.run(objective_id, body)


@router.post(
    OBJECTIVE + "/activate", summary="Start a draft objective", response_model=CommandResult
)
async def activate_objective(objective_id: UUID, runner: Runner) -> JSONResponse:
    return await runner.run(objective_id, ActivateObjective())


@router.post(
    OBJECTIVE + "/close",
    summary="Close an active objective (needs a reason)",
    response_model=CommandResult,
    responses=BODY_RESPONSES,
)
async def close_objective(
    objective_id: UUID, runner: Runner, body: CloseObjective | None = None
) -> JSONResponse:
    return await runner.run(objective_id, body or CloseObjective())


@router.post(
    OBJECTIVE + "/archive",
    summary="Archive an objective (needs a reason)",
    response_model=CommandResult,
)
async def archive_objective(objective_id: UUID, runner: Runner) -> JSONResponse:
    return await runner.run(objective_id, ArchiveObjective())


@router.post(
    OBJECTIVE + "/key-results",
    summary="Add a key result",
    response_model=CommandResult,
    responses=BODY_RESPONSES,
)
async def add_key_result(
    objective_id: UUID, body: KeyResultDefinition, runner: Runner
) -> JSONResponse:
    return await runner.run(objective_id, AddKeyResult(key_result=body))


@router.put(
    KEY_RESULT,
    summary="Redefine a key result (a new target needs a reason)",
    response_model=CommandResult,
    responses=BODY_RESPONSES,
)
async def revise_key_result(
    objective_id: UUID, key_result_id: UUID, body: KeyResultDefinition, runner: Runner
) -> JSONResponse:
    return await runner.run(
        objective_id, ReviseKeyResult(key_result_id=key_result_id, key_result=body)
    )


@router.delete(
    KEY_RESULT, summary="Remove a key result (needs a reason)", response_model=CommandResult
)
async def remove_key_result(
    objective_id: UUID, key_result_id: UUID, runner: Runner
) -> JSONResponse:
    return await runner.run(objective_id, RemoveKeyResult(key_result_id=key_result_id))


@router.put(
    KEY_RESULT + "/kpi",
    summary="Let a KPI move the key result",
    response_model=CommandResult,
    responses=BODY_RESPONSES,
)
async def bind_kpi(
    objective_id: UUID, key_result_id: UUID, body: KpiBindingRequest, runner: Runner
) -> JSONResponse:
    return await runner.run(objective_id, BindKpi(**_with_key_result(key_result_id, body)))


@router.delete(KEY_RESULT + "/kpi", summary="Stop following the KPI", response_model=CommandResult)
async def unbind_kpi(objective_id: UUID, key_result_id: UUID, runner: Runner) -> JSONResponse:
    return await runner.run(objective_id, UnbindKpi(key_result_id=key_result_id))


@router.post(
    KEY_RESULT + "/check-ins",
    summary="Report a key result's current value",
    response_model=CommandResult,
    responses=BODY_RESPONSES,
)
async def check_in(
    objective_id: UUID, key_result_id: UUID, body: CheckInRequest, runner: Runner
) -> JSONResponse:
    return await runner.run(objective_id, CheckIn(**_with_key_result(key_result_id, body)))


@router.post(
    KEY_RESULT + "/comments",
    summary="Comment on a key result (its value and score do not change)",
    response_model=CommandResult,
    responses=BODY_RESPONSES,
)
async def comment_key_result(
    objective_id: UUID, key_result_id: UUID, body: CommentRequest, runner: Runner
) -> JSONResponse:
    return await runner.run(objective_id, CommentKeyResult(**_with_key_result(key_result_id, body)))
