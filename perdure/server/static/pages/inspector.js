// The inspector: the details of the row selected in the timeline, readable rather than
// dumped (collapsible JSON, tracebacks folded, times as clock and relative).

import { copyable, h, icon } from "../dom.js";
import { clock, dateTime, duration, elapsed, statusBadge, timeAgo, toMs } from "../format.js";
import { jsonView } from "../json.js";
import { keyText } from "./timeline.js";
import { ICON, toneColor } from "./waterfall.js";

/** ctx: { run, logs, tokens, jsonState(name) -> Map, replayFrom(key), completeToken(id, data) } */
export function inspect(row, ctx) {
  const build = BUILDERS[row.kind] ?? entrySections;
  return h(
    "div",
    { class: "card inspector", "data-inspecting": row.id },
    h(
      "div",
      { class: "card-head" },
      h(
        "div",
        { class: "inspector-title" },
        h(
          "span",
          { style: { color: toneColor(row.tone), display: "inline-flex" } },
          icon(ICON[row.kind] ?? "step", 15),
        ),
        h("span", {}, row.label),
      ),
      statusBadge(row.status),
    ),
    build(row, ctx),
  );
}

const BUILDERS = {
  run: runSections,
  attempt: attemptSections,
  child: childSections,
  wait: tokenSections,
  token: tokenSections,
};

function section(name, content) {
  return h("div", { class: "section" }, h("div", { class: "section-head" }, h("span", {}, name)), content);
}

function props(pairs) {
  return h(
    "dl",
    { class: "props" },
    pairs
      .filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]),
  );
}

export function errorBox(error) {
  if (!error) return null;
  return h(
    "div",
    { class: "alert" },
    icon("alert", 16),
    h(
      "div",
      { class: "alert-body" },
      h("div", { class: "alert-title" }, h("span", { class: "mono" }, error.type ?? "Error")),
      error.message && h("div", { class: "alert-message" }, error.message),
      error.traceback &&
        h(
          "details",
          { class: "traceback" },
          h("summary", {}, "Traceback"),
          h("pre", { class: "block" }, error.traceback),
        ),
    ),
  );
}

function runLink(id) {
  return id ? h("a", { href: `/runs/${id}`, "data-link": true, class: "mono" }, id) : null;
}

function when(value) {
  const ms = toMs(value);
  return ms === null ? null : h("span", { title: dateTime(ms) }, clock(ms), " · ", timeAgo(ms));
}

// --- the run -------------------------------------------------------------------------------

function runSections(row, ctx) {
  const run = ctx.run;
  const hasMetadata = run.metadata && Object.keys(run.metadata).length;
  return [
    (run.status === "completed" || run.output !== null) &&
      section("Output", jsonView(run.output ?? null, { state: ctx.jsonState("output") })),
    section("Payload", jsonView(run.payload ?? null, { state: ctx.jsonState("payload") })),
    section(
      "Metadata",
      hasMetadata
        ? jsonView(run.metadata, { state: ctx.jsonState("metadata") })
        : h("div", { class: "muted" }, "None set. Tasks set it with perdure.metadata.set(key, value)."),
    ),
    section(
      "Details",
      props([
        ["Run", copyable(run.id)],
        ["Task", run.task_id],
        ["Queue", run.queue],
        ["Concurrency key", run.concurrency_key],
        ["Priority", run.priority ? String(run.priority) : null],
        ["Version", run.version],
        ["Idempotency key", run.idempotency_key && copyable(run.idempotency_key)],
        ["Parent", runLink(run.parent_id)],
        ["Root", run.root_id !== run.id ? runLink(run.root_id) : null],
        [
          "Tags",
          run.tags?.length
            ? h(
                "div",
                { class: "chips" },
                run.tags.map((t) => h("span", { class: "chip" }, t)),
              )
            : null,
        ],
        ["Created", when(run.created_at)],
        ["Started", when(run.started_at)],
        ["Finished", when(run.finished_at)],
        ["Recoveries", run.recoveries ? `${run.recoveries} (a worker died; another took over)` : null],
      ]),
    ),
  ];
}

function attemptSections(row) {
  const attempt = row.attempt;
  return [
    attempt.error && section("Error", errorBox(attempt.error)),
    section(
      "Attempt",
      props([
        ["Started", when(attempt.started_at)],
        ["Ended", attempt.finished_at ? when(attempt.finished_at) : row.live ? "still going" : null],
        ["Duration", elapsed(attempt.started_at, attempt.finished_at)],
        [
          "Workers",
          attempt.worker_ids.length
            ? h(
                "div",
                {},
                attempt.worker_ids.map((w) => h("div", { class: "mono" }, w)),
              )
            : null,
        ],
        [
          "Takeovers",
          attempt.takeovers ? `${attempt.takeovers} (a worker died or went silent; another took over)` : null,
        ],
      ]),
    ),
    section("Transitions", transitions(row.events)),
  ];
}

function transitions(events) {
  return h(
    "div",
    { class: "transitions" },
    events.map((e) =>
      h(
        "div",
        {},
        h("span", { class: "muted" }, clock(toMs(e.at))),
        h("span", {}, `${e.from_status ?? "–"} → `, h("strong", {}, e.to_status)),
        e.detail ? h("span", { class: "muted" }, e.detail) : null,
      ),
    ),
  );
}

// --- journal entries -----------------------------------------------------------------------

function timing(row) {
  const e = row.entry;
  return [
    [
      "Position",
      h(
        "span",
        { class: "mono" },
        `[${e.key
          .slice(0, 2)
          .map((k) => JSON.stringify(k))
          .join(", ")}]`,
      ),
    ],
    ["Started", when(e.started_at)],
    ["Finished", when(e.finished_at)],
    ["Duration", e.finished_at ? duration(toMs(e.finished_at) - toMs(e.started_at)) : null],
    ["Deadline", row.pending && e.wake_at ? when(e.wake_at) : null],
    ["Attempt", String(e.attempt ?? 1)],
  ];
}

function entrySections(row, ctx) {
  const e = row.entry;
  return [
    e.error && section("Error", errorBox(e.error)),
    e.kind === "step" &&
      e.result !== null &&
      e.result !== undefined &&
      section("Result", jsonView(e.result, { state: ctx.jsonState(`${row.id}:result`) })),
    e.kind !== "step" &&
      e.result !== null &&
      e.result !== undefined &&
      section("Recorded", jsonView(e.result, { state: ctx.jsonState(`${row.id}:result`) })),
    section(
      "Operation",
      props([
        ["Kind", e.kind],
        ["Tries", e.kind === "step" ? String(e.attempts ?? 1) : null],
        ...timing(row),
      ]),
    ),
    stepLogs(row, ctx),
    replayHere(row, ctx),
  ];
}

function stepLogs(row, ctx) {
  const [branch, seq] = row.entry.key;
  const lines = ctx.logs.filter((line) => line.branch === branch && line.seq === seq);
  if (!lines.length) return null;
  return section(
    "Logs at this position",
    h(
      "div",
      { class: "mono", style: { display: "grid", gap: "3px" } },
      lines.map((line) => h("div", {}, h("span", { class: "muted" }, `${line.level}  `), line.message)),
    ),
  );
}

function replayHere(row, ctx) {
  return section(
    "Fork",
    h(
      "div",
      { style: { display: "grid", gap: "8px" } },
      h(
        "div",
        { class: "muted" },
        `Start a new run that keeps what was recorded before ${keyText(row.entry.key)} and runs the rest again.`,
      ),
      h(
        "div",
        {},
        h(
          "button",
          { type: "button", class: "small", onclick: () => ctx.replayFrom(row.entry.key) },
          icon("replay", 13),
          "Replay from here",
        ),
      ),
    ),
  );
}

function childSections(row, ctx) {
  const child = row.child ?? {};
  const open =
    row.childId &&
    h(
      "a",
      { class: "button", href: `/runs/${row.childId}`, "data-link": true },
      icon("open", 14),
      "Open child run",
    );
  return [
    child.error && section("Error", errorBox(child.error)),
    child.output !== undefined &&
      child.output !== null &&
      section("Output", jsonView(child.output, { state: ctx.jsonState(`${row.id}:output`) })),
    section(
      "Child run",
      props([
        ["Run", runLink(row.childId)],
        ["Task", child.task_id],
        ["Created", when(child.created_at)],
        ["Finished", when(child.finished_at)],
        ["Position", row.key && h("span", { class: "mono" }, keyText(row.key))],
      ]),
    ),
    open && h("div", { class: "section" }, open),
    row.entry && replayHere(row, ctx),
  ];
}

function tokenSections(row, ctx) {
  const token = ctx.tokens.find((t) => t.id === row.tokenId);
  return [
    row.entry.error && section("Error", errorBox(row.entry.error)),
    token?.data !== undefined &&
      token?.data !== null &&
      section("Data", jsonView(token.data, { state: ctx.jsonState(`${row.id}:data`) })),
    section(
      "Token",
      props([
        ["Token", row.tokenId && copyable(row.tokenId)],
        ["Status", token && statusBadge(token.status)],
        ["Webhook URL", token?.url && copyable(token.url, "mono")],
        ["Times out", token?.status === "waiting" && token.timeout_at && when(token.timeout_at)],
        ["Completed", token?.completed_at && when(token.completed_at)],
        ...timing(row),
      ]),
    ),
    row.kind === "wait" && row.pending && token?.status !== "completed" && completeForm(row.tokenId, ctx),
    replayHere(row, ctx),
  ];
}

function completeForm(tokenId, ctx) {
  const data = h(
    "textarea",
    { class: "code", rows: 4, style: { minHeight: "90px" }, "aria-label": "Token data" },
    "{}",
  );
  const error = h("div", { class: "form-error" });
  const button = h("button", { type: "button", class: "primary small" }, icon("check", 13), "Complete token");
  button.addEventListener("click", async () => {
    error.textContent = "";
    try {
      button.disabled = true;
      await ctx.completeToken(tokenId, JSON.parse(data.value || "null"));
    } catch (failure) {
      error.textContent = failure.message;
    } finally {
      button.disabled = false;
    }
  });
  return section(
    "Complete",
    h(
      "div",
      { style: { display: "grid", gap: "8px" } },
      h("div", { class: "muted" }, "The run goes on with this JSON as the token's data."),
      data,
      error,
      h("div", {}, button),
    ),
  );
}
