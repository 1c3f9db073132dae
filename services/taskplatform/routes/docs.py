"""The API's description: ``/openapi.json`` and Swagger UI at ``/docs``, whose assets the image
ships (the ``swagger-ui-bundle-v2`` wheel, served from ``/docs/assets/``: no CDN, so the page
works where the API's users have no Internet access and loads no third-party code).

The document describes what the listener that served it answers: the edge (its nginx sets
``X-Shipyard-Edge: 1`` on every request it passes on, and a client cannot unset it) answers
``ops.OPERATOR_PATHS`` 404, so the document it serves leaves them out. On the API's own port the
header is absent and the document is whole; a client sending the header there only gets less."""

from __future__ import annotations

import copy

import swagger_ui_bundle
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse

from taskplatform.errors import ApiError
from taskplatform.routes.ops import OPERATOR_PATHS
from taskplatform.scopes import public

EDGE_HEADER = "X-Shipyard-Edge"
DOCS_PATH, OPENAPI_PATH, ASSETS_PATH = "/docs", "/openapi.json", "/docs/assets"
# What the page loads, and all that /docs/assets/ serves: never a path the client chooses.
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}


def through_edge(request: Request) -> bool:
    return request.headers.get(EDGE_HEADER) == "1"


def edge_document(app: FastAPI) -> dict:
    """The app's OpenAPI without the operator paths; built once per process."""
    if getattr(app.state, "edge_openapi", None) is None:
        doc = copy.deepcopy(app.openapi())
        doc["paths"] = {path: item for path, item in doc["paths"].items() if path not in OPERATOR_PATHS}
        app.state.edge_openapi = doc
    return app.state.edge_openapi


async def openapi_document(request: Request):
    app = request.app
    return JSONResponse(edge_document(app) if through_edge(request) else app.openapi())


async def docs_page(request: Request):
    return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{request.app.title} — API docs",
                               swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
                               swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png")


async def docs_asset(name: str):
    if name not in ASSETS:
        raise ApiError(404, "not_found", "no such path")
    # Immutable for a release: the bundle's version is pinned in requirements.txt.
    return FileResponse(swagger_ui_bundle.swagger_ui_path / name, media_type=ASSETS[name],
                        headers={"Cache-Control": "public, max-age=86400"})


def add_routes(routes: APIRouter) -> None:
    """Public, and not operations of the API: left out of the document they serve. HEAD too, as
    FastAPI's own /openapi.json answered it."""
    routes.add_api_route(OPENAPI_PATH, openapi_document, methods=["GET", "HEAD"], include_in_schema=False, **public())
    routes.add_api_route(DOCS_PATH, docs_page, methods=["GET", "HEAD"], include_in_schema=False, **public())
    routes.add_api_route(f"{ASSETS_PATH}/{{name}}", docs_asset, methods=["GET"], include_in_schema=False, **public())
