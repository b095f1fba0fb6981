// A collapsible JSON viewer built on <details>, so it is keyboard-accessible as it is.
// `state` (a Map of path -> open) keeps what the reader opened across live re-renders.

import { copyButton, h } from "./dom.js";

const LONG_STRING = 280;
const PAGE = 50;

export function jsonView(value, { open = 2, state = new Map(), label } = {}) {
  const root = h(
    "div",
    { class: "json" },
    copyButton(() => JSON.stringify(value, null, 2), "Copy JSON"),
  );
  root.lastChild.classList.add("json-copy");
  root.append(node(value, { key: label, path: "$", depth: 0, open, state }));
  return root;
}

function node(value, ctx) {
  if (value !== null && typeof value === "object") return branch(value, ctx);
  return h("div", { class: "json-line" }, keyLabel(ctx.key), leaf(value));
}

function keyLabel(key) {
  if (key === undefined) return null;
  return [h("span", { class: "k" }, typeof key === "number" ? String(key) : JSON.stringify(key)), ": "];
}

function leaf(value) {
  if (typeof value === "string") return stringLeaf(value);
  if (typeof value === "number") return h("span", { class: "n" }, String(value));
  return h("span", { class: "l" }, String(value));
}

function stringLeaf(text) {
  if (text.includes("\n")) return h("span", { class: "s json-string-block" }, text);
  if (text.length <= LONG_STRING) return h("span", { class: "s" }, JSON.stringify(text));
  const shown = h("span", { class: "s" }, JSON.stringify(text.slice(0, LONG_STRING)).slice(0, -1) + '…"');
  const more = h("button", { type: "button", class: "more" }, `+${text.length - LONG_STRING} chars`);
  more.addEventListener("click", () => {
    shown.textContent = JSON.stringify(text);
    more.remove();
  });
  return [shown, more];
}

function branch(value, ctx) {
  const isArray = Array.isArray(value);
  const entries = isArray ? value.map((v, i) => [i, v]) : Object.entries(value);
  const [openMark, closeMark] = isArray ? ["[", "]"] : ["{", "}"];
  if (!entries.length)
    return h(
      "div",
      { class: "json-line" },
      keyLabel(ctx.key),
      h("span", { class: "meta" }, openMark + closeMark),
    );

  const remembered = ctx.state.get(ctx.path);
  const details = h("details", { open: remembered ?? ctx.depth < ctx.open });
  const count = isArray
    ? `${entries.length} item${entries.length === 1 ? "" : "s"}`
    : `${entries.length} key${entries.length === 1 ? "" : "s"}`;
  // Folded: `key: { 3 keys }`. Open: `key: {`, the children, then `}` on a line of its own.
  const close = h("div", { class: "json-close meta" }, closeMark);
  details.append(
    h(
      "summary",
      {},
      keyLabel(ctx.key),
      h("span", { class: "meta" }, openMark),
      h("span", { class: "meta folded" }, ` ${count} ${closeMark}`),
    ),
    close,
  );
  let rendered = false;
  const renderChildren = () => {
    if (rendered) return;
    rendered = true;
    appendChildren(close, entries, ctx, 0);
  };
  if (details.open) renderChildren();
  details.addEventListener("toggle", (event) => {
    event.stopPropagation();
    ctx.state.set(ctx.path, details.open);
    if (details.open) renderChildren();
  });
  return details;
}

function appendChildren(close, entries, ctx, from) {
  const slice = entries.slice(from, from + PAGE);
  for (const [key, child] of slice) {
    close.before(node(child, { ...ctx, key, path: `${ctx.path}/${key}`, depth: ctx.depth + 1 }));
  }
  const rest = entries.length - from - slice.length;
  if (rest > 0) {
    const more = h(
      "button",
      { type: "button", class: "more json-line" },
      `Show ${Math.min(rest, PAGE)} more of ${rest}`,
    );
    more.addEventListener("click", () => {
      more.remove();
      appendChildren(close, entries, ctx, from + PAGE);
    });
    close.before(more);
  }
}
