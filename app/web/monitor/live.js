// Following events over one graphql-transport-ws subscription, resumed from the last cursor held.
//
// A Follower first reads the workflow's stored events (MonitorEvents, a page at a time), then subscribes
// (MonitorFollow) after the last cursor it holds. When the connection drops it says "reconnecting",
// opens a new connection after a short wait and subscribes again after its last cursor: the server sends
// exactly what was committed after it. Every event is kept by its cursor (its position in commit order),
// so an event delivered twice (history and subscription overlapping) is shown once.

import { request, subscribe, wsClient } from "./gql.js";

const BACKOFF_MS = [250, 500, 1000, 2000];
const STALE_MS = 3000; // an event older than this when it arrives is a replay: the page is behind

export class Follower {
  constructor(workflowId, { onEvents, onStatus }) {
    this.workflowId = workflowId;
    this.onEvents = onEvents;
    this.onStatus = onStatus;
    this.events = [];
    this.seen = new Set();
    this.last = null;
    this.duplicates = 0; // events delivered again and dropped
    this.reconnects = 0;
    this.status = "connecting";
    this.stopped = false;
    this.failures = 0;
    this.behindUntil = 0;
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.onStatus(status);
  }

  async start() {
    this.setStatus("behind");
    let after = null;
    for (;;) {
      const data = await request("MonitorEvents", { workflowId: this.workflowId, after, first: 100 });
      if (this.stopped) return;
      const page = data.taskEvents;
      this.accept(page.edges.map((e) => e.node), false);
      after = page.pageInfo.endCursor || after;
      if (!page.pageInfo.hasNextPage) break;
    }
    this.connect();
  }

  accept(batch, live) {
    const fresh = [];
    for (const event of batch) {
      if (this.seen.has(event.cursor)) { this.duplicates++; continue; }
      this.seen.add(event.cursor);
      this.events.push(event);
      if (this.last === null || event.cursor > this.last) this.last = event.cursor;
      fresh.push(event);
    }
    if (fresh.length) this.onEvents(fresh, live);
  }

  connect() {
    if (this.stopped) return;
    const client = wsClient({
      connected: () => {
        this.failures = 0;
        this.setStatus(Date.now() < this.behindUntil ? "behind" : "live");
      },
    });
    this.client = client;
    let ended = false;
    const end = () => {
      if (ended || this.stopped) return;
      ended = true;
      client.dispose();
      this.setStatus("reconnecting");
      const wait = BACKOFF_MS[Math.min(this.failures++, BACKOFF_MS.length - 1)];
      this.reconnects++;
      setTimeout(() => this.connect(), wait);
    };
    subscribe(client, "MonitorFollow", { workflowId: this.workflowId, after: this.last }, {
      next: ({ data }) => {
        if (!data || !data.taskEvents) return;
        const event = data.taskEvents;
        if (Date.now() - Date.parse(event.timestamp) > STALE_MS) {
          this.behindUntil = Date.now() + 500;
          this.setStatus("behind");
          clearTimeout(this.behindTimer);
          this.behindTimer = setTimeout(() => { if (this.status === "behind") this.setStatus("live"); }, 600);
        } else if (this.status !== "live" && Date.now() >= this.behindUntil) {
          this.setStatus("live");
        }
        this.accept([event], true);
      },
      error: end,
      complete: end,
    });
  }

  stop() {
    this.stopped = true;
    if (this.client) this.client.dispose();
  }
}

/** Any event from now on (MonitorActivity): calls `onEvent` for each, `onGap` after a reconnect. */
export class Activity {
  constructor({ onEvent, onGap, onStatus }) {
    Object.assign(this, { onEvent, onGap, onStatus, stopped: false, failures: 0 });
  }

  start() {
    if (this.stopped) return;
    const client = wsClient({ connected: () => { this.failures = 0; this.onStatus("live"); } });
    this.client = client;
    let ended = false;
    const end = () => {
      if (ended || this.stopped) return;
      ended = true;
      client.dispose();
      this.onStatus("reconnecting");
      const wait = BACKOFF_MS[Math.min(this.failures++, BACKOFF_MS.length - 1)];
      setTimeout(() => { this.start(); this.onGap(); }, wait);
    };
    subscribe(client, "MonitorActivity", {}, {
      next: ({ data }) => data && data.taskEvents && this.onEvent(data.taskEvents),
      error: end,
      complete: end,
    });
  }

  stop() {
    this.stopped = true;
    if (this.client) this.client.dispose();
  }
}
