"""`/openapi.json`, `/docs`, `/redoc`: FastAPI's own documentation routes, served as API routes.

FastAPI adds them as plain routes no dependency can guard, so the app turns them off and serves
them here instead, behind `requires("read")` like every other read (`services.http.app`): the
description of the API is not for anonymous callers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
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


SWAGGER_OPENAPI_PATH = ASSETS + "/openapi.json"


def swagger_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document as the bundled Swagger UI (4.x) reads it: that version refuses a
    document labelled 3.1 (FastAPI's), and renders FastAPI's schemas once labelled 3.0.3.
    `/openapi.json` itself stays 3.1 for clients and generators."""
    return {**app.openapi(), "openapi": "3.0.3"}


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=SWAGGER_OPENAPI_PATH,
        title=f"{request.app.title} - docs",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
    )


@router.get(SWAGGER_OPENAPI_PATH)
async def swagger_openapi(request: Request) -> JSONResponse:
    return JSONResponse(swagger_document(request.app))


@router.get(ASSETS + "/{name}")
async def swagger_asset(name: str) -> Response:
    if name not in SWAGGER_FILES:
        return JSONResponse({"error": "not_found", "message": name, "problems": []}, 404)
    path = Path(str(swagger_ui_path)) / name
    return FileResponse(path, headers={"Cache-Control": "max-age=86400"})


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_PATH, title=f"{request.app.title} - ReDoc")
