// Times, durations and statuses as people read them; and one ticker that keeps every
// relative time and running duration on the page current.

import { h } from "./dom.js";

const STATUSES = {
  delayed: { label: "Delayed", tone: "gray" },
  queued: { label: "Queued", tone: "gray" },
  pending_version: { label: "Pending version", tone: "gray" },
  running: { label: "Running", tone: "blue", live: true },
  waiting: { label: "Waiting", tone: "amber", live: true },
  retrying: { label: "Retrying", tone: "orange", live: true },
  completed: { label: "Completed", tone: "green" },
  failed: { label: "Failed", tone: "red" },
  canceled: { label: "Canceled", tone: "gray" },
  timed_out: { label: "Timed out", tone: "red" },
  expired: { label: "Expired", tone: "gray" },
  // journal entries and tokens
  pending: { label: "Pending", tone: "amber", live: true },
};

export const RUN_STATUSES = [
  "queued",
  "delayed",
  "running",
  "waiting",
  "retrying",
  "completed",
  "failed",
  "canceled",
  "timed_out",
  "expired",
  "pending_version",
];

export const TERMINAL = new Set(["completed", "failed", "canceled", "timed_out", "expired"]);
export const RETRYABLE = new Set(["failed", "timed_out", "canceled"]);

export function statusInfo(status) {
  return STATUSES[status] ?? { label: status ?? "unknown", tone: "gray" };
}

export function statusBadge(status, { large = false } = {}) {
  const info = statusInfo(status);
  return h(
    "span",
    {
      class: ["status", `tone-${info.tone}`, info.live && "live", large && "large"],
      "data-status": status,
    },
    info.label,
  );
}

/** Milliseconds since the epoch, from epoch seconds (the trace) or an ISO string (runs). */
export function toMs(value) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return value < 1e11 ? value * 1000 : value;
  const parsed = Date.parse(value);
  return Number.isNaN(parsed) ? null : parsed;
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  ms = Math.max(0, ms);
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(2).replace(/\.?0+$/, "")}s`;
  if (s < 60) return `${s.toFixed(1).replace(/\.0$/, "")}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return join(m, "m", Math.floor(s % 60), "s");
  const hours = Math.floor(m / 60);
  if (hours < 24) return join(hours, "h", m % 60, "m");
  return join(Math.floor(hours / 24), "d", hours % 24, "h");
}

/** "3m 4s", or "3m" when the smaller unit is zero. */
function join(big, bigUnit, small, smallUnit) {
  return small ? `${big}${bigUnit} ${small}${smallUnit}` : `${big}${bigUnit}`;
}

export function relative(ms, now = Date.now()) {
  if (ms === null) return "–";
  const delta = now - ms;
  const ahead = delta < 0;
  const s = Math.abs(delta) / 1000;
  let text;
  if (s < 5) return ahead ? "in a moment" : "just now";
  if (s < 60) text = `${Math.floor(s)}s`;
  else if (s < 3600) text = `${Math.floor(s / 60)}m`;
  else if (s < 86400) text = `${Math.floor(s / 3600)}h`;
  else if (s < 86400 * 30) text = `${Math.floor(s / 86400)}d`;
  else return dateTime(ms);
  return ahead ? `in ${text}` : `${text} ago`;
}

const DATE_TIME = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

export function dateTime(ms) {
  return ms === null ? "–" : DATE_TIME.format(new Date(ms));
}

export function clock(ms) {
  if (ms === null) return "–";
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** "3m ago", kept current by the ticker; the exact time on hover. */
export function timeAgo(value) {
  const ms = toMs(value);
  if (ms === null) return h("span", { class: "muted" }, "–");
  return h(
    "time",
    { datetime: new Date(ms).toISOString(), title: dateTime(ms), "data-rel": ms },
    relative(ms),
  );
}

/** The time from start to end; with no end yet it keeps counting. */
export function elapsed(start, end) {
  const from = toMs(start);
  const to = toMs(end);
  if (from === null) return h("span", { class: "muted" }, "–");
  if (to !== null) return h("span", { class: "num" }, duration(to - from));
  return h("span", { class: "num", "data-since": from }, duration(Date.now() - from));
}

export function tick() {
  const now = Date.now();
  for (const node of document.querySelectorAll("[data-rel]")) {
    node.textContent = relative(Number(node.dataset.rel), now);
  }
  for (const node of document.querySelectorAll("[data-since]")) {
    node.textContent = duration(now - Number(node.dataset.since));
  }
}

export function plural(n, word, many = `${word}s`) {
  return `${n} ${n === 1 ? word : many}`;
}
