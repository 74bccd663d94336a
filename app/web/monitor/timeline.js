// The timeline (Gantt) of a workflow: one row per task in tree order, a bar from its start to its
// completion (to now while it runs); tasks never started say so. Rows far off screen are skipped by the
// browser (content-visibility), so long trees stay cheap.

import { badge, clock, duration, h, statusIcon, statusText } from "./util.js";

/** Where a running task's bar ends: now, unless the task was last heard of long ago (then that time). */
function runningEnd(s, now) {
  const seen = Math.max(...[s.startedAt, s.updatedAt, s.lastHeartbeatAt].filter(Boolean).map(Date.parse));
  return now - seen > 15 * 60_000 ? seen : now;
}

export function timeline(tree, onOpen, now = Date.now()) {
  const rows = [];
  const walk = (task, depth, kind) => rows.push({ task, depth, kind });
  walk(tree.meta, 0, "meta");
  for (const sub of tree.subs) {
    walk(sub, 1, "sub");
    for (const b of sub.behaviors) walk(b, 2, "behavior");
  }
  const times = [];
  for (const { task } of rows) {
    const s = task.state || {};
    if (s.startedAt) times.push(Date.parse(s.startedAt));
    if (s.completedAt) times.push(Date.parse(s.completedAt));
    if (s.startedAt && !s.completedAt && s.status === "IN_PROGRESS") times.push(runningEnd(s, now));
  }
  if (!times.length) return h("p.muted", {}, "No task of this workflow has started yet: there is nothing on the timeline.");
  const t0 = Math.min(...times);
  const t1 = Math.max(...times, t0 + 1000);
  const span = t1 - t0;
  const axis = h("div.tl-axis", { "aria-hidden": "true" },
    [0, 0.25, 0.5, 0.75, 1].map((f) => h("span", { style: { left: `${f * 100}%` } }, clock(new Date(t0 + f * span).toISOString()))));
  const body = rows.map(({ task, depth, kind }) => {
    const s = task.state || {};
    const start = s.startedAt ? Date.parse(s.startedAt) : null;
    const running = !s.completedAt && s.status === "IN_PROGRESS";
    const end = s.completedAt ? Date.parse(s.completedAt) : running ? runningEnd(s, now) : start;
    const label = h("button.tl-label", { type: "button", style: { paddingLeft: `${0.25 + depth}rem` },
      onclick: () => onOpen(task.id), title: task.id },
    h("span", { "aria-hidden": "true" }, statusIcon(s.status)), " ", task.id);
    let bar;
    if (start === null) bar = h("span.tl-none", {}, `${statusText(s.status)} · not started`);
    else {
      const left = ((start - t0) / span) * 100;
      const width = Math.max(0.4, ((end - start) / span) * 100);
      bar = h(`span.tl-bar.s-${(s.status || "").toLowerCase()}${running ? ".running" : ""}`, {
        style: { left: `${left}%`, width: `${width}%` },
        title: `${task.id}: ${statusText(s.status)}, ${clock(s.startedAt)} – ${s.completedAt ? clock(s.completedAt) : "now"}`,
      }, h("span.tl-text", {}, `${statusIcon(s.status)} ${statusText(s.status)} · ${running ? "running, last heard " + clock(new Date(end).toISOString()) : duration(s.executionTimeSeconds ?? (end - start) / 1000)}`));
    }
    return h(`div.tl-row.kind-${kind}`, { "data-id": task.id }, label, h("span.tl-track", {}, bar));
  });
  return h("div.timeline", { role: "region", "aria-label": "Timeline" },
    h("div.tl-row.tl-head", {}, h("span.tl-label", {}, "task"), h("span.tl-track", {}, axis)), body,
    h("p.muted", {}, "Legend: ", ["COMPLETED", "IN_PROGRESS", "FAILED", "RETRYING", "CANCELLED"].map((st) => [badge(st), " "])));
}
