"""The headline demo: an AI research agent whose worker is SIGKILLed mid-run.

    python -m examples.research_agent.demo        (from the repository root)
    python examples/research_agent/demo.py

It starts `perdure worker` as a child process on a temporary SQLite database, triggers
the agent, SIGKILLs the worker once three model calls have finished, starts a new
worker, and prints the run's steps with their tries and the worker that ran each. It
checks what it claims: no step that had finished before the kill ran again (a step in
flight at the kill may, since a step runs at least once). Exits 1 if that failed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import perdure
from perdure.testing import WorkerProcess
from perdure.trace import Trace

REPO = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(REPO))

APP = "examples.research_agent.app:app"
TOPIC = "durable execution"
KILL_AFTER_MODEL_CALLS = 3
PHASE_TIMEOUT = 60.0  # seconds for each half of the run (a real model is slower)


Invocations = dict[str, tuple[str, list[int]]]  # step key -> (step name, worker of each run)


class GuaranteeFailed(Exception):
    """What the demo claims did not hold."""


class Demo:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.effects = tmp / "effects.tsv"
        self.env = {
            "PERDURE_DATABASE_URL": f"sqlite:///{tmp / 'demo.db'}",
            "PERDURE_DEMO_EFFECTS": str(self.effects),
            # the scripted model answers "529 overloaded" once, on turn 2: a step retry
            "RESEARCH_AGENT_OVERLOADED_TURN": "2",
        }
        os.environ.update(self.env)  # this process is the client: the same database
        from examples.research_agent import app, model

        self.agent: ModuleType = app
        self.model_kind = model.choice()
        self.workers: list[WorkerProcess] = []
        self.shown: dict[str, tuple[str, int]] = {}  # step key -> (status, tries) printed
        self.started = time.monotonic()

    # --- narration -----------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {text}", flush=True)

    def show_new_steps(self, trace: Trace, worker: int) -> None:
        for entry in trace.steps():
            key = step_key(trace, entry)
            state = (entry.status.value, entry.attempts)
            if self.shown.get(key) == state:
                continue
            self.shown[key] = state
            where = f"worker {worker}: #{entry.key.seq:<2} {entry.name:<10}"
            if entry.status.value == "completed":
                self.say(f"{where} {describe(entry.name, json.loads(entry.result or 'null'))}")
            elif entry.error:
                kind = entry.error["type"].rpartition(".")[2]
                why = f"{kind}: {entry.error['message'].partition(':')[0]}"
                self.say(f"{where} try {entry.attempts} failed ({why}); retrying")

    # --- the workers ---------------------------------------------------------------------

    def start_worker(self) -> WorkerProcess:
        number = len(self.workers) + 1
        worker = WorkerProcess(APP, env=self.env, cwd=REPO, log=self.tmp / f"worker-{number}.log")
        self.workers.append(worker)
        worker.start()
        self.say(f"started worker {number}: `perdure worker {APP}` (pid {worker.pid})")
        return worker

    def worker_of(self, pid: int) -> int:
        return next((i for i, w in enumerate(self.workers, 1) if w.pid == pid), 0)

    def follow(self, run_id: str, done: Callable[[Trace], bool]) -> Trace:
        """Print each step as it is recorded until `done(trace)`."""
        worker = len(self.workers)
        deadline = time.monotonic() + PHASE_TIMEOUT
        while True:
            trace: Trace = self.agent.app.runs.trace_sync(run_id)
            self.show_new_steps(trace, worker)
            if done(trace) or trace.run.status.is_terminal:
                return trace
            if self.workers[-1].process and self.workers[-1].process.poll() is not None:
                raise RuntimeError(f"worker {worker} exited on its own")
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} made no progress in {PHASE_TIMEOUT:.0f}s")
            time.sleep(0.05)

    def worker_log(self) -> str:
        logs = sorted(self.tmp.glob("worker-*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)

    # --- the demo ------------------------------------------------------------------------

    def run(self) -> int:
        print(
            f"perdure demo: an AI research agent survives a SIGKILL of its worker\n"
            f"model: {self.model_kind}{' (offline)' if self.model_kind == 'scripted' else ''}"
            f"   database: {self.env['PERDURE_DATABASE_URL']}\n",
            flush=True,
        )
        try:
            return self.run_agent()
        except GuaranteeFailed as failure:
            print(f"\nGUARANTEE FAILED: {failure}", flush=True)
            return 1
        except (perdure.RunFailed, TimeoutError, RuntimeError) as error:
            print(f"\nDEMO FAILED: {error}\n{self.worker_log()}", flush=True)
            return 1
        finally:
            for worker in self.workers:
                worker.stop()
            self.agent.app.portal.run(self.agent.app.close())

    def run_agent(self) -> int:
        first = self.start_worker()
        agent = self.agent.research_agent
        handle = agent.trigger_sync(self.agent.ResearchInput(topic=TOPIC))
        self.say(f"triggered research-agent, run {handle.id}, topic {TOPIC!r}")
        self.follow(handle.id, lambda t: model_calls(t) >= KILL_AFTER_MODEL_CALLS)

        first.kill()
        self.say(f"SIGKILL worker 1 (pid {first.pid}): no cleanup, no release")
        snapshot = self.agent.app.runs.trace_sync(handle.id)  # what was durable at death
        self.show_new_steps(snapshot, 1)
        finished = finished_steps(snapshot)
        ran = self.invocations()
        in_flight = [step_label(k, ran) for k in ran if k not in finished]
        self.say(
            f"the journal holds {len(finished)} finished steps "
            f"({model_calls(snapshot)} model calls); in flight at the kill: "
            f"{', '.join(in_flight) or 'none'}"
        )

        self.start_worker()
        final = self.follow(handle.id, lambda t: t.run.status.is_terminal)
        output = handle.result_sync(timeout=10)
        recoveries = final.run.recoveries
        self.say(
            f"run {final.run.status.value}: attempt {final.run.attempts}, {recoveries} "
            f"recover{'y' if recoveries == 1 else 'ies'} from a dead worker"
        )
        self.report(final, snapshot, output)
        return 0

    def invocations(self) -> Invocations:
        """Step key -> the step's name and the worker number of each time its code ran."""
        runs: Invocations = {}
        if self.effects.exists():
            for line in self.effects.read_text().splitlines():
                key, name, pid = line.split("\t")
                runs.setdefault(key, (name, []))[1].append(self.worker_of(int(pid)))
        return runs

    def report(self, final: Trace, snapshot: Trace, output: Any) -> None:
        invocations = self.invocations()
        before = finished_steps(snapshot)
        print(f"\n{table(final, before, invocations)}\n")
        for paragraph in output.summary.split("\n\n"):
            lines = paragraph.splitlines() if "\n" in paragraph else textwrap.wrap(paragraph, 94)
            print(textwrap.indent("\n".join(lines), "  "), end="\n\n")
        check(final, before, invocations)
        reran = [k for k, (_, w) in invocations.items() if k not in before and len(w) > 1]
        models = sum(e.name == "call_model" for e in before.values())
        lines = [
            f"{models} model calls finished before the kill; none of them ran again (nor did "
            f"the {len(before) - models} other finished steps).",
            f"Worker 2 replayed those {len(before)} steps from the journal and ran the "
            f"{len(final.steps()) - len(before)} others.",
        ]
        lines += [
            f"Step {step_label(key, invocations)} was in flight at the kill, so it ran "
            "again in worker 2: a step runs at least once, and its result is recorded "
            "once."
            for key in reran
        ]
        for line in lines:
            print("\n".join(textwrap.wrap(line, 100, subsequent_indent="  ")))
        print(f"Demo time: {time.monotonic() - self.started:.1f}s", flush=True)


# --- reading the journal -----------------------------------------------------------------------


def step_key(trace: Trace, entry: Any) -> str:
    """The key a step sees as `perdure.context().step_key`: run id + journal key."""
    return f"{trace.run.id}:{entry.key.branch}:{entry.key.seq}"


def finished_steps(trace: Trace) -> dict[str, Any]:
    return {step_key(trace, e): e for e in trace.steps() if e.status.value == "completed"}


def model_calls(trace: Trace) -> int:
    return sum(e.name == "call_model" for e in finished_steps(trace).values())


def step_label(key: str, invocations: Invocations) -> str:
    return f"#{key.rpartition(':')[2]} {invocations.get(key, ('step', []))[0]}"


def ran_in(workers: list[int]) -> str:
    if not workers:
        return "-"
    if len(set(workers)) == 1:
        return f"worker {workers[0]}" + (f" ({len(workers)}x)" if len(workers) > 1 else "")
    return "workers " + ", ".join(str(w) for w in workers)


def describe(name: str, result: Any) -> str:
    """A step's result in a few words."""
    if result is None:
        return ""
    if name == "call_model":
        calls = result["tool_calls"]
        if not calls:
            return "→ final answer"
        return "→ " + ", ".join(f"{c['name']}({short(c['arguments'])})" for c in calls)
    if name == "search":
        return f"{len(result)} result{'s' if len(result) != 1 else ''}"
    if name == "browse":
        return f'"{result["title"][:40]}"' if result["found"] else "404"
    if name == "analyze":
        return f"{len(result['findings'])} findings"
    return ""


def short(arguments: dict[str, Any]) -> str:
    if "url" in arguments:
        return str(arguments["url"]).rstrip("/").rpartition("/")[2]
    if "query" in arguments:
        return json.dumps(arguments["query"])
    return f"{len(arguments.get('urls', []))} pages"


def table(trace: Trace, before: dict[str, Any], invocations: Invocations) -> str:
    rows = [("#", "step", "result", "tries", "recorded by", "code ran in")]
    killed_at = None
    for entry in trace.steps():
        key = step_key(trace, entry)
        if key not in before and killed_at is None:
            killed_at = len(rows)
        result = describe(entry.name, json.loads(entry.result or "null"))
        rows.append(
            (
                str(entry.key.seq),
                entry.name,
                result if len(result) <= 44 else result[:43] + "…",
                str(entry.attempts),
                f"worker {1 if key in before else 2}",
                ran_in(invocations.get(key, ("", []))[1]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.rjust(w) if i in (0, 3) else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    if killed_at is not None:
        lines.insert(killed_at, "  ".ljust(8, " ") + "── worker 1 SIGKILLed here ──")
    return "\n".join("  " + line for line in lines)


def check(final: Trace, before: dict[str, Any], invocations: Invocations) -> None:
    """Raise GuaranteeFailed unless: the run completed; no step finished before the kill
    ran again, nor changed in the journal; every step of the run is finished."""
    if final.run.status.value != "completed":
        raise GuaranteeFailed(f"the run ended {final.run.status.value}: {final.run.error}")
    after = finished_steps(final)
    for key, entry in before.items():
        if 2 in invocations.get(key, ("", []))[1]:
            raise GuaranteeFailed(
                f"step {step_label(key, invocations)} finished before "
                "the kill but ran again in worker 2"
            )
        now = after.get(key)
        if now is None or (now.result, now.attempts) != (entry.result, entry.attempts):
            raise GuaranteeFailed(f"step {step_label(key, invocations)} was recorded again")
    if len(after) != len(final.steps()) or not before:
        raise GuaranteeFailed("the journal does not show a run interrupted mid-way and finished")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="perdure-demo-") as tmp:
        return Demo(Path(tmp)).run()


if __name__ == "__main__":
    sys.exit(main())
