"""The dashboard's files, served from inside the package (no Node.js at install or run
time): `static/index.html` at `/` and at every page path of the single-page app (any
path outside /api/ without a dot), and the rest of `static/` under `/static/`."""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"

# Shown when the package was installed without the dashboard's files.
_MISSING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>perdure</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto">
<h1>perdure</h1>
<p>The dashboard's files are not installed with this copy of perdure, but the server runs:
the HTTP API is under <code>/api/v1</code> and described by
<a href="/openapi.json"><code>/openapi.json</code></a>; metrics are at <code>/metrics</code>.</p>
</body></html>
"""


def files() -> StaticFiles:
    return StaticFiles(directory=STATIC, check_dir=False)


async def index(request: Request) -> Response:
    page = STATIC / "index.html"
    if page.is_file():
        return FileResponse(page, headers={"Cache-Control": "no-cache"})
    return HTMLResponse(_MISSING, headers={"Cache-Control": "no-cache"})


async def page(request: Request) -> Response:
    """A page path of the app: the same shell, which routes in the browser."""
    path = request.url.path
    if path == "/api" or path.startswith("/api/") or "." in path:
        raise HTTPException(404)
    return await index(request)
