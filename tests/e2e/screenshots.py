"""Screenshots of the dashboard for the README, taken from `perdure dev` on the research
agent demo:

    python -m tests.e2e.screenshots        # writes docs/screenshots/{runs,run,test}.png

It triggers a few runs (one of them cancelled, one still running), then photographs the
runs list, the page of a finished run and the test page in the dark theme."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from tests.e2e.dashboard import CHROMIUM, CHROMIUM_ARGS, REPO, DevServer

OUT = REPO / "docs" / "screenshots"
VIEWPORT = {"width": 1440, "height": 900}
TOPICS = ["durable execution", "solid-state batteries", "coral reef restoration"]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        server = DevServer(Path(home), api_key=None).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport=VIEWPORT, color_scheme="dark")
                expect.set_options(timeout=30_000)
                photograph(page, server)
                browser.close()
        finally:
            server.stop()
    print(f"wrote {', '.join(str(p.relative_to(REPO)) for p in sorted(OUT.glob('*.png')))}")
    return 0


def photograph(page: Page, server: DevServer) -> None:
    runs = [server.trigger({"topic": topic}, tags=["demo"]) for topic in TOPICS]
    canceled = server.trigger({"topic": "quantum gravity"}, tags=["demo"])
    server.request("POST", f"/api/v1/runs/{canceled}/cancel", {})
    short = server.trigger({"topic": "coral reef restoration", "max_turns": 1})
    for run_id in [*runs, canceled, short]:
        finished(page, server, run_id)
    server.trigger({"topic": "durable execution"}, tags=["demo"])  # running in the picture

    page.goto(f"{server.url}/runs")
    expect(page.locator('tr[data-status="running"]')).to_have_count(1)
    page.screenshot(path=OUT / "runs.png")

    page.goto(f"{server.url}/runs/{runs[0]}")
    expect(page.locator('.waterfall [data-row^="entry:"]')).to_have_count(12)
    page.locator(".inspector").get_by_text("Output").wait_for()
    page.screenshot(path=OUT / "run.png")

    page.goto(f"{server.url}/test")
    page.get_by_label("Payload").fill('{\n  "topic": "durable execution",\n  "max_turns": 8\n}')
    page.screenshot(path=OUT / "test.png")


def finished(page: Page, server: DevServer, run_id: str) -> None:
    page.goto(f"{server.url}/runs/{run_id}")
    ended = re.compile("completed|canceled")
    expect(page.locator(".run-title [data-status]")).to_have_attribute("data-status", ended)


if __name__ == "__main__":
    sys.exit(main())
