// The workflows list, the agents view and the key dialog.

import { authorization, request, setKey } from "./gql.js";
import { Activity } from "./live.js";
import {
  PRIORITIES, STATUSES, ROOT, ago, badge, duration, h, link, progressBar, statusBar, statusIcon, statusText, time,
} from "./util.js";

const PAGE = 20;

/** The workflows list: newest first, paged, by status and agent; updated live (MonitorActivity). */
export class ListView {
  constructor(ctx, params) {
    this.ctx = ctx;
    this.status = params.get("status") || "";
    this.agent = params.get("agent") || "";
    this.after = params.get("after") || null;
    this.lastChange = new Map();
    this.root = h("section.list", { "aria-labelledby": "list-title" });
  }

  async mount(view) {
    view.replaceChildren(this.root);
    this.root.append(h("h1#list-title", {}, "Workflows"), this.filters(), h("div.list-body", { "aria-live": "off" }, h("p.muted", {}, "Loading…")));
    await this.load();
    this.activity = new Activity({
      onEvent: (e) => {
        if (e.workflowId) {
          const prev = this.lastChange.get(e.workflowId);
          if (!prev || prev < e.timestamp) this.lastChange.set(e.workflowId, e.timestamp);
        }
        this.scheduleLoad();
      },
      onGap: () => this.scheduleLoad(),
      onStatus: (s) => this.ctx.live(s === "live" ? "live" : s),
    });
    this.activity.start();
  }

  unmount() { if (this.activity) this.activity.stop(); clearTimeout(this.timer); }

  scheduleLoad() {
    if (this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; this.load(); }, 300);
  }

  filters() {
    const status = h("select#f-status", { name: "status" }, h("option", { value: "" }, "any status"),
      STATUSES.map((s) => h("option", { value: s, selected: s === this.status }, `${statusIcon(s)} ${statusText(s)}`)));
    this.agentSelect = h("select#f-agent", { name: "agent" }, h("option", { value: "" }, "any agent"),
      this.agent ? h("option", { value: this.agent, selected: true }, this.agent) : null);
    request("MonitorAgents", { first: 100 }).then((data) => {
      for (const a of data.agentsStats) {
        if (a.agentName !== this.agent) this.agentSelect.append(h("option", { value: a.agentName }, a.agentName));
      }
    }).catch(() => {});
    const form = h("form.filters", { role: "search", onsubmit: (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      if (status.value) q.set("status", status.value);
      if (this.agentSelect.value) q.set("agent", this.agentSelect.value);
      this.ctx.go(`/${q.toString() ? "?" + q : ""}`);
    } },
    h("label", { for: "f-status" }, "Status "), status, " ",
    h("label", { for: "f-agent" }, "Agent "), this.agentSelect, " ",
    h("button", { type: "submit" }, "Filter"));
    status.addEventListener("change", () => form.requestSubmit());
    this.agentSelect.addEventListener("change", () => form.requestSubmit());
    return form;
  }

  async load() {
    const body = this.root.querySelector(".list-body");
    let data;
    try {
      data = await request("MonitorWorkflows", {
        status: this.status ? [this.status] : null, agentName: this.agent || null, first: PAGE, after: this.after,
      });
    } catch (e) {
      body.replaceChildren(h("p.error", { role: "alert" }, `Could not load workflows: ${e.message}`));
      return;
    }
    const conn = data.agentTasks;
    const now = Date.now();
    const rows = conn.edges.map(({ node }) => {
      const wf = node.task && node.task.__typename === "MetaWorkflowTask" ? node.task : null;
      const p = wf ? wf.progress : { total: 0, percentage: 0, counts: [] };
      const live = this.lastChange.get(node.id);
      const last = live && (!node.updatedAt || live > node.updatedAt) ? live : node.updatedAt;
      return h("tr", { "data-id": node.id, "data-status": node.status },
        h("td", { "data-label": "Workflow" }, link(`/workflows/${encodeURIComponent(node.id)}`, h("strong", {}, node.name || node.id)),
          node.name ? h("div.muted.small", {}, node.id) : null),
        h("td", { "data-label": "Status" }, badge(node.status)),
        h("td.roll", { "data-label": "Progress" }, progressBar(p.percentage, `${node.id} progress`), statusBar(p.counts, p.total),
          h("span.muted.small", {}, ` ${p.total} tasks`)),
        h("td", { "data-label": "Agent" }, node.agentName || "—"),
        h("td", { "data-label": "Age", title: time(node.createdAt) }, ago(node.createdAt, now).replace(" ago", "")),
        h("td", { "data-label": "Last change", title: time(last), "data-last": last || "" }, ago(last, now)));
    });
    const table = h("table.workflows", {},
      h("caption.sr", {}, "Workflows, newest first"),
      h("thead", {}, h("tr", {}, ["Workflow", "Status", "Progress", "Agent", "Age", "Last change"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows));
    const q = new URLSearchParams();
    if (this.status) q.set("status", this.status);
    if (this.agent) q.set("agent", this.agent);
    const pager = h("nav.pager", { "aria-label": "Pages" },
      h("span.muted", {}, `${conn.totalCount} workflow${conn.totalCount === 1 ? "" : "s"}`),
      this.after ? link(`/${q.toString() ? "?" + q : ""}`, "« First page") : null,
      conn.pageInfo.hasNextPage ? link(`/?${new URLSearchParams([...q, ["after", conn.pageInfo.endCursor]])}`, "Next page ▶") : null);
    body.replaceChildren(rows.length ? table : h("p.muted", {}, "No workflow matches."), pager);
  }
}

/** Per-agent statistics as small charts (MonitorAgents). */
export class AgentsView {
  constructor(ctx) { this.ctx = ctx; this.root = h("section.agents", { "aria-labelledby": "agents-title" }); }

  async mount(view) {
    view.replaceChildren(this.root);
    this.ctx.live(null);
    this.root.append(h("h1#agents-title", {}, "Agents"));
    let data;
    try { data = await request("MonitorAgents", { first: 100 }); } catch (e) {
      this.root.append(h("p.error", { role: "alert" }, `Could not load agents: ${e.message}`));
      return;
    }
    if (!data.agentsStats.length) this.root.append(h("p.muted", {}, "No agent has tasks yet."));
    this.root.append(h("div.cards", {}, data.agentsStats.map((a) => this.card(a))));
  }

  unmount() {}

  card(a) {
    const maxP = Math.max(1, ...a.byPriority.map((p) => p.count));
    const byPriority = new Map(a.byPriority.map((p) => [p.priority, p.count]));
    const pct = (v) => (v === null || v === undefined ? "—" : `${Math.round(v * 100)} %`);
    return h("article.card", { "data-agent": a.agentName, "aria-labelledby": `agent-${a.agentName}` },
      h("h2", { id: `agent-${a.agentName}` }, link(`/?agent=${encodeURIComponent(a.agentName)}`, a.agentName)),
      h("p.small", {}, `${a.total} tasks · ${a.tasksRetried} retried · ${a.averageAttemptsPerTask?.toFixed?.(2) ?? "—"} attempts each`),
      h("h3", {}, "By status"), statusBar(a.byStatus, a.total),
      h("h3", {}, "By priority"),
      h("div.bars", { role: "img", "aria-label": PRIORITIES.map((p) => `${p} ${byPriority.get(p) || 0}`).join(", ") },
        PRIORITIES.map((p) => h("span.bar", {}, h("span.bar-fill", { style: { height: `${(100 * (byPriority.get(p) || 0)) / maxP}%` } }),
          h("span.bar-label", {}, `${p.toLowerCase()} ${byPriority.get(p) || 0}`)))),
      h("h3", {}, "Outcomes and time"),
      h("dl.facts", {},
        h("dt", {}, "success rate"), h("dd", {}, h("span.meter", {}, h("span.meter-fill", { style: { width: pct(a.successRate) === "—" ? "0%" : `${a.successRate * 100}%` } })), " ", pct(a.successRate)),
        h("dt", {}, "average"), h("dd", {}, duration(a.averageExecutionTimeSeconds)),
        h("dt", {}, "p95"), h("dd", {}, duration(a.p95ExecutionTimeSeconds))),
      h("h3", {}, "Top errors"),
      a.topErrors.length ? h("ol.errors", {}, a.topErrors.map((e) => h("li", {}, h("span.count-pill", {}, `${e.count}×`), " ", e.message)))
        : h("p.muted.small", {}, "none"));
  }
}

/** The key dialog: a key kept in this browser only (where GraphiQL keeps its headers). */
export function keyDialog(onChange) {
  const input = h("input#key-input", { type: "password", autocomplete: "off", placeholder: "atk_…", spellcheck: "false" });
  const dialog = h("dialog.key-dialog", { "aria-labelledby": "key-title" },
    h("form", { method: "dialog" },
      h("h2#key-title", {}, "API key"),
      h("p.small", {}, "Kept in this browser only (the same place as GraphiQL's Headers tab) and sent as ",
        h("code", {}, "Authorization: Bearer …"), " with every request and when the WebSocket opens."),
      h("label", { for: "key-input" }, "Key "), input,
      h("div.buttons", {},
        h("button", { type: "submit", value: "save" }, "Save"),
        h("button", { type: "submit", value: "clear" }, "Forget the key"),
        h("button", { type: "submit", value: "cancel" }, "Cancel"))));
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "save") { setKey(input.value.trim()); onChange(); }
    if (dialog.returnValue === "clear") { setKey(null); onChange(); }
    input.value = "";
  });
  document.body.append(dialog);
  return () => {
    input.placeholder = authorization() ? "a key is stored; enter another to replace it" : "atk_…";
    dialog.showModal();
    input.focus();
  };
}

export { ROOT };
