"""The dashboard's routes under `/ui/`: pages over the same read models as the JSON API, and
forms that send the same commands through the same application.

Reads go to the projection store (`ReadStore`), the KPI tables and the event store exactly as
`services.http.reads`, `kpis`, `as_of` and `audit` read them, reusing their functions. Writes build
the wire `Command` the API builds and hand it to `OkrApplication.handle`; refusals are mapped by
the one table, `services.commands.rejections.reject`. A form carries the objective's version it was
drawn
from (If-Match), so a stale form is refused with a conflict message, never a lost update, and a
command id, so a form sent twice writes once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID, uuid4

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import (
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from markupsafe import Markup
from pydantic import BaseModel, ValidationError

from domain.errors import OkrError
from domain.kpi_series import epoch_us
from domain.objective_events import spec_of
from domain.pace import PaceStatus
from domain.quality import lint_objective
from events.commands import (
    ActivateObjective,
    BindKpi,
    CheckIn,
    CloseObjective,
    CommandBody,
    CommandResult,
    CreateObjective,
    KeyResultDefinition,
    ReviseKeyResult,
    UnbindKpi,
)
from projections.views import KeyResultRow, ObjectiveFilter, ObjectiveRow, ReadStore
from services.access.principals import Permission, UnauthenticatedError
from services.audit.export import ExportFormat
from services.audit.history import Integrity, check_integrity
from services.audit.past_state_view import ObjectiveAsOfBody, as_of_body
from services.audit.past_states import objective_as_of
from services.audit.verify import VerifyReport, verify
from services.commands.application import OkrApplication
from services.commands.rejections import REJECTABLE, TRANSIENT, Rejection, reject
from services.http import lint as api_lint
from services.http.auth import accept_guard
from services.http.commands import CommandRunner, get_application
from services.http.docs import swagger_document
from services.http.errors import outage_rejection
from services.http.kpis import _all_kpis, _known, _stats_and_bindings
from services.http.reads import (
    final_score_of,
    get_read_store,
    get_settings,
    objective_view,
    pace_of,
    period_bounds,
    wait_for_version,
)
from services.scoring.scorer import kpi_reader
from services.scoring.series_queries import StoredObservation, series_page
from services.settings import Settings
from services.web import charts, views
from services.web.i18n import (
    LANG_COOKIE,
    LANGUAGES,
    localized,
    negotiate,
    quality_message,
    translator,
)
from services.web.live import LiveFeed
from services.web.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    CsrfError,
    ForbiddenPageError,
    LoginRequiredError,
    Session,
    Sessions,
    check_csrf,
    current_session,
    get_sessions,
)

router = APIRouter(prefix="/ui", include_in_schema=False)

HERE = Path(__file__).parent
STATIC_PREFIX = "/ui/static"
LOGIN_PATH = "/ui/login"
LOGIN_CSRF_COOKIE = "okr_login_csrf"
PUBLIC_UI_PATHS: frozenset[str] = frozenset(
    {"/ui", LOGIN_PATH, "/ui/lang", STATIC_PREFIX, "/ui/static/swagger"}
)
"""The dashboard's routes open to anyone: the sign-in form, the language switch, the assets."""
WAIT_FOR_WRITE_S = 5.0
MIN_GZIP_BYTES = 2048
SERIES_LIMIT = 5000
INTEGRITY_CACHE = 256
RECHECK_S = 10.0
INTEGRITY_LOCK = threading.Lock()
"""Guards the apps' integrity caches: `_integrity` runs in worker threads."""


# --- pages ----------------------------------------------------------------------------------------


@cache
def templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.tests["kpi_run"] = lambda value: isinstance(value, views.KpiRun)
    environment.globals |= {
        "number": views.number,
        "percent": views.percent,
        "width_class": views.width_class,
        "target_text": views.target_text,
        "change_text": views.change_text,
    }
    return environment


@cache
def asset_version() -> str:
    """Changes with the assets' content, so browsers may cache them for long."""
    digest = hashlib.sha256()
    for path in sorted((HERE / "static").iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def language(request: Request) -> str:
    return negotiate(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE))


def render(
    request: Request,
    template: str,
    session: Session | None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    lang = language(request)
    _ = translator(lang)
    page = templates().get_template(template)
    started = time.perf_counter()
    html = page.render(
        request=request,
        session=session,
        lang=lang,
        languages=LANGUAGES,
        _=_,
        static=f"{STATIC_PREFIX}/",
        v=asset_version(),
        csrf_field=CSRF_FIELD,
        csrf=session.csrf if session else "",
        here=_here(request),
        number=functools.partial(views.number, lang=lang),
        percent=functools.partial(views.percent, lang=lang),
        **context,
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    return compressed(
        request,
        html.encode(),
        status_code,
        {
            "Content-Language": lang,
            "Cache-Control": "no-store",
            "Server-Timing": f"render;dur={elapsed_ms:.1f}",
            **PAGE_HEADERS,
        },
    )


PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def compressed(
    request: Request, body: bytes, status_code: int, headers: Mapping[str, str]
) -> Response:
    """Pages are text and repeat themselves (a thousand objectives' rows): gzip when asked."""
    headers = {**headers, "Vary": "Accept-Encoding, Accept-Language, Cookie"}
    if len(body) >= MIN_GZIP_BYTES and "gzip" in request.headers.get("accept-encoding", ""):
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return Response(body, status_code, headers, media_type="text/html; charset=utf-8")


def _here(request: Request) -> str:
    query = f"?{request.url.query}" if request.url.query else ""
    return request.url.path + query


def safe_next(target: str | None) -> str:
    """Only a path of the dashboard: never another site (an open redirect)."""
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return "/ui/"


# --- guards ---------------------------------------------------------------------------------------


@cache
def ui(permission: Permission) -> Callable[..., Any]:
    """The session guard of a page or action needing `permission`; the app's check that every
    route is guarded counts it as that permission (`services.http.auth.accept_guard`)."""

    async def guard(session: Annotated[Session, Depends(current_session)]) -> Session:
        if not session.can(permission):
            raise ForbiddenPageError(session, permission)
        return session

    guard.__name__ = f"ui_session_{permission}"
    accept_guard(guard, permission)
    return guard


Reader = Annotated[Session, Depends(ui("read"))]
Writer = Annotated[Session, Depends(ui("write"))]
Auditor = Annotated[Session, Depends(ui("audit"))]


async def form_of(request: Request) -> dict[str, str]:
    form = await request.form()
    return {name: value for name, value in form.items() if isinstance(value, str)}


async def checked_form(request: Request, session: Session) -> dict[str, str]:
    form = await form_of(request)
    check_csrf(session, form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER))
    return form


# --- refusals as pages ----------------------------------------------------------------------------


async def on_login_required(request: Request, error: Exception) -> Response:
    assert isinstance(error, LoginRequiredError)
    if request.method == "GET" and "text/html" in request.headers.get("accept", "text/html"):
        response: Response = RedirectResponse(
            f"{LOGIN_PATH}?{urlencode({'next': _here(request)})}", status_code=303
        )
    else:
        response = JSONResponse({"error": "login_required", "message": error.reason}, 401)
    if request.cookies.get(COOKIE):
        response.delete_cookie(COOKIE, path="/ui")
    return response


async def on_forbidden(request: Request, error: Exception) -> Response:
    assert isinstance(error, ForbiddenPageError)
    _ = translator(language(request))
    message = _("Your role ({role}) may not do this ({permission}).").format(
        role=error.session.role.value, permission=error.permission
    )
    return render(request, "refused.html", error.session, 403, message=message)


async def on_csrf(request: Request, error: Exception) -> Response:
    _ = translator(language(request))
    message = _(
        "This form was not sent from a page of this dashboard, or the page is too old. "
        "Nothing was saved: reload the page and try again."
    )
    session = None
    with contextlib.suppress(LoginRequiredError):
        session = get_sessions(request).read(request.cookies.get(COOKIE))
    return render(request, "refused.html", session, 403, message=message)


def install_error_pages(app: Any) -> None:
    app.add_exception_handler(LoginRequiredError, on_login_required)
    app.add_exception_handler(ForbiddenPageError, on_forbidden)
    app.add_exception_handler(CsrfError, on_csrf)


# --- sign in, sign out, language ------------------------------------------------------------------


@router.get("")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/login")
async def login_form(request: Request, next: str | None = None, bye: int = 0) -> Response:
    return _login_page(request, next, message=None, bye=bool(bye))


def _login_page(
    request: Request, next_page: str | None, message: str | None, bye: bool = False
) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        None,
        401 if message else 200,
        next_page=safe_next(next_page),
        message=message,
        bye=bye,
        login_csrf=token,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, max_age=3600, path=LOGIN_PATH, httponly=True, samesite="strict"
    )
    return response


@router.post("/login")
async def login(request: Request, sessions: Annotated[Sessions, Depends(get_sessions)]) -> Response:
    form = await form_of(request)
    _ = translator(language(request))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not secrets.compare_digest(expected, form.get(CSRF_FIELD, "")):
        message = _("The sign-in form expired. Please try again.")
        return _login_page(request, form.get("next"), message)
    api_key = form.get("api_key", "")
    try:
        if not api_key.strip():
            raise UnauthenticatedError("no key")
        _session, cookie = sessions.sign_in(api_key)
    except UnauthenticatedError:
        message = _("This API key is not valid (unknown, revoked or mistyped).")
        return _login_page(request, form.get("next"), message)
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=sessions.ttl_s,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=LOGIN_PATH)
    return response


@router.post("/logout")
async def logout(request: Request, session: Reader) -> Response:
    await checked_form(request, session)
    response = RedirectResponse(f"{LOGIN_PATH}?bye=1", status_code=303)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


@router.get("/lang")
async def switch_language(to: str = "en", next: str | None = None) -> Response:
    response = RedirectResponse(safe_next(next), status_code=303)
    if to in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE, to, max_age=365 * 86400, path="/ui", samesite="strict", httponly=True
        )
    return response


# --- overview -------------------------------------------------------------------------------------


def _all_objectives(store: ReadStore, filters: ObjectiveFilter) -> list[ObjectiveRow]:
    rows: list[ObjectiveRow] = []
    cursor = None
    while True:
        page = store.list_objectives(filters, limit=500, after_cursor=cursor)
        rows.extend(page.items)
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


class OverviewCache:
    """The overview's parts that depend only on what they show, kept between renders.

    An objective's key-result rows at a version never change (the projection of version N is
    the same whenever it is read), so they are keyed by (objective, version); an objective's
    block of HTML is keyed by everything it shows (version, paces, language). Pace itself is
    computed at every render, so a key result going stale is never missed. A page of 1,000
    objectives then reads 1,000 rows instead of 6,000 and renders only what changed.
    """

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._rows: OrderedDict[tuple[UUID, int], list[KeyResultRow]] = OrderedDict()
        self._fragments: OrderedDict[tuple[Any, ...], Markup] = OrderedDict()

    def key_results(self, store: ReadStore, row: ObjectiveRow) -> list[KeyResultRow]:
        key = (row.objective_id, row.version)
        found = self._rows.get(key)
        if found is None:
            found = store.key_results(row.objective_id)
            if found and found[0].objective_id == row.objective_id:
                self._put(self._rows, key, found)
        return found

    def fragment(self, key: tuple[Any, ...], make: Callable[[], Markup]) -> Markup:
        found = self._fragments.get(key)
        if found is None:
            found = make()
            self._put(self._fragments, key, found)
        return found

    def _put(self, table: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        table[key] = value
        if len(table) > self.size:
            table.popitem(last=False)


def overview_nodes(
    store: ReadStore,
    settings: Settings,
    rows: Sequence[ObjectiveRow],
    now: datetime,
    cache: OverviewCache,
) -> list[views.TreeNode]:
    """The objectives `rows`, each with its key results and pace (blocking)."""
    nodes = []
    for row in rows:
        key_results = cache.key_results(store, row)
        updates = [kr.last_update for kr in key_results if kr.last_update is not None]
        pace = pace_of(settings, row, row.score, max(updates, default=None), now)
        nodes.append(
            views.TreeNode(
                objective=row,
                key_results=key_results,
                pace=pace,
                kr_paces={
                    kr.key_result_id: pace_of(settings, row, kr.score, kr.last_update, now)
                    for kr in key_results
                },
                final_score=final_score_of(row, pace),
            )
        )
    return nodes


@router.get("/")
async def overview(
    request: Request,
    session: Reader,
    period: str | None = None,
    team: str | None = None,
    owner: str | None = None,
    status: str | None = None,
) -> Response:
    now = datetime.now(UTC)
    chosen = views.parse_period(period, now.date())
    statuses = ("draft", "active", "closed", "archived")
    store, settings = get_read_store(request), get_settings(request)
    everyone = ObjectiveFilter(period_from=chosen.start, period_to=chosen.end)
    in_period = await asyncio.to_thread(_all_objectives, store, everyone)
    # One read of the period; the other filters are plain equalities, applied here (the
    # team and owner choices list every value of the period, not only the filtered ones).
    wanted_status = status if status in statuses else None
    shown = [
        row
        for row in in_period
        if (not team or row.team == team)
        and (not owner or row.owner == owner)
        and (wanted_status is None or row.status.value == wanted_status)
    ]
    cache: OverviewCache = request.app.state.ui_overview
    nodes = await asyncio.to_thread(overview_nodes, store, settings, shown, now, cache)
    lang = language(request)
    node_template = templates().get_template("_node.html")
    node_context = {
        "_": translator(lang),
        "number": functools.partial(views.number, lang=lang),
        "percent": functools.partial(views.percent, lang=lang),
    }

    def node_html(node: views.TreeNode) -> Markup:
        key = (
            node.objective.objective_id,
            node.objective.version,
            node.pace,
            tuple(node.kr_paces.values()),
            node.final_score,
            node.parent_elsewhere,
            lang,
        )
        return cache.fragment(key, lambda: Markup(node_template.render(node=node, **node_context)))

    return render(
        request,
        "overview.html",
        session,
        roots=views.alignment_tree(nodes),
        count=len(nodes),
        counts=views.pace_counts(nodes),
        period=chosen,
        periods=views.period_choices(now.date()),
        teams=sorted({r.team for r in in_period}),
        owners=sorted({r.owner for r in in_period}),
        statuses=statuses,
        filters={"team": team or "", "owner": owner or "", "status": status or ""},
        live_scope="*",
        node_html=node_html,
    )


# --- one objective --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedChain:
    """An objective's chain check, with the version it covered and when it ran."""

    integrity: Integrity
    version: int
    at: float


def _integrity(request: Request, objective_id: UUID, version: int) -> CheckedChain:
    """The chain check of `okr audit verify` for one objective. It reads every event of the
    objective, so a page that a KPI stream refreshes every second reuses a check of an earlier
    version for up to `RECHECK_S` (and says which version it covered) instead of reading the
    whole history again at each refresh."""
    cache_: OrderedDict[UUID, CheckedChain] = request.app.state.ui_integrity
    with INTEGRITY_LOCK:  # pages are rendered in worker threads
        found = cache_.get(objective_id)
    fresh = found is not None and (
        found.version == version or time.monotonic() - found.at < RECHECK_S
    )
    if found is None or not fresh:
        integrity = check_integrity(get_application(request), objective_id)
        found = CheckedChain(integrity, version, time.monotonic())
        with INTEGRITY_LOCK:
            cache_[objective_id] = found
            cache_.move_to_end(objective_id)
            if len(cache_) > INTEGRITY_CACHE:
                cache_.popitem(last=False)
    return found


def _parse_moment(at: str | None, tz_minutes: str | None) -> datetime | None:
    """A moment from a datetime-local field (no zone) and the browser's offset (JS fills it;
    without JS the moment is read as UTC)."""
    if not at:
        return None
    moment = datetime.fromisoformat(at)
    if moment.tzinfo is not None:
        return moment
    offset = 0
    if tz_minutes and tz_minutes.lstrip("-").isdigit():
        offset = -int(tz_minutes)  # getTimezoneOffset(): minutes *behind* UTC
    return moment.replace(tzinfo=timezone(timedelta(minutes=max(min(offset, 840), -840))))


async def objective_page(
    request: Request,
    session: Session,
    objective_id: UUID,
    *,
    min_version: int | None = None,
    at: str | None = None,
    tz: str | None = None,
    version: int | None = None,
    span: str = "auto",
    status_code: int = 200,
    notice: str | None = None,
    form_errors: Mapping[str, Sequence[str]] | None = None,
    form_values: Mapping[str, str] | None = None,
) -> Response:
    store, settings = get_read_store(request), get_settings(request)
    application = get_application(request)
    _ = translator(language(request))
    if min_version is not None:
        await wait_for_version(store, objective_id, min_version, WAIT_FOR_WRITE_S)
    detail = await asyncio.to_thread(store.objective_detail, objective_id)
    if detail is None:
        return render(
            request,
            "refused.html",
            session,
            404,
            message=_("No objective {id}.").format(id=objective_id),
        )
    now = datetime.now(UTC)
    row = detail.objective
    view = objective_view(settings, row, list(detail.key_results), list(detail.children), now)
    timeline, history, parent, integrity = await asyncio.gather(
        asyncio.to_thread(store.timeline, objective_id),
        asyncio.to_thread(store.history, objective_id),
        asyncio.to_thread(store.get_objective, row.parent_id) if row.parent_id else _none(),
        asyncio.to_thread(_integrity, request, objective_id, row.version),
    )
    titles = {kr.key_result_id: kr.title for kr in detail.key_results}
    first_event = timeline[0].occurred_at if timeline else None
    start, end, pace_line = views.chart_window(
        period_bounds(row.period_start, row.period_end), first_event, now, span
    )
    objective_chart = charts.step_chart(
        views.objective_points(timeline, titles, _),
        start=start,
        end=end,
        now=now,
        pace_line=pace_line,
        title=_("Score of the objective over its period"),
        width=1000,
        height=280,
        description=_("Each point is a change of score; its label says what moved it."),
    )
    kr_charts = {
        kr.key_result_id: charts.step_chart(
            views.key_result_points(timeline, kr.key_result_id, _),
            start=start,
            end=end,
            now=now,
            pace_line=pace_line,
            title=_("Score of “{title}”").format(title=kr.title),
            description=_("Each point is a change of score; its label says what moved it."),
            css_class="chart small",
            width=380,
            height=150,
        )
        for kr in detail.key_results
    }
    as_of_state, as_of_error = await _as_of(application, objective_id, at, tz, version, _)
    kpi_keys: list[str] = []
    if session.can("write"):
        kpis = await asyncio.to_thread(_all_kpis, kpi_reader(application))
        kpi_keys = [k.kpi_key for k in kpis]
    recent = [
        (r, views.cause_label(r, _, titles.get(r.key_result_id) if r.key_result_id else None))
        for r in reversed(timeline[-30:])
    ]
    return render(
        request,
        "objective.html",
        session,
        status_code,
        view=view,
        objective=row,
        parent=parent,
        key_results=view.key_results,
        children=detail.children,
        objective_chart=objective_chart,
        kr_charts=kr_charts,
        recent=recent,
        timeline_count=len(timeline),
        history=views.group_history(list(reversed(history))),
        history_count=len(history),
        field_label=lambda name: views.field_label(name, titles),
        known_titles={
            str(o.objective_id): o.title for o in (parent, *detail.children) if o is not None
        },
        span="period" if pace_line else "activity",
        integrity=integrity.integrity,
        integrity_version=integrity.version,
        as_of=as_of_state,
        as_of_error=as_of_error,
        as_of_query={"at": at or "", "version": version or ""},
        kpi_keys=kpi_keys,
        aggregations=("latest", "sum", "count", "avg", "min", "max"),
        notice=notice,
        form_errors=form_errors or {},
        form_values=form_values or {},
        command_id=str(uuid4()),
        live_scope=str(objective_id),
        pace_ended=view.pace is PaceStatus.ENDED,
        final_score=final_score_of(row, view.pace),
    )


async def _none() -> None:
    return None


async def _as_of(
    application: OkrApplication,
    objective_id: UUID,
    at: str | None,
    tz: str | None,
    version: int | None,
    _: Callable[[str], str],
) -> tuple[ObjectiveAsOfBody | None, str | None]:
    """The state at a moment or a version, from the event store, as `GET .../as-of` reads it."""
    if not at and version is None:
        return None, None
    try:
        moment = _parse_moment(at, tz) if version is None else None
    except ValueError:
        return None, _("Not a moment: {at}").format(at=at)
    found = await asyncio.to_thread(
        objective_as_of, application, objective_id, at=moment, version=version
    )
    if found is None:
        when = f"v{version}" if version is not None else str(moment)
        return None, _("The objective did not exist yet at {when}.").format(when=when)
    return as_of_body(found), None


@router.get("/objectives/new")
async def new_objective_form(request: Request, session: Writer) -> Response:
    return await _new_objective_page(request, session, values={}, problems=[], warnings=[])


@router.get("/objectives/{objective_id}")
async def objective(
    request: Request,
    session: Reader,
    objective_id: UUID,
    at: str | None = None,
    tz: str | None = None,
    version: int | None = None,
    min_version: int | None = None,
    done: str | None = None,
    span: str = "auto",
) -> Response:
    _ = translator(language(request))
    notices = {
        "saved": _("Saved."),
        "created": _("Objective created."),
        "activated": _("Objective activated."),
        "closed": _("Objective closed."),
        "checked_in": _("Check-in recorded."),
        "revised": _("Target revised."),
        "bound": _("KPI bound."),
        "unbound": _("KPI unbound."),
    }
    return await objective_page(
        request,
        session,
        objective_id,
        min_version=min_version,
        at=at,
        tz=tz,
        version=version if version and version > 0 else None,
        span=span if span in ("period", "activity") else "auto",
        notice=notices.get(done or ""),
    )


# --- writes ---------------------------------------------------------------------------------------


async def send_command(
    request: Request,
    session: Session,
    objective_id: UUID | None,
    body: CommandBody,
    *,
    command_id: str | None,
    expected_version: int | None,
    reason: str | None = None,
) -> CommandResult | Rejection:
    """The API's command path itself: its `CommandRunner` (the same `Command` envelope, thread
    hop and `OkrApplication.handle`), and its error table for refusals."""
    runner = CommandRunner(
        application=get_application(request),
        command_id=command_id or str(uuid4()),
        actor=session.name,
        reason=reason or None,
        expected_version=expected_version,
    )
    try:
        return await runner.handle(objective_id, body)
    except REJECTABLE as error:
        return reject(error)
    except TRANSIENT as error:
        return outage_rejection(error)


def _float(value: str | None) -> float | None:
    if value is None or not value.strip():
        return None
    return float(value.strip().replace("\u202f", "").replace(" ", "").replace(",", "."))


def _version(form: Mapping[str, str]) -> int | None:
    text = form.get("expected_version", "")
    return int(text) if text.isdigit() else None


def rejection_text(rejection: Rejection, expected: int | None, _: Callable[[str], str]) -> str:
    if rejection.error == "version_conflict":
        return _(
            "Someone changed this objective since this form was drawn (you saw version "
            "{version}). Nothing was saved: the page now shows the current values; check them "
            "and send the form again."
        ).format(version=expected)
    return rejection.message


ACTIONS = ("activate", "close", "check-in", "revise", "bind", "unbind")


@router.post("/objectives/{objective_id}/{action}")
async def objective_action(
    request: Request, session: Writer, objective_id: UUID, action: str
) -> Response:
    form = await checked_form(request, session)
    _ = translator(language(request))
    if action not in ACTIONS:
        return render(request, "refused.html", session, 404, message=_("No such action."))
    form_id = form.get("form_id", action)
    try:
        body, reason, done = await _action_body(request, objective_id, action, form, _)
    except (ValueError, ValidationError) as error:
        messages = _validation_messages(error)
        return await objective_page(
            request,
            session,
            objective_id,
            status_code=422,
            form_errors={form_id: messages},
            form_values=form,
        )
    expected = _version(form)
    outcome = await send_command(
        request,
        session,
        objective_id,
        body,
        command_id=form.get("command_id"),
        expected_version=expected,
        reason=reason,
    )
    if isinstance(outcome, Rejection):
        messages = [rejection_text(outcome, expected, _)]
        messages += [
            quality_message(p.code, p.message, language(request))
            for p in outcome.problems
            if outcome.error == "quality_rejected"
        ]
        return await objective_page(
            request,
            session,
            objective_id,
            status_code=outcome.status,
            form_errors={form_id: messages},
            form_values=form,
        )
    query = urlencode({"min_version": outcome.version or 0, "done": done})
    return RedirectResponse(f"/ui/objectives/{objective_id}?{query}", status_code=303)


def _validation_messages(error: Exception) -> list[str]:
    if isinstance(error, ValidationError):
        return [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in error.errors(include_url=False)
        ]
    return [str(error)]


async def _action_body(
    request: Request,
    objective_id: UUID,
    action: str,
    form: Mapping[str, str],
    _: Callable[[str], str],
) -> tuple[CommandBody, str | None, str]:
    reason = form.get("reason", "").strip() or None
    if action == "activate":
        return ActivateObjective(), None, "activated"
    if action == "close":
        return CloseObjective(retrospective=form.get("retrospective", "")), reason, "closed"
    key_result_id = UUID(form.get("key_result_id", ""))
    if action == "check-in":
        value = _float(form.get("value"))
        if value is None:
            raise ValueError(_("Give the current value."))
        confidence = _float(form.get("confidence"))
        if confidence is not None and confidence > 1:
            confidence = confidence / 100  # typed as a percentage
        return (
            CheckIn(
                key_result_id=key_result_id,
                value=value,
                confidence=confidence,
                note=form.get("note", ""),
            ),
            None,
            "checked_in",
        )
    if action == "bind":
        return (
            BindKpi(
                key_result_id=key_result_id,
                kpi_key=form.get("kpi_key", "").strip(),
                aggregation=form.get("aggregation", "latest"),
            ),
            reason,
            "bound",
        )
    if action == "unbind":
        return UnbindKpi(key_result_id=key_result_id), reason, "unbound"
    # revise: the definition as it stands, with the new target
    current = await asyncio.to_thread(get_read_store(request).key_results, objective_id)
    kr = next((k for k in current if k.key_result_id == key_result_id), None)
    if kr is None:
        raise ValueError(_("No such key result."))
    definition = _definition_of(kr)
    changes: dict[str, Any] = {}
    if kr.kind == "range":
        changes = {
            "target_low": _float(form.get("target_low")),
            "target_high": _float(form.get("target_high")),
        }
    else:
        changes = {"target": _float(form.get("target")), "relative_target": None}
    revised = KeyResultDefinition.model_validate({**definition, **changes})
    return ReviseKeyResult(key_result_id=key_result_id, key_result=revised), reason, "revised"


def _definition_of(kr: KeyResultRow) -> dict[str, Any]:
    return {
        "title": kr.title,
        "kind": kr.kind,
        "metric": kr.metric,
        "baseline": kr.baseline,
        "target": kr.target,
        "target_low": kr.target_low,
        "target_high": kr.target_high,
        "relative_target": kr.relative_target,
        "deadline": kr.deadline.isoformat() if kr.deadline else None,
        "weight": kr.weight,
    }


# --- a new objective ------------------------------------------------------------------------------

KR_FIELDS = (
    "title",
    "kind",
    "metric",
    "baseline",
    "target",
    "relative_target",
    "target_low",
    "target_high",
    "deadline",
    "weight",
)
NUMBER_FIELDS = ("baseline", "target", "target_low", "target_high", "weight")


def draft_of(form: Mapping[str, str]) -> dict[str, Any]:
    """A `CreateObjective` body from the form's fields (`kr-0-title`, ...), empty fields left
    out, numbers read as numbers; what cannot be read stays text, for validation to name."""
    draft: dict[str, Any] = {}
    for name in ("title", "description", "owner", "team", "period_start", "period_end"):
        value = form.get(name, "").strip() if name != "description" else form.get(name, "")
        if value:
            draft[name] = value
    if form.get("parent_id"):
        draft["parent_id"] = form["parent_id"]
    indexes = sorted(
        {
            int(name.split("-")[1])
            for name in form
            if name.startswith("kr-") and name.count("-") >= 2 and name.split("-")[1].isdigit()
        }
    )
    key_results = []
    for index in indexes:
        kr: dict[str, Any] = {}
        for field in KR_FIELDS:
            raw = form.get(f"kr-{index}-{field}", "").strip()
            if not raw:
                continue
            if field in NUMBER_FIELDS:
                try:
                    kr[field] = _float(raw)
                except ValueError:
                    kr[field] = raw
            else:
                kr[field] = raw
        if any(v for k, v in kr.items() if k != "kind"):
            key_results.append(kr)
    draft["key_results"] = key_results
    return draft


class DraftReport(BaseModel):
    ok: bool
    problems: list[dict[str, str]]
    warnings: list[dict[str, str]]


def _issue_field(loc: Sequence[Any]) -> str:
    """A pydantic location as the quality rules name fields: key_results[0].target."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


async def lint_draft(draft: dict[str, Any], lang: str) -> DraftReport:
    """The quality rules on a draft, as `POST /lint` runs them; a draft that is not even a valid
    command yet gets its field errors, and the rules run on the parts that are readable."""
    try:
        body = CreateObjective.model_validate(draft)
    except ValidationError as error:
        invalid = [
            {"code": str(e["type"]), "field": _issue_field(e["loc"]), "message": str(e["msg"])}
            for e in error.errors(include_url=False)
        ]
        report = _lenient_lint(draft)
        flagged = {issue["field"] for issue in invalid}
        problems = invalid + [p for p in report["problems"] if p["field"] not in flagged]
        return DraftReport(
            ok=False,
            problems=localized(problems, lang),
            warnings=localized(report["warnings"], lang),
        )
    linted = await api_lint.lint(body)
    return DraftReport(
        ok=linted.ok,
        problems=localized([i.model_dump() for i in linted.problems], lang),
        warnings=localized([i.model_dump() for i in linted.warnings], lang),
    )


def _lenient_lint(draft: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    specs = []
    for kr in draft.get("key_results", []):
        clean = {k: v for k, v in kr.items() if not (k in NUMBER_FIELDS and isinstance(v, str))}
        try:
            specs.append(spec_of(KeyResultDefinition.model_validate(clean)))
        except ValidationError:
            continue
    report = lint_objective(
        str(draft.get("title", "")),
        _day(draft.get("period_start")),
        _day(draft.get("period_end")),
        specs,
    )
    return {
        "problems": [_plain(i) for i in report.problems],
        "warnings": [_plain(i) for i in report.warnings],
    }


def _plain(issue: Any) -> dict[str, str]:
    return {"code": issue.code, "field": issue.field, "message": issue.message}


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


@router.post("/lint")
async def lint(request: Request, session: Reader) -> DraftReport:
    form = await checked_form(request, session)
    return await lint_draft(draft_of(form), language(request))


async def _new_objective_page(
    request: Request,
    session: Session,
    values: Mapping[str, str],
    problems: list[dict[str, str]],
    warnings: list[dict[str, str]],
    status_code: int = 200,
    message: str | None = None,
) -> Response:
    now = datetime.now(UTC)
    quarter = views.quarter_of(now.date())
    store = get_read_store(request)
    parents = await asyncio.to_thread(
        _all_objectives, store, ObjectiveFilter(period_from=quarter.start, period_to=quarter.end)
    )
    indexes = sorted(
        {int(n.split("-")[1]) for n in values if n.startswith("kr-") and n.split("-")[1].isdigit()}
    ) or [0]
    by_field: dict[str, list[dict[str, str]]] = {}
    for issue in problems:
        by_field.setdefault(issue["field"], []).append({**issue, "level": "problem"})
    for issue in warnings:
        by_field.setdefault(issue["field"], []).append({**issue, "level": "warning"})
    return render(
        request,
        "new_objective.html",
        session,
        status_code,
        values=values,
        kr_indexes=indexes,
        issues=by_field,
        problems=problems,
        message=message,
        default_start=quarter.start,
        default_end=quarter.end,
        parents=parents,
        kinds=("increase", "decrease", "range", "at_least", "at_most", "milestone"),
        command_id=values.get("command_id") or str(uuid4()),
    )


@router.post("/objectives/new")
async def create_objective(request: Request, session: Writer) -> Response:
    form = await checked_form(request, session)
    lang = language(request)
    _ = translator(lang)
    if "add_key_result" in form:  # without JavaScript: one more key result block
        values = dict(form)
        indexes = [
            int(n.split("-")[1]) for n in form if n.startswith("kr-") and n.split("-")[1].isdigit()
        ]
        values[f"kr-{max(indexes, default=-1) + 1}-kind"] = "increase"
        return await _new_objective_page(request, session, values, [], [])
    draft = draft_of(form)
    report = await lint_draft(draft, lang)
    if not report.ok:
        return await _new_objective_page(
            request,
            session,
            form,
            report.problems,
            report.warnings,
            422,
            _("Not created: fix the problems shown next to the fields."),
        )
    body = CreateObjective.model_validate(draft)
    outcome = await send_command(
        request, session, None, body, command_id=form.get("command_id"), expected_version=None
    )
    if isinstance(outcome, Rejection):
        problems = [
            {"code": p.code, "field": p.field, "message": quality_message(p.code, p.message, lang)}
            for p in outcome.problems
        ]
        return await _new_objective_page(
            request, session, form, problems, report.warnings, outcome.status, outcome.message
        )
    query = urlencode({"min_version": outcome.version or 1, "done": "created"})
    return RedirectResponse(f"/ui/objectives/{outcome.objective_id}?{query}", status_code=303)


# --- KPIs -----------------------------------------------------------------------------------------


@router.get("/kpis")
async def kpi_list(request: Request, session: Reader) -> Response:
    kpis = await asyncio.to_thread(_all_kpis, kpi_reader(get_application(request)))
    return render(request, "kpis.html", session, kpis=kpis, live_scope="*")


def _kpi_detail(
    application: OkrApplication, kpi_key: str, since: datetime
) -> dict[str, Any] | None:
    reader = kpi_reader(application)
    stats, bindings = _stats_and_bindings(reader, kpi_key)
    if not _known(stats, bindings):
        return None
    observations: list[StoredObservation] = []
    cursor = None
    start_us = epoch_us(since)
    while len(observations) < SERIES_LIMIT:
        page = series_page(reader, kpi_key, start_us=start_us, after=cursor, limit=1000)
        observations.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    from services.http.kpis import key_result_view, kpi_view

    return {
        "kpi": kpi_view(stats, len(bindings)),
        "observations": observations,
        "bindings": [
            key_result_view(b) for b in sorted(bindings, key=lambda b: str(b.objective_id))
        ],
    }


@router.get("/kpis/{kpi_key:path}")
async def kpi_page(request: Request, session: Reader, kpi_key: str, days: int = 30) -> Response:
    _ = translator(language(request))
    days = min(max(days, 1), 3660)
    since = datetime.now(UTC) - timedelta(days=days)
    found = await asyncio.to_thread(_kpi_detail, get_application(request), kpi_key, since)
    if found is None:
        return render(
            request, "refused.html", session, 404, message=_("No KPI {key}.").format(key=kpi_key)
        )
    observations = found["observations"]
    points = views.thin(
        [
            charts.ChartPoint(
                o.observed_at,
                o.value,
                f"{o.observed_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC · {views.number(o.value)}"
                f" · {o.event_id} ({o.source})",
            )
            for o in observations
        ]
    )
    chart = charts.line_chart(
        points,
        title=_("Series of {key}").format(key=kpi_key),
        description=_("Each point is an accepted observation; its label names the event."),
    )
    titles = {}
    for binding in found["bindings"]:
        row = await asyncio.to_thread(get_read_store(request).get_objective, binding.objective_id)
        titles[binding.objective_id] = row.title if row else str(binding.objective_id)
    return render(
        request,
        "kpi.html",
        session,
        kpi=found["kpi"],
        chart=chart,
        latest=list(reversed(observations[-20:])),
        observations=len(observations),
        days=days,
        bindings=found["bindings"],
        titles=titles,
        live_scope="*",
    )


# --- audit ----------------------------------------------------------------------------------------


@router.get("/audit")
async def audit_page(request: Request, session: Auditor) -> Response:
    return render(request, "audit.html", session, report=None, checked_topic=True)


@router.post("/audit/verify")
async def audit_verify(request: Request, session: Auditor) -> Response:
    form = await checked_form(request, session)
    check_topic = form.get("topic") == "on"
    started = time.perf_counter()
    report: VerifyReport = await verify(
        get_settings(request), get_application(request), check_topic=check_topic
    )
    return render(
        request,
        "audit.html",
        session,
        report=report,
        checked_topic=check_topic,
        elapsed_s=time.perf_counter() - started,
    )


@router.get("/audit/export")
async def audit_export(
    request: Request,
    session: Auditor,
    since: str | None = None,
    until: str | None = None,
    tz: str | None = None,
    format: str = "jsonl",
) -> Response:
    from services.http.audit import export_events

    _ = translator(language(request))
    try:
        start = _parse_moment(since, tz)
        stop = _parse_moment(until, tz)
        return await export_events(
            get_application(request),
            since=start,
            until=stop,
            export_format=ExportFormat(format if format in ("jsonl", "csv") else "jsonl"),
        )
    except (ValueError, OkrError) as error:
        message = _("The export was refused: {why}").format(why=error)
        return render(
            request, "audit.html", session, 422, report=None, checked_topic=True, message=message
        )


# --- live -----------------------------------------------------------------------------------------


@router.get("/events")
async def live_events(request: Request, _session: Reader) -> StreamingResponse:
    feed: LiveFeed = request.app.state.live
    return StreamingResponse(
        feed.stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --- API docs, offline ----------------------------------------------------------------------------


@router.get("/docs")
async def api_docs(request: Request, session: Reader) -> Response:
    return render(request, "docs.html", session)


@router.get("/openapi.json")
async def api_document(request: Request, _session: Reader) -> JSONResponse:
    return JSONResponse(swagger_document(request.app))
