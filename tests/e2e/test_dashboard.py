"""The dashboard in a real browser against `perdure dev` on the research agent demo: what a
new user does without reading the docs. Trigger the agent from the test page and watch
its run complete live; follow new runs in the list and filter them; cancel a run and
retry it; replay a run with an edited payload and fork it from a step; give the API key
when asked."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.e2e.conftest import script_errors
from tests.e2e.dashboard import API_KEY, STORAGE_KEY, DevServer

RUN_URL = re.compile(r"/runs/(run_\w+)$")
A_RUN_MS = 30_000  # the scripted agent answers in about five seconds


def status(page: Page) -> Locator:
    """The status badge of the run page."""
    return page.locator(".run-title [data-status]")


def steps(page: Page) -> Locator:
    return page.locator('.waterfall [data-row^="entry:"]')


def recorded_before(trace: dict[str, Any], position: list[Any]) -> list[tuple[Any, ...]]:
    """The operations a trace recorded before a journal position, with their results."""
    found = [
        (e["key"], e["kind"], e["name"], e["result"])
        for e in trace["entries"]
        if e["kind"] != "value" and e["key"][:2] < position
    ]
    assert found, trace
    return found


def box_of(locator: Locator, timeout: float = 10) -> Any:
    """The element's box, once it has one: a live update redraws the waterfall's axis, and
    an element caught between its removal and its replacement has none."""
    deadline = time.monotonic() + timeout
    while (box := locator.bounding_box()) is None:
        assert time.monotonic() < deadline, f"{locator} has no box after {timeout}s"
    return box


def run_id_of(page: Page, after: str | None = None) -> str:
    """The id of the run the page shows (once it has moved on from run `after`)."""
    if after:
        expect(page).not_to_have_url(re.compile(after))
    expect(page).to_have_url(RUN_URL)
    found = RUN_URL.search(page.url)
    assert found is not None
    return found.group(1)


@pytest.mark.timeout(60)
def test_the_agent_triggered_from_the_test_page_is_followed_live_to_its_answer(
    page: Page, server: DevServer
) -> None:
    page.goto(f"{server.url}/test")
    editor = page.get_by_label("Payload")
    # Pre-filled from the type hints: the required topic, and max_turns at its default.
    expect(editor).to_have_value(re.compile(r'"topic": "",\s+"max_turns": 8'))
    editor.fill('{"topic": "durable execution", "max_turns": 8}')
    page.get_by_role("button", name="Trigger").click()

    run_id = run_id_of(page)
    page.evaluate("window.stillTheSamePage = true")
    expect(status(page)).to_have_attribute("data-status", re.compile("queued|running"))
    expect(steps(page).first).to_be_visible()  # the first model call, as it happens
    expect(status(page)).to_have_attribute("data-status", "completed", timeout=A_RUN_MS)

    expect(steps(page)).to_have_count(12)  # 6 model calls and 6 tool calls
    expect(page.get_by_role("option", name=re.compile(r"^analyze"))).to_have_count(1)
    inspector = page.locator(".inspector")
    expect(inspector).to_contain_text("Output")
    expect(inspector).to_contain_text("https://docs.example.org/durable-execution/limitations")
    expect(inspector).to_contain_text('"turn": 6')  # perdure.metadata.set, as the run set it
    expect(page.locator(".logs")).to_contain_text("turn 6: final answer (3 sources)")
    assert page.evaluate("window.stillTheSamePage") is True  # updated live, never reloaded
    assert server.run(run_id)["status"] == "completed"

    # The keyboard walks the timeline: down from the run, past the attempt, to the first
    # model call, whose recorded reply shows in the inspector.
    page.locator('[data-row="run"]').focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    expect(page.locator('[data-row="entry:0:1"]')).to_be_focused()
    expect(inspector.locator(".inspector-title")).to_have_text("call_model")
    expect(inspector).to_contain_text("Result")
    expect(inspector).to_contain_text('"tool_calls"')

    # Dragging across the time axis zooms into the first second; the last model call,
    # five seconds in, is then off the chart.
    axis = box_of(page.locator(".wf-axis .wf-track"))
    last_call = page.locator('[data-row="entry:0:12"] .wf-bar')
    expect(last_call).to_have_count(1)
    page.mouse.move(axis["x"] + 1, axis["y"] + 5)
    page.mouse.down()
    page.mouse.move(axis["x"] + axis["width"] * 0.15, axis["y"] + 5, steps=4)
    page.mouse.up()
    expect(last_call).to_have_count(0)
    page.get_by_role("button", name="Reset zoom").click()
    expect(last_call).to_have_count(1)


@pytest.mark.timeout(60)
def test_the_runs_list_shows_new_runs_live_and_filters_and_pages_them(
    page: Page, server: DevServer
) -> None:
    older = server.trigger({"topic": "quantum gravity", "max_turns": 1}, tags=["e2e-list"])
    page.goto(f"{server.url}/runs")
    expect(page.locator(f'tr[data-run-id="{older}"]')).to_be_visible()

    newer = server.trigger({"topic": "quantum gravity", "max_turns": 1}, tags=["e2e-list"])
    row = page.locator(f'tr[data-run-id="{newer}"]')
    expect(row).to_be_visible()  # arrived on the event stream
    expect(page.locator("tr[data-run-id]").first).to_have_attribute("data-run-id", newer)
    expect(row).to_contain_text("research-agent")
    expect(row).to_contain_text("e2e-list")
    expect(row).to_have_attribute("data-status", "completed", timeout=A_RUN_MS)

    page.get_by_role("searchbox", name="Tag").fill("e2e-list")
    expect(page).to_have_url(re.compile(r"tag=e2e-list"))
    expect(page.locator("tr[data-run-id]")).to_have_count(2)

    page.goto(f"{server.url}/runs?tag=e2e-list&limit=1")  # one run a page, newest first
    only = page.locator("tr[data-run-id]")
    expect(only).to_have_count(1)
    expect(only).to_have_attribute("data-run-id", newer)
    page.get_by_role("button", name="Older").click()
    expect(only).to_have_attribute("data-run-id", older)
    page.get_by_role("button", name="Newer").click()
    expect(only).to_have_attribute("data-run-id", newer)

    page.get_by_label("Filter by status").click()
    page.get_by_role("checkbox", name="Canceled").check()
    expect(page).to_have_url(re.compile(r"status=canceled"))
    expect(page.get_by_text("No runs match these filters")).to_be_visible()

    page.reload()  # the filters live in the URL
    expect(page.get_by_role("searchbox", name="Tag")).to_have_value("e2e-list")
    expect(page.get_by_text("No runs match these filters")).to_be_visible()
    page.get_by_role("button", name="Clear", exact=True).click()
    row.click()
    expect(page).to_have_url(re.compile(f"/runs/{newer}$"))


@pytest.mark.timeout(90)
def test_a_run_is_cancelled_then_retried_from_its_page(page: Page, server: DevServer) -> None:
    run_id = server.trigger({"topic": "coral reef restoration"})
    page.goto(f"{server.url}/runs/{run_id}")
    expect(status(page)).to_have_attribute("data-status", "running")
    expect(page.locator(".why")).to_contain_text("Running on wrk_")  # says who runs it
    expect(page.get_by_role("button", name="Retry", exact=True)).to_have_count(0)

    page.get_by_role("button", name="Cancel", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel run").click()
    expect(status(page)).to_have_attribute("data-status", "canceled")
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)

    page.get_by_role("button", name="Retry", exact=True).click()
    expect(status(page)).to_have_attribute("data-status", "completed", timeout=A_RUN_MS)
    expect(page.locator('[data-row="attempt:2"]')).to_be_visible()
    assert server.run(run_id)["attempts"] == 2


@pytest.mark.timeout(90)
def test_a_run_is_replayed_with_an_edited_payload_then_forked_from_a_step(
    page: Page, server: DevServer
) -> None:
    original = server.trigger({"topic": "durable execution", "max_turns": 2})
    page.goto(f"{server.url}/runs/{original}")
    expect(status(page)).to_have_attribute("data-status", "completed", timeout=A_RUN_MS)

    page.get_by_role("button", name="Replay", exact=True).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Payload").fill('{"topic": "solid-state batteries", "max_turns": 2}')
    dialog.get_by_role("button", name="Replay", exact=True).click()
    replayed = run_id_of(page, after=original)
    expect(status(page)).to_have_attribute("data-status", "completed", timeout=A_RUN_MS)
    expect(page.locator(".inspector")).to_contain_text("solid-state batteries")

    # Fork at the second model call: the search before it is kept, the rest runs again.
    page.locator('[data-row="entry:0:3"]').click()
    page.get_by_role("button", name="Replay from here").click()
    expect(dialog.get_by_label("Start from")).to_have_value('["0",3]')
    dialog.get_by_role("button", name="Fork", exact=True).click()
    forked = run_id_of(page, after=replayed)
    expect(status(page)).to_have_attribute("data-status", "completed", timeout=A_RUN_MS)

    kept = recorded_before(server.trace(forked), ["0", 3])
    assert kept == recorded_before(server.trace(replayed), ["0", 3])
    assert server.run(forked)["payload"] == {"topic": "solid-state batteries", "max_turns": 2}


@pytest.mark.timeout(60)
def test_the_dashboard_asks_for_the_api_key_once_and_keeps_it(
    browser: Browser, server: DevServer
) -> None:
    context = browser.new_context()
    page = context.new_page()
    errors = script_errors(page)
    page.goto(f"{server.url}/runs")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("API key required")
    dialog.get_by_label("API key").fill("not-the-key")
    dialog.get_by_role("button", name="Continue").click()
    expect(dialog).to_contain_text("That API key was refused")
    dialog.get_by_label("API key").fill(API_KEY)
    dialog.get_by_role("button", name="Continue").click()
    expect(page.locator("table.data")).to_be_visible()
    expect(dialog).to_have_count(0)

    page.reload()
    expect(page.locator("table.data")).to_be_visible()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert page.evaluate(f"localStorage.getItem('{STORAGE_KEY}')") == API_KEY
    context.close()
    assert not errors, errors


@pytest.mark.timeout(30)
def test_the_queues_and_workers_pages_show_the_dev_worker_and_its_queue(
    page: Page, server: DevServer
) -> None:
    page.goto(f"{server.url}/queues")
    queue = page.locator('tr[data-queue="research-agent"]')
    expect(queue).to_be_visible()
    expect(queue.locator("td")).to_have_count(7)  # name, queued, running, waiting, delayed, ...

    page.keyboard.press("g")
    page.keyboard.press("w")  # the shortcut to the workers page
    expect(page).to_have_url(re.compile(r"/workers$"))
    worker = page.locator("tr[data-worker]")
    expect(worker).to_have_count(1)
    expect(worker).to_contain_text("Online")
    expect(worker).to_contain_text(re.compile(r"just now|\ds ago"))  # its last heartbeat
