// Draws timeline rows as a waterfall: names on the left, bars on a shared time axis on the
// right. One row is selected (its details show in the inspector); arrow keys move the
// selection, Enter opens a child run.

import { fill, h, icon } from "../dom.js";
import { duration, statusInfo } from "../format.js";
import { keyText, tickStep, window } from "./timeline.js";

export const ICON = {
  run: "run",
  attempt: "attempt",
  step: "step",
  sleep: "sleep",
  token: "token",
  wait: "wait",
  child: "child",
  batch: "batch",
};

export class Waterfall {
  /** onSelect(row) when the selection changes; onOpen(row) for Enter on a child run. */
  constructor({ onSelect, onOpen }) {
    this.onSelect = onSelect;
    this.onOpen = onOpen;
    this.selected = "run";
    this.rows = [];
    this.axis = h("div", { class: "wf-axis", "aria-hidden": "true" });
    this.list = h("div", { class: "wf-rows", role: "listbox", "aria-label": "Timeline" });
    this.element = h("div", { class: "waterfall" }, this.axis, this.list);
    this.list.addEventListener("keydown", (event) => this.onKey(event));
  }

  render(rows) {
    this.rows = rows;
    if (!rows.some((row) => row.id === this.selected)) this.selected = "run";
    const [start, end] = window(rows);
    const span = end - start;
    const step = tickStep(span);
    this.element.style.setProperty("--tick", `${(step / span) * 100}%`);
    this.renderAxis(span, step);
    const nodes = [...this.list.children];
    if (nodes.length === rows.length && nodes.every((node, i) => node.dataset.row === rows[i].id)) {
      // The same rows as before (a live tick): update them in place, keeping hover and focus.
      rows.forEach((row, i) => this.update(nodes[i], row, start, span));
      return;
    }
    const focused = this.list.contains(document.activeElement);
    fill(
      this.list,
      rows.map((row) => this.row(row, start, span)),
    );
    if (focused) this.list.querySelector('[aria-selected="true"]')?.focus();
  }

  update(node, row, start, span) {
    node.dataset.status = row.status;
    node.firstChild.replaceWith(this.name(row));
    fill(node.lastChild, bars(row, start, span));
  }

  renderAxis(span, step) {
    const ticks = [];
    for (let t = 0; t <= span; t += step) {
      ticks.push(
        h("span", { class: "wf-tick", style: { left: `${(t / span) * 100}%` } }, t ? duration(t) : "0"),
      );
    }
    fill(
      this.axis,
      h("div", { class: "wf-name muted" }, "Operation"),
      h("div", { class: "wf-track" }, ticks),
    );
  }

  row(row, start, span) {
    const selected = row.id === this.selected;
    const node = h(
      "div",
      {
        class: ["wf-row", `kind-${row.kind}`],
        role: "option",
        tabindex: selected ? 0 : -1,
        "aria-selected": String(selected),
        "data-row": row.id,
        "data-status": row.status,
        style: { "--depth": row.depth },
      },
      this.name(row),
      h("div", { class: "wf-track" }, bars(row, start, span)),
    );
    node.addEventListener("click", () => this.select(row.id));
    node.addEventListener("dblclick", () => row.childId && this.onOpen(row));
    return node;
  }

  name(row) {
    const tone = row.tone;
    const badges = [];
    if (row.tries > 1)
      badges.push(h("span", { class: "pill warn", title: `${row.tries} tries` }, `×${row.tries}`));
    if (row.kind === "step" && row.status === "failed")
      badges.push(h("span", { class: "pill warn" }, "failed"));
    const open =
      row.childId &&
      h(
        "a",
        {
          class: "wf-open",
          href: `/runs/${row.childId}`,
          "data-link": true,
          title: "Open the child run",
          "aria-label": `Open child run ${row.childId}`,
          tabindex: -1,
        },
        icon("open", 13),
      );
    return h(
      "div",
      { class: "wf-name", style: { "--tone": toneColor(tone) } },
      icon(ICON[row.kind] ?? "step", 14),
      h("span", { class: "wf-label", title: row.label }, row.label),
      badges,
      open,
      row.key && h("span", { class: "wf-key" }, keyText(row.key)),
    );
  }

  select(id, { focus = false } = {}) {
    this.selected = id;
    for (const node of this.list.children) {
      const on = node.dataset.row === id;
      node.setAttribute("aria-selected", String(on));
      node.tabIndex = on ? 0 : -1;
      if (on && focus) {
        node.focus();
        node.scrollIntoView({ block: "nearest" });
      }
    }
    this.onSelect(this.rows.find((row) => row.id === id));
  }

  onKey(event) {
    const at = this.rows.findIndex((row) => row.id === this.selected);
    const moves = { ArrowDown: 1, ArrowUp: -1, Home: -Infinity, End: Infinity };
    if (event.key in moves) {
      event.preventDefault();
      const next = Math.max(0, Math.min(this.rows.length - 1, at + moves[event.key]));
      this.select(this.rows[Number.isFinite(next) ? next : 0].id, { focus: true });
    } else if (event.key === "Enter" && this.rows[at]?.childId) {
      this.onOpen(this.rows[at]);
    }
  }
}

export function toneColor(tone) {
  return tone === "accent" ? "var(--accent)" : `var(--${tone ?? "gray"})`;
}

function bars(row, start, span) {
  if (row.start === null || row.start === undefined) return null;
  const left = ((row.start - start) / span) * 100;
  const right = (((row.end ?? row.start) - start) / span) * 100;
  const tone = toneColor(row.tone);
  const parts = [];
  if (row.segments?.length) {
    parts.push(
      row.segments.map((segment) =>
        h("span", {
          class: ["wf-segment", segment.quiet && "quiet"],
          title: `${statusInfo(segment.status).label} · ${duration(segment.end - segment.start)}`,
          style: {
            left: pct(((segment.start - start) / span) * 100),
            width: pct(((segment.end - segment.start) / span) * 100),
            "--tone": toneColor(segment.tone),
          },
        }),
      ),
    );
  } else if (row.marker) {
    parts.push(h("span", { class: "wf-marker", style: { left: pct(left), "--tone": tone } }));
  } else {
    parts.push(
      h("span", {
        class: ["wf-bar", row.pending && "pending", row.live && "live"],
        style: { left: pct(left), width: pct(right - left), "--tone": tone },
      }),
    );
  }
  if (row.deadline && row.deadline > (row.end ?? 0)) {
    const deadline = Math.min(100, ((row.deadline - start) / span) * 100);
    parts.push(
      h("span", {
        class: "wf-deadline",
        title: "until the deadline",
        style: { left: pct(right), width: pct(Math.max(0, deadline - right)), "--tone": tone },
      }),
    );
  }
  if (!row.marker) parts.push(durationLabel(row, left, right));
  return parts;
}

function durationLabel(row, left, right) {
  const text = duration(row.shownDuration ?? (row.end ?? row.start) - row.start);
  if (right - left > 30) {
    return h("span", { class: "wf-duration inside", style: { right: pct(100 - right) } }, text);
  }
  return h("span", { class: "wf-duration", style: { left: pct(right) } }, text);
}

function pct(value) {
  return `${Math.max(0, value).toFixed(3)}%`;
}
