"""Where perdure's time goes, for whoever makes it faster. Two tools:

    python -m bench.profile anatomy [--backend sqlite|postgres] [--steps 2000]
        W1 with a worker on this process's event loop (perdure.testing.worker) and the
        store's batching thread timed at each hand-off: per checkpoint, the wait before the
        store thread picks the write up, BEGIN, the statements, COMMIT, the hand-back to
        the event loop, and the loop's own work until the next checkpoint. Medians in µs.

    python -m bench.profile spy W1|W2|W3|W6 [--backend ...] [--n N] [--idle | --gil]
        the workload against a real `perdure worker` process sampled by py-spy (all
        threads; with --gil only the thread holding the GIL, which is where a worker's
        CPU goes); prints the hottest functions (self and inclusive) per thread, and keeps
        the raw stacks (bench/results/profile-*.txt; `py-spy` also writes flame graphs).

Measurements, never tests; they reach into the store's internals (the batching thread's
methods) from outside, without changing them."""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common, pg

# --- anatomy -------------------------------------------------------------------------


def instrument() -> list[dict[str, Any]]:
    """Wrap the batching store's paths with timers; the records they fill. A write is
    made either at once on the caller's thread (`_inline`) or by the store's thread in a
    batch (`_commit`); both begin, run their operations and commit through `_commit`."""
    from perdure.store import batched

    records: list[dict[str, Any]] = []
    local: dict[str, Any] = {}
    cls = batched.BatchedStore
    write_op, submit, inline, commit = cls._write_op, cls._submit, cls._inline, cls._commit

    def timed(op: Any, rec: dict[str, Any]) -> Any:
        def run(tx: Any) -> Any:
            rec["op_start"] = time.perf_counter()
            try:
                return op(tx)
            finally:
                rec["op_end"] = time.perf_counter()

        run.rec = rec  # type: ignore[attr-defined]
        return run

    async def _write_op(self: Any, op: Any, *args: Any, **kwargs: Any) -> Any:
        rec = {"submit": time.perf_counter(), "write": True, "name": getattr(op, "__qualname__", "?")}
        records.append(rec)
        try:
            return await write_op(self, timed(op, rec), *args, **kwargs)
        finally:
            rec["resumed"] = time.perf_counter()

    def _submit(self: Any, op: Any, write: bool) -> Any:
        rec = {"submit": time.perf_counter(), "write": write, "name": getattr(op, "__qualname__", "?")}
        records.append(rec)
        return submit(self, timed(op, rec), write)

    def _inline(self: Any, job: Any) -> Any:
        local["inline_start"] = time.perf_counter()
        made = inline(self, job)
        if made and hasattr(job.op, "rec"):
            job.op.rec["inline"] = True
        return made

    def _commit(self: Any, conn: Any, jobs: list[Any], *args: Any, **kwargs: Any) -> Any:
        batch = [job.op.rec for job in jobs if hasattr(job.op, "rec")]
        begun = kwargs.get("begun", False)  # made at once: it began in `_inline`
        start = local.pop("inline_start") if begun else time.perf_counter()
        for rec in batch:
            rec["batch_start"], rec["batch_size"] = start, len(jobs)
            if begun:
                rec["begun"] = local["begun"]
        local["batch"] = batch
        try:
            return commit(self, conn, jobs, *args, **kwargs)
        finally:
            end = time.perf_counter()
            for rec in batch:
                rec["done"] = end

    for sub in cls.__subclasses__():
        sub._begin = _timed_begin(sub._begin, local, in_batch=True)  # type: ignore[method-assign]
        sub._try_begin = _timed_begin(sub._try_begin, local, in_batch=False)  # type: ignore[method-assign]
    cls._write_op = _write_op  # type: ignore[method-assign]
    cls._submit = _submit  # type: ignore[method-assign]
    cls._inline = _inline  # type: ignore[method-assign]
    cls._commit = _commit  # type: ignore[method-assign]
    return records


def _timed_begin(original: Any, local: dict[str, Any], in_batch: bool) -> Any:
    def _begin(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        finally:
            local["begun"] = now = time.perf_counter()
            for rec in local.get("batch", []) if in_batch else ():
                rec["begun"] = now

    return _begin


async def anatomy(url: str, steps: int, runs: int = 0) -> dict[str, Any]:
    os.environ["PERDURE_DATABASE_URL"] = url
    from bench.apps import perdure_app as tasks
    from perdure import testing
    from perdure.store import postgres, sqlite  # noqa: F401  (their classes get the timers)

    records = instrument()
    async with testing.worker(tasks.app, concurrency=100):
        await (await tasks.app.trigger(tasks.latency, {})).result(timeout=60)
        records.clear()
        started = time.perf_counter()
        handles = [await tasks.app.trigger(tasks.steps, {"steps": steps}) for _ in range(max(runs, 1))]
        outs = [await h.result(timeout=600) for h in handles]
        elapsed = time.perf_counter() - started
    out = outs[0]
    per_step = 1e6 * (out["last"] - out["first"]) / (steps - 1)
    ckpt = [r for r in records if "checkpoint" in r["name"] and "resumed" in r and "begun" in r]
    phases: dict[str, list[float]] = collections.defaultdict(list)
    for prev, rec in zip(ckpt, ckpt[1:], strict=False) if runs <= 1 else ():  # one run: in sequence
        phases["loop: resumed → next checkpoint submitted"].append(rec["submit"] - prev["resumed"])
    for rec in ckpt:
        phases["total: submitted → loop resumes"].append(rec["resumed"] - rec["submit"])
        phases["before the write begins (the loop's turn, or the queue)"].append(rec["batch_start"] - rec["submit"])
        phases["BEGIN"].append(rec["begun"] - rec["batch_start"])
        phases["the operation's statements (fenced upsert)"].append(rec["op_end"] - rec["op_start"])
        phases["other statements before the op"].append(rec["op_start"] - rec["begun"])
        phases["COMMIT (+ before-commit hook)"].append(rec["done"] - rec["op_end"])
        phases["hand-back: committed → loop resumes"].append(rec["resumed"] - rec["done"])
    others = collections.Counter(r["name"] for r in records if "checkpoint" not in r["name"])
    writes = [r for r in records if r["write"] and "batch_size" in r]
    return {
        "url": url.split("@")[-1],
        "steps": steps,
        "runs": max(runs, 1),
        "runs_per_s (triggered in this process)": max(runs, 1) / elapsed,
        "write_batches": len({r["batch_start"] for r in writes}),
        "writes": len(writes),
        "writes_by_kind": dict(collections.Counter(r["name"].split(".")[1] for r in writes if "." in r["name"])),
        "us_per_step": per_step,
        "checkpoints": len(ckpt),
        "checkpoints made at once on the loop's thread": sum(1 for r in ckpt if r.get("inline")),
        "batch_sizes": dict(collections.Counter(r.get("batch_size") for r in ckpt)),
        "median_us": {k: 1e6 * statistics.median(v) for k, v in phases.items()},
        "mean_us": {k: 1e6 * statistics.fmean(v) for k, v in phases.items()},
        "other_store_calls": dict(others.most_common(10)),
    }


# --- py-spy --------------------------------------------------------------------------


async def spy(workload: str, url: str, n: int, idle: bool, out: Path, gil: bool = False) -> Path:
    import perdure
    from bench.apps import perdure_app as tasks

    env = common.child_env({"PERDURE_DATABASE_URL": url})
    worker = subprocess.Popen(common.python("-m", "perdure", "worker", "bench.apps.perdure_app:app"),
                              env=env, cwd=common.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = perdure.App(url)
    try:
        await (await client.trigger(tasks.latency, {})).result(timeout=60)
        command = ["py-spy", "record", "--pid", str(worker.pid), "--rate", "1000", "--format", "raw",
                   "--threads", "--nonblocking", "-o", str(out)] + (["--idle"] if idle else []) + (["--gil"] if gil else [])
        sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(1.0)
        started = time.perf_counter()
        if workload == "W1":
            await (await client.trigger(tasks.steps, {"steps": n})).result(timeout=600)
        elif workload == "W2":
            handles = [await client.trigger(tasks.steps, {"steps": 3}) for _ in range(n)]
            for h in handles:
                await h.result(timeout=600)
        elif workload == "W3":
            for _ in range(n):
                await (await client.trigger(tasks.latency, {})).result(timeout=60)
        elif workload == "W6":
            from bench.perdure_bench import until_status

            handle = await client.trigger(tasks.resume, {"steps": n})
            await until_status(client, handle.id, perdure.RunStatus.WAITING, 600)
            [token] = await client.tokens.list(run_id=handle.id)
            await client.tokens.complete(token.id, {})
            await handle.result(timeout=600)
        print(f"{workload}: {time.perf_counter() - started:.2f} s sampled", file=sys.stderr)
        sampler.send_signal(signal.SIGINT)
        sampler.wait(60)
    finally:
        worker.terminate()
        worker.wait(30)
    return out


def summarize(path: Path, top: int = 25) -> str:
    """Per thread: samples, the hottest frames by self time and by inclusive time."""
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[tuple[str, str]] = collections.Counter()
    inclusive: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        thread = frames[1] if len(frames) > 1 else frames[0]
        thread = thread if not thread.startswith("_run_module") else "MainThread"
        n = int(count)
        threads[thread] += n
        own[(thread, frames[-1])] += n
        for frame in set(f.split(" (")[0] for f in frames[2:]):
            inclusive[(thread, frame)] += n
    lines = ["samples by thread (1 sample = 1 ms):"]
    lines += [f"  {n:7}  {t}" for t, n in threads.most_common()]
    lines += ["", "self (the frame on top):"]
    lines += [f"  {n:7}  {t[:24]:24}  {f[:120]}" for (t, f), n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {n:7}  {t[:24]:24}  {f[:120]}" for (t, f), n in inclusive.most_common(2 * top)]
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("anatomy")
    a.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    a.add_argument("--steps", type=int, default=2000, help="steps per run")
    a.add_argument("--runs", type=int, default=1, help="runs triggered at once (W2: --runs 2000 --steps 3)")
    s = sub.add_parser("spy")
    s.add_argument("workload", choices=["W1", "W2", "W3", "W6"])
    s.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    s.add_argument("--n", type=int, default=None, help="steps (W1, W6) or runs (W2, W3)")
    s.add_argument("--idle", action="store_true", help="sample waiting threads too")
    s.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    args = parser.parse_args()
    with common.workdir("profile") as directory:
        db = f"bench_profile_{os.getpid()}"
        url = pg.create(db) if args.backend == "postgres" else f"sqlite:///{directory}/store.db"
        try:
            if args.command == "anatomy":
                import json

                print(json.dumps(asyncio.run(anatomy(url, args.steps, args.runs)), indent=1))
            else:
                n = args.n or {"W1": 3000, "W2": 2000, "W3": 200, "W6": 10_000}[args.workload]
                out = common.BENCH / "results" / f"profile-{args.workload}-{args.backend}-{int(time.time())}.txt"
                out.parent.mkdir(parents=True, exist_ok=True)
                asyncio.run(spy(args.workload, url, n, args.idle, out, args.gil))
                print(summarize(out))
                print(f"\nraw stacks: {out}")
        finally:
            if args.backend == "postgres":
                pg.drop(db)


if __name__ == "__main__":
    main()
