"""Access control of the HTTP API: an API key names a principal, its role grants permissions.

`requires("read" | "write" | "audit")` is the FastAPI dependency every route but `/health` carries
(through its router, see `services.api.app`): it answers 401 for no key or an unknown one, 403 for
a role without the permission, and otherwise gives the endpoint the `Principal`, whose name is the
actor of every write. `create_app` refuses to build an app with a route that lacks it, so a new
router cannot be forgotten. Keys: `services.api_keys`; roles and refusals: `services.access`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, FastAPI, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from services.access import (
    AccessError,
    Permission,
    PermissionDeniedError,
    Principal,
    Role,
    UnauthenticatedError,
)
from services.api.errors import RejectionBody, rejection_response
from services.api_keys import ApiKeys
from services.errors import reject

__all__ = [
    "ACCESS_RESPONSES",
    "PUBLIC_PATHS",
    "AuthenticateFirstMiddleware",
    "Permission",
    "Principal",
    "Role",
    "ServedRoute",
    "UnprotectedRouteError",
    "install_access_error_handler",
    "refuse_unprotected_routes",
    "requires",
    "served_routes",
    "unprotected_routes",
]

REALM = "okr-ledger"
PUBLIC_PATHS: frozenset[str] = frozenset({"/health"})
"""The only paths anonymous callers reach: load balancers and orchestrators probe health."""

BEARER = HTTPBearer(
    auto_error=False, description="An API key (`okr keys add`): `Authorization: Bearer okr_…`."
)
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="The same API key, in an `X-API-Key` header."
)

ACCESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": RejectionBody, "description": "No API key, or one that is not configured."},
    403: {"model": RejectionBody, "description": "The key's role lacks the permission."},
}
"""For the OpenAPI document: what every protected route answers when access is refused."""


def get_api_keys(request: Request) -> ApiKeys:
    keys: ApiKeys = request.app.state.api_keys
    return keys


async def authenticate(
    keys: Annotated[ApiKeys, Depends(get_api_keys)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    api_key: Annotated[str | None, Security(API_KEY_HEADER)],
) -> Principal:
    """The caller, from its key; shared by every `requires`, so it runs once per request."""
    return principal_for(keys, bearer.credentials if bearer else None, api_key)


def principal_for(keys: ApiKeys, bearer: str | None, api_key: str | None) -> Principal:
    """The principal of the key presented (as a bearer token or an X-API-Key), or 401."""
    presented = {bearer, api_key} - {None}
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

_GUARDS: dict[Guard, Permission] = {}
"""Every dependency `requires` made, with its permission: how routes are checked for one."""


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


def refuse_unprotected_routes(app: FastAPI) -> None:
    unprotected = unprotected_routes(app)
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


def install_access_error_handler(app: FastAPI) -> None:
    app.add_exception_handler(AccessError, on_access_refused)


class AuthenticateFirstMiddleware:
    """401 for a request without a valid key before anything else reads it.

    The `requires` dependencies run only after FastAPI has matched the route and parsed the
    body: without this, an anonymous caller would learn which paths exist (404 vs 401) and get
    422 for a malformed body. Roles are still checked by the dependencies (403).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        bearer = api_key = None
        for name, value in scope.get("headers", ()):
            lowered = name.lower()
            if lowered == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credentials.strip():
                    bearer = credentials.strip()
            elif lowered == b"x-api-key":
                api_key = value.decode("latin-1")
        try:
            principal_for(scope["app"].state.api_keys, bearer, api_key)
        except UnauthenticatedError as error:
            response = rejection_response(reject(error))
            response.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
