"""`/openapi.json`, `/docs`, `/redoc`: FastAPI's own documentation routes, served as API routes.

FastAPI adds them as plain routes no dependency can guard, so the app turns them off and serves
them here instead, behind `requires("read")` like every other read (`services.api.app`): the
description of the API is not for anonymous callers.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from swagger_ui_bundle import swagger_ui_path

router = APIRouter(include_in_schema=False)

OPENAPI_PATH = "/openapi.json"


@router.get(OPENAPI_PATH)
async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


ASSETS = "/docs/assets"
SWAGGER_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
"""Served from the `swagger-ui-bundle` package: the page works offline, no CDN."""


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=OPENAPI_PATH,
        title=f"{request.app.title} - docs",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
    )


@router.get(ASSETS + "/{name}")
async def swagger_asset(name: str) -> Response:
    if name not in SWAGGER_FILES:
        return JSONResponse({"error": "not_found", "message": name, "problems": []}, 404)
    path = Path(str(swagger_ui_path)) / name
    return FileResponse(path, headers={"Cache-Control": "max-age=86400"})


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_PATH, title=f"{request.app.title} - ReDoc")
