"""The worker as a process: what it says about runs it cannot serve."""

from __future__ import annotations

import pytest

import perdure
from perdure.app import new_id
from perdure.store import base

pytestmark = pytest.mark.timeout(60)


async def test_runs_of_a_task_the_app_does_not_define_are_named_and_left_alone(cluster):
    store = await cluster.client.store()
    run_id = new_id("run")
    await store.create_run(
        base.NewRun(
            id=run_id, task_id="retired-task", queue="retired-task", payload="{}", root_id=run_id
        )
    )
    cluster.worker()
    log = cluster.dir / "workers.log"
    await cluster.until(
        lambda: log.exists() and "retired-task" in log.read_text(), what="the warning"
    )
    line = next(x for x in log.read_text().splitlines() if "retired-task" in x)
    assert "1 unfinished run(s) are for task 'retired-task'" in line
    assert "Traceback" not in log.read_text()
    assert (await cluster.run(run_id)).status is perdure.RunStatus.QUEUED
