// The HTTP API (/api/v1, DESIGN.md §7) and its server-sent-events stream.
//
// The API key lives in localStorage and goes out as `Authorization: Bearer ...`. When the
// server answers 401, the key prompt (set by the app) asks for it once, and the request is
// sent again. The event stream is read with fetch rather than EventSource, which cannot
// send that header.

const BASE = "/api/v1";
const STORAGE = "perdure.apiKey";

let promptForKey = async () => false;
let pendingPrompt = null;
const connectionListeners = new Set();

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

export function apiKey() {
  return localStorage.getItem(STORAGE);
}

export function setApiKey(key) {
  if (key) localStorage.setItem(STORAGE, key);
  else localStorage.removeItem(STORAGE);
}

/** prompt(refused: boolean) -> Promise<boolean>: whether a key was entered. */
export function setKeyPrompt(prompt) {
  promptForKey = prompt;
}

async function askForKey() {
  const refused = Boolean(apiKey());
  pendingPrompt ??= promptForKey(refused).finally(() => {
    pendingPrompt = null;
  });
  return pendingPrompt;
}

function headers(extra = {}) {
  const key = apiKey();
  return { ...extra, ...(key ? { Authorization: `Bearer ${key}` } : {}) };
}

async function send(method, path, body) {
  const init = { method, headers: headers({ Accept: "application/json" }) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  for (;;) {
    const response = await fetch(BASE + path, init);
    if (response.status === 401 && (await askForKey())) {
      init.headers = { ...init.headers, ...headers() };
      continue;
    }
    const data = await response.json().catch(() => null);
    if (response.ok) return data;
    const error = data?.error ?? {};
    throw new ApiError(response.status, error.type ?? "HTTPError", error.message ?? response.statusText);
  }
}

/** A query string from an object; arrays repeat the parameter, empty values are left out. */
export function query(params = {}) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    const values = Array.isArray(value) ? value : [value];
    for (const v of values) if (v !== undefined && v !== null && v !== "") search.append(name, v);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export const api = {
  runs: (params) => send("GET", `/runs${query(params)}`),
  run: (id) => send("GET", `/runs/${encodeURIComponent(id)}`),
  trace: (id) => send("GET", `/runs/${encodeURIComponent(id)}/trace`),
  cancel: (id) => send("POST", `/runs/${encodeURIComponent(id)}/cancel`, {}),
  retry: (id) => send("POST", `/runs/${encodeURIComponent(id)}/retry`, {}),
  replay: (id, body) => send("POST", `/runs/${encodeURIComponent(id)}/replay`, body),
  tasks: async () => listOf(await send("GET", "/tasks")),
  trigger: (taskId, body) => send("POST", `/tasks/${encodeURIComponent(taskId)}/trigger`, body),
  completeToken: (id, data) => send("POST", `/tokens/${encodeURIComponent(id)}/complete`, { data }),
  queues: async () => listOf(await send("GET", "/queues")),
  workers: async () => listOf(await send("GET", "/workers")),
};

/** Lists come as {"data": [...]}; a bare array is taken as well. */
function listOf(answer) {
  return Array.isArray(answer) ? answer : (answer?.data ?? []);
}

// --- the event stream ---------------------------------------------------------------------

export function onConnection(listener) {
  connectionListeners.add(listener);
  return () => connectionListeners.delete(listener);
}

/** Tell the connection indicator how the live data is doing: live | reconnecting. */
export function announce(state) {
  for (const listener of connectionListeners) listener(state);
}

/** Follow `/api/v1/events` with these filters. onEvent(type, data) for each event;
 * onOpen() each time the stream (re)connects, so a page can catch up on what it missed.
 * Returns a function that closes the stream. */
export function subscribe(params, { onEvent, onOpen }) {
  let controller = null;
  let closed = false;
  let delay = 0;

  async function connect() {
    controller = new AbortController();
    try {
      const response = await fetch(`${BASE}/events${query(params)}`, {
        headers: headers({ Accept: "text/event-stream" }),
        signal: controller.signal,
        cache: "no-store",
      });
      if (response.status === 401 && (await askForKey())) return connect();
      if (refused(response.status)) {
        announce("live"); // the server answered: it is this stream it will not give
        return;
      }
      if (!response.ok || !response.body) throw new ApiError(response.status, "HTTPError", "no stream");
      announce("live");
      onOpen?.();
      const opened = Date.now();
      await read(response.body, onEvent);
      // The server ends each stream after a while: follow on at once, unless it ended
      // right away (then back off, as after an error).
      delay = Date.now() - opened > 5000 ? 0 : backoff(delay);
    } catch {
      if (closed) return;
      announce("reconnecting");
      delay = backoff(delay);
    }
    if (!closed) setTimeout(connect, delay);
  }

  connect();
  return () => {
    closed = true;
    controller?.abort();
  };
}

/** A request the server will never grant (an unknown run, a bad filter): no retrying. */
function refused(status) {
  return status >= 400 && status < 500 && ![401, 408, 429].includes(status);
}

function backoff(delay) {
  return Math.min(Math.max(delay * 2, 500), 8000);
}

async function read(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const blocks = buffer.split(/\r?\n\r?\n/);
    buffer = blocks.pop();
    for (const block of blocks) dispatch(block, onEvent);
  }
}

function dispatch(block, onEvent) {
  let type = "message";
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith(":")) continue; // a keep-alive comment
    const [field, ...rest] = line.split(":");
    const value = rest.join(":").replace(/^ /, "");
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  let parsed = data.join("\n");
  try {
    parsed = JSON.parse(parsed);
  } catch {
    // not JSON: hand over the text
  }
  onEvent(type, parsed);
}
