"""`GET /metrics`: Prometheus text format, read from the store at each scrape, so every
server of one database reports the same numbers.

- `perdure_runs{status}`: runs by status
- `perdure_queue_depth{queue}`, `perdure_queue_running{queue}`, `perdure_queue_limit{queue}`
- `perdure_workers_live`, `perdure_worker_runs_held{worker}`
- `perdure_step_duration_seconds`: a histogram of recorded steps (first start to result)
- `perdure_checkpoint_latency_seconds`: a histogram of this server's probe writes, one per
  scrape, through the store's group commit: the path and the wait every checkpoint takes.
  (Workers do not serve HTTP, so their own checkpoint timings are not here.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import PlainTextResponse

from perdure import runs
from perdure.server import api
from perdure.store import admin

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PROBE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass
class Histogram:
    """A cumulative histogram kept in this process."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def buckets(self) -> list[tuple[float, int]]:
        return list(zip(self.bounds, self.counts or [0] * len(self.bounds), strict=True))


async def metrics(request: Request) -> PlainTextResponse:
    db = await api.perdure_app(request).store()
    probes: Histogram = request.app.state.checkpoint_probes
    started = time.perf_counter()
    await db.probe_write()
    probes.observe(time.perf_counter() - started)
    lines = _runs(await db.run_counts())
    lines += _queues(await db.queue_stats())
    lines += _workers(await db.list_workers(0.0, 10_000))
    steps = await db.step_durations()
    lines += _histogram(
        "perdure_step_duration_seconds",
        "Recorded steps by duration, from their first start to their result.",
        steps.buckets,
        steps.count,
        steps.total,
    )
    lines += _histogram(
        "perdure_checkpoint_latency_seconds",
        "Probe writes through the store's group commit (one per scrape of this server).",
        probes.buckets(),
        probes.count,
        probes.total,
    )
    return PlainTextResponse("\n".join(lines) + "\n", media_type=CONTENT_TYPE)


def _runs(counts: dict[str, int]) -> list[str]:
    lines = _header("perdure_runs", "Runs in the store by status.", "gauge")
    lines += [
        f"perdure_runs{{status={_label(s.value)}}} {counts.get(s.value, 0)}" for s in runs.RunStatus
    ]
    return lines


def _queues(queues: list[admin.QueueStats]) -> list[str]:
    lines = _header(
        "perdure_queue_depth",
        "Runs due in a queue but not running (held back by its limit or awaiting a worker).",
        "gauge",
    )
    lines += [f"perdure_queue_depth{{queue={_label(q.name)}}} {q.depth}" for q in queues]
    lines += _header("perdure_queue_running", "Runs of a queue running now.", "gauge")
    lines += [f"perdure_queue_running{{queue={_label(q.name)}}} {q.running}" for q in queues]
    lines += _header("perdure_queue_limit", "A queue's concurrency limit.", "gauge")
    lines += [
        f"perdure_queue_limit{{queue={_label(q.name)}}} {q.limit}"
        for q in queues
        if q.limit is not None
    ]
    return lines


def _workers(workers: list[admin.WorkerStatus]) -> list[str]:
    live = [w for w in workers if w.stopped_at is None and w.dead_at is None]
    lines = _header("perdure_workers_live", "Workers alive (not stopped, not dead).", "gauge")
    lines.append(f"perdure_workers_live {len(live)}")
    lines += _header("perdure_worker_runs_held", "Runs a live worker holds.", "gauge")
    lines += [f"perdure_worker_runs_held{{worker={_label(w.id)}}} {w.runs_held}" for w in live]
    return lines


def _histogram(
    name: str, text: str, buckets: list[tuple[float, int]], count: int, total: float
) -> list[str]:
    lines = _header(name, text, "histogram")
    lines += [f'{name}_bucket{{le="{bound!r}"}} {n}' for bound, n in buckets]
    lines.append(f'{name}_bucket{{le="+Inf"}} {count}')
    lines.append(f"{name}_sum {total!r}")
    lines.append(f"{name}_count {count}")
    return lines


def _header(name: str, text: str, kind: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _label(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
