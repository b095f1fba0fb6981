// Workers: each process that claims runs, when it last said it was alive, and what it holds.

import { api, announce } from "../api.js";
import { emptyState, errorState, fill, h } from "../dom.js";
import { timeAgo } from "../format.js";

const STALE_MS = 30e3; // the default lease: a worker silent this long loses its runs

export function render({ main, page }) {
  document.title = "Workers · perdure";
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
        h("h1", {}, "Workers"),
        h("p", {}, "The processes that execute runs, and their heartbeats."),
      ),
    ),
    body,
  );
  const load = async () => {
    try {
      const workers = await api.workers();
      if (page.alive) fill(body, workers.length ? table(workers) : empty());
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
    icon: "workers",
    title: "No workers",
    body: "No worker is running. Start one with perdure worker module:app (perdure dev starts one for you).",
  });
}

function table(workers) {
  return h(
    "table",
    { class: "data" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Worker", "Status", "Last heartbeat", "Runs held", "Concurrency", "Host", "Version", "Started"].map(
          (name, i) => h("th", { class: i === 3 || i === 4 ? "right" : null }, name),
        ),
      ),
    ),
    h("tbody", {}, workers.map(row)),
  );
}

function health(worker) {
  if (worker.status === "stopped") return ["Stopped", "gray"];
  if (worker.status === "dead") return ["Dead", "red"];
  if (worker.seconds_since_heartbeat * 1000 > STALE_MS) return ["Silent", "orange"];
  return ["Online", "green"];
}

function row(worker) {
  const [label, tone] = health(worker);
  const held = worker.runs_held ?? 0;
  return h(
    "tr",
    { "data-worker": worker.id },
    h("td", { class: "run-id-cell" }, worker.id),
    h("td", {}, h("span", { class: ["status", `tone-${tone}`] }, label)),
    h(
      "td",
      { class: "muted" },
      worker.status === "live" ? timeAgo(worker.heartbeat_at) : timeAgo(worker.stopped_at ?? worker.dead_at),
    ),
    h("td", { class: "right num" }, String(held)),
    h("td", { class: "right num muted" }, worker.concurrency ?? "–"),
    h("td", { class: "muted" }, [worker.hostname, worker.pid].filter(Boolean).join(" · ") || "–"),
    h("td", { class: "muted" }, worker.version ?? "any"),
    h("td", { class: "muted" }, timeAgo(worker.started_at)),
  );
}
