"""One measurement in a process of its own, so that no system's state (DBOS is a
singleton, event loops, caches) leaks into the next one:

    python -m bench.driver SYSTEM WORKLOAD --backend B --params JSON [--url URL] [--server JSON]

prints its result as one marked JSON line (see `common.emit`)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common

MODULES = {
    "floor": "bench.floor",
    "perdure": "bench.perdure_bench",
    "dbos": "bench.dbos_bench",
    "restate": "bench.restate_bench",
    "temporal": "bench.temporal_bench",
}


@dataclass
class Job:
    system: str
    workload: str
    backend: str | None
    params: dict[str, Any]
    dir: Path
    url: str | None = None
    server: dict[str, Any] = field(default_factory=dict)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=sorted(MODULES))
    parser.add_argument("workload")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--params", default="{}")
    parser.add_argument("--url", default=None)
    parser.add_argument("--server", default="{}")
    args = parser.parse_args()
    # SIGTERM (the orchestrator's timeout) unwinds: the processes this driver started stop too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    module = importlib.import_module(MODULES[args.system])
    function = module.WORKLOADS[args.workload]
    with common.workdir(f"{args.system}-{args.workload}") as directory:
        job = Job(
            system=args.system,
            workload=args.workload,
            backend=args.backend,
            params=json.loads(args.params),
            dir=directory,
            url=args.url or (f"sqlite:///{directory}/store.db" if args.backend == "sqlite" else None),
            server=json.loads(args.server),
        )
        try:
            result = function(job)
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
        except BaseException as error:
            traceback.print_exc()
            common.emit({"error": f"{type(error).__name__}: {error}"})
            raise SystemExit(1) from None
    common.emit(result)


if __name__ == "__main__":
    main()
