"""A user mistake gives one line on stderr starting `perdure: `, no traceback, exit code 2,
and changes no data."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import APP, Cli


def assert_usage_error(done: subprocess.CompletedProcess[str], *mentions: str) -> str:
    """The one line of a usage error; it names each of `mentions`."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("perdure: "), line
    for mention in mentions:
        assert mention in line, f"{mention!r} not in {line!r}"
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == ""
    return line


# Each case: the arguments, extra environment, and what the one line must name.
MISTAKES = [
    pytest.param(
        ["trigger", "echo", "--app", "nosuchmodule:app"],
        {},
        ["nosuchmodule"],
        id="missing-app-module",
    ),
    pytest.param(
        ["trigger", "echo", "--app", "cliapp:nope"], {}, ["cliapp", "nope"], id="missing-attribute"
    ),
    pytest.param(
        ["trigger", "echo", "--app", "cliapp:not_an_app"],
        {},
        ["not_an_app", "perdure.App"],
        id="attribute-not-an-app",
    ),
    pytest.param(
        ["trigger", "echo", "--app", "cliapp"], {}, ["module:attribute"], id="app-without-attribute"
    ),
    pytest.param(["trigger", "echo"], {}, ["PERDURE_APP"], id="no-app-at-all"),
    pytest.param(
        ["trigger", "echo", "--app", "cliapp_misconfigured:app"],
        {},
        ["twice"],
        id="app-module-misconfigured",
    ),
    pytest.param(
        ["runs", "list"],
        {"PERDURE_APP": "nosuchmodule:app"},
        ["nosuchmodule"],
        id="perdure-app-missing-module",
    ),
    pytest.param(["worker", "nosuchmodule:app"], {}, ["nosuchmodule"], id="worker-missing-module"),
    pytest.param(
        ["trigger", "nosuchtask", "--app", APP], {}, ["nosuchtask", "echo"], id="unknown-task"
    ),
    pytest.param(
        ["trigger", "echo", "--app", APP, "--payload", "{a: 1"],
        {},
        ["--payload"],
        id="payload-not-json",
    ),
    pytest.param(
        ["trigger", "typed", "--app", APP, "--payload", "{}"],
        {},
        ["name"],
        id="payload-missing-field",
    ),
    pytest.param(
        ["trigger", "typed", "--app", APP, "--payload", '{"name": [1]}'],
        {},
        ["name"],
        id="payload-wrong-type",
    ),
    pytest.param(
        ["trigger", "echo", "--app", APP, "--payload", "{}"],
        {"PERDURE_LEASE_SECONDS": "thirty"},
        ["PERDURE_LEASE_SECONDS"],
        id="setting-not-a-number",
    ),
    pytest.param(
        ["runs", "show", "run_doesnotexist"], {}, ["run_doesnotexist"], id="show-unknown-run"
    ),
    pytest.param(
        ["runs", "cancel", "run_doesnotexist"], {}, ["run_doesnotexist"], id="cancel-unknown-run"
    ),
    pytest.param(
        ["runs", "retry", "run_doesnotexist"], {}, ["run_doesnotexist"], id="retry-unknown-run"
    ),
    pytest.param(
        ["runs", "replay", "run_doesnotexist"], {}, ["run_doesnotexist"], id="replay-unknown-run"
    ),
    pytest.param(["runs", "show"], {}, ["run id"], id="show-without-id"),
]


Files = dict[str, bytes]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Files, list[dict[str, Any]]]:
    """The files of a database holding one queued run, and what `runs list` shows of it."""
    template = Cli(tmp_path_factory.mktemp("seeded"))
    template.trigger("echo", '{"seed": 1}')
    shown = template.runs()
    files = {
        p.name: p.read_bytes()
        for p in template.home.iterdir()
        if p.name in (template.database.name, template.database.name + "-wal")
    }
    return files, shown


@pytest.mark.parametrize(("args", "env", "mentions"), MISTAKES)
def test_a_mistake_is_one_line_exit_2_and_changes_nothing(
    cli: Cli,
    seeded: tuple[Files, list[dict[str, Any]]],
    args: list[str],
    env: dict[str, str],
    mentions: list[str],
) -> None:
    files, before = seeded
    for name, content in files.items():
        (cli.home / name).write_bytes(content)
    assert_usage_error(cli(*args, env=env), *mentions)
    assert cli.runs() == before


def test_a_payload_failing_validation_creates_no_run(cli: Cli) -> None:
    done = cli("trigger", "typed", "--app", APP, "--payload", '{"nom": "Ada"}')
    assert_usage_error(done, "name")
    assert cli.ok("runs", "list").strip() == "no runs"
    assert cli.runs() == []


def test_retrying_a_run_that_has_not_failed_is_a_usage_error(cli: Cli) -> None:
    run_id = cli.trigger("echo", "{}")
    before = cli.runs()
    assert_usage_error(cli("runs", "retry", run_id), run_id, "queued")
    assert cli.runs() == before


def test_cancelling_a_finished_run_is_a_usage_error(cli: Cli) -> None:
    run_id = cli.trigger("echo", "{}")
    cli.ok("runs", "cancel", run_id)
    before = cli.runs()
    assert_usage_error(cli("runs", "cancel", run_id), run_id, "canceled")
    assert cli.runs() == before


def test_a_bad_fork_position_is_a_usage_error(cli: Cli) -> None:
    run_id = cli.trigger("echo", "{}")
    before = cli.runs()
    assert_usage_error(cli("runs", "replay", run_id, "--from", "three"), "BRANCH:SEQ")
    assert cli.runs() == before


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["runs", "list"], id="runs-list"),
        pytest.param(["runs", "show", "run_x"], id="runs-show"),
        pytest.param(["trigger", "echo", "--app", APP, "--payload", "{}"], id="trigger"),
        pytest.param(["db", "migrate"], id="db-migrate"),
        pytest.param(["worker", APP], id="worker"),
    ],
)
def test_a_corrupt_database_is_reported_and_left_as_it_was(cli: Cli, args: list[str]) -> None:
    cli.database.write_bytes(os.urandom(16384))
    before = digest(cli.database)
    siblings = sorted(p.name for p in cli.home.iterdir())
    line = assert_usage_error(cli(*args, timeout=30), str(cli.database))
    assert "not a SQLite database" in line or "corrupt" in line
    assert digest(cli.database) == before
    assert sorted(p.name for p in cli.home.iterdir()) == siblings  # no -wal, -shm, lock file
