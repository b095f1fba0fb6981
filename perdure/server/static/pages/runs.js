// The runs list: filters kept in the URL, cursor pages, and rows that follow the event
// stream (a new run appears at the top of the first page; a row's status changes in place).

import { api, subscribe } from "../api.js";
import { emptyState, errorState, fill, h, icon } from "../dom.js";
import { elapsed, RUN_STATUSES, statusBadge, statusInfo, timeAgo, toMs } from "../format.js";

const PAGE_SIZES = [25, 50, 100];
const PAGE_SIZE = 50;
const SINCE = [
  ["", "Any time"],
  ["15m", "Last 15 minutes", 15 * 60e3],
  ["1h", "Last hour", 3600e3],
  ["24h", "Last 24 hours", 86400e3],
  ["7d", "Last 7 days", 7 * 86400e3],
  ["30d", "Last 30 days", 30 * 86400e3],
];

function readFilters(search) {
  return {
    status: (search.get("status") ?? "").split(",").filter(Boolean),
    task: search.get("task") ?? "",
    tag: search.get("tag") ?? "",
    since: search.get("since") ?? "",
    limit: Math.min(200, Math.max(1, Number(search.get("limit")) || PAGE_SIZE)),
  };
}

function writeFilters(filters) {
  const search = new URLSearchParams();
  if (filters.status.length) search.set("status", filters.status.join(","));
  for (const name of ["task", "tag", "since"]) if (filters[name]) search.set(name, filters[name]);
  if (filters.limit !== PAGE_SIZE) search.set("limit", filters.limit);
  const text = search.toString();
  history.replaceState({}, "", `/runs${text ? `?${text}` : ""}`);
}

/** The API's filters for these; `created_after` is computed when asked. */
function apiFilters(filters) {
  const since = SINCE.find(([key]) => key === filters.since)?.[2];
  return {
    status: filters.status,
    task_id: filters.task || undefined,
    tag: filters.tag || undefined,
    created_after: since ? new Date(Date.now() - since).toISOString() : undefined,
  };
}

/** The stream takes the task and tag filters only: a row shown must hear that its run
 * left a filtered status, and a new run is always recent. Statuses are matched here. */
function streamFilters(filters) {
  const { task_id, tag } = apiFilters(filters);
  return { task_id, tag, limit: filters.limit };
}

function matches(run, filters) {
  return (
    (!filters.status.length || filters.status.includes(run.status)) &&
    (!filters.task || run.task_id === filters.task) &&
    (!filters.tag || (run.tags ?? []).includes(filters.tag))
  );
}

export function render(context) {
  document.title = "Runs · perdure";
  new RunsPage(context).start();
}

class RunsPage {
  constructor({ main, search, page, navigate }) {
    Object.assign(this, { main, page, navigate });
    this.filters = readFilters(search);
    this.cursors = []; // the cursors of the newer pages, to go back to
    this.cursor = null;
    this.next = null;
    this.rows = new Map();
    this.loaded = false;
    this.loads = 0;
    this.tasks = [];
    this.tbody = h("tbody");
    this.pager = h("div", { class: "pager" });
    this.toolbar = h("div", { class: "toolbar" });
  }

  start() {
    fill(
      this.main,
      h(
        "div",
        { class: "page-head" },
        h("div", {}, h("h1", {}, "Runs"), h("p", {}, "Every run of every task, live.")),
        h("a", { class: "button", href: "/test", "data-link": true }, icon("test", 14), "Trigger a task"),
      ),
      h(
        "div",
        { class: "card" },
        this.toolbar,
        h("div", { class: "table-wrap" }, h("table", { class: "data" }, tableHead(), this.tbody)),
        this.pager,
      ),
    );
    this.page.onLeave(() => this.closeStream?.());
    keyboard(this.page, this.tbody, this.navigate);
    this.renderToolbar();
    this.reload();
    api.tasks().then(
      (tasks) => this.showTasks(tasks),
      () => {},
    );
  }

  showTasks(tasks) {
    this.tasks = tasks;
    if (this.page.alive && !this.toolbar.contains(document.activeElement)) this.renderToolbar();
  }

  renderToolbar() {
    fill(
      this.toolbar,
      filterControls(this.filters, this.tasks, this.page, () => this.reload()),
    );
  }

  reload() {
    writeFilters(this.filters);
    this.cursors = [];
    this.cursor = null;
    this.load();
    this.subscribe();
  }

  async load() {
    const mine = ++this.loads;
    if (!this.loaded) fill(this.tbody, skeletonRows());
    try {
      const filters = {
        ...apiFilters(this.filters),
        limit: this.filters.limit,
        cursor: this.cursor ?? undefined,
      };
      const answer = await api.runs(filters);
      if (!this.page.alive || mine !== this.loads) return;
      this.loaded = true;
      this.next = answer.next_cursor ?? null;
      this.showRuns(answer.data ?? []);
    } catch (error) {
      if (!this.page.alive || mine !== this.loads) return;
      this.loaded = false;
      fill(this.tbody, wideRow(errorState(error, () => this.load())));
    }
  }

  showRuns(list) {
    this.rows.clear();
    fill(this.tbody, list.length ? list.map((run) => this.row(run)) : wideRow(emptyRuns(this.filters)));
    this.renderPager(list.length);
  }

  row(run, fresh = false) {
    const tr = h("tr", {
      class: ["clickable", fresh && "fresh"],
      "data-run-id": run.id,
      "data-created": toMs(run.created_at),
    });
    tr.addEventListener("click", (event) => {
      if (!event.target.closest("a")) this.navigate(`/runs/${run.id}`);
    });
    this.rows.set(run.id, tr);
    fillRow(tr, run);
    return tr;
  }

  renderPager(count) {
    const newer = h("button", { type: "button", class: "small", disabled: !this.cursors.length }, "Newer");
    const older = h("button", { type: "button", class: "small", disabled: !this.next }, "Older");
    newer.addEventListener("click", () => {
      this.cursor = this.cursors.pop() ?? null;
      this.load();
    });
    older.addEventListener("click", () => {
      this.cursors.push(this.cursor);
      this.cursor = this.next;
      this.load();
    });
    const number = this.cursors.length + 1;
    this.pager.hidden = !count && !this.cursors.length;
    fill(
      this.pager,
      h("span", { class: "num" }, count ? `Page ${number} · ${count} run${count === 1 ? "" : "s"}` : ""),
      h("div", { class: "actions" }, this.pageSize(), newer, older),
    );
  }

  pageSize() {
    const sizes = [...new Set([...PAGE_SIZES, this.filters.limit])].sort((a, b) => a - b);
    const select = h(
      "select",
      { class: "small", "aria-label": "Runs per page" },
      sizes.map((n) => h("option", { value: n, selected: n === this.filters.limit }, `${n} per page`)),
    );
    select.addEventListener("change", () => {
      this.filters.limit = Number(select.value);
      this.reload();
    });
    return select;
  }

  /** One stream for the current filters; a change of filters opens a new one. */
  subscribe() {
    this.closeStream?.();
    let ready = false;
    let reconnected = false;
    this.closeStream = subscribe(streamFilters(this.filters), {
      onOpen: () => {
        ready = false;
      },
      onEvent: (type, run) => {
        // The stream starts with the newest runs as they are, then `ready`: after a
        // reconnection, that start is the moment to catch up with what was missed.
        if (type === "ready") {
          if (reconnected && !this.cursor) this.load();
          ready = reconnected = true;
        } else if (type === "run" && ready) {
          this.onRun(run);
        }
      },
    });
  }

  onRun(run) {
    const existing = this.rows.get(run.id);
    if (existing) return fillRow(existing, run);
    if (!this.loaded || this.cursor || !matches(run, this.filters) || !this.isNewest(run)) return;
    if (!this.rows.size) fill(this.tbody);
    this.tbody.prepend(this.row(run, true));
  }

  /** Whether a run not on the page is newer than every run on it (so it goes on top). */
  isNewest(run) {
    const first = this.tbody.querySelector("tr[data-created]");
    return !first || toMs(run.created_at) >= Number(first.dataset.created);
  }
}

function wideRow(content) {
  return h("tr", {}, h("td", { colspan: 7 }, content));
}

function tableHead() {
  const th = (text, cls) => h("th", { class: cls, scope: "col" }, text);
  return h(
    "thead",
    {},
    h(
      "tr",
      {},
      th("Status"),
      th("Run"),
      th("Task"),
      th("Tags"),
      th("Created"),
      th("Duration", "right"),
      th("Attempt", "right"),
    ),
  );
}

function fillRow(tr, run) {
  tr.dataset.status = run.status;
  fill(
    tr,
    h("td", { style: { width: "150px" } }, statusBadge(run.status)),
    h("td", { class: "run-id-cell" }, h("a", { href: `/runs/${run.id}`, "data-link": true }, run.id)),
    h(
      "td",
      { class: "task-cell" },
      run.task_id,
      run.parent_id && h("span", { class: "pill child-pill", title: `Started by ${run.parent_id}` }, "child"),
    ),
    h(
      "td",
      {},
      h(
        "div",
        { class: "chips" },
        (run.tags ?? []).slice(0, 4).map((tag) => h("span", { class: "chip" }, tag)),
      ),
    ),
    h("td", { class: "muted" }, timeAgo(run.created_at)),
    h("td", { class: "right muted" }, elapsed(run.started_at, run.finished_at)),
    h(
      "td",
      { class: "right num muted" },
      run.attempts > 1 ? h("span", { class: "pill warn" }, `#${run.attempts}`) : run.attempts || "–",
    ),
  );
}

function skeletonRows() {
  const widths = [70, 190, 110, 60, 60, 40, 20];
  return Array.from({ length: 6 }, () =>
    h(
      "tr",
      {},
      widths.map((w) => h("td", {}, h("span", { class: "skeleton", style: { width: `${w}px` } }))),
    ),
  );
}

function emptyRuns(filters) {
  const filtered = filters.status.length || filters.task || filters.tag || filters.since;
  if (filtered) {
    return emptyState({
      icon: "filter",
      title: "No runs match these filters",
      body: "Runs that match will appear here as soon as they start.",
    });
  }
  return emptyState({
    title: "No runs yet",
    body: "Trigger a task from the Test page, from your code, or from the command line. Its runs show up here live.",
    extra: [
      h("pre", {}, "perdure trigger TASK_ID --payload '{...}'"),
      h("a", { class: "button", href: "/test", "data-link": true }, icon("test", 14), "Trigger a task"),
    ],
  });
}

/** The filter bar. `changed()` is called after each change; the controls keep their own
 * state, so typing in the tag box never loses focus. */
function filterControls(filters, tasks, page, changed) {
  const clear = h("button", { type: "button", class: "ghost small" }, "Clear");
  const sync = () => {
    clear.hidden = !(filters.status.length || filters.task || filters.tag || filters.since);
    changed();
  };
  const taskSelect = h(
    "select",
    { "aria-label": "Task" },
    h("option", { value: "" }, "All tasks"),
    [...new Set([...tasks.map((t) => t.id), filters.task].filter(Boolean))].map((id) =>
      h("option", { value: id, selected: id === filters.task }, id),
    ),
  );
  taskSelect.addEventListener("change", () => {
    filters.task = taskSelect.value;
    sync();
  });
  const sinceSelect = h(
    "select",
    { "aria-label": "Created" },
    SINCE.map(([key, label]) => h("option", { value: key, selected: key === filters.since }, label)),
  );
  sinceSelect.addEventListener("change", () => {
    filters.since = sinceSelect.value;
    sync();
  });
  const status = statusMenu(filters, page, sync);
  const tag = tagInput(filters, sync);
  clear.addEventListener("click", () => {
    Object.assign(filters, { status: [], task: "", tag: "", since: "" });
    taskSelect.value = sinceSelect.value = tag.querySelector("input").value = "";
    status.reset();
    sync();
  });
  clear.hidden = !(filters.status.length || filters.task || filters.tag || filters.since);
  return [status, taskSelect, tag, sinceSelect, clear, h("span", { class: "spacer" })];
}

function statusMenu(filters, page, changed) {
  const label = h("span");
  const showLabel = () => {
    const count = filters.status.length;
    fill(
      label,
      count === 1 ? statusInfo(filters.status[0]).label : count ? h("span", { class: "pill" }, count) : "",
    );
  };
  const boxes = RUN_STATUSES.map((status) => {
    const box = h("input", { type: "checkbox", value: status, checked: filters.status.includes(status) });
    box.addEventListener("change", () => {
      filters.status = boxes.filter((b) => b.checked).map((b) => b.value);
      showLabel();
      changed();
    });
    return box;
  });
  const menu = h(
    "details",
    { class: "menu" },
    h("summary", { class: "button", "aria-label": "Filter by status" }, icon("filter", 13), "Status", label),
    h(
      "div",
      { class: "menu-panel" },
      boxes.map((box) => h("label", {}, box, statusBadge(box.value))),
    ),
  );
  menu.reset = () => {
    for (const box of boxes) box.checked = false;
    showLabel();
  };
  const close = (event) => {
    if (menu.open && !menu.contains(event.target)) menu.open = false;
  };
  document.addEventListener("click", close);
  page.onLeave(() => document.removeEventListener("click", close));
  menu.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      menu.open = false;
      menu.querySelector("summary").focus();
    }
  });
  showLabel();
  return menu;
}

function tagInput(filters, changed) {
  const input = h("input", {
    type: "search",
    placeholder: "Filter by tag",
    value: filters.tag,
    "aria-label": "Tag",
  });
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      filters.tag = input.value.trim();
      changed();
    }, 300);
  });
  return h("label", { class: "search" }, icon("search", 14), input);
}

/** j / k move a cursor through the rows, Enter opens its run. */
function keyboard(page, tbody, navigate) {
  const handler = (event) => {
    if (event.target.closest("input, textarea, select, dialog") || event.metaKey || event.ctrlKey) return;
    const rows = [...tbody.querySelectorAll("tr[data-run-id]")];
    const at = rows.findIndex((row) => row.classList.contains("cursor"));
    if (event.key === "j" || event.key === "k") {
      if (!rows.length) return;
      rows[at]?.classList.remove("cursor");
      const next = Math.max(0, Math.min(rows.length - 1, at + (event.key === "j" ? 1 : -1)));
      rows[next].classList.add("cursor");
      rows[next].scrollIntoView({ block: "nearest" });
    } else if (event.key === "Enter" && at >= 0 && !event.target.closest("a, button, summary")) {
      navigate(`/runs/${rows[at].dataset.runId}`);
    }
  };
  document.addEventListener("keydown", handler);
  page.onLeave(() => document.removeEventListener("keydown", handler));
}
