"""HTTP face of `services.commands.rejections`: every refusal becomes the same JSON shape, listing
every problem.

The status and code come from the one table in `services.commands.rejections`, so a command refused
over HTTP is
refused exactly as it would be on `okr.commands`. What only HTTP has is told apart here: a body
that is not JSON at all (400 `bad_request`, unreadable, not invalid), and a read whose path or
query parameters are wrong (422 `invalid_query`, naming each parameter: a read is no command).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from events.commands import Issue
from services.commands.rejections import (
    REJECTABLE,
    TRANSIENT,
    Rejection,
    invalid_command,
    problems_of,
    reject,
)


class RejectionBody(BaseModel):
    """What a refused request gets back (422, 404 or 409)."""

    error: str = Field(description="Machine-readable reason, e.g. 'quality_rejected'.")
    message: str
    problems: list[Issue] = Field(description="Every problem found, not only the first.")


REJECTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": RejectionBody, "description": "No such objective or key result."},
    409: {"model": RejectionBody, "description": "Stale version, or not allowed in this status."},
    422: {"model": RejectionBody, "description": "Invalid, unmeasurable or reasonless command."},
    503: {"model": RejectionBody, "description": "A store or Kafka is unavailable; retry."},
}
"""For the OpenAPI document: what the command endpoints answer when they refuse."""

BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": RejectionBody, "description": "The body is not JSON (or not UTF-8)."},
    413: {"model": RejectionBody, "description": "The body is larger than OKR_MAX_BODY_BYTES."},
}
"""For the OpenAPI document: what every operation that takes a body also answers."""

READS = frozenset({"GET", "HEAD"})

QUERY_MESSAGES: Mapping[str, str] = {
    "timezone_aware": "a time zone offset is required (Z or +HH:MM), e.g. 2026-08-01T12:00:00Z",
}
"""Clearer words than pydantic's for the mistakes a query makes most ("Input should have
timezone info" does not say what to add)."""


def rejection_response(rejection: Rejection) -> JSONResponse:
    body = RejectionBody(
        error=rejection.error, message=rejection.message, problems=rejection.problems
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=rejection.status)


async def on_rejected_command(_: Request, error: Exception) -> JSONResponse:
    return rejection_response(reject(error))


async def on_invalid_request(request: Request, error: Exception) -> JSONResponse:
    """Headers, query and body are checked together, so one answer names all their problems."""
    assert isinstance(error, RequestValidationError)
    errors = error.errors()
    unreadable = [e for e in errors if e.get("type") == "json_invalid"]
    if unreadable:
        return rejection_response(not_json(unreadable[0]))
    if request.method in READS:
        return rejection_response(invalid_query(errors))
    return rejection_response(invalid_command(problems_of(errors)))


def not_json(error: Mapping[str, Any]) -> Rejection:
    """FastAPI's decode error, as a 400: nothing in such a body could be checked."""
    where = error["loc"][-1] if len(error["loc"]) > 1 else "?"
    reason = error.get("ctx", {}).get("error", "JSON decode error")
    message = f"the body is not JSON: {reason} at position {where}"
    return Rejection(
        400, "bad_request", message, [Issue(code="json_invalid", field="body", message=message)]
    )


def invalid_query(errors: Sequence[Mapping[str, Any]]) -> Rejection:
    """A read refused for its parameters, each named: `at`, `limit`, `objective_id`..."""
    worded = [{**e, "msg": QUERY_MESSAGES.get(str(e["type"]), str(e["msg"]))} for e in errors]
    problems = problems_of(worded)
    named = "; ".join(
        f"`{'.'.join(str(part) for part in e['loc'][1:]) or e['loc'][0]}`: {e['msg']}"
        for e in worded
    )
    return Rejection(422, "invalid_query", f"the query is not valid: {named}", problems)


def outage_rejection(error: Exception) -> Rejection:
    """A store or Kafka outage is not the client's fault and passes: 503, try again shortly."""
    message = f"a backing service is unavailable ({type(error).__name__}); retry shortly"
    problem = Issue(code="unavailable", field="(service)", message=message)
    return Rejection(503, "unavailable", message, [problem])


async def on_outage(_: Request, error: Exception) -> JSONResponse:
    response = rejection_response(outage_rejection(error))
    response.headers["Retry-After"] = "1"
    return response


def install_error_handlers(app: FastAPI) -> None:
    for error_type in REJECTABLE:
        app.add_exception_handler(error_type, on_rejected_command)
    for error_type in TRANSIENT:
        app.add_exception_handler(error_type, on_outage)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    app.add_exception_handler(StarletteHTTPException, on_http_refusal)


HTTP_REFUSALS: dict[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
}


async def on_http_refusal(_: Request, error: Exception) -> JSONResponse:
    """The framework's own refusals (unknown path, wrong method, unreadable body) in the same
    shape as every other refusal, so clients parse one error format."""
    assert isinstance(error, StarletteHTTPException)
    code = HTTP_REFUSALS.get(error.status_code, "http_error")
    message = str(error.detail)
    problem = Issue(code=code, field="(request)", message=message)
    response = rejection_response(Rejection(error.status_code, code, message, [problem]))
    if error.headers:
        response.headers.update(error.headers)
    return response
