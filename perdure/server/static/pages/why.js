// Why a run that has not finished is where it is, in one sentence: what it waits on, for
// whom, until when. Pure: a trace in, parts of a sentence out.

import { clock, relative, toMs } from "../format.js";

/** A sentence on the run's state, or null once it has finished. */
export function why(trace, now = Date.now()) {
  const run = trace.run;
  const explain = REASONS[run.status];
  return explain ? explain(trace, now) : null;
}

const REASONS = {
  queued: (t) => `Queued in ${t.run.queue}: it starts when a worker has a free slot there.`,
  delayed: () => "Delayed: it is queued once its delay has passed.",
  pending_version: (t) =>
    `No live worker serves version ${t.run.version ?? "(none)"}: start one that does, or it fails ` +
    "after the pending-version timeout.",
  running: (t) => {
    const worker = t.attempts?.at(-1)?.worker_ids?.at(-1);
    return worker ? `Running on ${worker}.` : "Running.";
  },
  retrying: (t) => `Attempt ${t.run.attempts} failed; the next one starts after a backoff.`,
  waiting: (t, now) => waiting(t, now),
};

function waiting(trace, now) {
  const pending = (trace.waits ?? trace.entries ?? []).filter(
    (e) => e.status === "pending" && !(e.kind === "sleep" && toMs(e.wake_at) <= now),
  );
  if (!pending.length) return "Waiting: it goes on as soon as what it waits on is done.";
  return `Waiting on ${pending.map((e) => describe(e, now)).join(", ")}. It holds no worker slot meanwhile.`;
}

function describe(entry, now) {
  const until = toMs(entry.wake_at);
  const when = until ? `${clock(until).slice(0, 8)} (${relative(until, now)})` : null;
  if (entry.kind === "sleep") return `a sleep until ${when}`;
  if (entry.kind === "wait")
    return `token ${entry.token_id ?? entry.name}${when ? `, which times out at ${when}` : ""}`;
  const children = entry.child_run_ids?.length ?? 1;
  return `${children} child run${children === 1 ? "" : "s"} of ${entry.name}`;
}
