"""The monitor page in headless Chromium: first paint of a workflow view, and mutation -> page latency.

`python -m bench.monitor` starts an embedded mongod and an `agent-tasks serve` process, writes synthetic
workflows of 1 x 20 x 25 (521 tasks) and 1 x 50 x 40 (2,051 tasks), and opens `/workflows/<id>` in the system
Chromium (Playwright, no download): first paint is the page's own mark (`window.monitorFirstPaint`: the tree
fetched, the graph drawn) from navigation start, median of `--repeat` loads; the server's share is the
MonitorTree request's time from request start to the last byte (Resource Timing). Then, on the 521-task
view, `--mutations` progress reports at `--rate` per second on tasks in view: for each, the time from
sending it to the page drawing its node with the new value (a MutationObserver in the page); p50 / p95 / max.
Targets (issue 19): first paint <= 1 s (521) and <= 2 s (2,051); mutation -> page p95 <= 500 ms at 20/s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from app.demo import synthetic_tree, write_documents
from app.mongo.embedded import EmbeddedMongod
from tests.servers import serve

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mutations", type=int, default=100, choices=range(1, 101), metavar="1..100")
    parser.add_argument("--rate", type=float, default=20.0)
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
                browser.close()
        finally:
            mongod.stop()


if __name__ == "__main__":
    main()
