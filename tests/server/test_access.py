"""Who may call what: the API and /metrics need the API key as a bearer token; a token's
signed URL, the dashboard's shell and the OpenAPI document do not; `perdure dev`'s
server (dev=True) needs none; a server without a key and not in dev mode does not start."""

from __future__ import annotations

import httpx
import pytest

import perdure
from perdure.server import create_app, dashboard
from tests.server.conftest import KEY


def bare(app: perdure.App, **options: object) -> httpx.AsyncClient:
    """A client sending no key."""
    asgi = create_app(app, **options)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t")


SECURED = [
    ("GET", "/api/v1/runs"),
    ("GET", "/api/v1/runs/run_x"),
    ("GET", "/api/v1/tasks"),
    ("POST", "/api/v1/tasks/echo/trigger"),
    ("POST", "/api/v1/runs/run_x/cancel"),
    ("POST", "/api/v1/tokens/tok_x/complete"),
    ("GET", "/api/v1/queues"),
    ("GET", "/api/v1/workers"),
    ("GET", "/api/v1/events"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize(("method", "path"), SECURED)
async def test_the_api_refuses_a_request_without_the_right_key(make_app, method, path):
    app = make_app()

    @app.task(id="echo")
    async def echo(payload: dict) -> dict:
        return payload

    async with bare(app, api_key=KEY) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
            response = await client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (headers, response.text)
            assert response.json()["error"]["type"] == "Unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
    assert await app.runs.list() == []


async def test_the_key_opens_the_api_and_the_event_stream_takes_it_as_a_query_parameter(
    make_app,
):
    app = make_app()
    async with bare(app, api_key=KEY) as client:
        ok = await client.get("/api/v1/runs", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        # A browser's EventSource cannot send headers; other routes do not take the query.
        events = await client.get("/api/v1/events", params={"access_token": KEY, "run_id": "x"})
        assert events.status_code == 404  # past the key: there is no such run
        runs = await client.get("/api/v1/runs", params={"access_token": KEY})
        assert runs.status_code == 401


async def test_the_dashboard_shell_and_the_openapi_document_load_without_a_key(make_app):
    async with bare(make_app(), api_key=KEY) as client:
        for path in ("/", "/runs", "/runs/run_x", "/test", "/queues", "/workers"):
            page = await client.get(path)
            assert page.status_code == 200 and "text/html" in page.headers["content-type"], path
        assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.")


async def test_dev_mode_needs_no_key_and_a_server_without_one_does_not_start(make_app):
    app = make_app()
    async with bare(app, dev=True) as client:
        assert (await client.get("/api/v1/runs")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
    with pytest.raises(perdure.ConfigurationError, match="PERDURE_API_KEY"):
        create_app(app)


async def test_the_key_is_the_api_key_setting_by_default(make_app):
    app = make_app(api_key="from-settings")
    async with bare(app) as client:
        assert (await client.get("/api/v1/runs")).status_code == 401
        ok = await client.get("/api/v1/runs", headers={"Authorization": "Bearer from-settings"})
        assert ok.status_code == 200


async def test_static_files_and_pages_are_served_and_api_paths_never_get_the_page(
    make_app, monkeypatch, tmp_path
):
    (tmp_path / "index.html").write_text("<!doctype html><title>the shell</title>")
    (tmp_path / "app.js").write_text("console.log('hi')")
    monkeypatch.setattr(dashboard, "STATIC", tmp_path)
    async with bare(make_app(), api_key=KEY) as client:
        for path in ("/", "/runs/run_1", "/anything/else"):
            assert "the shell" in (await client.get(path)).text, path
        script = await client.get("/static/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert (await client.get("/static/missing.js")).status_code == 404
        assert (await client.get("/static/../pyproject.toml")).status_code == 404
        assert (await client.get("/favicon.ico")).status_code == 404  # a file path: no page
        api = await client.get("/api/v2/runs", headers={"Authorization": f"Bearer {KEY}"})
        assert api.status_code == 404 and api.json()["error"]["type"] == "NotFound"


async def test_without_the_dashboards_files_the_root_still_says_where_the_api_is(
    make_app, monkeypatch, tmp_path
):
    monkeypatch.setattr(dashboard, "STATIC", tmp_path / "missing")
    async with bare(make_app(), dev=True) as client:
        page = await client.get("/")
        assert page.status_code == 200 and "/openapi.json" in page.text
