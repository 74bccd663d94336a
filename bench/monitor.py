"""The monitor page in headless Chromium: first paint of a workflow view, and mutation -> page latency.

`python -m bench.monitor` starts an embedded mongod and an `agent-tasks serve` process, writes synthetic
workflows of 1 x 20 x 25 (521 tasks) and 1 x 50 x 40 (2,051 tasks), and opens `/workflows/<id>` in the system
Chromium (Playwright, no download): first paint is the page's own mark (`window.monitorFirstPaint`: the tree
fetched, the graph drawn) from navigation start, median of `--repeat` loads; the server's share is the
MonitorTree request's time from request start to the last byte (Resource Timing). Then, on the 521-task
view, `--mutations` progress reports at `--rate` per second on tasks in view: for each, the time from
sending it to the page drawing its node with the new value (a MutationObserver in the page); p50 / p95 / max.
Then `--drop-runs` times: the 521-task view with a task's panel open, loaded through a proxy
(tests/support/dropping_proxy.py) that resets the page's connections `--drop-at` seconds into `--mutations`
progress reports at `--rate`/s and refuses new ones for `--drop-hold` s; the page's events (the follower's
and the panel's log) are compared with the stored event log: missed, duplicated, out of order.
Targets (issue 19): first paint <= 1 s (521) and <= 2 s (2,051); mutation -> page p95 <= 500 ms at 20/s;
0 missed and 0 duplicated across a drop under that load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from app.demo.documents import synthetic_tree, write_documents
from app.mongo.embedded import EmbeddedMongod
from tests.support.dropping_proxy import DroppingProxy
from tests.support.servers import serve

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SHAPES = {"521": (20, 25), "2051": (50, 40)}

OBSERVE = """() => {
  window.seenAt = {};
  new MutationObserver((records) => {
    const now = Date.now();
    for (const r of records) for (const n of r.addedNodes) {
      if (n.dataset && n.dataset.id) { const k = n.dataset.id + ':' + n.dataset.progress; if (!(k in window.seenAt)) window.seenAt[k] = now; }
    }
  }).observe(document.querySelector('.canvas'), { childList: true });
}"""


async def _load(uri: str, db: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    for name, (subs, behaviors) in SHAPES.items():
        await write_documents(client[db], synthetic_tree(f"wf_{name}", subs, behaviors))
    await client.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))]


EVENTS = """query BenchEvents($after: String) {
  taskEvents(workflowId: "wf_521", after: $after, first: 100) {
    pageInfo { hasNextPage endCursor }
    edges { cursor node { taskId } }
  }
}"""


def _stored_events(http: httpx.Client) -> list[tuple[str, str]]:
    """The workflow's stored event log: (cursor, task id), in commit order."""
    events: list[tuple[str, str]] = []
    after = None
    while True:
        body = http.post("/graphql", json={"query": EVENTS, "variables": {"after": after}}).json()
        assert body.get("data"), body
        conn = body["data"]["taskEvents"]
        events += [(e["cursor"], e["node"]["taskId"]) for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            return events
        after = conn["pageInfo"]["endCursor"]


def _drop_under_load(browser: Any, url: str, run: int, args: argparse.Namespace) -> None:
    """One forced drop (a proxy resets the page's connections) while progress reports run at the rate;
    the page's events, the follower's and the open panel's, against the stored log."""
    targets = ["wf_521_s0_b1", "wf_521_s1_b0", "wf_521_s2_b4", "wf_521_s3_b3"]
    panel_task = targets[0]
    with (
        DroppingProxy(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as proxy,
        httpx.Client(base_url=url) as http,
    ):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{proxy.url}/tasks/{panel_task}")
        page.wait_for_selector('#live[data-state="live"]', timeout=30_000)
        page.wait_for_selector("aside.panel .log li", timeout=30_000)
        failures: list[str] = []

        def load() -> None:
            with httpx.Client(base_url=url) as writer:
                start = time.monotonic()
                for n in range(args.mutations):
                    time.sleep(max(0.0, start + n / args.rate - time.monotonic()))
                    query = f'mutation {{ reportProgress(id: "{targets[n % len(targets)]}", percentage: {(n * 7 + run) % 100 + 1}) {{ __typename }} }}'
                    answer = writer.post("/graphql", json={"query": query})
                    if "Success" not in answer.text:
                        failures.append(answer.text)

        mutator = threading.Thread(target=load)
        mutator.start()
        time.sleep(args.drop_at)
        dropped_at = time.monotonic()
        cut = proxy.drop(hold=args.drop_hold)
        page.wait_for_selector('#live[data-state="reconnecting"]', timeout=5_000)
        page.wait_for_selector('#live[data-state="live"]', timeout=30_000)
        back_after = time.monotonic() - dropped_at
        mutator.join()
        stored = _stored_events(http)
        with contextlib.suppress(Exception):  # what never arrives is counted as missed below
            page.wait_for_function(
                "n => window.monitorDebug.follower.events.length >= n", arg=len(stored), timeout=10_000
            )
        shown: list[str] = page.evaluate("() => window.monitorDebug.follower.events.map(e => e.cursor)")
        panel: list[str] = page.evaluate(
            "() => [...document.querySelectorAll('aside.panel .log li[data-cursor]')].map(li => li.dataset.cursor)"
        )
        deduped = page.evaluate("() => window.monitorDebug.follower.duplicates")
        reconnects = page.evaluate("() => window.monitorDebug.follower.reconnects")
        page.close()
    cursors = [c for c, _ in stored]
    panel_stored = [c for c, task in stored if task == panel_task]
    missed = len(set(cursors) - set(shown))
    duplicated = len(shown) - len(set(shown))
    extra = len(set(shown) - set(cursors))
    panel_missed = len(set(panel_stored) - set(panel))
    panel_duplicated = len(panel) - len(set(panel))
    print(
        f"drop under load, run {run + 1}: {args.mutations} progress reports at {args.rate:g}/s, connections cut"
        f" at {args.drop_at:g} s ({cut} open, new ones refused {args.drop_hold:g} s), live again after"
        f" {back_after:.2f} s ({reconnects} reconnect(s)); stored log {len(cursors)} events, page {len(shown)}:"
        f" missed {missed}, duplicated {duplicated}, not stored {extra}, in order {shown == cursors};"
        f" panel ({panel_task}) {len(panel)}/{len(panel_stored)}: missed {panel_missed}, duplicated"
        f" {panel_duplicated}, in order {panel == panel_stored}; deliveries dropped as already held {deduped};"
        f" failed mutations {len(failures)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mutations", type=int, default=100, choices=range(1, 101), metavar="1..100")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--drop-runs", type=int, default=3)
    parser.add_argument("--drop-at", type=float, default=1.5, help="seconds into the load")
    parser.add_argument("--drop-hold", type=float, default=1.0, help="seconds new connections are refused")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        mongod = EmbeddedMongod(Path(tmp) / "db", port=0)
        uri = mongod.start()
        try:
            db = f"bench_monitor_{uuid.uuid4().hex[:8]}"
            asyncio.run(_load(uri, db))
            with serve({"MONGODB_URI": uri, "MONGODB_DB": db}) as server, sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                for name in SHAPES:
                    paints: list[float] = []
                    shares: list[float] = []
                    for _ in range(args.repeat):
                        page.goto(f"{server.url}/workflows/wf_{name}")
                        page.wait_for_function("() => window.monitorFirstPaint", timeout=30_000)
                        paints.append(page.evaluate("() => window.monitorFirstPaint"))
                        shares.append(
                            page.evaluate(
                                "() => { const r = performance.getEntriesByType('resource').find(e =>"
                                " e.name.endsWith('/graphql') && e.initiatorType === 'fetch' &&"
                                " e.transferSize > 50000) || {}; return (r.responseEnd - r.requestStart) || 0; }"
                            )
                        )
                    print(
                        f"first paint, {name} tasks: median {statistics.median(paints):.0f} ms"
                        f" (min {min(paints):.0f}, max {max(paints):.0f}); the tree request"
                        f" {statistics.median(shares):.0f} ms of it"
                    )
                # mutation -> page on the 521-task view, tasks in view (synthetic in_progress: (i + j) % 5 == 1)
                page.goto(f"{server.url}/workflows/wf_521")
                page.wait_for_selector('#live[data-state="live"]', timeout=30_000)
                page.evaluate(OBSERVE)
                targets = ["wf_521_s0_b1", "wf_521_s1_b0", "wf_521_s2_b4", "wf_521_s3_b3"]
                sent: dict[str, float] = {}
                with httpx.Client(base_url=server.url) as http:
                    start = time.monotonic()
                    for n in range(args.mutations):
                        time.sleep(max(0.0, start + n / args.rate - time.monotonic()))
                        task, value = targets[n % len(targets)], n % 100 + 1  # unique while n < 100
                        sent[f"{task}:{value}"] = time.time() * 1000
                        answer = http.post(
                            "/graphql",
                            json={
                                "query": f'mutation {{ reportProgress(id: "{task}", percentage: {value}) {{ __typename }} }}'
                            },
                        )
                        assert "Success" in answer.text, answer.text
                time.sleep(2)
                seen: dict[str, float] = page.evaluate("() => window.seenAt")
                lags = [seen[key] - at for key, at in sent.items() if key in seen]
                print(
                    f"mutation -> page, {args.mutations} at {args.rate:g}/s: seen {len(lags)}/{len(sent)},"
                    f" p50 {_percentile(lags, 0.5):.0f} ms, p95 {_percentile(lags, 0.95):.0f} ms, max {max(lags):.0f} ms"
                )
                for run in range(args.drop_runs):
                    _drop_under_load(browser, server.url, run, args)
                browser.close()
        finally:
            mongod.stop()


if __name__ == "__main__":
    main()
