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
    this.axis = h("div", { class: "wf-axis" });
    this.list = h("div", { class: "wf-rows", role: "listbox", "aria-label": "Timeline" });
    this.element = h("div", { class: "waterfall" }, this.axis, this.list);
    this.list.addEventListener("keydown", (event) => this.onKey(event));
    this.zoom = null;
    this.zoomByDragging();
  }

  render(rows) {
    this.rows = rows;
    if (!rows.some((row) => row.id === this.selected)) this.selected = "run";
    const origin = window(rows)[0];
    const scale = new Scale(...(this.zoom ?? window(rows)));
    const step = tickStep(scale.span);
    this.gridLines(scale, step, origin);
    this.renderAxis(scale, step, origin);
    const nodes = [...this.list.children];
    if (nodes.length === rows.length && nodes.every((node, i) => node.dataset.row === rows[i].id)) {
      // The same rows as before (a live tick): update them in place, keeping hover and focus.
      rows.forEach((row, i) => this.update(nodes[i], row, scale));
      return;
    }
    const focused = this.list.contains(document.activeElement);
    fill(
      this.list,
      rows.map((row) => this.row(row, scale)),
    );
    if (focused) this.list.querySelector('[aria-selected="true"]')?.focus();
  }

  /** Grid lines under the bars at every tick, counted from the run's start: a repeated
   * background, shifted when zoomed in (a percentage position moves a background by that
   * share of the room it leaves, hence the division). */
  gridLines(scale, step, origin) {
    const every = (step / scale.span) * 100;
    const first = scale.x(origin + Math.ceil((scale.start - origin) / step) * step);
    this.element.style.setProperty("--tick", pct(every));
    this.element.style.setProperty("--tick-offset", pct(every < 100 ? first / (1 - every / 100) : 0));
  }

  update(node, row, scale) {
    node.dataset.status = row.status;
    node.firstChild.replaceWith(this.name(row));
    fill(node.lastChild, bars(row, scale));
  }

  /** Ticks say how far into the run they are, zoomed in or not. */
  renderAxis(scale, step, origin) {
    const ticks = [];
    const last = scale.start + scale.span - origin;
    for (let t = Math.ceil((scale.start - origin) / step) * step; t <= last; t += step) {
      const left = scale.x(origin + t);
      const label = left > 94 ? "" : t ? duration(t) : "0"; // no room for a label at the very end
      ticks.push(h("span", { class: "wf-tick", style: { left: pct(left) } }, label));
    }
    const reset = h("button", { type: "button", class: "ghost small" }, "Reset zoom");
    reset.addEventListener("click", () => this.setZoom(null));
    fill(
      this.axis,
      h("div", { class: "wf-name muted" }, this.zoom ? reset : "Drag across the axis to zoom"),
      h("div", { class: "wf-track", "aria-hidden": "true" }, ticks, this.selection),
    );
  }

  /** Dragging across the axis zooms into that stretch of the run. */
  zoomByDragging() {
    this.selection = h("span", { class: "wf-selection", hidden: true });
    let from = null;
    const at = (event) => {
      const track = this.axis.querySelector(".wf-track").getBoundingClientRect();
      return Math.min(1, Math.max(0, (event.clientX - track.left) / track.width));
    };
    this.axis.addEventListener("pointerdown", (event) => {
      if (!event.target.closest(".wf-track")) return;
      from = at(event);
      this.axis.setPointerCapture(event.pointerId);
    });
    this.axis.addEventListener("pointermove", (event) => {
      if (from === null) return;
      const to = at(event);
      this.selection.style.left = pct(Math.min(from, to) * 100);
      this.selection.style.width = pct(Math.abs(to - from) * 100);
      this.selection.hidden = false;
    });
    this.axis.addEventListener("pointerup", (event) => {
      if (from === null) return;
      const [a, b] = [from, at(event)].sort((x, y) => x - y);
      from = null;
      this.selection.hidden = true;
      const scale = new Scale(...(this.zoom ?? window(this.rows)));
      if (b - a > 0.01) this.setZoom([scale.start + a * scale.span, scale.start + b * scale.span]);
    });
  }

  setZoom(range) {
    this.zoom = range;
    this.render(this.rows);
  }

  row(row, scale) {
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
      h("div", { class: "wf-track" }, bars(row, scale)),
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

/** Where times fall on the track, in percent of its width; what is outside the window
 * (when zoomed in) is cut at its edges. */
class Scale {
  constructor(start, end) {
    this.start = start;
    this.span = Math.max(end - start, 1);
  }
  x(t) {
    return ((t - this.start) / this.span) * 100;
  }
  /** {left, width} of [from, to] on the track, or null when none of it shows. */
  extent(from, to) {
    const left = Math.max(0, this.x(from));
    const right = Math.min(100, this.x(to));
    return right < left ? null : { left: pct(left), width: pct(right - left) };
  }
}

function bars(row, scale) {
  if (row.start === null || row.start === undefined) return null;
  const end = row.end ?? row.start;
  const tone = toneColor(row.tone);
  const shape = scale.extent(row.start, end);
  const parts = [];
  if (row.segments?.length) {
    parts.push(row.segments.map((segment) => segmentBar(segment, scale)));
  } else if (row.marker) {
    if (shape) parts.push(h("span", { class: "wf-marker", style: { left: shape.left, "--tone": tone } }));
  } else if (shape) {
    const kind = ["wf-bar", row.pending && "pending", row.live && "live"];
    parts.push(h("span", { class: kind, style: { ...shape, "--tone": tone } }));
  }
  const deadline = row.deadline > end && scale.extent(end, row.deadline);
  if (deadline) {
    const style = { ...deadline, "--tone": tone };
    parts.push(h("span", { class: "wf-deadline", title: "until the deadline", style }));
  }
  if (shape && !row.marker) parts.push(durationLabel(row, scale));
  return parts;
}

function segmentBar(segment, scale) {
  const shape = scale.extent(segment.start, segment.end);
  if (!shape) return null;
  return h("span", {
    class: ["wf-segment", segment.quiet && "quiet"],
    title: `${statusInfo(segment.status).label} · ${duration(segment.end - segment.start)}`,
    style: { ...shape, "--tone": toneColor(segment.tone) },
  });
}

function durationLabel(row, scale) {
  const end = row.end ?? row.start;
  const text = duration(row.shownDuration ?? end - row.start);
  const left = Math.max(0, scale.x(row.start));
  const right = Math.min(100, scale.x(end));
  if (right - left > 30) {
    return h("span", { class: "wf-duration inside", style: { right: pct(100 - right) } }, text);
  }
  return h("span", { class: "wf-duration", style: { left: pct(right) } }, text);
}

function pct(value) {
  return `${value.toFixed(3)}%`;
}
