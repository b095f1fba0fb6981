"""The `perdure` command line: parses arguments, calls App / Worker, prints.

A user mistake (a bad APP path, a bad payload, an unknown run) prints one line on stderr
and exits 2; `perdure trigger --wait` exits 1 when the run does not complete.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from perdure import exceptions, runs
from perdure.app import App

if TYPE_CHECKING:
    from perdure.worker import Worker


class UsageError(Exception):
    """A mistake in how perdure was called."""


def load_app(path: str | None) -> App:
    """`module:attribute`, as uvicorn takes it; the working directory is importable."""
    if not path:
        path = os.environ.get("PERDURE_APP")
    if not path:
        raise UsageError("no APP given: pass module:attribute (e.g. myapp:app) or set PERDURE_APP")
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"APP {path!r} must look like module:attribute, e.g. myapp:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise UsageError(f"cannot import {module_name!r} (from APP {path!r}): {error}") from None
    app = module
    for part in attribute.split("."):
        if not hasattr(app, part):
            raise UsageError(f"module {module_name!r} has no attribute {attribute!r}")
        app = getattr(app, part)
    if not isinstance(app, App):
        raise UsageError(f"{path!r} is a {type(app).__name__}, not a perdure.App")
    return app


def client_app(path: str | None) -> App:
    """The App for commands that need only the database: APP or PERDURE_APP if given."""
    return load_app(path) if (path or os.environ.get("PERDURE_APP")) else App()


# --- commands ------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from perdure.worker import Worker

    app = load_app(args.app)
    worker = Worker(app, concurrency=args.concurrency)

    async def serve() -> None:
        stop = _stop_on_signals()
        await app.store()  # fail fast, with one line, on a bad database
        _settle_heap()
        _announce("perdure worker", worker)
        await worker.run(stop)
        await app.close()

    asyncio.run(serve())
    return 0


def _settle_heap() -> None:
    """Move what the worker process loaded to start (modules, classes, the app, the
    store) out of the garbage collector's sight: it lives as long as the process, and
    every full collection would walk it again, pausing the runs (about 20 ms a time on
    2 cores, at any durable call). Collections still see everything made later; what
    was frozen is freed by its reference count, and only such an object that dies in a
    reference cycle (a store connection replaced after a reconnect, say) is never
    collected: once, and small."""
    gc.collect()
    gc.freeze()


def cmd_server(args: argparse.Namespace) -> int:
    from perdure.server import create_app, serve

    app = load_app(args.app)
    asgi = create_app(app)  # no API key: one line, before anything listens

    async def main() -> None:
        stop = _stop_on_signals()
        await app.store()
        async with serve.running(asgi, serve.bind(args.host, args.port)) as url:
            print(f"perdure server: {url}/ (API {url}/api/v1, OpenAPI {url}/openapi.json)")
            sys.stdout.flush()
            await stop.wait()
        await app.close()

    asyncio.run(main())
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """A worker and the server in one process, on 127.0.0.1 only (no API key needed)."""
    from perdure.server import create_app, serve
    from perdure.worker import Worker

    app = load_app(args.app)

    async def main() -> None:
        stop = _stop_on_signals()
        await app.store()
        sock = serve.bind("127.0.0.1", args.port)
        if app.settings.public_url is None:  # token URLs point at this server
            app.settings = dataclasses.replace(app.settings, public_url=serve.url_of(sock))
        worker = Worker(app, concurrency=args.concurrency)
        _settle_heap()
        _announce("perdure dev", worker)
        async with serve.running(create_app(app, dev=True), sock, access_log=False) as url:
            print(f"perdure dev: dashboard at {url}/", flush=True)
            await worker.run(stop)
        await app.close()

    asyncio.run(main())
    return 0


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _announce(label: str, worker: Worker) -> None:
    tasks = ", ".join(sorted(worker.app.tasks)) or "(none)"
    print(
        f"{label}: {worker.id} serving {tasks} on {worker.app.settings.database_url} "
        f"(concurrency {worker.concurrency})",
        flush=True,
    )


def cmd_trigger(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    task = app.tasks.get(args.task)
    if task is None:
        known = ", ".join(sorted(app.tasks)) or "none"
        raise UsageError(f"no task {args.task!r} in this app (tasks: {known})")
    payload = _json_arg(args.payload, "--payload")
    options: dict[str, Any] = {"tags": args.tag or None}
    if args.idempotency_key:
        options["idempotency_key"] = args.idempotency_key
    if args.delay:
        options["delay"] = args.delay
    handle = task.trigger_sync(payload, **options)
    if not args.wait:
        print(handle.id)
        return 0
    try:
        output = handle.result_sync(timeout=args.timeout)
    except (exceptions.RunFailed, exceptions.RunCanceled, TimeoutError) as error:
        print(f"perdure: {error}", file=sys.stderr)
        return 1
    print(task.output_codec.dump(output))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    app = client_app(args.app)
    action = args.action
    if action == "list":
        found = app.runs.list_sync(
            status=args.status, task_id=args.task, tag=args.tag, limit=args.limit
        )
        if args.json:
            print(json.dumps([_run_json(r) for r in found], indent=2))
        else:
            _print_table(found)
        return 0
    if not args.id:
        raise UsageError(f"perdure runs {action} needs a run id")
    if action == "show":
        trace = app.runs.trace_sync(args.id)
        if args.json:
            print(json.dumps(trace.to_json(), indent=2, default=str))
        else:
            print(trace.render())
        return 0
    if action == "cancel":
        run = app.runs.cancel_sync(args.id)
        running = run.status is runs.RunStatus.RUNNING
        print(f"{run.id}: {'cancel requested' if running else run.status.value}")
        return 0
    if action == "retry":
        run = app.runs.retry_sync(args.id)
        print(f"{run.id}: {run.status.value}")
        return 0
    payload = None if args.payload is None else _json_arg(args.payload, "--payload")
    position = None
    if args.from_position:
        branch, _, seq = args.from_position.rpartition(":")
        if not branch or not seq.isdigit():
            raise UsageError("--from takes a journal key BRANCH:SEQ, e.g. 0:3")
        position = [branch, int(seq)]
    handle = app.runs.replay_sync(args.id, payload, position)
    print(handle.id)
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    app = client_app(args.app)
    if args.action == "list":
        found = app.tokens.list_sync(
            status=args.status, run_id=args.run, tag=args.tag, limit=args.limit
        )
        if args.json:
            print(json.dumps([_token_json(t) for t in found], indent=2))
            return 0
        if not found:
            print("no tokens")
            return 0
        rows = [("ID", "STATUS", "RUN", "CREATED")]
        rows += [(t.id, t.status.value, t.run_id or "-", _when(t.created_at)) for t in found]
        _print_rows(rows)
        return 0
    if not args.id:
        raise UsageError("perdure tokens complete needs a token id")
    data = _json_arg(args.data, "--data")
    record = app.tokens.complete_sync(args.id, data)
    print(f"{record.id}: {record.status.value}")
    return 0


def _token_json(token: Any) -> dict[str, Any]:
    data = dict(token.__dict__)
    data["status"] = token.status.value
    for key in ("timeout_at", "created_at", "completed_at"):
        value = data[key]
        data[key] = value.isoformat() if isinstance(value, datetime) else value
    return data


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _print_rows(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_db(args: argparse.Namespace) -> int:
    app = client_app(args.app)

    async def migrate() -> int:
        db = await app.store()
        version = await db.migrate()
        await app.close()
        return version

    print(f"database {app.settings.database_url} is at schema version {asyncio.run(migrate())}")
    return 0


# --- output ------------------------------------------------------------------------------------


def _run_json(run: runs.Run) -> dict[str, Any]:
    data = {k: v for k, v in run.__dict__.items()}
    data["status"] = run.status.value
    data["error"] = None if run.error is None else run.error.to_json()
    for key in ("created_at", "started_at", "finished_at"):
        value = data[key]
        data[key] = value.isoformat() if isinstance(value, datetime) else value
    return data


def _print_table(found: list[runs.Run]) -> None:
    if not found:
        print("no runs")
        return
    rows = [("ID", "TASK", "STATUS", "ATTEMPTS", "CREATED")]
    rows += [(r.id, r.task_id, r.status.value, str(r.attempts), _when(r.created_at)) for r in found]
    _print_rows(rows)


def _json_arg(text: str | None, flag: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{flag} is not valid JSON: {error}") from None


# --- parser ------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="perdure",
        description="Durable execution for Python: run workers, trigger tasks, "
        "inspect and steer runs.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, text in (
        ("worker", "run a worker that executes the app's tasks"),
        (
            "dev",
            "run a worker, the API and the dashboard on 127.0.0.1 (SQLite unless "
            "PERDURE_DATABASE_URL says otherwise; no API key)",
        ),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("app", metavar="APP", help="module:attribute of the perdure.App")
        p.add_argument(
            "--concurrency",
            type=int,
            default=None,
            help="runs executed at once (default PERDURE_WORKER_CONCURRENCY or 100)",
        )
        if name == "dev":
            p.add_argument("--port", type=int, default=8000, help="default 8000; 0: any free")

    text = "serve the HTTP API, event stream, metrics and dashboard (needs PERDURE_API_KEY)"
    p = sub.add_parser("server", help=text, description=text)
    p.add_argument("app", metavar="APP", help="module:attribute of the perdure.App")
    p.add_argument(
        "--host", default="127.0.0.1", help="default 127.0.0.1; 0.0.0.0: every interface"
    )
    p.add_argument("--port", type=int, default=8000, help="default 8000; 0: any free")

    p = sub.add_parser("trigger", help="start a run of a task", description="start a run of a task")
    p.add_argument("task", metavar="TASK", help="the task id")
    p.add_argument("--payload", default=None, help="the payload as JSON")
    p.add_argument("--app", default=None, help="module:attribute (default PERDURE_APP)")
    p.add_argument("--wait", action="store_true", help="wait and print the output as JSON")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    p.add_argument("--idempotency-key", default=None)
    p.add_argument("--delay", type=float, default=None, help="seconds before the run may start")
    p.add_argument("--tag", action="append", help="a tag (repeatable)")

    p = sub.add_parser(
        "runs",
        help="list, show, cancel, retry or replay runs",
        description="list, show, cancel, retry or replay runs",
    )
    p.add_argument("action", choices=["list", "show", "cancel", "retry", "replay"])
    p.add_argument("id", nargs="?", help="the run id")
    p.add_argument("--app", default=None, help="module:attribute (default PERDURE_APP)")
    p.add_argument("--status", default=None)
    p.add_argument("--task", default=None)
    p.add_argument("--tag", default=None)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--payload", default=None, help="replay: a new payload as JSON")
    p.add_argument(
        "--from",
        dest="from_position",
        default=None,
        help="replay: fork from journal key BRANCH:SEQ (entries before it are kept)",
    )

    p = sub.add_parser(
        "tokens",
        help="list or complete tokens (approvals, webhooks)",
        description="list or complete tokens (approvals, webhooks)",
    )
    p.add_argument("action", choices=["list", "complete"])
    p.add_argument("id", nargs="?", help="the token id")
    p.add_argument("--data", default=None, help="complete: the data as JSON")
    p.add_argument("--app", default=None, help="module:attribute (default PERDURE_APP)")
    p.add_argument(
        "--status", default=None, choices=["waiting", "completed", "timed_out", "canceled"]
    )
    p.add_argument("--run", default=None, help="only the tokens of this run")
    p.add_argument("--tag", default=None)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("db", help="database maintenance", description="database maintenance")
    p.add_argument("action", choices=["migrate"])
    p.add_argument("--app", default=None, help="module:attribute (default PERDURE_APP)")
    return top


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("PERDURE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "worker":
            code = cmd_worker(args)
        elif args.command == "dev":
            code = cmd_dev(args)
        elif args.command == "server":
            code = cmd_server(args)
        elif args.command == "trigger":
            code = cmd_trigger(args)
        elif args.command == "runs":
            code = cmd_runs(args)
        elif args.command == "tokens":
            code = cmd_tokens(args)
        else:
            code = cmd_db(args)
    except (UsageError, exceptions.PerdureError) as error:
        print(f"perdure: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
