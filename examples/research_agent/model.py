"""The agent's model: one small interface, an offline scripted model, two real providers.

    reply = await model.complete(messages, tools)

`messages` is a provider-neutral conversation of JSON dicts (see `user_message`,
`assistant_message`, `tool_message`); `tools` describes the tools the model may call;
the `Reply` holds the assistant's text and its tool calls (none: the final answer).

`from_env()` picks the model: RESEARCH_AGENT_MODEL=scripted|anthropic|openai if set, else
Anthropic when ANTHROPIC_API_KEY is set, else OpenAI when OPENAI_API_KEY is set, else the
offline `ScriptedModel`. The provider SDKs are imported only when chosen, and never needed
for the offline demo. RESEARCH_AGENT_MODEL_NAME overrides the provider's model name.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pydantic

import perdure

SYSTEM_PROMPT = (
    "You are a careful research assistant. Use the tools to search, read the most relevant "
    "pages and analyze them, then answer with a short summary that cites its sources by URL."
)


class ToolCall(pydantic.BaseModel):
    id: str
    name: str
    arguments: dict[str, Any]


class Reply(pydantic.BaseModel):
    """One assistant turn: text, and the tools it asks to call (none means it is done)."""

    text: str
    tool_calls: list[ToolCall] = []
    model: str


@dataclass(frozen=True, kw_only=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments


class Model(Protocol):
    name: str

    async def complete(self, messages: list[dict[str, Any]], tools: list[Tool]) -> Reply: ...


class ModelOverloaded(Exception):
    """The provider is busy (an HTTP 529 or 429): worth retrying."""


# --- the neutral conversation ------------------------------------------------------------


def user_message(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant_message(reply: Reply) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": reply.text,
        "tool_calls": [call.model_dump() for call in reply.tool_calls],
    }


def tool_message(call: ToolCall, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content}


# --- the offline model -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Result:
    name: str
    arguments: dict[str, Any]
    data: Any


class ScriptedModel:
    """An offline stand-in that researches like a tool-using model: search, read two
    results, search again for the limitations, read one more, analyze, then answer with
    citations. It decides from the conversation alone, so the same history always gets
    the same reply. `overloaded_on_turn` makes the first try of that turn fail (once per
    process) with ModelOverloaded, as a busy provider does."""

    name = "scripted"

    def __init__(self, *, latency: float = 0.35, overloaded_on_turn: int | None = None) -> None:
        self.latency = latency
        self.overloaded_on_turn = overloaded_on_turn
        self._overloaded: set[tuple[str, int]] = set()

    async def complete(self, messages: list[dict[str, Any]], tools: list[Tool]) -> Reply:
        turn = 1 + sum(m["role"] == "assistant" for m in messages)
        await asyncio.sleep(self.latency)  # "thinking"
        attempt = (messages[0]["content"], turn)
        if turn == self.overloaded_on_turn and attempt not in self._overloaded:
            self._overloaded.add(attempt)
            raise ModelOverloaded("529 overloaded (simulated): the model is busy, retry later")
        return self.decide(messages, {t.name for t in tools}, turn)

    def decide(self, messages: list[dict[str, Any]], tools: set[str], turn: int) -> Reply:
        topic = messages[0]["content"].rpartition("Topic: ")[2].strip()
        results = _tool_results(messages)
        searches = [r.data for r in results if r.name == "search"]
        read = [r.arguments["url"] for r in results if r.name == "browse" and r.data["found"]]
        analyses = [r.data for r in results if r.name == "analyze"]
        if analyses or not tools or (searches and not searches[0]):
            return self._answer(topic, analyses, read)
        if not searches:
            return self._call(turn, "I'll start with a broad search.", ("search", {"query": topic}))
        unread = [hit["url"] for hit in searches[-1] if hit["url"] not in read]
        if len(searches) == 1 and not read:
            calls = [("browse", {"url": url}) for url in unread[:2]]
            return self._call(turn, "Two promising overviews; reading both.", *calls)
        if len(searches) == 1:
            text = "Those pages explain the idea but not its costs; searching for limitations."
            query = f"limitations and trade-offs of {topic}"
            return self._call(turn, text, ("search", {"query": query}))
        if len(read) < 3 and unread:
            return self._call(
                turn,
                "The top hit covers the trade-offs; reading it.",
                ("browse", {"url": unread[0]}),
            )
        question = f"What is {topic}, how does it work, and what are its limitations?"
        return self._call(
            turn,
            "I have enough material; extracting the key findings.",
            ("analyze", {"question": question, "urls": read}),
        )

    def _call(self, turn: int, text: str, *calls: tuple[str, dict[str, Any]]) -> Reply:
        tool_calls = [
            ToolCall(id=f"call_{turn}_{i}", name=name, arguments=arguments)
            for i, (name, arguments) in enumerate(calls, 1)
        ]
        return Reply(text=text, tool_calls=tool_calls, model=self.name)

    def _answer(self, topic: str, analyses: list[Any], read: list[str]) -> Reply:
        findings = analyses[-1]["findings"] if analyses else []
        if not findings:
            return Reply(
                text=f"I found no sources on {topic!r} to base an answer on.", model=self.name
            )
        cited = list(dict.fromkeys(f["source"] for f in findings))
        claims = [f"{f['claim']} [{cited.index(f['source']) + 1}]." for f in findings]
        sources = [f"[{i}] {url}" for i, url in enumerate(cited, 1)]
        text = f"{topic.capitalize()}: " + " ".join(claims) + "\n\nSources:\n" + "\n".join(sources)
        return Reply(text=text, model=self.name)


def _tool_results(messages: list[dict[str, Any]]) -> list[_Result]:
    calls = {c["id"]: c for m in messages if m["role"] == "assistant" for c in m["tool_calls"]}
    return [
        _Result(
            name=m["name"],
            arguments=calls[m["tool_call_id"]]["arguments"],
            data=json.loads(m["content"]),
        )
        for m in messages
        if m["role"] == "tool"
    ]


# --- Anthropic -----------------------------------------------------------------------------


class AnthropicModel:
    """Claude through the `anthropic` SDK (pip install anthropic; ANTHROPIC_API_KEY)."""

    def __init__(self, name: str = "claude-sonnet-4-5") -> None:
        import anthropic

        self.name = name
        self.client = anthropic.AsyncAnthropic()
        self._errors = anthropic.APIStatusError

    async def complete(self, messages: list[dict[str, Any]], tools: list[Tool]) -> Reply:
        options: dict[str, Any] = {}
        if tools:
            options["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in tools
            ]
        try:
            response = await self.client.messages.create(
                model=self.name,
                max_tokens=2048,
                system=SYSTEM_PROMPT,
                messages=to_anthropic(messages),
                **options,
            )
        except self._errors as error:
            raise provider_error(error) from error
        return from_anthropic(response, self.name)


def to_anthropic(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neutral messages -> Anthropic's: tool calls become `tool_use` blocks, and the results
    of one turn's calls are `tool_result` blocks of one user message."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "user":
            out.append({"role": "user", "content": m["content"]})
        elif m["role"] == "assistant":
            blocks: list[dict[str, Any]] = (
                [{"type": "text", "text": m["content"]}] if m["content"] else []
            )
            blocks += [
                {"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]}
                for c in m["tool_calls"]
            ]
            out.append({"role": "assistant", "content": blocks})
        else:
            result = {
                "type": "tool_result",
                "tool_use_id": m["tool_call_id"],
                "content": m["content"],
            }
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(result)
            else:
                out.append({"role": "user", "content": [result]})
    return out


def from_anthropic(response: Any, name: str) -> Reply:
    text = "".join(b.text for b in response.content if b.type == "text")
    calls = [
        ToolCall(id=b.id, name=b.name, arguments=dict(b.input))
        for b in response.content
        if b.type == "tool_use"
    ]
    return Reply(text=text, tool_calls=calls, model=name)


# --- OpenAI --------------------------------------------------------------------------------


class OpenAIModel:
    """GPT through the `openai` SDK (pip install openai; OPENAI_API_KEY)."""

    def __init__(self, name: str = "gpt-4.1-mini") -> None:
        import openai

        self.name = name
        self.client = openai.AsyncOpenAI()
        self._errors = openai.APIStatusError

    async def complete(self, messages: list[dict[str, Any]], tools: list[Tool]) -> Reply:
        options: dict[str, Any] = {}
        if tools:
            options["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        try:
            response = await self.client.chat.completions.create(
                model=self.name,
                messages=to_openai(messages),
                **options,
            )
        except self._errors as error:
            raise provider_error(error) from error
        return from_openai(response, self.name)


def to_openai(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT}]
    for m in messages:
        if m["role"] == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": m["content"] or None}
            if m["tool_calls"]:
                message["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {
                            "name": c["name"],
                            "arguments": json.dumps(c["arguments"]),
                        },
                    }
                    for c in m["tool_calls"]
                ]
            out.append(message)
        elif m["role"] == "tool":
            out.append({"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def from_openai(response: Any, name: str) -> Reply:
    message = response.choices[0].message
    calls = [
        ToolCall(id=c.id, name=c.function.name, arguments=_arguments(c.function.arguments))
        for c in message.tool_calls or []
    ]
    return Reply(text=message.content or "", tool_calls=calls, model=name)


def _arguments(text: str) -> dict[str, Any]:
    """A model may write arguments that are not a JSON object: pass them on as they are,
    for the tool's validation to report back to the model."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {"_unparsed": text}
    return value if isinstance(value, dict) else {"_unparsed": text}


def provider_error(error: Any) -> Exception:
    """A provider's HTTP error as the step should see it: busy or timed out is worth a
    retry; any other 4xx (a bad key, a bad request) will fail again, so it ends the run."""
    status = getattr(error, "status_code", 500)
    if status in (408, 409, 429) or status >= 500:
        return ModelOverloaded(f"{status}: {error}")
    return perdure.NonRetryableError(f"the model provider refused the request ({status}): {error}")


# --- choosing ------------------------------------------------------------------------------


def choice(environ: Mapping[str, str] | None = None) -> str:
    """Which model the environment asks for: scripted, anthropic or openai."""
    env = os.environ if environ is None else environ
    kind = env.get("RESEARCH_AGENT_MODEL") or (
        "anthropic"
        if env.get("ANTHROPIC_API_KEY")
        else "openai"
        if env.get("OPENAI_API_KEY")
        else "scripted"
    )
    if kind not in ("scripted", "anthropic", "openai"):
        raise ValueError(f"RESEARCH_AGENT_MODEL={kind!r}: use scripted, anthropic or openai")
    return kind


def from_env(environ: Mapping[str, str] | None = None) -> Model:
    """The model the environment asks for (see the module docstring)."""
    env = os.environ if environ is None else environ
    kind = choice(env)
    name = env.get("RESEARCH_AGENT_MODEL_NAME")
    if kind == "anthropic":
        return AnthropicModel(name) if name else AnthropicModel()
    if kind == "openai":
        return OpenAIModel(name) if name else OpenAIModel()
    overloaded = env.get("RESEARCH_AGENT_OVERLOADED_TURN")
    return ScriptedModel(overloaded_on_turn=int(overloaded) if overloaded else None)


@functools.cache
def current() -> Model:
    """The process's model, chosen once from the environment."""
    return from_env()
