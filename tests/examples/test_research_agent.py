"""The research agent example: its headline demo (a real SIGKILL of a real worker), the
agent run in-process, and its model adapters."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import perdure
import perdure.testing
from examples.research_agent import app as example
from examples.research_agent import model

REPO = Path(__file__).resolve().parents[2]
SITE = "https://docs.example.org"


# --- the demo ----------------------------------------------------------------------------------


def run_demo(command: list[str]) -> tuple[int, str]:
    """Run the demo in a session of its own, so that whatever happens, its workers end too."""
    env = {**os.environ, "RESEARCH_AGENT_MODEL": "scripted"}
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the demo's workers, if any remain
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    return process.returncode, output


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "command",
    [["-m", "examples.research_agent.demo"], ["examples/research_agent/demo.py"]],
    ids=["module", "script"],
)
def test_the_demo_kills_a_worker_midway_and_no_finished_model_call_runs_again(
    command: list[str],
) -> None:
    code, output = run_demo([sys.executable, *command])

    assert code == 0, output
    assert "SIGKILL worker 1" in output
    assert "started worker 2" in output
    assert "run completed: attempt 1, 1 recovery from a dead worker" in output
    assert re.search(r"#\s+step\s+result\s+tries\s+recorded by\s+code ran in", output)
    assert "── worker 1 SIGKILLed here ──" in output
    finished = re.search(
        r"(\d+) model calls finished before the kill; none of them ran again", output
    )
    assert finished is not None, output
    assert int(finished.group(1)) >= 3
    assert "GUARANTEE FAILED" not in output


# --- the agent in-process -----------------------------------------------------------------------


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.tsv"
    monkeypatch.setenv("PERDURE_DEMO_EFFECTS", str(path))
    monkeypatch.setattr(model, "current", lambda: model.ScriptedModel(latency=0.01))
    return path


@pytest.fixture
def agent_app(make_app: Any) -> tuple[perdure.App, perdure.Task[Any, Any]]:
    """The example's task, registered on an App of this test's database."""
    app = make_app()
    task = app.task(id="research-agent", retry=example.research_agent.retry)(
        example.research_agent.fn
    )
    return app, task


@pytest.mark.timeout(60)
async def test_the_agent_searches_reads_analyzes_and_answers_with_each_step_run_once(
    agent_app: tuple[perdure.App, perdure.Task[Any, Any]], effects: Path
) -> None:
    app, agent = agent_app
    async with perdure.testing.worker(app):
        handle = await agent.trigger(example.ResearchInput(topic="durable execution"))
        output = await handle.result(timeout=30)
        trace = await app.runs.trace(handle.id)
    await app.close()

    assert isinstance(output, example.ResearchOutput)
    assert output.topic == "durable execution"
    assert output.turns == 6
    assert output.sources == [
        f"{SITE}/durable-execution/overview",
        f"{SITE}/durable-execution/replay",
        f"{SITE}/durable-execution/limitations",
    ]
    assert "[1]" in output.summary and f"[3] {SITE}/durable-execution/limitations" in output.summary
    steps = trace.steps()
    assert [e.name for e in steps] == [
        "call_model",
        "search",
        "call_model",
        "browse",
        "browse",
        "call_model",
        "search",
        "call_model",
        "browse",
        "call_model",
        "analyze",
        "call_model",
    ]
    assert all(e.status.value == "completed" and e.attempts == 1 for e in steps)
    ran = [line.split("\t")[0] for line in effects.read_text().splitlines()]
    assert ran == [f"{handle.id}:{e.key.branch}:{e.key.seq}" for e in steps]
    assert trace.run.metadata == {"turn": 6}
    assert [line.message for line in trace.logs][-1] == "turn 6: final answer (3 sources)"


@pytest.mark.timeout(60)
async def test_the_agent_answers_on_other_topics_and_without_sources(
    agent_app: tuple[perdure.App, perdure.Task[Any, Any]], effects: Path
) -> None:
    app, agent = agent_app
    topics = ["solid-state batteries", "coral reef restoration", "quantum gravity"]
    async with perdure.testing.worker(app):
        handles = [await agent.trigger({"topic": t}) for t in topics]
        batteries, reefs, unknown = [await h.result(timeout=30) for h in handles]
        forced = await (
            await agent.trigger({"topic": "coral reef restoration", "max_turns": 1})
        ).result(timeout=30)
    await app.close()

    assert batteries.sources == [f"{SITE}/batteries/solid-state", f"{SITE}/batteries/manufacturing"]
    assert "dendrites" in batteries.summary
    assert reefs.sources == [f"{SITE}/reefs/restoration", f"{SITE}/reefs/limits"]
    assert unknown.sources == [] and "found no sources" in unknown.summary
    assert forced.turns == 1 and forced.sources == []


async def test_a_tool_call_the_tools_cannot_take_is_reported_back_to_the_model() -> None:
    async def call(name: str, arguments: dict[str, Any]) -> Any:
        return await example.run_tool(model.ToolCall(id="c", name=name, arguments=arguments))

    assert "no tool 'fly'" in (await call("fly", {}))["error"]
    assert "bad arguments for search" in (await call("search", {"q": "x"}))["error"]


# --- the model ---------------------------------------------------------------------------------


async def test_the_scripted_model_is_busy_once_on_its_overloaded_turn() -> None:
    scripted = model.ScriptedModel(latency=0, overloaded_on_turn=1)
    messages = [model.user_message("Research this.\nTopic: durable execution")]

    with pytest.raises(model.ModelOverloaded):
        await scripted.complete(messages, example.TOOLS)
    reply = await scripted.complete(messages, example.TOOLS)

    assert reply.tool_calls == [
        model.ToolCall(id="call_1_1", name="search", arguments={"query": "durable execution"})
    ]
    assert await scripted.complete(messages, example.TOOLS) == reply  # same history, same reply


def test_the_model_is_chosen_from_the_environment() -> None:
    assert model.choice({}) == "scripted"
    assert model.choice({"OPENAI_API_KEY": "k"}) == "openai"
    assert model.choice({"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}) == "anthropic"
    assert model.choice({"ANTHROPIC_API_KEY": "k", "RESEARCH_AGENT_MODEL": "scripted"}) == (
        "scripted"
    )
    with pytest.raises(ValueError, match="RESEARCH_AGENT_MODEL"):
        model.choice({"RESEARCH_AGENT_MODEL": "eliza"})


CONVERSATION = [
    model.user_message("Topic: x"),
    model.assistant_message(
        model.Reply(
            text="Reading two.",
            model="m",
            tool_calls=[
                model.ToolCall(id="t1", name="browse", arguments={"url": "u1"}),
                model.ToolCall(id="t2", name="browse", arguments={"url": "u2"}),
            ],
        )
    ),
    model.tool_message(model.ToolCall(id="t1", name="browse", arguments={}), '{"a": 1}'),
    model.tool_message(model.ToolCall(id="t2", name="browse", arguments={}), '{"b": 2}'),
]


def test_the_conversation_maps_to_anthropic_messages_and_back() -> None:
    assert model.to_anthropic(CONVERSATION) == [
        {"role": "user", "content": "Topic: x"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Reading two."},
                {"type": "tool_use", "id": "t1", "name": "browse", "input": {"url": "u1"}},
                {"type": "tool_use", "id": "t2", "name": "browse", "input": {"url": "u2"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": '{"a": 1}'},
                {"type": "tool_result", "tool_use_id": "t2", "content": '{"b": 2}'},
            ],
        },
    ]
    response = SimpleNamespace(
        content=[
            SimpleNamespace(type="text", text="Searching."),
            SimpleNamespace(type="tool_use", id="tu", name="search", input={"query": "q"}),
        ]
    )
    assert model.from_anthropic(response, "claude") == model.Reply(
        text="Searching.",
        model="claude",
        tool_calls=[model.ToolCall(id="tu", name="search", arguments={"query": "q"})],
    )


def test_the_conversation_maps_to_openai_messages_and_back() -> None:
    mapped = model.to_openai(CONVERSATION)
    assert mapped[0] == {"role": "system", "content": model.SYSTEM_PROMPT}
    assert mapped[2]["tool_calls"][1] == {
        "id": "t2",
        "type": "function",
        "function": {"name": "browse", "arguments": json.dumps({"url": "u2"})},
    }
    assert mapped[3:] == [
        {"role": "tool", "tool_call_id": "t1", "content": '{"a": 1}'},
        {"role": "tool", "tool_call_id": "t2", "content": '{"b": 2}'},
    ]
    call = SimpleNamespace(
        id="c", function=SimpleNamespace(name="search", arguments='{"query":"q"}')
    )
    bad = SimpleNamespace(id="d", function=SimpleNamespace(name="search", arguments="{oops"))
    message = SimpleNamespace(content=None, tool_calls=[call, bad])
    reply = model.from_openai(SimpleNamespace(choices=[SimpleNamespace(message=message)]), "gpt")
    assert reply.text == ""
    assert [c.arguments for c in reply.tool_calls] == [{"query": "q"}, {"_unparsed": "{oops"}]


def test_provider_errors_retry_when_busy_and_end_the_run_when_refused() -> None:
    assert isinstance(model.provider_error(SimpleNamespace(status_code=529)), model.ModelOverloaded)
    assert isinstance(model.provider_error(SimpleNamespace(status_code=429)), model.ModelOverloaded)
    refused = model.provider_error(SimpleNamespace(status_code=401))
    assert isinstance(refused, perdure.NonRetryableError)


# --- the demo's own check ----------------------------------------------------------------------


def fake_trace(*entries: tuple[int, str]) -> Any:
    steps = [
        SimpleNamespace(
            key=SimpleNamespace(branch="0", seq=seq),
            name=name,
            attempts=1,
            result="{}",
            status=SimpleNamespace(value="completed"),
        )
        for seq, name in entries
    ]
    run = SimpleNamespace(id="run_1", status=SimpleNamespace(value="completed"), error=None)
    return SimpleNamespace(run=run, steps=lambda: steps)


def test_the_demo_fails_when_a_step_finished_before_the_kill_runs_again() -> None:
    from examples.research_agent import demo

    before = demo.finished_steps(fake_trace((1, "call_model")))
    final = fake_trace((1, "call_model"), (2, "search"))
    in_flight_ran_again = {"run_1:0:1": ("call_model", [1]), "run_1:0:2": ("search", [1, 2])}
    demo.check(final, before, in_flight_ran_again)  # a step in flight may run again

    finished_ran_again = {"run_1:0:1": ("call_model", [1, 2]), "run_1:0:2": ("search", [2])}
    with pytest.raises(demo.GuaranteeFailed, match="#1 call_model finished before the kill"):
        demo.check(final, before, finished_ran_again)
