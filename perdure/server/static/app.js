// The dashboard's entry point: the sidebar, the router, keyboard shortcuts and the ticker.

import { onConnection, setApiKey, setKeyPrompt, apiKey, subscribe } from "./api.js";
import { emptyState, fill, h, icon } from "./dom.js";
import { tick } from "./format.js";
import * as queues from "./pages/queues.js";
import * as run from "./pages/run.js";
import * as runs from "./pages/runs.js";
import * as test from "./pages/test.js";
import * as workers from "./pages/workers.js";
import { askForKey } from "./ui.js";

const ROUTES = [
  [/^\/(?:runs\/?)?$/, runs, "runs"],
  [/^\/runs\/([^/]+)\/?$/, run, "runs"],
  [/^\/test\/?$/, test, "test"],
  [/^\/queues\/?$/, queues, "queues"],
  [/^\/workers\/?$/, workers, "workers"],
];

const NAV = {
  runs: ["runs", "Runs"],
  test: ["test", "Test"],
  queues: ["queues", "Queues"],
  workers: ["workers", "Workers"],
};

/** What a page holds while it is shown: timers and streams, all closed when it goes. */
class Page {
  constructor() {
    this.alive = true;
    this.cleanups = [];
  }
  onLeave(fn) {
    this.cleanups.push(fn);
  }
  every(ms, fn) {
    const timer = setInterval(() => document.hidden || fn(), ms);
    this.onLeave(() => clearInterval(timer));
  }
  subscribe(params, handlers) {
    const close = subscribe(params, handlers);
    this.onLeave(close);
    return close;
  }
  leave() {
    this.alive = false;
    for (const fn of this.cleanups) fn();
  }
}

let current = null;

export function navigate(path, { replace = false } = {}) {
  if (path === location.pathname + location.search) return;
  history[replace ? "replaceState" : "pushState"]({}, "", path);
  route();
  // A new page starts at its top, and the keyboard starts from its content.
  window.scrollTo(0, 0);
  document.getElementById("main").focus({ preventScroll: true });
}

function route() {
  const main = document.getElementById("main");
  const path = location.pathname;
  const [pattern, module, section] = ROUTES.find(([re]) => re.test(path)) ?? [];
  current?.leave();
  current = new Page();
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!module) {
    document.title = "Not found · perdure";
    const home = h("a", { class: "button", href: "/runs", "data-link": true }, "All runs");
    fill(main, emptyState({ icon: "search", title: "There is no page here", extra: home }));
    return;
  }
  const params = path.match(pattern).slice(1).map(decodeURIComponent);
  module.render({ main, params, search: new URLSearchParams(location.search), page: current, navigate });
}

function setUpSidebar() {
  for (const link of document.querySelectorAll("[data-nav]")) {
    const [iconName, label] = NAV[link.dataset.nav];
    fill(link, icon(iconName, 16), label);
  }
  const indicator = document.querySelector(".connection");
  const labels = { live: "Live", reconnecting: "Reconnecting", connecting: "Connecting" };
  onConnection((state) => {
    indicator.dataset.state = state;
    indicator.querySelector(".connection-label").textContent = labels[state] ?? state;
  });
  const keyButton = document.querySelector(".key-button");
  const showKeyButton = () => (keyButton.hidden = !apiKey());
  keyButton.addEventListener("click", () => {
    setApiKey(null);
    showKeyButton();
    route();
  });
  keyButton.title = "Forget the API key kept in this browser";
  keyButton.textContent = "Forget key";
  setKeyPrompt(async (refused) => {
    if (refused) setApiKey(null);
    const entered = await askForKey(refused, setApiKey);
    showKeyButton();
    return entered;
  });
  showKeyButton();
}

function interceptLinks() {
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-link]");
    if (!link || event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(link.getAttribute("href"));
  });
  window.addEventListener("popstate", route);
}

function shortcuts() {
  const go = { r: "/runs", t: "/test", q: "/queues", w: "/workers" };
  let leader = 0;
  document.addEventListener("keydown", (event) => {
    if (event.metaKey || event.ctrlKey || event.altKey) return;
    if (event.target.closest("input, textarea, select, [contenteditable], dialog")) return;
    if (event.key === "g") {
      leader = Date.now();
      return;
    }
    if (Date.now() - leader < 1200 && go[event.key]) {
      event.preventDefault();
      leader = 0;
      navigate(go[event.key]);
    }
  });
}

setUpSidebar();
interceptLinks();
shortcuts();
setInterval(tick, 1000);
route();
