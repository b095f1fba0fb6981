"""The HTTP API (DESIGN §7) through an in-process client, on each backend: triggering
with the Python client's options, reading and listing runs, a run's trace, cancel, retry,
replay and forks, tokens and their signed URLs, queues, workers and tasks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pydantic
import pytest

import perdure
from perdure import testing
from tests.server.conftest import until

RUN_FIELDS = {
    "id",
    "task_id",
    "status",
    "payload",
    "output",
    "error",
    "attempts",
    "tags",
    "metadata",
    "parent_id",
    "root_id",
    "idempotency_key",
    "version",
    "created_at",
    "started_at",
    "finished_at",
}


class Order(pydantic.BaseModel):
    item: str
    quantity: int = 1


async def test_a_trigger_takes_every_option_of_the_python_client(make_app, api):
    app = make_app()

    @app.task(id="order")
    async def order(payload: Order) -> str:
        return payload.item

    client = api(app)
    options = {
        "idempotency_key": "order-7",
        "ttl": 3600,
        "tags": ["shop", "eu"],
        "queue": "orders",
        "concurrency_key": "tenant-1",
        "priority": 5,
    }
    body = {"payload": {"item": "tea"}, "options": options}
    first = await client.post("/api/v1/tasks/order/trigger", json=body)
    assert first.status_code == 201 and first.json()["is_cached"] is False
    run = await app.runs.get(first.json()["id"])
    assert (run.payload, run.tags, run.idempotency_key) == (
        {"item": "tea", "quantity": 1},
        ["shop", "eu"],
        "order-7",
    )
    assert (run.queue, run.concurrency_key, run.priority) == ("orders", "tenant-1", 5)

    again = await client.post("/api/v1/tasks/order/trigger", json=body)
    assert again.status_code == 200 and again.json() == {"id": run.id, "is_cached": True}

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for delay in (3600, later):
        body = {"payload": {"item": "jam"}, "options": {"delay": delay}}
        delayed = await client.post("/api/v1/tasks/order/trigger", json=body)
        assert (await app.runs.get(delayed.json()["id"])).status is perdure.RunStatus.DELAYED


async def test_a_run_has_the_shape_of_the_python_clients_run(make_app, api):
    app = make_app()

    @app.task(id="order")
    async def order(payload: Order) -> dict:
        perdure.metadata.set("stage", "packed")
        return {"shipped": payload.item}

    client = api(app)
    async with testing.worker(app):
        handle = await order.trigger({"item": "tea"}, tags=["shop"])
        await handle.result(timeout=10)
    found = (await client.get(f"/api/v1/runs/{handle.id}")).json()
    assert set(found) >= RUN_FIELDS
    assert found["status"] == "completed" and found["output"] == {"shipped": "tea"}
    assert found["metadata"] == {"stage": "packed"} and found["tags"] == ["shop"]
    assert found["payload"] == {"item": "tea", "quantity": 1}
    assert found["root_id"] == handle.id and found["attempts"] == 1
    created = datetime.fromisoformat(found["created_at"])
    assert created <= datetime.fromisoformat(found["finished_at"])
    assert found["created_at"].endswith("Z")  # what JavaScript's Date reads


async def test_runs_are_listed_by_every_filter_and_paged_without_gaps(make_app, api):
    app = make_app()

    @app.task(id="a")
    async def a(payload: int) -> int:
        return payload

    @app.task(id="b")
    async def b(payload: int) -> int:
        return payload

    client = api(app)
    ids = [(await a.trigger(i, tags=["even"] if i % 2 == 0 else [])).id for i in range(5)]
    middle = datetime.now(UTC)
    await asyncio.sleep(0.01)
    ids += [(await b.trigger(i)).id for i in range(2)]
    await app.runs.cancel(ids[0])

    async def listed(**params: object) -> list[str]:
        response = await client.get("/api/v1/runs", params=params)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["data"]]

    assert await listed() == list(reversed(ids))  # newest first
    assert await listed(task_id="b") == list(reversed(ids[5:]))
    assert set(await listed(tag="even")) == {ids[0], ids[2], ids[4]}
    assert await listed(status="canceled") == [ids[0]]
    assert set(await listed(status=["canceled", "queued"])) == set(ids)
    assert set(await listed(created_after=middle.isoformat())) == set(ids[5:])
    assert set(await listed(created_before=middle.isoformat())) == set(ids[:5])
    assert await listed(root_id=ids[3]) == [ids[3]]
    assert await listed(parent_id=ids[3]) == []

    for size, sizes in ((3, [3, 3, 1]), (7, [7])):  # the last full page offers no next
        pages, cursor = [], None
        while True:
            params = {"limit": size, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/api/v1/runs", params=params)).json()
            pages.append([r["id"] for r in page["data"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [len(p) for p in pages] == sizes
        assert [run_id for page in pages for run_id in page] == list(reversed(ids))


async def test_a_trace_has_attempts_steps_waits_children_tokens_and_logs(make_app, api):
    app = make_app(suspend_after=0.2)
    tries = {"n": 0}

    @app.task(id="child")
    async def child(payload: int) -> int:
        return payload * 2

    @perdure.step(name="flaky")
    async def flaky() -> str:
        tries["n"] += 1
        if tries["n"] == 1:
            raise ConnectionError("the network blinked")
        return "ok"

    @app.task(id="parent", retry=perdure.Retry(max_attempts=2, min_delay=0.05))
    async def parent() -> int:
        perdure.logger.info("starting")
        await flaky()
        await perdure.sleep(0.05)
        token = await perdure.create_token(timeout=0.01)
        try:
            await perdure.wait_for_token(token)
        except perdure.WaitTimeout:
            perdure.logger.warning("nobody answered")
        doubled = await child.trigger_and_wait(21)
        if tries["n"] == 2:
            tries["n"] += 1
            raise RuntimeError("fail the first attempt after the child")
        return doubled

    client = api(app)
    async with testing.worker(app):
        handle = await parent.trigger()
        assert await handle.result(timeout=15) == 42
    trace = (await client.get(f"/api/v1/runs/{handle.id}/trace")).json()

    assert trace["run"]["status"] == "completed"
    first, second = trace["attempts"]
    assert (first["attempt"], first["status"]) == (1, "retrying")
    assert first["error"]["type"] == "RuntimeError" and first["started_at"] and first["worker_ids"]
    assert (second["attempt"], second["status"]) == (2, "completed")

    by_kind = {}
    for entry in trace["entries"]:
        by_kind.setdefault(entry["kind"], []).append(entry)
    [step] = by_kind["step"]
    assert (step["name"], step["status"], step["attempts"], step["result"]) == (
        "flaky",
        "completed",
        2,
        "ok",
    )
    assert step["duration_ms"] >= 0 and step["key"] == ["0", 1]
    [sleep] = by_kind["sleep"]
    # A sleep whose deadline has passed is over, and ended at its deadline.
    assert sleep["wake_at"] > sleep["started_at"] and sleep["status"] == "completed"
    assert sleep["finished_at"] == sleep["wake_at"]
    [wait] = by_kind["wait"]
    assert wait["status"] == "failed" and wait["token_id"] == trace["tokens"][0]["id"]
    [started] = by_kind["child"]
    [kid] = trace["children"]
    assert started["child_run_ids"] == [kid["id"]] and kid["output"] == 42
    assert {w["kind"] for w in trace["waits"]} == {"sleep", "wait", "child"}
    assert trace["tokens"][0]["status"] == "timed_out"
    assert [line["message"] for line in trace["logs"]] == ["starting", "nobody answered"]
    assert [e["to_status"] for e in trace["events"]][:2] == ["queued", "running"]


async def test_cancel_retry_and_replay_steer_runs(make_app, api):
    app = make_app()

    @app.task(id="order")
    async def order(payload: Order) -> str:
        first = await perdure.run_step("pick", lambda: f"picked {payload.item}")
        second = await perdure.run_step("pack", lambda: f"packed {payload.quantity}")
        return f"{first}, {second}"

    client = api(app)
    queued = await order.trigger({"item": "tea"})
    canceled = await client.post(f"/api/v1/runs/{queued.id}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    again = await client.post(f"/api/v1/runs/{queued.id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["type"] == "InvalidTransition"
    retried = await client.post(f"/api/v1/runs/{queued.id}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"

    async with testing.worker(app):
        assert await queued.result(timeout=10) == "picked tea, packed 1"
        body = {"payload": {"item": "jam", "quantity": 3}, "from_position": ["0", 2]}
        replayed = await client.post(f"/api/v1/runs/{queued.id}/replay", json=body)
        assert replayed.status_code == 201
        fork = await app.runs.wait(replayed.json()["id"], timeout=10)
    # The fork kept the first step's recorded result and ran the second on the new payload.
    assert fork.output == "picked tea, packed 3"
    assert fork.payload == {"item": "jam", "quantity": 3}
    plain = await client.post(f"/api/v1/runs/{queued.id}/replay")
    assert (await app.runs.get(plain.json()["id"])).payload == {"item": "tea", "quantity": 1}
    bad = await client.post(f"/api/v1/runs/{queued.id}/replay", json={"from_position": ["0", 99]})
    assert bad.status_code == 409 and "no journal entry" in bad.json()["error"]["message"]


async def test_a_tokens_url_completes_it_with_the_posted_json_and_is_its_own_credential(
    make_app, api
):
    app = make_app(suspend_after=0.2)
    sent: list[str] = []

    @app.task(id="approve")
    async def approve(payload: str) -> str:
        token = await perdure.create_token(timeout=60)
        await perdure.run_step("ask", lambda: sent.append(token.url))
        decision = await perdure.wait_for_token(token)
        return f"{payload}: {decision['verdict']}"

    client = api(app)
    async with testing.worker(app):
        handle = await approve.trigger("refund #7")
        await until(lambda: asyncio.sleep(0, sent))
        path = sent[0].removeprefix("http://127.0.0.1:8000")
        assert path.startswith("/api/v1/tokens/tok_") and "/callback/" in path
        forged = path[:-4] + "0000"
        refused = await client.post(
            forged, json={"verdict": "approved"}, headers={"Authorization": ""}
        )
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "InvalidSignature"
        done = await client.post(path, json={"verdict": "approved"}, headers={"Authorization": ""})
        assert done.status_code == 200 and done.json()["status"] == "completed"
        assert await handle.result(timeout=10) == "refund #7: approved"
    twice = await client.post(path, json={"verdict": "denied"})
    assert twice.status_code == 409 and "first completion wins" in twice.json()["error"]["message"]


async def test_a_token_is_completed_through_the_api(make_app, api):
    app = make_app(suspend_after=0.2)

    @app.task(id="approve")
    async def approve() -> dict:
        token = await perdure.create_token(timeout=60, tags=["approval"])
        return await perdure.wait_for_token(token)

    client = api(app)
    async with testing.worker(app):
        handle = await approve.trigger()
        [token] = await until(lambda: app.tokens.list(run_id=handle.id))
        response = await client.post(
            f"/api/v1/tokens/{token.id}/complete", json={"data": {"ok": True}}
        )
        assert response.status_code == 200
        shown = response.json()
        assert (shown["status"], shown["data"], shown["tags"]) == (
            "completed",
            {"ok": True},
            ["approval"],
        )
        assert shown["url"] == token.url
        assert await handle.result(timeout=10) == {"ok": True}
    unknown = await client.post("/api/v1/tokens/tok_nope/complete", json={"data": 1})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "TokenNotFound"


async def test_queues_show_depth_running_and_limit_and_workers_the_runs_they_hold(make_app, api):
    app = make_app()
    gate = asyncio.Event()

    @app.task(id="slow", queue="narrow", concurrency_limit=1)
    async def slow() -> None:
        await gate.wait()

    client = api(app)
    handles = [await slow.trigger() for _ in range(3)]
    async with testing.worker(app) as worker:

        async def narrow() -> dict | None:
            found = (await client.get("/api/v1/queues")).json()["data"]
            queue = next((q for q in found if q["name"] == "narrow"), None)
            return queue if queue and queue["running"] == 1 else None

        queue = await until(narrow)
        assert (queue["limit"], queue["depth"], queue["running"]) == (1, 2, 1)
        [shown] = [
            w for w in (await client.get("/api/v1/workers")).json()["data"] if w["id"] == worker.id
        ]
        assert (shown["status"], shown["runs_held"]) == ("live", 1)
        assert shown["heartbeat_at"] and shown["seconds_since_heartbeat"] < 30
        gate.set()
        for handle in handles:
            await handle.result(timeout=10)
    [stopped] = [
        w for w in (await client.get("/api/v1/workers")).json()["data"] if w["id"] == worker.id
    ]
    assert (stopped["status"], stopped["runs_held"]) == ("stopped", 0)


async def test_tasks_are_listed_with_a_payload_schema_and_an_example_from_their_hints(
    make_app, api
):
    app = make_app()

    @app.task(id="order", queue="shop", concurrency_limit=3)
    async def order(payload: Order) -> str:
        return payload.item

    @app.task(id="tick")
    async def tick() -> None: ...

    found = {t["id"]: t for t in (await api(app).get("/api/v1/tasks")).json()["data"]}
    shown = found["order"]
    assert (shown["queue"], shown["concurrency_limit"]) == ("shop", 3)
    assert shown["payload_schema"]["required"] == ["item"]
    assert set(shown["payload_schema"]["properties"]) == {"item", "quantity"}
    assert shown["payload_example"] == {"item": "", "quantity": 1}
    Order.model_validate(shown["payload_example"])  # the example is a valid payload
    assert found["tick"]["takes_payload"] is False and found["tick"]["payload_example"] is None


@pytest.mark.parametrize(
    ("path", "body", "status", "kind", "mentions"),
    [
        ("/api/v1/tasks/order/trigger", b"{not json", 400, "MalformedJSON", ["not valid JSON"]),
        ("/api/v1/tasks/order/trigger", b'{"payload": NaN}', 400, "MalformedJSON", ["NaN"]),
        # Blanks are not JSON: only a body with no bytes at all is no body.
        ("/api/v1/tasks/order/trigger", b" \n", 400, "MalformedJSON", ["not valid JSON"]),
        ("/api/v1/tasks/nope/trigger", b"{}", 404, "TaskNotFound", ["nope", "order"]),
        ("/api/v1/runs/run_nope/cancel", b"", 404, "RunNotFound", ["run_nope"]),
        (
            "/api/v1/tasks/order/trigger",
            b'{"payload": {"item": "tea", "quantity": "many"}}',
            422,
            "PayloadError",
            ["field 'quantity'"],
        ),
        (
            "/api/v1/tasks/order/trigger",
            b'{"payload": {"item": "tea"}, "options": {"priority": "high"}}',
            422,
            "InvalidRequest",
            ["options.priority"],
        ),
        (
            "/api/v1/tasks/order/trigger",
            b'{"paylod": {"item": "tea"}}',
            422,
            "InvalidRequest",
            ["paylod"],
        ),
        (
            "/api/v1/tasks/order/trigger",
            b'{"payload": {"item": "' + b"x" * 3000 + b'"}}',
            413,
            "PayloadTooLarge",
            ["max_payload_bytes=2000"],
        ),
        (
            "/api/v1/tasks/order/trigger",
            b'{"payload": {"item": "' + b"x" * 80_000 + b'"}}',
            413,
            "PayloadTooLarge",
            ["limit"],
        ),
    ],
)
async def test_bad_input_gets_a_json_error_with_a_status_and_one_clear_line(
    make_app, api, path, body, status, kind, mentions
):
    app = make_app(max_payload_bytes=2000)

    @app.task(id="order")
    async def order(payload: Order) -> str:
        return payload.item

    response = await api(app).post(path, content=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message"} and error["type"] == kind
    assert "\n" not in error["message"]
    for mention in mentions:
        assert mention in error["message"], error["message"]
    assert await app.runs.list() == []


async def test_unknown_runs_and_routes_are_404_and_wrong_methods_405(make_app, api):
    client = api(make_app())
    for path in ("/api/v1/runs/run_nope", "/api/v1/runs/run_nope/trace", "/api/v1/nothing"):
        response = await client.get(path)
        assert response.status_code == 404 and "error" in response.json(), path
    wrong = await client.delete("/api/v1/runs")
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "MethodNotAllowed"
    bad = await client.get("/api/v1/runs", params={"status": "sleeping"})
    assert bad.status_code == 400 and "status" in bad.json()["error"]["message"]
    assert (await client.get("/api/v1/runs", params={"limit": 0})).status_code == 400
    assert (
        await client.get("/api/v1/runs", params={"created_after": "yesterday"})
    ).status_code == 400
