// The monitor page: a router over the History API and the workflow view (graph or timeline, the task
// panel, live updates). Every view has its URL: /, /agents, /workflows/<id>[?view=timeline], /tasks/<id>.

import { loadOperations, request } from "./gql.js";
import { Graph, chainOrder, dependencyOrder } from "./graph.js";
import { Follower } from "./live.js";
import { timeline } from "./timeline.js";
import {
  PRIORITIES, ROOT, attempts, badge, clock, duration, h, json, lease, link, progressBar, statusBar, statusIcon, statusText, time,
} from "./util.js";
import { AgentsView, ListView, keyDialog } from "./views.js";

const viewEl = document.getElementById("view");
const liveEl = document.getElementById("live");

const STATES_EVERY_MS = 200;
const LABELS = { MonitorRetry: "retried", MonitorCancel: "cancelled", MonitorPrioritise: "priority set" };
const LIVE_TEXT = { live: "● live", reconnecting: "↻ reconnecting…", behind: "» behind, catching up", connecting: "… connecting" };

const ctx = {
  viewer: null, // { kind, scopes, agents } (MonitorViewer), null when the server refused the stored key
  viewerError: null,
  canRead: false,
  canWrite: false,
  /** Whether the caller may change a task of `agentName` (an agent-bound key only its agents'). */
  mayActOn(agentName) {
    const agents = ctx.viewer && ctx.viewer.agents;
    return ctx.canWrite && (!agents || (agentName != null && agents.includes(agentName)));
  },
  go(path, { replace = false } = {}) {
    if (replace) history.replaceState(null, "", ROOT + path); else history.pushState(null, "", ROOT + path);
    render();
  },
  live(status) {
    liveEl.hidden = !status;
    liveEl.dataset.state = status || "";
    liveEl.textContent = status ? LIVE_TEXT[status] || status : "";
  },
};

/** Who the caller is (MonitorViewer): what to show (reads) and which controls (write). */
async function loadViewer() {
  try {
    ctx.viewer = (await request("MonitorViewer")).viewer;
    ctx.viewerError = null;
  } catch (e) {
    ctx.viewer = null;
    ctx.viewerError = e.message;
  }
  const scopes = (ctx.viewer && ctx.viewer.scopes) || [];
  ctx.canRead = scopes.includes("READ");
  ctx.canWrite = scopes.includes("WRITE");
  document.body.dataset.canWrite = String(ctx.canWrite);
  document.body.dataset.canRead = String(ctx.canRead);
  const button = document.getElementById("key-button");
  const held = scopes.map((x) => x.toLowerCase()).join(", ");
  const keyed = ctx.viewer && ctx.viewer.kind !== "ANONYMOUS";
  button.textContent = keyed ? `Key: ${held || "no scope"}` : ctx.viewer && ctx.canWrite ? "Key (open server)" : "Key";
  button.title = keyed ? `A key is stored in this browser; it may: ${held || "nothing"}` : "Enter an API key";
}

/** What the page shows instead of a view when the caller may not read. */
function keyNeeded() {
  const why = ctx.viewerError
    ? `The server refused the stored key: ${ctx.viewerError}`
    : ctx.viewer && ctx.viewer.kind === "ANONYMOUS"
      ? "This server requires an API key to read workflows. Enter a key with the read scope; it is kept in this browser only."
      : `This key may not read workflows (it has: ${(ctx.viewer.scopes || []).map((x) => x.toLowerCase()).join(", ") || "no scope"}). Enter a key with the read scope.`;
  return h("section.key-needed", { "aria-labelledby": "key-needed-title" },
    h("h1#key-needed-title", {}, "An API key is needed"),
    h("p", { role: "alert" }, why),
    h("p", {}, h("button", { type: "button", "data-action": "enter-key", onclick: () => openKey() }, "Enter a key")));
}

/** Kind-specific names for a tree's nodes, and the tree in display order. */
function shapeTree(meta) {
  const subs = chainOrder(meta.subTasks).map((s) => ({ ...s, behaviors: dependencyOrder(s.behaviorTasks) }));
  return { meta, subs };
}

function eventSummary(e) {
  switch (e.type) {
    case "STATUS_CHANGED": return `${statusIcon(e.fromStatus)} ${statusText(e.fromStatus)} → ${statusIcon(e.toStatus)} ${statusText(e.toStatus)}`;
    case "TASK_PROGRESS": return `progress ${Math.round((e.progress || 0) * 100)} %${e.details ? ` — ${e.details}` : ""}`;
    case "TASK_COMPLETED": return `completed${e.result && Object.keys(e.result).length ? ` → ${JSON.stringify(e.result)}` : ""}`;
    case "TASK_FAILED": return `failed${e.isFinal ? " (final)" : ""}: ${e.error}${e.details ? ` — ${e.details}` : ""}`;
    case "TOOL_CALL": return `⚙ call ${e.toolName}(${JSON.stringify(e.toolArgs || {})})${e.correlationId ? ` #${e.correlationId}` : ""}`;
    case "TOOL_RESULT": return `⚙ result ${e.toolName}: ${e.toolStatus}${e.errorMessage ? ` — ${e.errorMessage}` : ""}${e.toolResult !== null && e.toolResult !== undefined ? ` → ${JSON.stringify(e.toolResult)}` : ""}`;
    case "MEMORY_OPERATION": return `▤ memory ${e.operation} “${e.keyOrQuery}”: ${e.memoryStatus}${e.message ? ` — ${e.message}` : ""}`;
    case "TASK_CREATED": return `created (${(e.taskKind || "").toLowerCase()}, ${statusText(e.status)})`;
    case "TASK_UPDATED": return `updated ${(e.fields || []).join(", ")}`;
    case "TASK_DELETED": return `deleted ${(e.deletedIds || []).join(", ")}`;
    case "TASK_FINALIZED": return "finalized";
    case "LEASE_EXPIRED": return `lease of ${e.holder || "?"} ran out (attempt ${e.attempt})`;
    case "TASK_TIMED_OUT": return `⏱ ${(e.kind || "").toLowerCase().replace(/_/g, "-")} timeout${e.timeoutSeconds ? ` of ${e.timeoutSeconds} s` : ""} ran out (attempt ${e.attempt})`;
    default: return e.type;
  }
}

function actorText(a) {
  if (!a) return "";
  return `${a.kind.toLowerCase()}${a.name || a.id ? " " + (a.name || a.id) : ""}`;
}

class WorkflowView {
  constructor(workflowId) {
    this.workflowId = workflowId;
    this.byId = new Map();
    this.dirty = new Set();
    this.mode = "graph";
    this.taskId = null;
    this.root = h("section.workflow", { "aria-labelledby": "wf-title" });
    this.graph = new Graph({ onOpen: (id) => ctx.go(`/tasks/${encodeURIComponent(id)}`) });
    this.metrics = { applied: 0 };
  }

  async mount(view, { taskId, mode }) {
    view.replaceChildren(this.root);
    ctx.live("connecting");
    this.head = h("div.wf-head");
    this.tabs = h("nav.tabs", { "aria-label": "Workflow views" });
    this.body = h("div.wf-body");
    this.panel = h("aside.panel", { "aria-label": "Task", hidden: true, tabindex: "-1" });
    this.root.append(this.head, this.tabs, h("div.wf-main", {}, this.body, this.panel));
    try {
      await this.loadTree();
    } catch (e) {
      this.root.replaceChildren(h("p.error", { role: "alert" }, e.message));
      ctx.live(null);
      return;
    }
    window.monitorFirstPaint = performance.now();
    this.route({ taskId, mode });
    this.follower = new Follower(this.workflowId, {
      onEvents: (events, live) => this.onEvents(events, live),
      onStatus: (s) => ctx.live(s),
    });
    window.monitorDebug = { view: this, follower: this.follower };
    this.follower.start().catch((e) => ctx.live("reconnecting") || console.warn(e));
    this.ticker = setInterval(() => { this.graph.tickLeases(); this.tickPanel(); }, 1000);
    this.onKey = (e) => {
      if (e.key === "Escape" && this.taskId && !document.querySelector("dialog[open]")) { e.preventDefault(); this.closePanel(); }
    };
    document.addEventListener("keydown", this.onKey);
  }

  unmount() {
    if (this.onKey) document.removeEventListener("keydown", this.onKey);
    if (this.follower) this.follower.stop();
    clearInterval(this.ticker);
  }

  async loadTree() {
    const data = await request("MonitorTree", { id: this.workflowId });
    const meta = data.metaWorkflowTask;
    if (!meta) throw new Error(`There is no workflow ${this.workflowId}.`);
    this.tree = shapeTree(meta);
    this.byId = new Map([[meta.id, meta]]);
    for (const s of this.tree.subs) { this.byId.set(s.id, s); for (const b of s.behaviors) this.byId.set(b.id, b); }
    this.progress = meta.progress;
    this.renderHead();
    this.graph.setTree(this.tree);
  }

  renderHead() {
    const meta = this.tree.meta, s = meta.state || {};
    this.head.replaceChildren(
      h("p.crumbs", {}, link("/", "Workflows"), " › "),
      h("h1#wf-title", {}, s.name || meta.id, " ", badge(s.status)),
      h("p.muted.small", {}, `${meta.id} · ${meta.metaWorkflowId} · agent ${s.agentName || "—"} · created ${time(s.createdAt)}`),
      h("div.wf-progress", { "data-percentage": this.progress.percentage },
        progressBar(this.progress.percentage, "workflow progress"), statusBar(this.progress.counts, this.progress.total),
        h("span.muted.small", {}, ` ${this.progress.total} tasks`)));
  }

  route({ taskId, mode }) {
    const newMode = mode || "graph";
    const wfPath = `/workflows/${encodeURIComponent(this.workflowId)}`;
    this.tabs.replaceChildren(
      link(wfPath, "Graph"), link(`${wfPath}?view=timeline`, "Timeline"));
    const [g, t] = this.tabs.children;
    (newMode === "timeline" ? t : g).setAttribute("aria-current", "page");
    if (newMode !== this.mode || !this.body.firstChild) {
      this.mode = newMode;
      this.drawBody();
    }
    if (taskId) this.openPanel(taskId); else if (this.taskId) this.hidePanel();
  }

  drawBody() {
    if (this.mode === "timeline") {
      this.body.replaceChildren(timeline(this.tree, (id) => ctx.go(`/tasks/${encodeURIComponent(id)}?view=timeline`)));
    } else {
      this.body.replaceChildren(h("p.muted.small.hint", {}, "Keyboard: Tab to the graph, arrows move between tasks, Enter opens one, Escape closes it, + / − folds a sub-task."),
        this.graph.root);
      this.graph.root.setAttribute("aria-label", "Workflow graph");
      this.graph.root.setAttribute("role", "group");
      this.graph.root.tabIndex = 0;
      this.graph.root.onfocus = (e) => { if (e.target === this.graph.root) this.graph.enter(); };
      this.graph.draw();
    }
  }

  onEvents(events, live) {
    let structural = false;
    for (const e of events) {
      const task = this.byId.get(e.taskId);
      if (["TASK_CREATED", "TASK_DELETED"].includes(e.type) || (e.type === "TASK_UPDATED" && !task)) structural = structural || live;
      if (!live) continue;
      if (task && task.state) { // shown at once; the state read below brings the rest
        if (e.type === "STATUS_CHANGED") task.state.status = e.toStatus;
        if (e.type === "TASK_PROGRESS" && typeof e.progress === "number") task.state.progressPercentage = Math.round(e.progress * 100);
      }
      this.dirty.add(e.taskId);
    }
    if (live && events.length) {
      this.graph.refresh(events.map((e) => e.taskId));
      this.scheduleStates();
    }
    if (structural) this.scheduleTree();
    if (this.taskId && events.some((e) => e.taskId === this.taskId)) this.renderLog();
  }

  scheduleStates() {
    // At most one state read every STATES_EVERY_MS (an event's status and progress are drawn at once):
    // 20 events a second cost 5 reads a second, not 20, of a key's read budget.
    if (this.statesTimer) return;
    const wait = Math.max(20, (this.lastStates || 0) + STATES_EVERY_MS - performance.now());
    this.statesTimer = setTimeout(() => { this.statesTimer = null; this.lastStates = performance.now(); this.fetchStates(); }, wait);
  }

  async fetchStates() {
    const ids = [...this.dirty].slice(0, 100);
    ids.forEach((id) => this.dirty.delete(id));
    if (this.dirty.size) this.scheduleStates();
    if (!ids.length) return;
    let data;
    try {
      data = await request("MonitorStates", { workflowId: this.workflowId, filter: { _id: { $in: ids } }, first: 100 });
    } catch (e) {
      ids.forEach((id) => this.dirty.add(id));
      setTimeout(() => this.scheduleStates(), 1000);
      return;
    }
    const changed = [];
    for (const { node } of data.agentTasks.edges) {
      const task = this.byId.get(node.id);
      if (task) { task.state = node; changed.push(node.id); }
    }
    if (data.metaWorkflowTask) this.progress = data.metaWorkflowTask.progress;
    this.renderHead();
    this.graph.refresh(changed);
    if (this.mode === "timeline") this.scheduleTimeline();
    if (this.taskId && changed.includes(this.taskId)) this.renderPanelState();
    this.metrics.applied += changed.length;
  }

  scheduleTimeline() {
    if (this.timelineTimer) return;
    this.timelineTimer = setTimeout(() => { this.timelineTimer = null; if (this.mode === "timeline") this.drawBody(); }, 500);
  }

  scheduleTree() {
    clearTimeout(this.treeTimer);
    this.treeTimer = setTimeout(async () => {
      try { await this.loadTree(); if (this.mode === "timeline") this.drawBody(); } catch (e) { /* the next event tries again */ }
    }, 300);
  }

  // --- The task panel ---

  async openPanel(taskId) {
    this.taskId = taskId;
    this.outputShown = false;
    this.actionResult = "";
    this.chosenPriority = null;
    this.panel.hidden = false;
    document.body.classList.add("panel-open");
    this.panel.replaceChildren(h("p.muted", {}, "Loading…"));
    this.graph.focusId = taskId;
    if (this.mode === "graph") this.graph.focus(taskId, true);
    try {
      const data = await request("MonitorTask", { id: taskId });
      if (this.taskId !== taskId) return;
      this.detail = data.agentTask;
    } catch (e) {
      this.detail = null;
    }
    const task = this.byId.get(taskId);
    if (task && this.detail) task.state = { ...task.state, ...this.detail };
    this.panel.replaceChildren(
      h("div.panel-head", {},
        h("h2#panel-title", {}, taskId),
        h("button.close", { type: "button", "aria-label": "Close the task panel", onclick: () => this.closePanel() }, "✕")),
      this.stateBox = h("div.panel-state"),
      this.actionsBox = h("div.panel-actions"),
      h("h3", {}, "Output"),
      this.outputBox = h("div.panel-output", { tabindex: "-1" }, h("button", { type: "button", onclick: () => this.showOutput() }, "Show the output document")),
      h("h3", {}, "Events ", h("span.muted.small", {}, "(oldest first, live)")),
      this.logBox = h("ol.log", { role: "log", "aria-label": `Events of ${taskId}` }));
    this.panel.setAttribute("aria-labelledby", "panel-title");
    this.renderPanelState();
    this.renderLog();
    this.panel.focus();
  }

  renderPanelState() {
    // A state change that lands while the panel is still loading has nothing to redraw yet (openPanel
    // draws the state once the panel is built): an event during the first load found no stateBox.
    if (!this.stateBox || !this.panel.contains(this.stateBox)) return;
    // A redraw (each state read) must not take the focus from a keyboard user inside the panel: the
    // element focused is found again by its id, action or link after the redraw.
    const focused = this.panel.contains(document.activeElement) && document.activeElement !== this.panel ? document.activeElement : null;
    const key = focused && (focused.id ? `#${focused.id}` : focused.dataset.action ? `[data-action="${focused.dataset.action}"]`
      : focused.getAttribute("href") ? `a[href="${focused.getAttribute("href")}"]` : focused.classList.contains("action-result") ? ".action-result" : null);
    this.drawPanelState();
    if (key && !document.body.contains(focused)) {
      const again = this.panel.querySelector(key);
      if (again) again.focus();
    }
  }

  drawPanelState() {
    const task = this.byId.get(this.taskId);
    const s = (task && task.state) || this.detail || {};
    const d = this.detail || {};
    const fact = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
    this.stateBox.replaceChildren(...[
      h("p", {}, badge(s.status), " ", h("span.prio", {}, s.priority || "")),
      progressBar(s.progressPercentage, "task progress"),
      h("dl.facts", {},
        fact("kind", (d.taskKind || "").toLowerCase().replace("_", " ") || "—"),
        fact("name", s.name || "—"),
        d.description ? fact("description", d.description) : null,
        fact("agent", s.agentName || "—"),
        fact("attempts", attempts(s)),
        fact("current step", s.currentStep || "—"),
        fact("lease", h("span", { "data-panel-lease": "" }, lease(s) || "none")),
        fact("started", time(s.startedAt)),
        fact("completed", time(s.completedAt)),
        fact("execution", duration(s.executionTimeSeconds)),
        fact("updated", time(s.updatedAt)),
        fact("version", String(s.version ?? "—"))),
      s.lastError ? h("div.last-error", { role: "note" }, h("strong", {}, "⚠ Last error: "), s.lastError.message,
        h("span.muted.small", {}, ` (${time(s.lastError.timestamp)})`),
        s.lastError.details ? h("details", {}, h("summary", {}, "details"), h("pre", {}, s.lastError.details)) : null) : null,
      h("h3", {}, "Dependencies"),
      (s.dependencies || []).length ? h("ul.deps", {}, s.dependencies.map((dep) => h("li", { "data-met": String(dep.satisfied) },
        h("span", { "aria-hidden": "true" }, dep.satisfied ? "✓ " : "✕ "),
        link(`/tasks/${encodeURIComponent(dep.taskId)}`, dep.taskId),
        ` must be ${statusText(dep.expectedStatus)} — ${dep.satisfied ? "met" : "unmet"}`)))
        : h("p.muted.small", {}, "none"),
      d.inputParameters && Object.keys(d.inputParameters).length ? h("details", {}, h("summary", {}, "input parameters"), json(d.inputParameters)) : null,
    ].filter(Boolean));
    this.renderActions(s);
  }

  renderActions(s) {
    if (!ctx.mayActOn(s.agentName)) { this.actionsBox.replaceChildren(); return; }
    const done = ["COMPLETED", "FAILED", "CANCELLED"].includes(s.status);
    // The outcome of the last action stays across redraws (the state an action returns redraws the
    // panel); the focus goes to it, so a keyboard user whose button went away is not sent to the top.
    const result = h("p.small.action-result", { role: "status", tabindex: "-1" }, this.actionResult || "");
    const act = async (name, vars) => {
      result.textContent = "…";
      const taskId = this.taskId;
      try {
        const data = await request(name, { id: taskId, version: s.version, ...vars });
        const answer = Object.values(data)[0];
        this.actionResult = answer.__typename.endsWith("Success") ? `Done: ${LABELS[name]}.` : `${answer.__typename}: ${answer.message || ""}`;
        if (answer.__typename.endsWith("Success")) this.chosenPriority = null;
        if (answer.state) { const task = this.byId.get(taskId); if (task) task.state = answer.state; this.graph.refresh([taskId]); }
      } catch (e) { this.actionResult = e.message; }
      if (this.taskId !== taskId) return;
      this.renderPanelState();
      const shown = this.actionsBox.querySelector(".action-result");
      if (shown) shown.focus();
    };
    // A priority chosen but not yet set survives the redraws of live state reads.
    const priority = h("select#priority", { "aria-label": "Priority", onchange: (e) => { this.chosenPriority = e.target.value; } },
      PRIORITIES.map((p) => h("option", { value: p, selected: p === (this.chosenPriority || s.priority) }, p.toLowerCase())));
    this.actionsBox.replaceChildren(h("h3", {}, "Actions"), h("div.buttons", { role: "group", "aria-label": "Actions" },
      ["FAILED", "CANCELLED"].includes(s.status) ? h("button", { type: "button", "data-action": "retry", onclick: () => act("MonitorRetry", {}) }, "↻ Retry") : null,
      !done ? h("button", { type: "button", "data-action": "cancel", onclick: () => act("MonitorCancel", { reason: "cancelled from the monitor" }) }, "⊘ Cancel") : null,
      h("span.prio-form", {}, priority, h("button", { type: "button", "data-action": "prioritise", onclick: () => act("MonitorPrioritise", { priority: priority.value }) }, "Set priority"))),
    result);
  }

  async showOutput() {
    this.outputBox.replaceChildren(h("p.muted", {}, "Loading…"));
    try {
      const data = await request("MonitorOutput", { id: this.taskId });
      const task = data.agentTask && data.agentTask.task;
      const output = task && task.output;
      this.outputBox.replaceChildren(output ? json(output) : h("p.muted", {}, "This task has no output document."));
      this.outputBox.focus();
    } catch (e) {
      this.outputBox.replaceChildren(h("p.error", {}, e.message));
    }
  }

  renderLog() {
    // Appends the task's events not yet in the log, each once (by cursor), in the follower's order
    // (commit order); "No events yet." until the first.
    if (!this.logBox || !this.follower) return;
    if (this.logBox.dataset.task !== this.taskId) { this.logBox.dataset.task = this.taskId; this.logCursors = new Set(); }
    const fresh = this.follower.events.filter((e) => e.taskId === this.taskId && !this.logCursors.has(e.cursor));
    if (!fresh.length) {
      if (!this.logBox.children.length) this.logBox.append(h("li.muted.empty", {}, "No events yet."));
      return;
    }
    const empty = this.logBox.querySelector("li.empty");
    if (empty) empty.remove();
    for (const e of fresh) {
      this.logCursors.add(e.cursor);
      this.logBox.append(h(`li.ev.ev-${e.type.toLowerCase()}`, { "data-cursor": e.cursor },
        h("time", { datetime: e.timestamp, title: time(e.timestamp) }, clock(e.timestamp)), " ",
        h("span.ev-type", {}, e.type), " ", h("span.ev-text", {}, eventSummary(e)),
        h("span.ev-actor.muted.small", {}, ` — ${actorText(e.actor)}${e.agentId ? ` · agent ${e.agentId}` : ""}`)));
    }
  }

  tickPanel() {
    if (!this.taskId || this.panel.hidden) return;
    const span = this.panel.querySelector("[data-panel-lease]");
    const task = this.byId.get(this.taskId);
    if (span && task) span.textContent = lease(task.state) || "none";
  }

  hidePanel() {
    this.taskId = null;
    this.panel.hidden = true;
    document.body.classList.remove("panel-open");
  }

  closePanel() {
    const id = this.taskId;
    ctx.go(`/workflows/${encodeURIComponent(this.workflowId)}${this.mode === "timeline" ? "?view=timeline" : ""}`);
    if (this.mode === "graph" && id) this.graph.focus(id);
  }
}

let current = null; // {kind, view}

async function render() {
  const path = location.pathname.slice(ROOT.length) || "/";
  if (!ctx.canRead) {
    show("none", null);
    document.title = "Key needed · agent-tasks";
    viewEl.replaceChildren(keyNeeded());
    return;
  }
  const params = new URLSearchParams(location.search);
  const mode = params.get("view") || "graph";
  let m;
  if ((m = /^\/workflows\/([^/]+)$/.exec(path))) {
    const id = decodeURIComponent(m[1]);
    if (current && current.kind === "workflow" && current.view.workflowId === id) { current.view.route({ mode }); return; }
    return show("workflow", new WorkflowView(id), { mode });
  }
  if ((m = /^\/tasks\/([^/]+)$/.exec(path))) {
    const taskId = decodeURIComponent(m[1]);
    if (current && current.kind === "workflow" && current.view.byId.has(taskId)) { current.view.route({ taskId, mode }); return; }
    let workflowId = null;
    try {
      const data = await request("MonitorTask", { id: taskId });
      workflowId = data.agentTask && data.agentTask.workflowId;
    } catch (e) { /* shown below */ }
    if (!workflowId) {
      show("none", null);
      viewEl.replaceChildren(h("p.error", { role: "alert" }, `There is no task ${taskId} in a workflow.`), link("/", "All workflows"));
      return;
    }
    return show("workflow", new WorkflowView(workflowId), { taskId, mode });
  }
  if (path === "/agents") return show("agents", new AgentsView(ctx));
  return show("list", new ListView(ctx, params));
}

async function show(kind, view, options) {
  if (current && current.view) current.view.unmount();
  current = { kind, view };
  ctx.live(null);
  if (view) {
    document.title = kind === "workflow" ? `${view.workflowId} · agent-tasks` : kind === "agents" ? "Agents · agent-tasks" : "agent-tasks";
    await view.mount(viewEl, options || {});
  }
}

document.addEventListener("click", (e) => {
  const a = e.target.closest && e.target.closest("a[data-route]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  ctx.go(a.getAttribute("href").slice(ROOT.length) || "/");
});
window.addEventListener("popstate", () => render());

const openKey = keyDialog(async () => {
  await loadViewer();
  if (current && current.view) current.view.unmount();
  current = null;
  render();
});
document.getElementById("key-button").addEventListener("click", openKey);

await loadOperations();
await loadViewer();
await render();
