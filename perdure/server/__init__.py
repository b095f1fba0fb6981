"""The server: the HTTP API, live event stream, metrics and dashboard of a perdure App.

    from perdure.server import create_app
    asgi = create_app(app)          # serve it with any ASGI server, e.g. uvicorn

`perdure server APP` and `perdure dev APP` serve it with uvicorn.
"""

from perdure.server.asgi import create_app

__all__ = ["create_app"]
