"""OpenTelemetry spans for runs and step tries, when the application configured an
OpenTelemetry SDK tracer provider (perdure itself never configures one, and costs nothing
without it).

A run is executed in pieces (after a suspension, a crash or a retry, on any worker), so its
span ids are derived, not random: the trace id comes from the root run's id, a run's span
id from its own id, and a step try's from its run, journal position and try. Every piece of
a run, and every run of a tree of child runs, therefore lands in one trace, and a replayed
step (returned from the journal, not executed) emits nothing.

- A step try is a span from its start to its record, current while its body runs, so spans
  the body makes (an HTTP client's, a model SDK's) nest under it.
- A run is a span from its creation to its end, emitted when it ends, child of its parent
  run's span.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Iterator
from typing import Any

from perdure import runs

TRACER_NAME = "perdure"

# The tracer provider perdure uses; None means OpenTelemetry's global one (set with
# `opentelemetry.trace.set_tracer_provider`).
tracer_provider: Any = None


def _id(bits: int, *parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=bits // 8)
    return int.from_bytes(digest.digest(), "big") or 1  # zero is not a valid id


def trace_id(root_id: str) -> int:
    return _id(128, "trace", root_id)


def run_span_id(run_id: str) -> int:
    return _id(64, "run", run_id)


def step_span_id(run_id: str, key: runs.Key, attempt: int, try_: int) -> int:
    return _id(64, "step", run_id, key.branch, key.seq, key.sub, attempt, try_)


_trace_api: Any = None  # opentelemetry.trace once imported; False if not installed
_last: tuple[Any, Any] = (None, None)  # the provider last asked, and its SDK tracer or None


def _tracer() -> Any:
    """The SDK tracer, or None when no SDK tracer provider is configured. Called for every
    step: the import and each provider's tracer are looked up once."""
    global _trace_api
    if _trace_api is None:
        try:
            from opentelemetry import trace as api
        except ImportError:
            _trace_api = False
        else:
            _trace_api = api
    if _trace_api is False:
        return None
    global _last
    provider = tracer_provider or _trace_api.get_tracer_provider()
    if _last[0] is not provider:
        tracer = provider.get_tracer(TRACER_NAME)
        _last = (provider, tracer if hasattr(tracer, "id_generator") else None)
    return _last[1]


class _Fixed:
    """An id generator that hands out the ids derived for one span."""

    def __init__(self, trace: int, span: int) -> None:
        self.trace, self.span = trace, span

    def generate_trace_id(self) -> int:
        return self.trace

    def generate_span_id(self) -> int:
        return self.span

    def is_trace_id_random(self) -> bool:
        return False


def _start(tracer: Any, name: str, ids: tuple[int, int], parent: int | None, **options: Any) -> Any:
    from opentelemetry import trace

    fixed = copy.copy(tracer)
    fixed.id_generator = _Fixed(*ids)
    context = None
    if parent is not None:
        remote = trace.SpanContext(
            ids[0], parent, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
        )
        context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    return fixed.start_span(name, context=context, **options)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


_NO_SPAN = contextlib.nullcontext()


def step_try(
    run_id: str, root_id: str, name: str, key: runs.Key, attempt: int, try_: int, started: float
) -> contextlib.AbstractContextManager[Any]:
    """The span of one try of a step, current while it runs; ended by the caller with
    `end_step` once the try is recorded (or never, if the process dies first). Without a
    tracer, a shared do-nothing context: nothing is built on a step's hot path."""
    tracer = _tracer()
    if tracer is None:
        return _NO_SPAN
    return _step_span(tracer, run_id, root_id, name, key, attempt, try_, started)


@contextlib.contextmanager
def _step_span(
    tracer: Any,
    run_id: str,
    root_id: str,
    name: str,
    key: runs.Key,
    attempt: int,
    try_: int,
    started: float,
) -> Iterator[Any]:
    from opentelemetry import trace

    span = _start(
        tracer,
        f"step {name}",
        (trace_id(root_id), step_span_id(run_id, key, attempt, try_)),
        run_span_id(run_id),
        start_time=_ns(started),
        attributes={
            "perdure.run_id": run_id,
            "perdure.step": name,
            "perdure.position": f"{key.branch}:{key.seq}",
            "perdure.attempt": attempt,
            "perdure.step.try": try_,
        },
    )
    with trace.use_span(span, end_on_exit=False, record_exception=False):
        yield span


def end_step(span: Any, entry: runs.Entry) -> None:
    if span is None:
        return
    from opentelemetry import trace

    if entry.status is not runs.EntryStatus.COMPLETED:
        error = entry.error or {}
        span.set_status(trace.Status(trace.StatusCode.ERROR, str(error.get("message", ""))))
        span.set_attribute("perdure.error.type", str(error.get("type", "")))
    span.end(end_time=_ns(entry.finished_at) if entry.finished_at else None)


def run_ended(run: runs.Run) -> None:
    """Emit the span of a run that has just ended."""
    tracer = _tracer()
    if tracer is None:
        return
    from opentelemetry import trace

    span = _start(
        tracer,
        f"run {run.task_id}",
        (trace_id(run.root_id), run_span_id(run.id)),
        run_span_id(run.parent_id) if run.parent_id else None,
        start_time=_ns(run.created_at.timestamp()),
        attributes={
            "perdure.run_id": run.id,
            "perdure.task_id": run.task_id,
            "perdure.status": run.status.value,
            "perdure.attempts": run.attempts,
        },
    )
    if run.error is not None:
        span.set_status(trace.Status(trace.StatusCode.ERROR, run.error.message))
        span.set_attribute("perdure.error.type", run.error.type)
    span.end(end_time=_ns(run.finished_at.timestamp()) if run.finished_at else None)


def enabled() -> bool:
    return _tracer() is not None
