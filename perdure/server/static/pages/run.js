// A run's page: its live trace as a timeline, an inspector for what is selected in it, its
// logs, and the actions a person takes on a run: cancel, retry, replay (or fork).

import { api } from "../api.js";
import { copyable, emptyState, errorState, fill, h, icon } from "../dom.js";
import {
  clock,
  duration,
  elapsed,
  plural,
  RETRYABLE,
  statusBadge,
  TERMINAL,
  timeAgo,
  toMs,
} from "../format.js";
import { confirmAction, toast } from "../ui.js";
import { errorBox, inspect } from "./inspector.js";
import { replayDialog } from "./replay.js";
import { keyText, rows } from "./timeline.js";
import { Waterfall } from "./waterfall.js";
import { why } from "./why.js";

export function render(context) {
  new RunPage(context).start();
}

class RunPage {
  constructor({ main, params, page, navigate }) {
    Object.assign(this, { main, page, navigate, id: params[0] });
    this.trace = null;
    this.ready = false;
    this.jsonStates = new Map();
    this.inspected = null;
    this.fetching = false;
    this.stale = false;
    this.head = h("div", { class: "page-head" });
    this.facts = h("dl", { class: "facts" });
    this.error = h("div", { class: "run-error" });
    this.logs = h("div", { class: "card" });
    this.inspector = h("div", { class: "inspector-slot" });
    this.legend = h("div", { class: "legend" });
    this.waterfall = new Waterfall({
      onSelect: () => this.renderInspector(),
      onOpen: (row) => navigate(`/runs/${row.childId}`),
    });
  }

  start() {
    document.title = `${this.id} · perdure`;
    fill(
      this.main,
      h(
        "div",
        { class: "page-head" },
        h("div", {}, h("span", { class: "skeleton", style: { width: "240px", height: "20px" } })),
      ),
    );
    // The stream first sends the whole trace, then `ready`, then each change: fetch the
    // trace at `ready` and after each change (coalesced), rather than patch it piecewise.
    this.closeStream = this.page.subscribe(
      { run_id: this.id },
      {
        onOpen: () => (this.ready = false),
        onEvent: (type, data) => this.onEvent(type, data),
      },
    );
    this.page.every(1000, () => this.isLive() && this.renderTimeline());
    this.refresh();
  }

  onEvent(type, data) {
    if (type === "ready") {
      this.ready = true;
      this.refresh();
    } else if (type === "error" && data?.type === "RunNotFound") {
      this.showError({ status: 404 });
    } else if (this.ready) {
      this.refresh();
    }
  }

  isLive() {
    return this.trace && !TERMINAL.has(this.trace.run.status);
  }

  /** Fetch the trace; calls that come while one is in flight make one more after it. */
  async refresh() {
    if (this.fetching) {
      this.stale = true;
      return;
    }
    this.fetching = true;
    try {
      const trace = await api.trace(this.id);
      if (this.page.alive) this.show(trace);
    } catch (error) {
      if (this.page.alive && !this.trace) this.showError(error);
    } finally {
      this.fetching = false;
      if (this.stale && this.page.alive) {
        this.stale = false;
        this.refresh();
      }
    }
  }

  showError(error) {
    const notFound = error.status === 404;
    if (notFound) this.closeStream?.();
    fill(
      this.main,
      notFound
        ? emptyState({
            icon: "search",
            title: "Run not found",
            body: `There is no run ${this.id} in this database.`,
            extra: h("a", { class: "button", href: "/runs", "data-link": true }, "All runs"),
          })
        : errorState(error, () => this.refresh()),
    );
  }

  show(trace) {
    const first = !this.trace;
    this.trace = trace;
    if (first) this.layout();
    document.title = `${trace.run.task_id} · ${this.id} · perdure`;
    this.renderHead();
    this.renderFacts();
    fill(this.error, errorBox(trace.run.error));
    this.error.hidden = !trace.run.error;
    this.renderTimeline();
    this.renderLogs();
  }

  layout() {
    const timeline = h(
      "div",
      { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, icon("timeline", 15), "Timeline"), this.legend),
      this.waterfall.element,
    );
    fill(
      this.main,
      this.head,
      this.facts,
      this.error,
      h("div", { class: "run-body" }, h("div", { class: "run-main" }, timeline, this.logs), this.inspector),
    );
  }

  renderHead() {
    const run = this.trace.run;
    fill(
      this.head,
      h(
        "div",
        {},
        h(
          "div",
          { class: "crumbs" },
          h("a", { href: "/runs", "data-link": true }, "Runs"),
          icon("chevron", 12),
          copyable(run.id),
        ),
        h("div", { class: "run-title" }, h("h1", {}, run.task_id), statusBadge(run.status, { large: true })),
        this.why(),
      ),
      h("div", { class: "actions" }, this.actions(run)),
    );
  }

  why() {
    const text = why(this.trace);
    return text && h("p", { class: "why", role: "status" }, text);
  }

  actions(run) {
    const cancel = h(
      "button",
      { type: "button", class: "danger", "data-action": "cancel" },
      icon("cancel", 14),
      "Cancel",
    );
    const retry = h("button", { type: "button", "data-action": "retry" }, icon("retry", 14), "Retry");
    const replay = h(
      "button",
      { type: "button", class: "primary", "data-action": "replay" },
      icon("replay", 14),
      "Replay",
    );
    cancel.addEventListener("click", () => this.cancel());
    retry.addEventListener("click", () => this.retry(retry));
    replay.addEventListener("click", () => this.replay(null));
    return [!TERMINAL.has(run.status) && cancel, RETRYABLE.has(run.status) && retry, replay];
  }

  renderFacts() {
    const run = this.trace.run;
    const steps = (this.trace.entries ?? []).filter((e) => e.kind === "step");
    const fact = (name, value) => h("div", { class: "fact" }, h("dt", {}, name), h("dd", {}, value));
    fill(
      this.facts,
      fact("Created", timeAgo(run.created_at)),
      fact("Duration", elapsed(run.started_at, run.finished_at)),
      fact(
        "Attempts",
        `${run.attempts || 0}${run.recoveries ? ` · ${plural(run.recoveries, "recovery", "recoveries")}` : ""}`,
      ),
      fact(
        "Steps",
        steps.length
          ? `${steps.filter((s) => s.status === "completed").length} of ${steps.length} done`
          : "none yet",
      ),
      fact("Queue", run.queue ?? "–"),
      run.parent_id
        ? fact(
            "Parent",
            h("a", { href: `/runs/${run.parent_id}`, "data-link": true, class: "mono" }, run.parent_id),
          )
        : fact("Tags", run.tags?.length ? run.tags.join(", ") : "–"),
    );
  }

  renderTimeline() {
    const shown = rows(this.trace, Date.now());
    this.waterfall.render(shown);
    fill(this.legend, legend(shown));
    this.renderInspector();
  }

  /** Re-render the inspector only when what it shows changed, so what the reader
   * opened or scrolled stays put. */
  renderInspector() {
    const row = this.waterfall.rows.find((r) => r.id === this.waterfall.selected);
    if (!row) return;
    const data = row.kind === "run" ? this.trace.run : [row.entry, row.child, row.attempt, row.events];
    const signature = JSON.stringify([
      row.id,
      row.status,
      data,
      this.trace.tokens,
      row.kind === "run" ? null : this.trace.logs?.length,
    ]);
    if (signature === this.inspected) return;
    const same = this.inspectedRow === row.id;
    const scrolled = this.inspector.firstChild?.scrollTop ?? 0;
    this.inspected = signature;
    this.inspectedRow = row.id;
    fill(this.inspector, inspect(row, this.inspectorContext()));
    if (same) this.inspector.firstChild.scrollTop = scrolled; // a live update keeps the reader's place
  }

  inspectorContext() {
    return {
      run: this.trace.run,
      logs: this.trace.logs ?? [],
      tokens: this.trace.tokens ?? [],
      jsonState: (name) => {
        if (!this.jsonStates.has(name)) this.jsonStates.set(name, new Map());
        return this.jsonStates.get(name);
      },
      replayFrom: (key) => this.replay(key),
      completeToken: async (tokenId, data) => {
        await api.completeToken(tokenId, data);
        toast("Token completed: the run goes on");
        this.refresh();
      },
    };
  }

  renderLogs() {
    const logs = this.trace.logs ?? [];
    const start = toMs(this.trace.run.started_at) ?? toMs(this.trace.run.created_at);
    const list = h(
      "div",
      { class: "logs", role: "log" },
      logs.map((line) => this.logLine(line, start)),
    );
    const old = this.logs.querySelector(".logs");
    const atBottom = !old || old.scrollTop + old.clientHeight >= old.scrollHeight - 4;
    fill(
      this.logs,
      h(
        "div",
        { class: "card-head" },
        h("h2", {}, icon("logs", 15), "Logs", h("span", { class: "count" }, logs.length || "")),
      ),
      logs.length
        ? list
        : h("div", { class: "empty small muted" }, "No logs yet. Tasks log with perdure.logger."),
    );
    if (atBottom) list.scrollTop = list.scrollHeight;
    else list.scrollTop = old.scrollTop;
  }

  logLine(line, start) {
    const at = toMs(line.at);
    const entry = (this.trace.entries ?? []).find((e) => e.key[0] === line.branch && e.key[1] === line.seq);
    // A log carries the position of the last operation its branch began: the step it was
    // logged in, or the one just before it.
    const step =
      entry &&
      h(
        "button",
        { type: "button", class: "log-step", title: "Logged in or just after this operation: show it" },
        `${keyText(entry.key)} ${entry.name}`,
      );
    step?.addEventListener("click", () =>
      this.waterfall.select(`entry:${entry.key.join(":")}`, { focus: true }),
    );
    return h(
      "div",
      { class: "log" },
      h("span", { class: "log-time", title: clock(at) }, `+${duration(at - start)}`),
      h("span", { class: ["log-level", `level-${String(line.level).toLowerCase()}`] }, line.level),
      h("span", { class: "log-message" }, line.message),
      step ?? h("span"),
    );
  }

  // --- actions -----------------------------------------------------------------------------

  cancel() {
    confirmAction({
      title: "Cancel this run?",
      description:
        "Each branch of the run is cancelled. Code that catches the cancellation has a grace period to run clean-up steps; then the run ends canceled. Its children and waiting tokens are cancelled too.",
      confirm: "Cancel run",
      dismiss: "Keep it running",
      action: async () => {
        await api.cancel(this.id);
        toast("Cancellation requested");
        this.refresh();
      },
    });
  }

  async retry(button) {
    button.disabled = true;
    try {
      await api.retry(this.id);
      toast("Retrying: a new attempt on the kept journal");
      this.refresh();
    } catch (error) {
      toast(error.message, { error: true });
      button.disabled = false;
    }
  }

  async replay(position) {
    const created = await replayDialog(this.trace, position);
    if (created?.id) {
      toast(position ? "Forked into a new run" : "Replayed as a new run");
      this.navigate(`/runs/${created.id}`);
    }
  }
}

const LEGEND = [
  ["step", "step", "var(--accent)"],
  ["sleep", "sleep", "var(--violet)"],
  ["wait", "token wait", "var(--amber)"],
  ["child", "child run", "var(--blue)"],
];

/** What the bars' colours mean, for the kinds of operation this run has. */
function legend(rows) {
  const kinds = new Set(rows.map((row) => row.kind));
  const failed = rows.some((row) => row.kind !== "run" && row.tone === "red");
  const item = (label, color) => h("span", {}, h("i", { style: { "--tone": color } }), label);
  return [
    LEGEND.filter(([kind]) => kinds.has(kind)).map(([, label, color]) => item(label, color)),
    failed && item("failed", "var(--red)"),
  ];
}
