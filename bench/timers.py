"""Timer promptness: how late do durable sleeps wake on an idle worker?

Runs a real `perdure worker` process on a fresh SQLite file, starts runs that sleep until
an absolute deadline (some short enough to wait in memory, some long enough to suspend),
and records each run's first step after the deadline. Prints p50 / p95 / max lateness per
kind and writes the raw figures as JSON. Not a test: timings here are measurements.

    python bench/timers.py [--runs 50] [--json bench/results/timers.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import perdure  # noqa: E402
from perdure import testing  # noqa: E402

app = perdure.App()


@app.task(id="bench-timer")
async def bench_timer(payload: dict) -> float:
    deadline = datetime.fromtimestamp(payload["deadline"], UTC)
    await perdure.sleep_until(deadline)
    woke: float = await perdure.run_step("woke", lambda: datetime.now(UTC).timestamp())
    return woke - payload["deadline"]


async def measure(runs: int, seconds: float, url: str) -> list[float]:
    client = perdure.App(url)
    deadline = (datetime.now(UTC) + timedelta(seconds=seconds)).timestamp()
    handles = [await client.trigger(bench_timer, {"deadline": deadline}) for _ in range(runs)]
    return [float(await h.result(timeout=seconds + 60)) for h in handles]


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
        "min_ms": 1000 * ordered[0],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="perdure-bench-"))
    url = f"sqlite:///{directory / 'bench.db'}"
    env = {"PERDURE_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    results = {}
    with testing.WorkerProcess("bench.timers:app", env=env, cwd=ROOT):
        time.sleep(1.0)  # let the worker start: the first measurement must not pay for it
        for kind, seconds in (("in memory (2 s wait)", 2.0), ("suspended (8 s wait)", 8.0)):
            lateness = await measure(args.runs, seconds, url)
            results[kind] = {
                "seconds": seconds,
                "runs": args.runs,
                **summary(lateness),
                "raw_s": lateness,
            }
    print(f"timer lateness on an idle worker, {args.runs} runs each (SQLite, defaults)")
    for kind, r in results.items():
        print(
            f"  {kind:<22} p50 {r['p50_ms']:7.1f} ms   p95 {r['p95_ms']:7.1f} ms   "
            f"max {r['max_ms']:7.1f} ms   min {r['min_ms']:6.1f} ms"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
