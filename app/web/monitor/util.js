// Small helpers shared by the views: elements, statuses (colour AND icon AND text), times.

export const ROOT = document.body.dataset.root || "";

/** h("div.cls", {attrs}, ...children): an element; strings become text nodes (never HTML). */
export function h(tag, attrs, ...children) {
  const [head, ...classes] = tag.split(".");
  const [name, id] = head.split("#");
  const node = document.createElement(name || "div");
  if (id) node.id = id;
  if (classes.length) node.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "style") Object.assign(node.style, value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

export const STATUSES = [
  "PENDING", "AWAITING_DEPENDENCY", "IN_PROGRESS", "RETRYING", "PAUSED", "COMPLETED", "FAILED", "CANCELLED",
];

// Every status has an icon and words, so colour is never the only sign.
const STATUS = {
  PENDING: ["○", "Pending"],
  AWAITING_DEPENDENCY: ["‖", "Blocked"],
  IN_PROGRESS: ["▶", "In progress"],
  RETRYING: ["↻", "Retrying"],
  PAUSED: ["⏸", "Paused"],
  COMPLETED: ["✓", "Completed"],
  FAILED: ["✕", "Failed"],
  CANCELLED: ["⊘", "Cancelled"],
};

export function statusIcon(status) { return (STATUS[status] || ["?"])[0]; }
export function statusText(status) { return (STATUS[status] || [null, status || "unknown"])[1]; }

/** A badge: the icon (hidden from screen readers) and the words, on the status's colour. */
export function badge(status) {
  return h(`span.badge.s-${(status || "unknown").toLowerCase()}`, { "data-status": status },
    h("span", { "aria-hidden": "true" }, statusIcon(status)), " ", statusText(status));
}

export const PRIORITIES = ["LOW", "MEDIUM", "HIGH", "URGENT"];

export function time(value) {
  if (!value) return "—";
  const d = new Date(value);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function clock(value) {
  if (!value) return "—";
  return new Date(value).toLocaleTimeString(undefined, { hour12: false });
}

/** "3 min ago", "in 12 s" */
export function ago(value, now = Date.now()) {
  if (!value) return "—";
  const seconds = Math.round((now - new Date(value).getTime()) / 1000);
  const abs = Math.abs(seconds);
  const text = abs < 60 ? `${abs} s` : abs < 3600 ? `${Math.round(abs / 60)} min`
    : abs < 86400 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`;
  return seconds >= 0 ? `${text} ago` : `in ${text}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/** The lease's holder and what is left of it, or null without a lease. */
export function lease(state, now = Date.now()) {
  if (!state || !state.leaseHolder) return null;
  if (!state.leaseExpiresAt) return `lease ${state.leaseHolder}`;
  const left = Math.round((new Date(state.leaseExpiresAt).getTime() - now) / 1000);
  return left >= 0 ? `lease ${state.leaseHolder} · ${left} s left` : `lease ${state.leaseHolder} · ran out`;
}

export function attempts(state) {
  if (!state) return "";
  return `attempt ${state.attempts}/${state.maxAttempts ?? "∞"}`;
}

/** A progress bar that also says its number. */
export function progressBar(percent, label) {
  const value = Math.max(0, Math.min(100, Math.round(percent || 0)));
  return h("span.progress", { role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": value, "aria-label": label || "progress" },
  h("span.progress-fill", { style: { width: `${value}%` } }), h("span.progress-text", {}, `${value} %`));
}

/** Counts per status as one stacked bar, with the counts written out beside it. */
export function statusBar(counts, total) {
  const sum = total || counts.reduce((n, c) => n + c.count, 0) || 1;
  const bar = h("span.stack", { "aria-hidden": "true" },
    counts.filter((c) => c.count > 0).map((c) => h(`span.s-${c.status.toLowerCase()}`,
      { style: { width: `${(100 * c.count) / sum}%` }, title: `${statusText(c.status)}: ${c.count}` })));
  const words = h("span.counts", {}, counts.filter((c) => c.count > 0).map((c) =>
    h("span.count", { "data-status": c.status },
      h("span", { "aria-hidden": "true" }, statusIcon(c.status)), ` ${c.count} ${statusText(c.status).toLowerCase()}`)));
  return h("span.rollup", {}, bar, words);
}

export function json(value) {
  return h("pre.json", {}, JSON.stringify(value, null, 2));
}

export function link(path, ...children) {
  return h("a", { href: ROOT + path, "data-route": true }, ...children);
}
