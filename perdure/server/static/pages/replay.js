// The replay dialog: a new run of the same task, with the payload as it was or edited,
// from the start or forked at a journal position (what was recorded before it is kept).

import { api } from "../api.js";
import { h } from "../dom.js";
import { modal } from "../ui.js";
import { keyText } from "./timeline.js";

/** Resolves with the new run ({id}) or null when dismissed. */
export function replayDialog(trace, position) {
  const run = trace.run;
  const original = JSON.stringify(run.payload ?? null, null, 2);
  const lines = original.split("\n").length;
  const payload = h(
    "textarea",
    {
      class: "code",
      name: "payload",
      spellcheck: "false",
      "aria-label": "Payload",
      style: { minHeight: `${Math.min(16, Math.max(4, lines + 1)) * 1.6 + 1.5}em` },
    },
    original,
  );
  const from = positionSelect(trace.entries ?? [], position);
  return modal({
    title: position ? "Fork this run" : "Replay this run",
    description: `A new run of ${run.task_id}. Edit the payload if you like; choose where to start to keep what was already recorded.`,
    wide: true,
    confirm: position ? "Fork" : "Replay",
    body: [
      h("label", { class: "field" }, "Payload", payload),
      h(
        "label",
        { class: "field" },
        h(
          "span",
          {},
          "Start from ",
          h("span", { class: "field-hint" }, "· the operations before it are copied, not run again"),
        ),
        from,
      ),
    ],
    submit: () => api.replay(run.id, replayBody(payload.value, original, from.value)),
  });
}

function replayBody(text, original, position) {
  const body = {};
  if (text.trim() !== original.trim()) {
    try {
      body.payload = JSON.parse(text);
    } catch (error) {
      throw new Error(`The payload is not valid JSON: ${error.message}`);
    }
  }
  if (position) body.from_position = JSON.parse(position);
  return body;
}

function positionSelect(entries, position) {
  const operations = entries
    .filter((e) => e.kind !== "value" && e.key.length === 2)
    .sort((a, b) => (a.started_at ?? Infinity) - (b.started_at ?? Infinity));
  const chosen = position ? JSON.stringify(position.slice(0, 2)) : "";
  return h(
    "select",
    { name: "from_position", "aria-label": "Start from" },
    h("option", { value: "" }, "The beginning: nothing is copied"),
    operations.map((e, i) => {
      const value = JSON.stringify(e.key.slice(0, 2));
      const kept = i ? ` (keeps ${i} before it)` : "";
      return h(
        "option",
        { value, selected: value === chosen },
        `${keyText(e.key)}  ${e.kind} ${e.name}${kept}`,
      );
    }),
  );
}
