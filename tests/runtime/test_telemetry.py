"""OpenTelemetry spans (DESIGN §7): one trace per tree of runs, whatever the executions it
took, with span ids derived from run ids so a resumed run continues its trace."""

from __future__ import annotations

import pytest

import perdure
from perdure import telemetry, testing

otel = pytest.importorskip(
    "opentelemetry.sdk.trace", reason="opentelemetry-sdk is a dev dependency"
)


@pytest.fixture
def exporter(monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(telemetry, "tracer_provider", provider)
    return memory


async def test_a_run_tree_is_one_trace_across_suspensions_and_child_runs(make_app, exporter):
    app = make_app(suspend_after=0.0)  # every wait suspends: the run resumes in new executions
    tries = {"flaky": 0}

    @perdure.step
    async def fetch(n: int) -> int:
        return n + 1

    @perdure.step(retry=perdure.Retry(max_attempts=2, min_delay=0.01))
    async def flaky() -> str:
        tries["flaky"] += 1
        if tries["flaky"] == 1:
            raise ValueError("first try fails")
        return "ok"

    @app.task(id="leaf")
    async def leaf(n: int) -> int:
        return await fetch(n)

    @app.task(id="tree")
    async def tree() -> int:
        a = await fetch(1)
        await perdure.sleep(0.05)
        await flaky()
        return await leaf.trigger_and_wait(a)

    async with testing.worker(app):
        handle = await tree.trigger()
        assert await handle.result(timeout=20) == 3
    child = (await app.runs.list(task_id="leaf"))[0]

    spans = exporter.get_finished_spans()
    names = sorted(s.name for s in spans)
    # Each step try once (replays emit nothing), and each run once.
    assert names == ["run leaf", "run tree", "step fetch", "step fetch", "step flaky", "step flaky"]
    assert {s.context.trace_id for s in spans} == {telemetry.trace_id(handle.id)}
    by_name = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    tree_span, leaf_span = by_name["run tree"][0], by_name["run leaf"][0]
    assert tree_span.context.span_id == telemetry.run_span_id(handle.id)
    assert tree_span.parent is None
    assert leaf_span.parent.span_id == telemetry.run_span_id(handle.id)
    for span in by_name["step fetch"] + by_name["step flaky"]:
        owner = span.attributes["perdure.run_id"]
        assert owner in (handle.id, child.id)
        assert span.parent.span_id == telemetry.run_span_id(owner)
    failed, passed = sorted(by_name["step flaky"], key=lambda s: s.attributes["perdure.step.try"])
    assert not failed.status.is_ok and passed.status.is_ok
    assert tree_span.start_time <= min(s.start_time for s in spans)
    assert tree_span.end_time >= max(s.end_time for s in spans if s is not tree_span)
