// The workflow as a graph: the meta task on top, one column per sub-task in chain order, its behavior
// tasks below it in dependency order; every dependency inside the tree is an edge (unmet ones dashed,
// red and marked). Nodes sit on a fixed grid, so positions are arithmetic: only the nodes and edges near
// the visible area are in the DOM (a 2,051-task tree stays smooth), and each sub-task can be collapsed.

import { attempts, badge, h, lease, progressBar, statusText } from "./util.js";

const W = 224; // node width
const H = 118; // node height
const GX = 64; // gap between columns (edges run there)
const GY = 14; // gap between rows
const PAD = 16;
const MARGIN = 600; // drawn around the visible area

/** Sub-tasks in chain order (prevSubTaskId), any left over after them in their given order. */
export function chainOrder(subs) {
  const byPrev = new Map();
  const ids = new Set(subs.map((s) => s.id));
  for (const s of subs) if (s.prevSubTaskId && ids.has(s.prevSubTaskId)) byPrev.set(s.prevSubTaskId, s);
  const out = [];
  const placed = new Set();
  for (const start of subs) {
    if (placed.has(start.id) || (start.prevSubTaskId && ids.has(start.prevSubTaskId))) continue;
    for (let s = start; s && !placed.has(s.id); s = byPrev.get(s.id)) { out.push(s); placed.add(s.id); }
  }
  for (const s of subs) if (!placed.has(s.id)) { out.push(s); placed.add(s.id); }
  return out;
}

/** Tasks in dependency order among themselves (stable: ties keep their given order). */
export function dependencyOrder(tasks) {
  const ids = new Set(tasks.map((t) => t.id));
  const waiting = new Map(tasks.map((t) => [t.id,
    new Set(((t.state && t.state.dependencies) || []).map((d) => d.taskId).filter((d) => ids.has(d) && d !== t.id))]));
  const out = [];
  const done = new Set();
  while (out.length < tasks.length) {
    const next = tasks.find((t) => !done.has(t.id) && [...waiting.get(t.id)].every((d) => done.has(d)))
      || tasks.find((t) => !done.has(t.id)); // a cycle: take the first left
    out.push(next);
    done.add(next.id);
  }
  return out;
}

export class Graph {
  constructor({ onOpen }) {
    this.onOpen = onOpen;
    this.collapsed = new Set();
    this.rendered = new Map(); // id -> element
    this.focusId = null;
    this.root = h("div.graph", { tabindex: "-1" });
    this.canvas = h("div.canvas");
    this.svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    this.svg.setAttribute("class", "edges");
    this.svg.setAttribute("aria-hidden", "true");
    this.canvas.append(this.svg);
    this.root.append(this.canvas);
    this.root.addEventListener("scroll", () => this.schedule());
    this.root.addEventListener("keydown", (e) => this.key(e));
    window.addEventListener("resize", () => this.schedule());
  }

  /** Lay out a tree: {meta, subs: [{...sub, behaviors: [...]}]} (states included). */
  setTree(tree, { collapseOver = 600 } = {}) {
    const first = !this.tree;
    this.tree = tree;
    const total = 1 + tree.subs.reduce((n, s) => n + 1 + s.behaviors.length, 0);
    if (first && total > collapseOver) {
      tree.subs.forEach((s, i) => { if (i >= 4) this.collapsed.add(s.id); });
    }
    this.layout();
    for (const el of this.rendered.values()) el.remove();
    this.rendered.clear();
    this.draw();
  }

  layout() {
    const { meta, subs } = this.tree;
    this.nodes = new Map();
    this.columns = [];
    this.nodes.set(meta.id, { task: meta, kind: "meta", x: PAD, y: PAD, col: -1, row: 0 });
    let height = PAD + H;
    subs.forEach((sub, i) => {
      const x = PAD + i * (W + GX);
      const top = PAD + H + 36;
      const column = [sub.id];
      this.nodes.set(sub.id, { task: sub, kind: "sub", x, y: top, col: i, row: 0 });
      if (!this.collapsed.has(sub.id)) {
        sub.behaviors.forEach((b, j) => {
          this.nodes.set(b.id, { task: b, kind: "behavior", x, y: top + (j + 1) * (H + GY) + 10, col: i, row: j + 1 });
          column.push(b.id);
        });
      }
      this.columns.push(column);
      height = Math.max(height, top + column.length * (H + GY) + 10);
    });
    this.width = PAD * 2 + Math.max(1, subs.length) * (W + GX);
    this.height = height + PAD;
    this.canvas.style.width = `${this.width}px`;
    this.canvas.style.height = `${this.height}px`;
    this.svg.setAttribute("width", this.width);
    this.svg.setAttribute("height", this.height);
    this.edges = [];
    for (const [id, node] of this.nodes) {
      for (const dep of (node.task.state && node.task.state.dependencies) || []) {
        if (this.nodes.has(dep.taskId)) this.edges.push({ from: dep.taskId, to: id, met: dep.satisfied });
      }
    }
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  view() {
    const r = this.root;
    return { x0: r.scrollLeft - MARGIN, y0: r.scrollTop - MARGIN,
      x1: r.scrollLeft + (r.clientWidth || 1280) + MARGIN, y1: r.scrollTop + (r.clientHeight || 800) + MARGIN };
  }

  draw() {
    if (!this.tree) return;
    const v = this.view();
    const visible = (n) => n.x + W >= v.x0 && n.x <= v.x1 && n.y + H >= v.y0 && n.y <= v.y1;
    for (const [id, el] of this.rendered) {
      const n = this.nodes.get(id);
      if (!n || (!visible(n) && id !== this.focusId)) { el.remove(); this.rendered.delete(id); }
    }
    for (const [id, n] of this.nodes) {
      if (!this.rendered.has(id) && (visible(n) || id === this.focusId)) {
        const el = this.nodeElement(n);
        this.rendered.set(id, el);
        this.canvas.append(el);
      }
    }
    this.drawEdges(v);
  }

  drawEdges(v) {
    const paths = [];
    for (const e of this.edges) {
      const a = this.nodes.get(e.from), b = this.nodes.get(e.to);
      if (Math.max(a.x, b.x) + W < v.x0 || Math.min(a.x, b.x) > v.x1) continue;
      if (Math.max(a.y, b.y) + H < v.y0 || Math.min(a.y, b.y) > v.y1) continue;
      let d;
      if (a.col === b.col && a.kind !== "meta") { // same column: out of the right side and back in
        const x = a.x + W, y1 = a.y + H / 2, y2 = b.y + H / 2, bend = Math.min(GX - 12, 18 + Math.abs(b.row - a.row) * 6);
        d = `M${x},${y1} C${x + bend},${y1} ${x + bend},${y2} ${x + 3},${y2}`;
      } else {
        const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x - 3, y2 = b.y + H / 2, mid = (x1 + x2) / 2;
        d = `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
      }
      paths.push(`<path class="${e.met ? "met" : "unmet"}" d="${d}" marker-end="url(#${e.met ? "arrow" : "arrow-unmet"})"><title>${e.from} → ${e.to}${e.met ? "" : " (unmet)"}</title></path>`);
    }
    this.svg.innerHTML = `<defs>
      <marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" class="met-head"/></marker>
      <marker id="arrow-unmet" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" class="unmet-head"/></marker>
    </defs>${paths.join("")}`;
  }

  nodeElement(n) {
    const t = n.task, s = t.state || {};
    const unmet = (s.dependencies || []).filter((d) => !d.satisfied);
    const name = s.name || t.actionType && `${t.actionType}${t.actionSubType ? "/" + t.actionSubType : ""}` || t.personalityType || t.id;
    const foot = s.lastError ? h("span.node-error", {}, "⚠ ", s.lastError.message)
      : lease(s) ? h("span.node-lease", { "data-lease": "" }, "◔ ", lease(s))
      : unmet.length ? h("span.node-unmet", {}, `⇠ waits for ${unmet.map((d) => d.taskId).join(", ")}`)
      : s.currentStep ? h("span.muted", {}, s.currentStep) : null;
    const el = h(`div.node.kind-${n.kind}.s-${(s.status || "unknown").toLowerCase()}`, {
      role: "button", tabindex: t.id === this.focusId ? "0" : "-1", "data-id": t.id, "data-status": s.status,
      "data-progress": s.progressPercentage, "aria-label": `${n.kind === "meta" ? "Workflow" : n.kind === "sub" ? "Sub-task" : "Behavior task"} ${t.id}: ${statusText(s.status)}, ${s.progressPercentage || 0} %`,
      style: { left: `${n.x}px`, top: `${n.y}px`, width: `${W}px`, height: `${H}px` },
      onclick: () => { this.focus(t.id); this.onOpen(t.id); },
    },
    h("span.node-head", {}, badge(s.status), h("span.prio", {}, s.priority || "")),
    h("span.node-name", { title: t.id }, name),
    h("span.node-meta", { title: `${s.agentName || "—"} · ${attempts(s)}` }, `${attempts(s)} · ${s.agentName || "—"}`),
    progressBar(s.progressPercentage, `${t.id} progress`),
    foot);
    if (n.kind === "sub") {
      const closed = this.collapsed.has(t.id);
      el.append(h("button.toggle", { type: "button", "aria-expanded": String(!closed), tabindex: "-1",
        onclick: (e) => { e.stopPropagation(); this.toggle(t.id); } },
      closed ? `▸ show ${t.behaviors.length}` : "▾ hide"));
    }
    return el;
  }

  toggle(id) {
    if (this.collapsed.has(id)) this.collapsed.delete(id); else this.collapsed.add(id);
    this.setTree(this.tree);
  }

  /** Redraw the nodes of these task ids (their states changed). */
  refresh(ids) {
    for (const id of ids) {
      const el = this.rendered.get(id);
      const n = this.nodes.get(id);
      if (!el || !n) continue;
      const fresh = this.nodeElement(n);
      el.replaceWith(fresh);
      this.rendered.set(id, fresh);
      if (document.activeElement === el) fresh.focus();
    }
    this.layoutEdgesOnly();
  }

  layoutEdgesOnly() {
    this.edges = [];
    for (const [id, node] of this.nodes) {
      for (const dep of (node.task.state && node.task.state.dependencies) || []) {
        if (this.nodes.has(dep.taskId)) this.edges.push({ from: dep.taskId, to: id, met: dep.satisfied });
      }
    }
    this.drawEdges(this.view());
  }

  tickLeases() {
    for (const [id, el] of this.rendered) {
      const span = el.querySelector("[data-lease]");
      const n = this.nodes.get(id);
      if (span && n) span.textContent = `◔ ${lease(n.task.state) || "no lease"}`;
    }
  }

  focus(id, scroll = false) {
    const old = this.rendered.get(this.focusId);
    if (old) old.tabIndex = -1;
    this.focusId = id;
    const n = this.nodes.get(id);
    if (!n) return;
    if (scroll) {
      const r = this.root;
      if (n.x < r.scrollLeft || n.x + W > r.scrollLeft + r.clientWidth) r.scrollLeft = n.x - 40;
      if (n.y < r.scrollTop || n.y + H > r.scrollTop + r.clientHeight) r.scrollTop = n.y - 40;
    }
    this.draw();
    const el = this.rendered.get(id);
    if (el) { el.tabIndex = 0; el.focus({ preventScroll: !scroll }); }
  }

  /** Arrow keys move between nodes (columns left/right, tasks up/down), Enter or Space opens. */
  key(e) {
    const id = this.focusId;
    const n = id && this.nodes.get(id);
    if (!n) return;
    let next = null;
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); this.onOpen(id); return; }
    if (e.key === "ArrowDown") next = n.kind === "meta" ? this.columns[0] && this.columns[0][0] : this.columns[n.col][n.row + 1];
    else if (e.key === "ArrowUp") next = n.kind === "meta" ? null : n.row === 0 ? this.tree.meta.id : this.columns[n.col][n.row - 1];
    else if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      if (n.kind === "meta") next = e.key === "ArrowRight" && this.columns[0] ? this.columns[0][0] : null;
      else {
        const col = this.columns[n.col + (e.key === "ArrowRight" ? 1 : -1)];
        next = col ? col[Math.min(n.row, col.length - 1)] : null;
      }
    } else if (e.key === "Home") next = this.tree.meta.id;
    else if (e.key === "+" || e.key === "-") { if (n.kind === "sub") this.toggle(id); this.focus(id); return; }
    else return;
    e.preventDefault();
    if (next) this.focus(next, true);
  }

  /** Put the keyboard on the graph: the focused node, else the workflow's node. */
  enter() {
    this.focus(this.focusId && this.nodes.has(this.focusId) ? this.focusId : this.tree.meta.id, true);
  }
}
