// The test page: pick a task, edit a JSON payload made from its type hints, trigger it,
// and land on the new run.

import { announce, api } from "../api.js";
import { emptyState, errorState, fill, h, icon } from "../dom.js";
import { statusBadge, timeAgo } from "../format.js";
import { example, signature } from "../schema.js";

const IS_MAC = /Mac|iPhone|iPad/.test(navigator.platform);

export function render({ main, search, page, navigate }) {
  document.title = "Test · perdure";
  fill(
    main,
    pageHead(),
    h(
      "div",
      { class: "test-layout" },
      h(
        "div",
        { class: "card" },
        h("div", { class: "empty small" }, h("span", { class: "skeleton", style: { width: "120px" } })),
      ),
    ),
  );
  api.tasks().then(
    (tasks) => {
      announce("live");
      if (page.alive) show(main, tasks, search.get("task"), navigate);
    },
    (error) => page.alive && fill(main, pageHead(), h("div", { class: "card" }, errorState(error))),
  );
}

function pageHead() {
  return h(
    "div",
    { class: "page-head" },
    h("div", {}, h("h1", {}, "Test"), h("p", {}, "Trigger any task with a JSON payload and follow its run.")),
  );
}

function schemaOf(task) {
  return task.payload_schema ?? null;
}

function show(main, tasks, wanted, navigate) {
  if (!tasks.length) {
    fill(
      main,
      pageHead(),
      h(
        "div",
        { class: "card" },
        emptyState({
          title: "No tasks",
          body: "The app this server runs registers no tasks. Start it with perdure dev module:app.",
        }),
      ),
    );
    return;
  }
  const sorted = [...tasks].sort((a, b) => a.id.localeCompare(b.id));
  const task = sorted.find((t) => t.id === wanted) ?? sorted[0];
  if (task.id !== wanted) history.replaceState({}, "", `/test?task=${encodeURIComponent(task.id)}`);
  fill(
    main,
    pageHead(),
    h(
      "div",
      { class: "test-layout" },
      taskList(sorted, task),
      h("div", { style: { display: "grid", gap: "16px" } }, triggerForm(task, navigate), recentRuns(task)),
    ),
  );
}

function taskList(tasks, current) {
  return h(
    "nav",
    { class: "card task-list", "aria-label": "Tasks" },
    tasks.map((task) =>
      h(
        "a",
        {
          href: `/test?task=${encodeURIComponent(task.id)}`,
          "data-link": true,
          "aria-current": task.id === current.id ? "true" : null,
        },
        h("span", { class: "task-id" }, task.id),
        h(
          "span",
          { class: "task-sub" },
          task.queue && task.queue !== task.id
            ? `queue ${task.queue}`
            : signature(schemaOf(task)) || "no payload",
        ),
      ),
    ),
  );
}

function draftKey(task) {
  return `perdure.draft.${task.id}`;
}

function triggerForm(task, navigate) {
  const schema = schemaOf(task);
  const initial = JSON.stringify(
    ("payload_example" in task ? task.payload_example : example(schema)) ?? null,
    null,
    2,
  );
  const editor = h(
    "textarea",
    { class: "code", spellcheck: "false", "aria-label": "Payload", name: "payload" },
    sessionStorage.getItem(draftKey(task)) ?? initial,
  );
  const status = h("div", { class: "editor-status", "aria-live": "polite" });
  const error = h("div", { class: "form-error", role: "alert" });
  const options = optionFields();
  const submit = h(
    "button",
    { type: "submit", class: "primary" },
    icon("test", 13),
    "Trigger",
    h("kbd", {}, IS_MAC ? "⌘↵" : "Ctrl ↵"),
  );
  const reset = h("button", { type: "button", class: "ghost small" }, "Reset to example");

  const check = () => validate(editor, status);
  editor.addEventListener("input", () => {
    sessionStorage.setItem(draftKey(task), editor.value);
    check();
  });
  editor.addEventListener("keydown", (event) => editorKeys(event, editor, form));
  reset.addEventListener("click", () => {
    editor.value = initial;
    sessionStorage.removeItem(draftKey(task));
    check();
  });
  const form = h(
    "form",
    { class: "card", "data-task": task.id },
    h(
      "div",
      { class: "card-head" },
      h("h2", {}, task.id),
      h("span", { class: "muted mono" }, signature(schema)),
    ),
    h(
      "div",
      { class: "card-body" },
      h("label", { class: "field" }, "Payload", editor),
      h("div", { style: { display: "flex", justifyContent: "space-between" } }, status, reset),
      options.element,
    ),
    h("div", { class: "form-foot" }, error, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const payload = check();
    if (payload === undefined) return editor.focus();
    submit.disabled = true;
    try {
      const created = await api.trigger(task.id, { payload, options: options.values() });
      sessionStorage.removeItem(draftKey(task));
      navigate(`/runs/${created.id}`);
    } catch (failure) {
      error.textContent = failure.message;
      submit.disabled = false;
    }
  });
  check();
  return form;
}

/** The parsed payload, or undefined (and a message) when it is not JSON. */
function validate(editor, status) {
  try {
    const value = JSON.parse(editor.value);
    status.className = "editor-status good";
    status.textContent = "Valid JSON";
    return value;
  } catch (error) {
    status.className = "editor-status bad";
    status.textContent = error.message;
    return undefined;
  }
}

function editorKeys(event, editor, form) {
  if (event.key === "Enter" && (event.metaKey || event.ctrlKey)) {
    event.preventDefault();
    form.requestSubmit();
  } else if (event.key === "Tab" && !event.shiftKey) {
    event.preventDefault();
    editor.setRangeText("  ", editor.selectionStart, editor.selectionEnd, "end");
  }
}

const OPTIONS = [
  ["tags", "Tags", "comma separated"],
  ["idempotency_key", "Idempotency key", ""],
  ["delay", "Delay", "seconds"],
  ["ttl", "TTL", "seconds in the queue"],
  ["queue", "Queue", "overrides the task's"],
  ["concurrency_key", "Concurrency key", "e.g. a tenant id"],
  ["priority", "Priority", "higher first"],
];

function optionFields() {
  const inputs = Object.fromEntries(
    OPTIONS.map(([name]) => [
      name,
      h("input", {
        name,
        type: ["delay", "ttl", "priority"].includes(name) ? "number" : "text",
        step: "any",
      }),
    ]),
  );
  const element = h(
    "details",
    { class: "options", style: { marginTop: "14px" } },
    h("summary", {}, "Options"),
    h(
      "div",
      { class: "options-grid" },
      OPTIONS.map(([name, label, hint]) =>
        h(
          "label",
          { class: "field" },
          h("span", {}, label, hint && h("span", { class: "field-hint" }, ` · ${hint}`)),
          inputs[name],
        ),
      ),
    ),
  );
  const values = () => {
    const options = {};
    for (const [name, input] of Object.entries(inputs)) {
      const text = input.value.trim();
      if (!text) continue;
      if (name === "tags")
        options.tags = text
          .split(",")
          .map((t) => t.trim())
          .filter(Boolean);
      else if (input.type === "number") options[name] = Number(text);
      else options[name] = text;
    }
    return options;
  };
  return { element, values };
}

function recentRuns(task) {
  const body = h(
    "div",
    {},
    h("div", { class: "empty small" }, h("span", { class: "skeleton", style: { width: "160px" } })),
  );
  api.runs({ task_id: task.id, limit: 5 }).then(
    (answer) => fill(body, runTable(answer.data ?? [])),
    () => fill(body, h("div", { class: "empty small muted" }, "Could not load recent runs.")),
  );
  return h(
    "div",
    { class: "card" },
    h(
      "div",
      { class: "card-head" },
      h("h2", {}, "Recent runs"),
      h(
        "a",
        {
          class: "muted",
          href: `/runs?task=${encodeURIComponent(task.id)}`,
          "data-link": true,
          style: { fontSize: "12.5px" },
        },
        "View all",
      ),
    ),
    body,
  );
}

function runTable(runs) {
  if (!runs.length) return h("div", { class: "empty small muted" }, "This task has not run yet.");
  return h(
    "table",
    { class: "data" },
    h(
      "tbody",
      {},
      runs.map((run) =>
        h(
          "tr",
          {},
          h("td", { style: { width: "140px" } }, statusBadge(run.status)),
          h("td", { class: "run-id-cell" }, h("a", { href: `/runs/${run.id}`, "data-link": true }, run.id)),
          h("td", { class: "right muted" }, timeAgo(run.created_at)),
        ),
      ),
    ),
  );
}
