// Building DOM without a framework. Every piece of data goes in as text, never as HTML.

const SVG = "http://www.w3.org/2000/svg";

/** h("a", {href: "/runs", class: "x", onclick: fn}, "text", child, [more]) */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (name === "style" && typeof value === "object") {
      setStyle(node, value);
    } else if (name in node && typeof value !== "string") {
      node[name] = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

/** Inline styles; custom properties (--tone) need setProperty. */
function setStyle(node, styles) {
  for (const [name, value] of Object.entries(styles)) {
    if (name.startsWith("--")) node.style.setProperty(name, value);
    else node.style[name] = value;
  }
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

// Icons: 24-unit strokes in the style of Lucide (ISC), drawn here so nothing is fetched.
const ICONS = {
  runs: '<path d="M8 6h13M8 12h13M8 18h13M3.5 6h.01M3.5 12h.01M3.5 18h.01"/>',
  test: '<path d="M6 4.5v15l13-7.5z"/>',
  queues: '<path d="m12 3 9 4.5-9 4.5-9-4.5z"/><path d="m3 12 9 4.5 9-4.5"/><path d="m3 16.5 9 4.5 9-4.5"/>',
  workers:
    '<rect x="3" y="3" width="18" height="7" rx="2"/><rect x="3" y="14" width="18" height="7" rx="2"/><path d="M7 6.5h.01M7 17.5h.01"/>',
  copy: '<rect x="9" y="9" width="12" height="12" rx="2"/><path d="M5 15H4a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1h10a1 1 0 0 1 1 1v1"/>',
  check: '<path d="M20 6 9 17l-5-5"/>',
  x: '<path d="M18 6 6 18M6 6l12 12"/>',
  cancel: '<circle cx="12" cy="12" r="9"/><path d="m5.7 5.7 12.6 12.6"/>',
  retry: '<path d="M3 12a9 9 0 1 0 2.64-6.36L3 8.3"/><path d="M3 3v5.3h5.3"/>',
  replay:
    '<circle cx="6" cy="5" r="2.2"/><circle cx="18" cy="5" r="2.2"/><circle cx="12" cy="19" r="2.2"/><path d="M6 7.2v1.3a3 3 0 0 0 3 3h6a3 3 0 0 0 3-3V7.2M12 11.5v5.3"/>',
  step: '<path d="M13 2 4 14h8l-1 8 9-12h-8z"/>',
  sleep: '<path d="M20 14.5A8 8 0 1 1 9.5 4a6.5 6.5 0 0 0 10.5 10.5z"/>',
  token: '<circle cx="8" cy="15" r="4.5"/><path d="m11.3 11.7 8.7-8.7M16.5 6.5l2.5 2.5M14 9l2 2"/>',
  wait: '<path d="M6 2h12M6 22h12M7 2v3.5a5 5 0 0 0 2.5 4.3L12 11l2.5-1.2A5 5 0 0 0 17 5.5V2M7 22v-3.5a5 5 0 0 1 2.5-4.3L12 13l2.5 1.2a5 5 0 0 1 2.5 4.3V22"/>',
  child:
    '<circle cx="6" cy="6" r="2.5"/><circle cx="6" cy="18" r="2.5"/><circle cx="18" cy="9" r="2.5"/><path d="M6 8.5v7M18 11.5a6 6 0 0 1-6 6H8.5"/>',
  batch:
    '<rect x="3" y="3" width="7" height="7" rx="1.5"/><rect x="14" y="3" width="7" height="7" rx="1.5"/><rect x="3" y="14" width="7" height="7" rx="1.5"/><rect x="14" y="14" width="7" height="7" rx="1.5"/>',
  attempt: '<path d="M21 12a9 9 0 1 1-3-6.7L21 8"/><path d="M21 3v5h-5"/>',
  run: '<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 2"/>',
  open: '<path d="M7 17 17 7M8 7h9v9"/>',
  chevron: '<path d="m9 6 6 6-6 6"/>',
  search: '<circle cx="11" cy="11" r="7"/><path d="m20 20-3.5-3.5"/>',
  inbox:
    '<path d="M22 12h-6l-2 3h-4l-2-3H2"/><path d="M5.5 5.1 2 12v6a2 2 0 0 0 2 2h16a2 2 0 0 0 2-2v-6l-3.5-6.9A2 2 0 0 0 16.8 4H7.2a2 2 0 0 0-1.7 1.1z"/>',
  alert: '<circle cx="12" cy="12" r="9"/><path d="M12 7.5v5M12 16.5h.01"/>',
  key: '<circle cx="7.5" cy="15.5" r="4.5"/><path d="m10.7 12.3 9.8-9.8M17 6l3 3M14.5 8.5l2 2"/>',
  logs: '<path d="M4 6h16M4 12h11M4 18h14"/>',
  filter: '<path d="M3 5h18l-7 8.5V19l-4 2v-7.5z"/>',
  timeline: '<path d="M3 6h8M7 12h10M12 18h9"/>',
};

export function icon(name, size = 16) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", size);
  svg.setAttribute("height", size);
  svg.setAttribute("fill", "none");
  svg.setAttribute("stroke", "currentColor");
  svg.setAttribute("stroke-width", "1.9");
  svg.setAttribute("stroke-linecap", "round");
  svg.setAttribute("stroke-linejoin", "round");
  svg.setAttribute("aria-hidden", "true");
  svg.innerHTML = ICONS[name] ?? "";
  return svg;
}

/** A small button that copies `text` and says so. */
export function copyButton(text, label = "Copy") {
  const button = h(
    "button",
    { type: "button", class: "ghost small icon-only", title: label, "aria-label": label },
    icon("copy", 13),
  );
  button.addEventListener("click", async (event) => {
    event.stopPropagation();
    await navigator.clipboard?.writeText(typeof text === "function" ? text() : text);
    button.replaceChildren(icon("check", 13));
    setTimeout(() => button.replaceChildren(icon("copy", 13)), 1200);
  });
  return button;
}

/** Text with a copy button that shows on hover. */
export function copyable(text, className = "id") {
  return h("span", { class: "copy" }, h("span", { class: className }, text), copyButton(text));
}

export function emptyState({ icon: name = "inbox", title, body, extra }) {
  return h(
    "div",
    { class: "empty" },
    h("div", { class: "empty-icon" }, icon(name, 20)),
    h("h3", {}, title),
    body && h("p", {}, body),
    extra,
  );
}

export function errorState(error, retry) {
  return emptyState({
    icon: "alert",
    title: error.status === 401 ? "An API key is needed" : "Could not load this page",
    body: error.message,
    extra: retry && h("button", { type: "button", onclick: retry }, "Try again"),
  });
}
