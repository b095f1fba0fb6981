"""An AI research agent as a durable task: a loop of model calls and tool calls, each a step.

    perdure worker examples.research_agent.app:app
    perdure trigger research-agent --app examples.research_agent.app:app \\
        --payload '{"topic": "durable execution"}' --wait

Each model call and each tool call is recorded once it finishes. If the worker dies, the
next one replays the recorded replies and results (no model call is paid for twice) and
goes on from the first step that had not finished. The model is the offline
`ScriptedModel` unless an API key is set (see `model.py`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from collections.abc import Callable
from typing import Any

import pydantic
import pydantic_core

import perdure
from examples.research_agent import corpus, model

app = perdure.App()  # the database comes from PERDURE_DATABASE_URL


class ResearchInput(pydantic.BaseModel):
    topic: str
    max_turns: int = pydantic.Field(default=8, ge=1)


class ResearchOutput(pydantic.BaseModel):
    topic: str
    summary: str
    sources: list[str]
    turns: int


# --- steps -----------------------------------------------------------------------------------


@perdure.step(retry=perdure.Retry(max_attempts=5, min_delay=0.5))
async def call_model(messages: list[dict[str, Any]], tools: list[model.Tool]) -> model.Reply:
    """One model call: the reply is recorded, so a finished call is never made again."""
    record_effect("call_model")
    return await model.current().complete(messages, tools)


@perdure.step
async def search(query: str) -> list[corpus.Hit]:
    record_effect("search")
    await asyncio.sleep(0.4)  # the latency of a search API
    return corpus.search(query)


@perdure.step
async def browse(url: str) -> corpus.Page:
    record_effect("browse")
    await asyncio.sleep(0.5)  # fetching and cleaning up a page
    return corpus.browse(url)


@perdure.step
async def analyze(question: str, urls: list[str]) -> corpus.Analysis:
    record_effect("analyze")
    await asyncio.sleep(0.6)  # reading the pages closely
    return corpus.analyze(question, urls)


def record_effect(step: str) -> None:
    """For the demo: note each time a step's code really runs (not replayed) in the file
    named by PERDURE_DEMO_EFFECTS, so it can check that no finished step ran again."""
    path = os.environ.get("PERDURE_DEMO_EFFECTS")
    if path:
        with open(path, "a") as effects:
            effects.write(f"{perdure.context().step_key}\t{step}\t{os.getpid()}\n")


TOOL_STEPS: dict[str, Callable[..., Any]] = {"search": search, "browse": browse, "analyze": analyze}
TOOLS = [
    model.Tool(
        name="search",
        description="Search the web; returns titles, URLs and snippets.",
        parameters={
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    ),
    model.Tool(
        name="browse",
        description="Fetch a web page and return its text.",
        parameters={
            "type": "object",
            "properties": {"url": {"type": "string"}},
            "required": ["url"],
        },
    ),
    model.Tool(
        name="analyze",
        description="Extract the key findings that answer a question from pages "
        "already found, each with its source URL.",
        parameters={
            "type": "object",
            "properties": {
                "question": {"type": "string"},
                "urls": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["question", "urls"],
        },
    ),
]


# --- the task --------------------------------------------------------------------------------


@app.task(id="research-agent", retry=perdure.Retry(max_attempts=3))
async def research_agent(payload: ResearchInput) -> ResearchOutput:
    """Loop: ask the model; run the tools it calls; feed the results back; until it
    answers. On the last turn it is offered no tools, so it must answer."""
    messages = [
        model.user_message(
            f"Research this topic and write a short summary with cited sources.\nTopic: "
            f"{payload.topic}"
        )
    ]
    sources: list[str] = []
    for turn in range(1, payload.max_turns + 1):
        perdure.metadata.set("turn", turn)
        tools = TOOLS if turn < payload.max_turns else []
        reply = await call_model(messages, tools)
        messages.append(model.assistant_message(reply))
        if not reply.tool_calls:
            perdure.logger.info("turn %d: final answer (%d sources)", turn, len(sources))
            return ResearchOutput(
                topic=payload.topic, summary=reply.text, sources=sources, turns=turn
            )
        perdure.logger.info("turn %d: %s", turn, ", ".join(describe(c) for c in reply.tool_calls))
        for call in reply.tool_calls:
            result = await run_tool(call)
            if call.name == "browse" and isinstance(result, corpus.Page) and result.found:
                sources.append(result.url)
            messages.append(model.tool_message(call, as_text(result)))
    raise perdure.NonRetryableError(f"no answer after {payload.max_turns} turns")


async def run_tool(call: model.ToolCall) -> Any:
    """The tool step the model asked for; a call the tools cannot take is reported back
    to the model (decided before any step runs, so replay decides the same)."""
    step = TOOL_STEPS.get(call.name)
    if step is None:
        return {"error": f"there is no tool {call.name!r}; use one of {sorted(TOOL_STEPS)}"}
    try:
        inspect.signature(step).bind(**call.arguments)
    except TypeError as error:
        return {"error": f"bad arguments for {call.name}: {error}"}
    return await step(**call.arguments)


def describe(call: model.ToolCall) -> str:
    return f"{call.name}({', '.join(json.dumps(v) for v in call.arguments.values())})"


def as_text(result: Any) -> str:
    return pydantic_core.to_json(result).decode()
