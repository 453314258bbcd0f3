"""The dashboard: server-rendered pages under `/ui/` for the people OKRs are for.

Served by the same FastAPI app as the JSON API (`install`), over the same read models, with the
same commands and the same API keys (typed once, kept as a signed session cookie). Templates and
assets ship inside the package; charts are SVG drawn on the server; a few lines of JavaScript add
live updates (server-sent events from the projector's commits), lint-as-you-type and time zones.
Design: docs/decisions/0018-dashboard.md.
May import: domain, events, projections, services.access, services.audit, services.commands,
services.http (the API's command runner, auth and reads, reused rather than forked),
services.scoring, services.settings.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from fastapi.staticfiles import StaticFiles

from services.web.live import LiveFeed

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["OWN_GUARD_PREFIXES", "LiveFeed", "install", "public_paths"]

OWN_GUARD_PREFIXES = ("/ui/",)
"""Paths whose routes check a session themselves instead of an API key header."""


def public_paths() -> frozenset[str]:
    from services.web.routes import PUBLIC_UI_PATHS

    return PUBLIC_UI_PATHS


def install(app: FastAPI, live: LiveFeed | None = None) -> None:
    """Mount the dashboard on `app`: routes, assets, sessions, error pages, the live feed."""
    import swagger_ui_bundle

    from services.access.keys import ApiKeys
    from services.web.routes import HERE, OverviewCache, install_error_pages, router
    from services.web.session import Sessions, session_secret

    keys: ApiKeys = app.state.api_keys
    app.state.ui_sessions = Sessions(keys, session_secret(keys.path))
    app.state.ui_integrity = OrderedDict()
    app.state.ui_overview = OverviewCache()
    app.state.live = live or LiveFeed()
    app.include_router(router)
    app.mount(
        "/ui/static/swagger",
        StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)),
        name="ui-swagger",
    )
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
    install_error_pages(app)
