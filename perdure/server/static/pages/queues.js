// Queues: how many runs wait in each, how many run, and the limit they run under.

import { api, announce } from "../api.js";
import { emptyState, errorState, fill, h } from "../dom.js";

export function render({ main, page }) {
  document.title = "Queues · perdure";
  const body = h(
    "div",
    { class: "card" },
    h("div", { class: "empty small" }, h("span", { class: "skeleton", style: { width: "160px" } })),
  );
  fill(
    main,
    h(
      "div",
      { class: "page-head" },
      h(
        "div",
        {},
        h("h1", {}, "Queues"),
        h("p", {}, "Depth, running runs and concurrency limits, refreshed every few seconds."),
      ),
    ),
    body,
  );
  const load = async () => {
    try {
      const queues = await api.queues();
      if (page.alive) fill(body, queues.length ? table(queues) : empty());
      announce("live");
    } catch (error) {
      announce("reconnecting");
      if (page.alive && !body.querySelector("table")) fill(body, errorState(error, load));
    }
  };
  page.every(2000, load);
  load();
}

function empty() {
  return emptyState({
    icon: "queues",
    title: "No queues yet",
    body: "A queue appears when its first run is triggered. A task without queue= has its own queue, named after its id.",
  });
}

function table(queues) {
  const sorted = [...queues].sort(
    (a, b) => (b.depth ?? 0) - (a.depth ?? 0) || String(a.name).localeCompare(String(b.name)),
  );
  return h(
    "table",
    { class: "data" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "Queue"),
        h("th", { class: "right" }, "Queued"),
        h("th", { class: "right" }, "Running"),
        h("th", { class: "right", title: "Suspended on a sleep, a token or a child run" }, "Waiting"),
        h("th", { class: "right" }, "Delayed"),
        h("th", {}, "Concurrency"),
        h("th", { class: "right" }, "Limit"),
      ),
    ),
    h("tbody", {}, sorted.map(row)),
  );
}

function row(queue) {
  const limit = queue.limit ?? null;
  const running = queue.running ?? 0;
  const share = limit ? Math.min(1, running / limit) : running ? 0.08 : 0;
  return h(
    "tr",
    { "data-queue": queue.name },
    h("td", { class: "task-cell" }, queue.name),
    h("td", { class: "right num" }, String(queue.depth ?? 0)),
    h("td", { class: "right num" }, String(running)),
    h("td", { class: "right num muted" }, String(queue.waiting ?? 0)),
    h("td", { class: "right num muted" }, String(queue.delayed ?? 0)),
    h(
      "td",
      {},
      h(
        "span",
        { class: ["meter", limit && running >= limit && "full"] },
        h("span", { style: { width: `${share * 100}%` } }),
      ),
    ),
    h("td", { class: "right num muted" }, limit === null ? "none" : String(limit)),
  );
}
