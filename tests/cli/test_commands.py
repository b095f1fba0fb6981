"""The commands of `perdure` as a user runs them: trigger (and wait), runs list / show /
cancel / retry / replay, db migrate, worker; with a real worker process where one is needed."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from typing import Any

import pytest

from perdure.testing import WorkerProcess
from tests.cli.conftest import APP, Cli, wait_for

WAIT = ["--wait", "--timeout", "30"]


def test_trigger_wait_prints_the_output_as_json_and_exits_0(cli: Cli) -> None:
    cli.worker()
    done = cli("trigger", "echo", "--app", APP, "--payload", '{"a":1}', *WAIT)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(done.stdout) == {"a": 1}
    assert done.stdout.strip().replace(" ", "") == '{"a":1}'


def test_a_worker_process_keeps_what_it_loaded_to_start_out_of_full_collections(cli: Cli) -> None:
    cli.worker()
    done = cli("trigger", "heap", "--app", APP, *WAIT)
    assert done.returncode == 0, done.stderr
    # modules, classes and the app: thousands of objects no collection walks again
    assert json.loads(done.stdout)["frozen"] > 10_000


def test_trigger_wait_prints_a_typed_output_as_json(cli: Cli) -> None:
    cli.worker()
    done = cli("trigger", "typed", "--app", APP, "--payload", '{"name": "Ada"}', *WAIT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "hello Ada"


def test_trigger_wait_prints_the_error_on_stderr_and_exits_1(cli: Cli) -> None:
    cli.worker()
    done = cli("trigger", "boom", "--app", APP, *WAIT)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perdure: "), done.stderr
    assert "NonRetryableError" in lines[0] and "kaboom: the task gave up" in lines[0]
    [run] = cli.runs()
    assert run["status"] == "failed"
    assert run["error"]["message"] == "kaboom: the task gave up"


def test_trigger_wait_that_times_out_says_so_in_one_line(cli: Cli) -> None:
    done = cli("trigger", "echo", "--app", APP, "--payload", "{}", "--wait", "--timeout", "0.2")
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perdure: "), done.stderr
    assert "queued" in lines[0]
    assert done.returncode == 1
    assert done.stdout == ""


def test_trigger_without_wait_prints_the_run_id_and_queues_it(cli: Cli) -> None:
    run_id = cli.trigger("echo", '{"b": 2}')
    [run] = cli.runs()
    assert (run["id"], run["task_id"], run["status"]) == (run_id, "echo", "queued")
    assert run["payload"] == {"b": 2}


def test_trigger_options_reach_the_run(cli: Cli) -> None:
    args = ["trigger", "echo", "--app", APP, "--payload", "{}", "--idempotency-key", "order-7"]
    first = cli.ok(*args, "--tag", "a", "--tag", "b").strip()
    assert cli.ok(*args).strip() == first  # the key is held: the same run
    delayed = cli.ok("trigger", "echo", "--app", APP, "--payload", "{}", "--delay", "3600")
    found = {r["id"]: r for r in cli.runs()}
    assert set(found) == {first, delayed.strip()}
    assert (found[first]["idempotency_key"], found[first]["tags"]) == ("order-7", ["a", "b"])
    assert found[delayed.strip()]["status"] == "delayed"


def test_runs_list_shows_every_run_with_its_task_and_status(cli: Cli) -> None:
    assert cli.ok("runs", "list").strip() == "no runs"
    cli.worker()
    cli.ok("trigger", "echo", "--app", APP, "--payload", '{"a": 1}', *WAIT)
    cli("trigger", "boom", "--app", APP, *WAIT)
    table = cli.ok("runs", "list").splitlines()
    assert table[0].split() == ["ID", "TASK", "STATUS", "ATTEMPTS", "CREATED"]
    by_task = {row.split()[1]: row.split() for row in table[1:]}
    assert set(by_task) == {"echo", "boom"}
    assert by_task["echo"][2] == "completed"
    assert by_task["boom"][2] == "failed"
    found = {r["task_id"]: r for r in cli.runs()}
    assert {r["id"] for r in found.values()} == {row[0] for row in by_task.values()}
    assert found["echo"]["output"] == {"a": 1}


def test_runs_list_filters_by_status_and_task(cli: Cli) -> None:
    first = cli.trigger("echo", "{}")
    second = cli.trigger("typed", '{"name": "Ada"}')
    cli.ok("runs", "cancel", first)
    listed = json.loads(cli.ok("runs", "list", "--json", "--status", "canceled"))
    assert [r["id"] for r in listed] == [first]
    listed = json.loads(cli.ok("runs", "list", "--json", "--task", "typed"))
    assert [r["id"] for r in listed] == [second]


def test_runs_show_shows_the_status_and_the_journal(cli: Cli) -> None:
    cli.worker()
    done = cli("trigger", "stepped", "--app", APP, "--payload", "20", *WAIT)
    assert json.loads(done.stdout) == 81, done.stderr
    [run] = cli.runs()
    shown = cli.ok("runs", "show", run["id"])
    assert run["id"] in shown and "stepped" in shown and "completed" in shown
    journal = shown.split("journal:", 1)[1]
    assert re.search(r"\[0, 1\]\s+step\s+double\s+completed", journal), shown
    assert re.search(r"\[0, 2\]\s+step\s+double\s+completed", journal), shown
    as_json = json.loads(cli.ok("runs", "show", run["id"], "--json"))
    assert as_json["run"]["status"] == "completed"
    steps = [(e["key"], e["kind"], e["name"], e["result"]) for e in as_json["entries"]]
    assert steps == [(["0", 1], "step", "double", 40), (["0", 2], "step", "double", 80)]


def test_runs_cancel_of_a_queued_run_cancels_it(cli: Cli) -> None:
    run_id = cli.trigger("echo", "{}")  # no worker: it stays queued
    assert cli.ok("runs", "cancel", run_id).strip() == f"{run_id}: canceled"
    [run] = cli.runs()
    assert (run["id"], run["status"]) == (run_id, "canceled")
    assert "canceled" in cli.ok("runs", "show", run_id)


def test_runs_retry_takes_a_canceled_run_back_to_queued(cli: Cli) -> None:
    run_id = cli.trigger("echo", '{"c": 3}')
    cli.ok("runs", "cancel", run_id)
    assert cli.ok("runs", "retry", run_id).strip() == f"{run_id}: queued"
    cli.worker()
    run = wait_for(
        lambda: next((r for r in cli.runs() if r["status"] == "completed"), None),
        what="the retried run to complete",
    )
    assert (run["id"], run["output"]) == (run_id, {"c": 3})


def test_runs_replay_starts_a_new_run_with_a_new_payload(cli: Cli) -> None:
    original = cli.trigger("echo", '{"v": 1}')
    new = cli.ok("runs", "replay", original, "--app", APP, "--payload", '{"v": 2}').strip()
    assert new.startswith("run_") and new != original
    payloads = {r["id"]: r["payload"] for r in cli.runs()}
    assert payloads == {original: {"v": 1}, new: {"v": 2}}


def test_runs_replay_from_a_journal_key_forks_the_run(cli: Cli) -> None:
    cli.worker()
    done = cli("trigger", "stepped", "--app", APP, "--payload", "5", *WAIT)
    assert json.loads(done.stdout) == 21, done.stderr
    [original] = cli.runs()
    fork = cli.ok("runs", "replay", original["id"], "--from", "0:2").strip()
    assert fork.startswith("run_") and fork != original["id"]

    def completed() -> dict[str, Any] | None:
        return next((r for r in cli.runs() if r["id"] == fork and r["status"] == "completed"), None)

    assert wait_for(completed, what="the fork to complete")["output"] == 21
    before = json.loads(cli.ok("runs", "show", original["id"], "--json"))["entries"]
    after = json.loads(cli.ok("runs", "show", fork, "--json"))["entries"]
    assert [e["key"] for e in after] == [["0", 1], ["0", 2]]
    assert after[0]["finished_at"] == before[0]["finished_at"]  # copied, not run again
    assert after[1]["finished_at"] > before[1]["finished_at"]  # run again in the fork


def test_db_migrate_prints_the_schema_version_and_is_idempotent(cli: Cli) -> None:
    first = cli.ok("db", "migrate")
    match = re.search(r"schema version (\d+)", first)
    assert match and int(match.group(1)) >= 1, first
    assert str(cli.database) in first
    assert cli.database.exists()
    assert cli.ok("db", "migrate") == first


def test_perdure_app_is_used_when_app_is_not_given(cli: Cli) -> None:
    env = {"PERDURE_APP": APP}
    run_id = cli.ok("trigger", "echo", "--payload", '{"from": "env"}', env=env).strip()
    assert run_id.startswith("run_")
    assert [r["id"] for r in cli.runs()] == [run_id]
    cli.worker()
    done = cli("trigger", "typed", "--payload", '{"name": "Env"}', *WAIT, env=env)
    assert json.loads(done.stdout) == "hello Env", done.stderr


def test_app_given_on_the_command_line_wins_over_perdure_app(cli: Cli) -> None:
    run_id = cli.ok(
        "trigger", "echo", "--app", APP, "--payload", "{}", env={"PERDURE_APP": "nosuchmodule:app"}
    ).strip()
    assert run_id.startswith("run_")


def worker_banner(cli: Cli, process: WorkerProcess) -> str:
    """The worker's first line, once it has printed it."""

    def banner() -> str | None:
        lines = [x for x in cli.log(process).splitlines() if x.startswith("perdure worker:")]
        return lines[0] if lines else None

    line: str = wait_for(banner, what="the worker's first line")
    return line


def test_worker_concurrency_comes_from_the_environment_or_the_flag(cli: Cli) -> None:
    from_env = cli.worker(env={"PERDURE_WORKER_CONCURRENCY": "7"})
    assert "(concurrency 7)" in worker_banner(cli, from_env)
    from_flag = cli.worker(concurrency=3, env={"PERDURE_WORKER_CONCURRENCY": "7"})
    assert "(concurrency 3)" in worker_banner(cli, from_flag)
    default = cli.worker()
    line = worker_banner(cli, default)
    assert "(concurrency 100)" in line
    assert all(task in line for task in ("boom", "echo", "stepped", "typed"))


def test_a_worker_stops_gracefully_on_sigterm(cli: Cli) -> None:
    process = cli.worker()
    worker_banner(cli, process)
    assert process.terminate(timeout=20) == 0


def test_a_command_waits_while_another_process_holds_the_new_database(cli: Cli) -> None:
    holder = sqlite3.connect(cli.database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # as a process does while it switches the file to WAL
    process = subprocess.Popen(
        [sys.executable, "-m", "perdure", "db", "migrate"],
        env=cli.env,
        cwd=cli.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=5)  # it must wait for the lock, not give up
        holder.execute("ROLLBACK")
        stdout, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        assert "schema version" in stdout
    finally:
        holder.close()
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def test_perdure_dev_serves_the_app_like_a_worker(cli: Cli) -> None:
    dev = subprocess.Popen(
        [sys.executable, "-m", "perdure", "dev", APP, "--port", "0"],
        env=cli.env,
        cwd=cli.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert dev.stdout is not None
        assert dev.stdout.readline().startswith("perdure dev: ")
        out = cli.ok(
            "trigger",
            "echo",
            "--app",
            APP,
            "--payload",
            '{"via": "dev"}',
            "--wait",
            "--timeout",
            "30",
        )
        assert json.loads(out) == {"via": "dev"}
    finally:
        dev.terminate()
        dev.wait(20)


def test_tokens_list_and_complete_from_the_command_line(cli: Cli) -> None:
    cli.worker()
    run_id = cli.trigger("approve", '{"item": "refund #7"}')
    token = wait_for(
        lambda: next(iter(json.loads(cli.ok("tokens", "list", "--json", "--run", run_id))), None),
        what="the run's token",
    )
    assert token["status"] == "waiting" and token["run_id"] == run_id
    assert token["id"] in cli.ok("tokens", "list", "--status", "waiting")
    assert cli.ok("tokens", "complete", token["id"], "--data", '{"ok": true}').strip() == (
        f"{token['id']}: completed"
    )
    again = cli("tokens", "complete", token["id"], "--data", "{}")
    assert again.returncode == 2 and "first completion wins" in again.stderr
    assert "Traceback" not in again.stderr
    wait_for(lambda: _status(cli, run_id) == "completed", what="the run completes")
    shown = json.loads(cli.ok("runs", "show", run_id, "--json"))
    assert shown["run"]["output"] == "refund #7: True"


def _status(cli: Cli, run_id: str) -> str:
    return next(r["status"] for r in cli.runs() if r["id"] == run_id)
