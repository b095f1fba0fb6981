"""A tiny offline web for the agent's tools: a few documents on a few topics.

The tools (`search`, `browse`, `analyze` in `app.py`) read only this module, so the demo
needs no network and gives the same answers every time. Swap these functions for a real
search API and an HTTP fetch to point the agent at the web.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pydantic

_STOPWORD_TEXT = (
    "a an and are as at be by can do does for from how in is it its of on or so that the their "
    "them then this to was what when which who why with"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True, kw_only=True)
class Document:
    url: str
    title: str
    text: str
    key_points: tuple[str, ...]


class Hit(pydantic.BaseModel):
    """One search result."""

    url: str
    title: str
    snippet: str


class Page(pydantic.BaseModel):
    """A fetched page; `found` is false (and `text` says why) for an unknown URL."""

    url: str
    title: str
    text: str
    found: bool = True


class Finding(pydantic.BaseModel):
    claim: str
    source: str


class Analysis(pydantic.BaseModel):
    question: str
    findings: list[Finding]


_SITE = "https://docs.example.org"

DOCUMENTS: tuple[Document, ...] = (
    Document(
        url=f"{_SITE}/durable-execution/overview",
        title="What is durable execution?",
        text="Durable execution persists the progress of an ordinary function while it runs. "
        "Every completed step is recorded in a journal in a database, so when the process "
        "crashes or is redeployed the function resumes from its last recorded step instead "
        "of starting over. Workflows can also sleep or wait for a human for days.",
        key_points=(
            "Durable execution records each completed step of a function in a journal, so a "
            "crashed run resumes from its last recorded step instead of starting over",
        ),
    ),
    Document(
        url=f"{_SITE}/durable-execution/replay",
        title="How durable execution works: journals and replay",
        text="After a crash a worker runs the function again from the start. Each durable "
        "call looks up its key in the journal: a recorded result is returned without "
        "running anything, and only calls with no record run live. The code between steps "
        "must therefore be deterministic, so the replay asks for the same steps in the same "
        "order.",
        key_points=(
            "On recovery the function is replayed: recorded results are returned from the "
            "journal and only unrecorded steps run live",
            "Code between steps must be deterministic so that replay asks for the same steps",
        ),
    ),
    Document(
        url=f"{_SITE}/durable-execution/ai-agents",
        title="Durable execution for AI agents",
        text="An AI agent is a loop of model calls and tool calls that can run for minutes or "
        "hours. Without durability a crash halfway through throws away every model call "
        "already paid for. Making each model call and tool call a step means a restarted "
        "agent continues with the same conversation and never pays twice for a finished "
        "call.",
        key_points=(
            "Making each model call and tool call of an agent a step means a restarted agent "
            "continues the same conversation and never pays twice for a finished call",
        ),
    ),
    Document(
        url=f"{_SITE}/durable-execution/limitations",
        title="Limitations and trade-offs",
        text="Durable execution has costs. A step runs at least once: if the process dies "
        "while a step is in flight, that step runs again, so steps with side effects should "
        "pass an idempotency key to the services they call. Every checkpoint is a database "
        "write, which adds latency to each step, and changing the code of a running "
        "workflow needs care with versions.",
        key_points=(
            "Steps run at least once: a step in flight during a crash runs again, so side "
            "effects need idempotency keys",
            "Each checkpoint is a database write, and changing code under running workflows "
            "needs versioning",
        ),
    ),
    Document(
        url=f"{_SITE}/batteries/solid-state",
        title="Solid-state batteries explained",
        text="Solid-state batteries replace the liquid electrolyte of lithium-ion cells with "
        "a solid one. That promises higher energy density and less fire risk, since there "
        "is no flammable liquid to leak.",
        key_points=(
            "Solid-state batteries use a solid electrolyte, promising higher energy density "
            "and lower fire risk than lithium-ion cells",
        ),
    ),
    Document(
        url=f"{_SITE}/batteries/manufacturing",
        title="Why solid-state batteries are hard to manufacture",
        text="The limitations of solid-state batteries are mostly in manufacturing: thin "
        "solid electrolytes crack, dendrites still form at high charging rates, and "
        "production lines cost far more than those for lithium-ion cells.",
        key_points=(
            "Solid electrolytes crack and still grow dendrites at fast charging rates",
            "Solid-state production lines cost far more than lithium-ion ones",
        ),
    ),
    Document(
        url=f"{_SITE}/reefs/restoration",
        title="Coral reef restoration methods",
        text="Coral reef restoration grows coral fragments in nurseries and transplants them "
        "onto damaged reefs. Larval seeding spreads coral larvae over large areas at once.",
        key_points=(
            "Reef restoration transplants nursery-grown coral fragments and seeds larvae "
            "over damaged reefs",
        ),
    ),
    Document(
        url=f"{_SITE}/reefs/limits",
        title="Limitations of coral reef restoration",
        text="Restoration covers hectares while reefs span thousands of square kilometres, and "
        "transplanted coral still bleaches when the water warms, so restoration buys time "
        "but cannot replace cutting emissions.",
        key_points=(
            "Coral reef restoration works at a tiny scale and transplanted coral still bleaches "
            "in warm water",
        ),
    ),
)
_BY_URL = {doc.url: doc for doc in DOCUMENTS}


def words(text: str) -> set[str]:
    """The content words of a text, lowercased."""
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOPWORDS}


def _score(query: set[str], doc: Document) -> int:
    """Title words count thrice; a document must match more than half the query words."""
    title = words(doc.title)
    matched = query & (title | words(doc.text))
    if 2 * len(matched) <= len(query):
        return 0
    return sum(3 if word in title else 1 for word in matched)


def search(query: str, limit: int = 3) -> list[Hit]:
    """The documents that match the query best, best first (ties in corpus order)."""
    wanted = words(query)
    scored = [(_score(wanted, doc), -i, doc) for i, doc in enumerate(DOCUMENTS)]
    ranked = sorted((s for s in scored if s[0] > 0), key=lambda s: s[:2], reverse=True)
    return [
        Hit(url=doc.url, title=doc.title, snippet=doc.text.split(". ")[0] + ".")
        for _, _, doc in ranked[:limit]
    ]


def browse(url: str) -> Page:
    doc = _BY_URL.get(url)
    if doc is None:
        return Page(url=url, title="", text=f"404: no page at {url}", found=False)
    return Page(url=url, title=doc.title, text=doc.text)


def analyze(question: str, urls: list[str]) -> Analysis:
    """The key points of the given pages, those closest to the question first, in the
    order of the pages."""
    wanted = words(question)
    findings = []
    for url in urls:
        doc = _BY_URL.get(url)
        if doc is None:
            continue
        points = sorted(doc.key_points, key=lambda p: len(wanted & words(p)), reverse=True)
        findings += [Finding(claim=point, source=url) for point in points]
    return Analysis(question=question, findings=findings)
