"""/metrics in Prometheus text format, read from the store (so every server of a database
agrees), and /openapi.json describing every route of DESIGN §7's table."""

from __future__ import annotations

import asyncio
import re

import perdure
from perdure import testing
from tests.server.conftest import until

# A sample line of the Prometheus text format: name, optional labels, a number.
SAMPLE = re.compile(r'^([a-z_]+)(\{[a-z_]+="(?:[^"\\]|\\.)*"\})? (-?[0-9.e+-]+|\+Inf)$')


def samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not Prometheus text: {line!r}"
        found[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return found


async def test_metrics_count_runs_queues_workers_and_steps_from_the_store(make_app, api):
    app = make_app()
    gate = asyncio.Event()

    @app.task(id="quick")
    async def quick(payload: int) -> int:
        return await perdure.run_step("double", lambda: payload * 2)

    @app.task(id="held", queue="single", concurrency_limit=1)
    async def held() -> None:
        await gate.wait()

    async with testing.worker(app):
        for n in range(3):
            await (await quick.trigger(n)).result(timeout=10)
        [await held.trigger() for _ in range(3)]

        async def scraped() -> dict[str, float] | None:
            response = await api(app).get("/metrics")
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            found = samples(response.text)
            # Runs are counted before queues: both must have seen the held run's claim.
            running = (
                found['perdure_runs{status="running"}'],
                found['perdure_queue_running{queue="single"}'],
            )
            return found if running == (1, 1) else None

        found = await until(scraped)
        assert found['perdure_runs{status="completed"}'] == 3
        assert found['perdure_runs{status="running"}'] == 1
        assert found['perdure_queue_depth{queue="single"}'] == 2
        assert found['perdure_queue_limit{queue="single"}'] == 1
        assert found["perdure_workers_live"] == 1
        assert found["perdure_step_duration_seconds_count"] == 3
        assert found['perdure_step_duration_seconds_bucket{le="+Inf"}'] == 3
        assert found['perdure_step_duration_seconds_bucket{le="300.0"}'] == 3
        assert found["perdure_checkpoint_latency_seconds_count"] >= 1
        gate.set()


async def test_a_second_server_on_the_same_database_reports_the_same_runs(make_app, api):
    app = make_app()

    @app.task(id="quick")
    async def quick() -> None: ...

    await quick.trigger()
    other = make_app()  # another process's server would open the database just so
    first, second = [await api(a).get("/metrics") for a in (app, other)]
    assert samples(first.text)['perdure_runs{status="queued"}'] == 1
    assert samples(second.text)['perdure_runs{status="queued"}'] == 1


DESIGN_ROUTES = [
    ("post", "/api/v1/tasks/{task_id}/trigger"),
    ("get", "/api/v1/runs"),
    ("get", "/api/v1/runs/{run_id}"),
    ("get", "/api/v1/runs/{run_id}/trace"),
    ("post", "/api/v1/runs/{run_id}/cancel"),
    ("post", "/api/v1/runs/{run_id}/retry"),
    ("post", "/api/v1/runs/{run_id}/replay"),
    ("post", "/api/v1/tokens/{token_id}/complete"),
    ("post", "/api/v1/tokens/{token_id}/callback/{signature}"),
    ("get", "/api/v1/queues"),
    ("get", "/api/v1/workers"),
    ("get", "/api/v1/events"),
    ("get", "/openapi.json"),
    ("get", "/metrics"),
    ("get", "/api/v1/tasks"),
]


async def test_the_openapi_document_describes_every_route_of_the_design(make_app, api):
    document = (await api(make_app()).get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    described = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert described == set(DESIGN_ROUTES)
    trigger = document["paths"]["/api/v1/tasks/{task_id}/trigger"]["post"]
    body = trigger["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = document["components"]["schemas"][body.rsplit("/", 1)[-1]]
    assert set(request["properties"]) == {"payload", "options"}
    options = document["components"]["schemas"]["TriggerOptions"]["properties"]
    assert set(options) == {
        "idempotency_key",
        "delay",
        "ttl",
        "tags",
        "queue",
        "concurrency_key",
        "priority",
    }
    filters = {p["name"] for p in document["paths"]["/api/v1/runs"]["get"]["parameters"]}
    assert {"status", "task_id", "tag", "parent_id", "root_id", "limit", "cursor"} <= filters
    assert {"created_after", "created_before"} <= filters
    callback = document["paths"]["/api/v1/tokens/{token_id}/callback/{signature}"]["post"]
    assert callback["security"] == []  # the signature is the credential
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "200" in operation["responses"] or "201" in operation["responses"], path
            if path.startswith("/api/v1") and operation.get("security") != []:
                assert "401" in operation["responses"], (method, path)
