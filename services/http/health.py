"""`GET /health`: is this process working, as its health monitor and its jobs last saw it.

Answered from memory only, never by asking Kafka or a store: the health monitor
(`services.operations.health_monitor`) probes them on a timer, and every background job reports its
own
state on the app's job board (`projections.job_health`). So a flood of callers costs a lookup.

- `ok` (200): the last probe reached Kafka and both stores, and no job is retrying.
- `degraded` (503): a dependency did not answer, a job is retrying (`down` names them), or the
  monitor's last round is too old (`health monitor`).
- `starting` (503, `Retry-After: 1`): the monitor has not finished its first round. The app's
  start waits for that round (well under a second; at most `FIRST_ROUND_WAIT_S`, when a probe
  hangs to its timeout), so a served app says it only when the first round took longer.

Anonymous callers (load balancers, orchestrators) get the status alone. A caller whose key
grants `read` also gets each check with its time, the lag, and each job's entry on the board
(the relay's says which instance holds the relay lock, and whether it is this one: `lease`);
a key that is not valid is no key here (the status alone), so no probe ever gets a 401.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from projections.job_health import JobBoard
from services.access.principals import Principal, UnauthenticatedError
from services.commands.rejections import Rejection
from services.http.auth import presented_credentials, principal_for
from services.http.errors import rejection_response
from services.operations.health_monitor import DEPENDENCIES, JOB_NAME, HealthMonitor
from services.settings import Settings

router = APIRouter(tags=["operations"])

MAX_WAIT_S = 2.0
"""The longest an answer is held by the pacer; past it, 429 (well within a load balancer's
probe timeout: a probe is answered, late, while the paced flood lasts)."""
RATE_LIMITED = Rejection(
    429,
    "too_many_requests",
    "GET /health is answered at most OKR_HEALTH_MAX_PER_S times a second",
    [],
)

Status = Literal["ok", "degraded", "starting"]
STATUS_CODES: dict[Status, int] = {"ok": 200, "degraded": 503, "starting": 503}


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def reader(request: Request) -> Principal | None:
    """The caller when its key is valid and grants `read`, else None (anonymous).

    Read here rather than through `requires`: the route stays open to every caller, one with
    a wrong or revoked key too (a probe configured long ago), and the OpenAPI document does
    not invite a key on it."""
    credentials = presented_credentials(request.scope["headers"])
    try:
        principal = principal_for(request.app.state.api_keys, credentials)
    except UnauthenticatedError:
        return None
    return principal if principal.can("read") else None


def verdict(monitor: HealthMonitor | None, board: JobBoard) -> tuple[Status, list[str]]:
    """The status, and what is down: dependencies, a stale monitor, retrying jobs."""
    probe = monitor.last if monitor is not None else None
    down = probe.down() if probe is not None else []
    if monitor is not None and monitor.is_stale():
        down.append(JOB_NAME)
    down += [job.name for job in board.retrying() if job.name not in down]
    status: Status = "degraded" if down else "ok" if probe is not None else "starting"
    return status, down


def report(monitor: HealthMonitor | None, board: JobBoard) -> dict[str, Any]:
    """The whole answer, as a reader gets it."""
    status, down = verdict(monitor, board)
    body: dict[str, Any] = {"status": status, "down": down}
    probe = monitor.last if monitor is not None else None
    if monitor is not None and probe is not None:
        body |= {
            "checked_at": probe.checked_at.isoformat(),
            "age_s": round(probe.age_s(), 3),
            "checks": {name: monitor.check_json(name) for name in DEPENDENCIES},
            "lag": probe.lag_json,  # informative: a consumer behind is not a component down
        }
    else:
        body |= {"checked_at": None, "checks": {}, "lag": None}
    body["jobs"] = [job.to_json() for job in board.jobs()]
    return body


class Pacer:
    """At most `rate` answers a second, `burst` of them at once (a generic cell rate algorithm):
    `reserve()` says how long to hold the next answer, or None past `max_wait_s`."""

    def __init__(
        self,
        rate: float,
        burst: int,
        max_wait_s: float = MAX_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = 1.0 / rate
        self.tolerance = (burst - 1) * self.interval
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.due = 0.0
        """When the next answer would be on time, at the rate."""

    def reserve(self) -> float | None:
        now = self.clock()
        due = max(self.due, now)
        wait = max(0.0, due - now - self.tolerance)
        if wait > self.max_wait_s:
            return None
        self.due = due + self.interval
        return wait


def pacer(request: Request) -> Pacer:
    """The app's, made on first use from its settings."""
    state = request.app.state
    made: Pacer | None = getattr(state, "health_pacer", None)
    if made is None:
        rate = state.settings.health_max_per_s
        made = state.health_pacer = Pacer(rate, burst=max(1, int(rate)))
    return made


ANONYMOUS: dict[Status, bytes] = {
    status: b'{"status":"%s"}' % status.encode() for status in STATUS_CODES
}
"""What a caller without a key gets: the status alone, encoded once."""


@router.get(
    "/health",
    summary="ok, degraded or starting, from the health monitor's last probe and the jobs' board "
    "(503 unless ok); with a reader key, the details",
)
async def health(request: Request) -> Response:
    """No dependency (FastAPI runs plain functions in a thread) and, without a key, no JSON to
    build: an anonymous flood costs as little as an answer can. Paced: past
    `OKR_HEALTH_MAX_PER_S` answers a second, each waits its turn (callers that wait for their
    answer slow down with it), and past `MAX_WAIT_S` of waiting the answer is 429 at once."""
    wait = pacer(request).reserve()
    if wait is None:
        refused = rejection_response(RATE_LIMITED)
        refused.headers["Retry-After"] = "1"
        return refused
    if wait > 0:
        await asyncio.sleep(wait)
    state = request.app.state
    monitor: HealthMonitor | None = state.health
    board: JobBoard = state.jobs
    response: Response
    if reader(request) is None:
        status, _ = verdict(monitor, board)
        response = Response(ANONYMOUS[status], media_type="application/json")
    else:
        details = report(monitor, board)
        status = details["status"]
        response = JSONResponse(details)
    response.status_code = STATUS_CODES[status]
    if status == "starting":
        response.headers["Retry-After"] = "1"
    return response
