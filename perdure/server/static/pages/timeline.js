// A run's trace (GET /api/v1/runs/{id}/trace) as rows of a timeline: the run, its
// attempts, and in each attempt the durable operations it recorded (steps, sleeps, tokens
// and waits, child runs) with when they started and ended. Pure: a trace in, rows out.

import { statusInfo, TERMINAL, toMs } from "../format.js";

const QUIET = new Set(["queued", "delayed", "pending_version", "waiting"]);

/** Rows for the trace at time `now` (ms). */
export function rows(trace, now) {
  const run = trace.run;
  const live = !TERMINAL.has(run.status);
  const events = [...(trace.events ?? [])].sort((a, b) => toMs(a.at) - toMs(b.at));
  const children = new Map((trace.children ?? []).map((child) => [child.id, child]));
  const entries = sortedEntries((trace.entries ?? []).filter((e) => e.kind !== "value"));
  const result = [runRow(run, events, now, live)];
  // What was still pending when the run ended, ended with it.
  const until = live ? now : (toMs(run.finished_at) ?? now);
  for (const attempt of trace.attempts ?? []) {
    result.push(attemptRow(attempt, run, events, now));
    for (const entry of entries.filter((e) => (e.attempt ?? 1) === attempt.attempt)) {
      result.push(...entryRows(entry, until, live, children, now));
    }
  }
  return result;
}

function runRow(run, events, now, live) {
  const start = toMs(run.created_at);
  const end = toMs(run.finished_at) ?? (live ? now : (toMs(events.at(-1)?.at) ?? start));
  return {
    id: "run",
    kind: "run",
    depth: 0,
    label: run.task_id,
    status: run.status,
    tone: statusInfo(run.status).tone,
    start,
    end,
    live,
    segments: segments(events, now, live, run.status),
    shownDuration: (toMs(run.finished_at) ?? now) - (toMs(run.started_at) ?? start),
  };
}

/** Status segments between transitions: queued, running, waiting, ... Once it is over,
 * the time spent running takes the colour of how it ended. */
function segments(events, now, live, outcome) {
  return events
    .map((event, i) => {
      const start = toMs(event.at);
      const next = events[i + 1];
      return {
        status: event.to_status,
        tone: statusInfo(event.to_status === "running" && !live ? outcome : event.to_status).tone,
        start,
        end: next ? toMs(next.at) : live ? now : start,
        quiet: QUIET.has(event.to_status),
      };
    })
    .filter((segment) => segment.end > segment.start);
}

function attemptRow(attempt, run, events, now) {
  const current = attempt.attempt === run.attempts && !TERMINAL.has(run.status);
  const outcome = attempt.status === "retrying" ? "failed" : (attempt.status ?? "queued");
  const start = toMs(attempt.started_at);
  const end = toMs(attempt.finished_at) ?? (current ? now : start);
  const own = events.filter((e) => e.attempt === attempt.attempt && e.detail !== "retried");
  const from = own.findIndex((e) => e.to_status === "running");
  return {
    id: `attempt:${attempt.attempt}`,
    kind: "attempt",
    depth: 1,
    label: `Attempt ${attempt.attempt}`,
    status: outcome,
    tone: statusInfo(outcome).tone,
    start,
    end,
    live: current,
    segments: from < 0 ? [] : segments(own.slice(from), now, current && !attempt.finished_at, outcome),
    attempt,
    events: own,
  };
}

function sortedEntries(entries) {
  const at = (e) => toMs(e.started_at) ?? Infinity;
  return [...entries].sort((a, b) => at(a) - at(b) || compareKeys(a.key, b.key));
}

function compareKeys(a, b) {
  return String(a[0]).localeCompare(String(b[0])) || a[1] - b[1];
}

export function keyText(key) {
  return `${key[0]}·${key[1]}`;
}

/** A branch's nesting below the body: "0" is the body, "0.2" its second spawned task. */
function branchDepth(key) {
  return String(key[0]).split(".").length - 1;
}

const KINDS = {
  step: (e) => ({
    label: e.name,
    tone: { completed: "accent", failed: "red", retrying: "orange" }[e.status] ?? "blue",
    tries: e.attempts || 1,
  }),
  sleep: () => ({ label: "sleep", tone: "violet" }),
  token: () => ({ label: "create token", tone: "amber", marker: true }),
  wait: () => ({ label: "wait for token", tone: "amber" }),
  child: (e) => ({ label: e.name, tone: "blue" }),
  batch: (e) => ({ label: `batch of ${e.name}`, tone: "blue" }),
};

/** A sleep's entry stays pending in the journal after its deadline: by then it is over. */
function entryStatus(entry, now) {
  const elapsed = entry.kind === "sleep" && entry.status === "pending" && toMs(entry.wake_at) <= now;
  return elapsed ? "completed" : entry.status;
}

function entryRows(entry, until, runLive, children, now) {
  const status = entryStatus(entry, now);
  const pending = (status === "pending" || status === "retrying") && runLive;
  const start = toMs(entry.started_at);
  const finished =
    toMs(entry.finished_at) ??
    (entry.kind === "sleep" && status === "completed" ? toMs(entry.wake_at) : null);
  const row = {
    id: `entry:${entry.key.join(":")}`,
    kind: entry.kind,
    depth: 2 + branchDepth(entry.key),
    key: entry.key,
    entry,
    status,
    start,
    end: finished ?? (status === "pending" || status === "retrying" ? Math.max(start, until) : start),
    live: pending,
    pending,
    deadline: pending ? toMs(entry.wake_at) : null,
    tokenId: entry.token_id,
    ...(KINDS[entry.kind] ?? KINDS.step)(entry),
  };
  const started = (entry.child_run_ids ?? []).map(
    (id) => children.get(id) ?? { id, task_id: entry.name, status: "queued" },
  );
  if (entry.kind === "child" && started.length) return [{ ...row, ...childFields(started[0], row, now) }];
  if (entry.kind !== "batch") return [row];
  return [
    row,
    ...started.map((child, i) => ({
      ...row,
      ...childFields(child, row, now),
      id: `child:${child.id}`,
      kind: "child",
      depth: row.depth + 1,
      label: `${child.task_id} #${i + 1}`,
      key: null,
      entry: null,
    })),
  ];
}

/** A child run shown on its parent's timeline: its own status, and its bar from when the
 * parent started it to when it ended. */
function childFields(child, row, now) {
  const live = !TERMINAL.has(child.status);
  return {
    childId: child.id,
    child,
    status: child.status,
    tone: statusInfo(child.status).tone,
    end: toMs(child.finished_at) ?? (live ? now : row.end),
    live,
    pending: false,
  };
}

/** The time window the timeline shows: [start, end] in ms. */
export function window(rowList) {
  const first = rowList[0];
  let end = first.end ?? first.start;
  for (const row of rowList) if (row.end !== null && row.end !== undefined) end = Math.max(end, row.end);
  return [first.start, Math.max(end, first.start + 1)];
}

/** Tick spacing (ms) that gives at most about `count` ticks over `span` ms. */
export function tickStep(span, count = 6) {
  const steps = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3,
    1800e3, 3600e3, 7200e3, 21600e3, 43200e3, 86400e3,
  ];
  return steps.find((step) => span / step <= count) ?? 86400e3 * Math.ceil(span / 86400e3 / count);
}
