"""Access control of the HTTP API: an API key names a principal, its role grants permissions.

`requires("read" | "write" | "audit")` is the FastAPI dependency every route but `/health` carries
(through its router, see `services.http.app`): it answers 401 for no key or an unknown one, 403 for
a role without the permission, and otherwise gives the endpoint the `Principal`, whose name is the
actor of every write. `create_app` refuses to build an app with a route that lacks it, so a new
router cannot be forgotten. Keys: `services.access.keys`; roles and refusals:
`services.access.principals`.

`presented_credentials` is the one reader of the key a request presents: the middleware that
refuses anonymous callers first and the `requires` dependencies both go through it, so they
cannot disagree on which key acts. A request with a credential header sent twice is refused (400)
rather than read one way here and another way there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, FastAPI, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from events.commands import Issue
from services.access.keys import ApiKeys
from services.access.principals import (
    AccessError,
    Permission,
    PermissionDeniedError,
    Principal,
    Role,
    UnauthenticatedError,
)
from services.commands.rejections import Rejection, reject
from services.http.errors import RejectionBody, rejection_response
from services.http.middleware import HttpMiddleware

__all__ = [
    "ACCESS_RESPONSES",
    "PUBLIC_PATHS",
    "AuthenticateFirstMiddleware",
    "Credentials",
    "DuplicateCredentialsError",
    "Permission",
    "Principal",
    "Role",
    "ServedRoute",
    "UnprotectedRouteError",
    "accept_guard",
    "install_access_error_handler",
    "presented_credentials",
    "refuse_unprotected_routes",
    "requires",
    "served_routes",
    "unprotected_routes",
]

REALM = "okr-ledger"
PUBLIC_PATHS: frozenset[str] = frozenset({"/health"})
"""The only paths anonymous callers reach: load balancers and orchestrators probe health."""


class BearerScheme(HTTPBearer):
    """Declares the bearer scheme in the OpenAPI document and reads nothing: the key is read by
    `presented_credentials`, the one reader."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


class ApiKeyScheme(APIKeyHeader):
    """Declares the `X-API-Key` scheme in the OpenAPI document; reads nothing, as above."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


# Named as FastAPI named the schemes it read keys with, so the OpenAPI document is unchanged.
BEARER = BearerScheme(
    scheme_name="HTTPBearer",
    auto_error=False,
    description="An API key (`okr keys add`): `Authorization: Bearer okr_…`.",
)
API_KEY_HEADER = ApiKeyScheme(
    name="X-API-Key",
    scheme_name="APIKeyHeader",
    auto_error=False,
    description="The same API key, in an `X-API-Key` header.",
)

CREDENTIAL_HEADERS: Mapping[bytes, str] = {
    b"authorization": "Authorization",
    b"x-api-key": "X-API-Key",
}
"""The headers that carry a key (raw ASGI names, lower case) and how the API spells them."""

ACCESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": RejectionBody, "description": "No API key, or one that is not configured."},
    403: {"model": RejectionBody, "description": "The key's role lacks the permission."},
}
"""For the OpenAPI document: what every protected route answers when access is refused."""


@dataclass(frozen=True)
class Credentials:
    """The key a request presents, as a bearer token, an X-API-Key, both or neither."""

    bearer: str | None
    api_key: str | None


class DuplicateCredentialsError(Exception):
    """A credential header sent more than once (HTTP 400): which copy acts would be a guess."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = dict(counts)
        super().__init__("; ".join(self.messages().values()))

    def messages(self) -> dict[str, str]:
        """Per duplicated header, as the API spells it, what is wrong with it."""
        return {
            name: f"the {name} header was sent {count} times: send one key, once"
            for name, count in self.counts.items()
        }

    def rejection(self) -> Rejection:
        problems = [
            Issue(code="duplicate_credentials", field=f"header.{name.lower()}", message=message)
            for name, message in self.messages().items()
        ]
        return Rejection(400, "duplicate_credentials", str(self), problems)


def presented_credentials(headers: Iterable[tuple[bytes, bytes]]) -> Credentials:
    """The key of a request, from its raw ASGI headers: the one place credentials are read.

    Raw headers, because a mapping keeps one copy of a repeated header (Starlette's the first,
    a dict the last); two copies are refused instead, before anything chooses between them.
    """
    found: dict[bytes, list[str]] = {name: [] for name in CREDENTIAL_HEADERS}
    for name, value in headers:
        copies = found.get(name.lower())
        if copies is not None:
            copies.append(value.decode("latin-1"))
    repeated = {CREDENTIAL_HEADERS[name]: len(v) for name, v in found.items() if len(v) > 1}
    if repeated:
        raise DuplicateCredentialsError(repeated)
    authorization = next(iter(found[b"authorization"]), None)
    api_key = next(iter(found[b"x-api-key"]), None)
    bearer = None
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            bearer = token.strip()
    return Credentials(bearer=bearer, api_key=api_key)


def get_api_keys(request: Request) -> ApiKeys:
    keys: ApiKeys = request.app.state.api_keys
    return keys


async def authenticate(
    request: Request,
    keys: Annotated[ApiKeys, Depends(get_api_keys)],
    _bearer: Annotated[None, Security(BEARER)],
    _api_key: Annotated[None, Security(API_KEY_HEADER)],
) -> Principal:
    """The caller, from its key; shared by every `requires`, so it runs once per request. The
    two schemes only document, in the OpenAPI document, where the key goes."""
    return principal_for(keys, presented_credentials(request.scope["headers"]))


def principal_for(keys: ApiKeys, credentials: Credentials) -> Principal:
    """The principal of the key presented (as a bearer token or an X-API-Key), or 401."""
    presented = {credentials.bearer, credentials.api_key} - {None}
    if not presented:
        raise UnauthenticatedError("an API key is required: Authorization: Bearer <key>")
    if len(presented) > 1:
        raise UnauthenticatedError("Authorization and X-API-Key carry two different keys")
    [key] = presented
    assert key is not None
    principal = keys.principal_for(key)
    if principal is None:
        raise UnauthenticatedError("the API key is not valid (unknown, revoked or mistyped)")
    return principal


Guard = Callable[[Principal], Awaitable[Principal]]

_GUARDS: dict[Callable[..., Any], Permission] = {}
"""Every dependency `requires` made, with its permission: how routes are checked for one."""


def accept_guard(guard: Callable[..., Any], permission: Permission) -> None:
    """Count another access check as granting `permission` to the routes that depend on it: the
    dashboard's session guard (`services.web.routes.ui`), which signs people in with the same
    keys. Only an explicitly accepted guard counts; any other route still needs `requires`."""
    _GUARDS[guard] = permission


@cache
def requires(permission: Permission) -> Guard:
    """The dependency granting `permission`; the same object per permission, so FastAPI runs it
    once per request even when both a router and an endpoint declare it."""

    async def guard(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.can(permission):
            raise PermissionDeniedError(principal, permission)
        return principal

    guard.__name__ = f"requires_{permission}"
    _GUARDS[guard] = permission
    return guard


# --- every route is guarded -----------------------------------------------------------------------


class UnprotectedRouteError(RuntimeError):
    """An app would serve a route without `requires`: a programming error, caught at build."""


@dataclass(frozen=True)
class ServedRoute:
    """One route as the app serves it: its full path, methods and required permissions."""

    path: str
    methods: tuple[str, ...]
    permissions: frozenset[Permission]


def served_routes(app: FastAPI) -> list[ServedRoute]:
    """Every route of the app, those of included routers with the dependencies they inherit.

    Recent FastAPI keeps included routers whole in `app.routes` and resolves their routes
    lazily (`fastapi.routing.iter_route_contexts`); older versions list copies of the routes.
    """
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Iterable[Any] = iter_route_contexts(app.routes) if iter_route_contexts else app.routes
    return [
        ServedRoute(
            path=str(getattr(route, "path", None) or repr(route)),
            methods=tuple(sorted(getattr(route, "methods", None) or ("*",))),
            permissions=frozenset(_required(getattr(route, "dependant", None))),
        )
        for route in routes
    ]


def _required(dependant: Dependant | None) -> set[Permission]:
    """A plain Starlette route (or mount) has no dependant: it runs no dependency at all."""
    found: set[Permission] = set()
    pending = [dependant] if dependant is not None else []
    while pending:
        current = pending.pop()
        if current.call in _GUARDS:
            found.add(_GUARDS[current.call])
        pending.extend(current.dependencies)
    return found


def unprotected_routes(app: FastAPI, public: frozenset[str] = PUBLIC_PATHS) -> list[str]:
    """`METHODS path` of each route outside `public` that does not require a permission."""
    return [
        f"{','.join(route.methods)} {route.path}"
        for route in served_routes(app)
        if route.path not in public and not route.permissions
    ]


def refuse_unprotected_routes(app: FastAPI, public: frozenset[str] = PUBLIC_PATHS) -> None:
    unprotected = unprotected_routes(app, public)
    if unprotected:
        raise UnprotectedRouteError(
            "routes without access control (add requires(...) to their router): "
            + "; ".join(unprotected)
        )


# --- refusals -------------------------------------------------------------------------------------


async def on_access_refused(_: Request, error: Exception) -> JSONResponse:
    """The same body as every other refusal; a 401 also says how to authenticate (RFC 6750)."""
    assert isinstance(error, AccessError)
    response = rejection_response(reject(error))
    if isinstance(error, UnauthenticatedError):
        response.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
    return response


async def on_duplicate_credentials(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DuplicateCredentialsError)
    return rejection_response(error.rejection())


def install_access_error_handler(app: FastAPI) -> None:
    app.add_exception_handler(AccessError, on_access_refused)
    app.add_exception_handler(DuplicateCredentialsError, on_duplicate_credentials)


class AuthenticateFirstMiddleware(HttpMiddleware):
    """400 for a credential header sent twice, then 401 for a request without a valid key,
    before anything else reads the request.

    The `requires` dependencies run only after FastAPI has matched the route and parsed the
    body: without this, an anonymous caller would learn which paths exist (404 vs 401) and get
    422 for a malformed body. Roles are still checked by the dependencies (403), on the key this
    middleware read, through the same `presented_credentials`. A repeated credential header is
    refused on every path, `/health` too: no request needs one.
    """

    def __init__(self, app: ASGIApp, own_guard_prefixes: tuple[str, ...] = ()) -> None:
        super().__init__(app)
        self.own_guard_prefixes = own_guard_prefixes
        """Paths whose routes check access themselves (the dashboard's session cookie)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            credentials = presented_credentials(scope.get("headers", ()))
            path = scope["path"]
            guarded_elsewhere = any(
                path == prefix.rstrip("/") or path.startswith(prefix)
                for prefix in self.own_guard_prefixes
            )
            if path not in PUBLIC_PATHS and not guarded_elsewhere:
                principal_for(scope["app"].state.api_keys, credentials)
        except DuplicateCredentialsError as error:
            await rejection_response(error.rejection())(scope, receive, send)
            return
        except UnauthenticatedError as error:
            response = rejection_response(reject(error))
            response.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
