"""Checking dependencies when they are written: known ids, valid expected statuses, no cycles.

The graph is the stored `dependencies` of every state, with the ones being written laid over it. Only
the part reachable from the written tasks is read, a breadth-first layer per `find`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from app.domain import MAX_DEPENDENCIES, STATUSES, Status, normalise_status
from app.lifecycle.errors import Invalid
from app.store import states as state_store
from app.store.types import Db


def normalise(deps: Iterable[Mapping[str, Any]], path: str, task_id: str) -> list[dict[str, str]]:
    """Dependencies as stored (`task_id`, `status_expected`), checked for shape; no I/O."""
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, dep in enumerate(deps):
        where = f"{path}[{i}]"
        dep_id = dep.get("task_id")
        if not isinstance(dep_id, str) or not dep_id:
            raise Invalid(f"{where}.task_id", "a dependency needs a task id")
        if dep_id == task_id:
            raise Invalid(f"{where}.task_id", f"task '{task_id}' cannot depend on itself")
        if dep_id in seen:
            raise Invalid(f"{where}.task_id", f"task '{dep_id}' is listed twice")
        seen.add(dep_id)
        expected = normalise_status(dep.get("status_expected") or Status.COMPLETED)
        if expected not in STATUSES:
            raise Invalid(f"{where}.status_expected", f"unknown status '{dep.get('status_expected')}'")
        out.append({"task_id": dep_id, "status_expected": expected})
    if len(out) > MAX_DEPENDENCIES:
        raise Invalid(path, f"at most {MAX_DEPENDENCIES} dependencies, got {len(out)}")
    return out


async def check_graph(
    db: Db,
    session: AsyncClientSession,
    written: Mapping[str, list[dict[str, str]]],
    paths: Mapping[str, str],
) -> dict[str, str | None]:
    """Refuse unknown ids and cycles; return the stored status of every existing task depended on.

    `written` maps each task being written to its new dependencies (tasks being created in the same
    request count as known); `paths` maps it to the input path used in error messages.
    """
    graph: dict[str, list[str]] = {tid: [d["task_id"] for d in deps] for tid, deps in written.items()}
    statuses: dict[str, str | None] = {}
    frontier = {d for deps in graph.values() for d in deps} - graph.keys()
    first_layer = set(frontier)
    while frontier:
        found = await state_store.dependency_layer(db, frontier, session)
        for tid in frontier:
            doc = found.get(tid)
            if doc is None:
                if tid in first_layer:
                    owner = next(o for o, deps in graph.items() if tid in deps and o in written)
                    raise Invalid(f"{paths[owner]}.dependencies", f"unknown task '{tid}' in dependencies")
                graph[tid] = []  # a dangling id stored earlier by another program: no edges from it
                continue
            statuses[tid] = doc.get("status")
            graph[tid] = [
                d["task_id"]
                for d in doc.get("dependencies") or []
                if isinstance(d, dict) and isinstance(d.get("task_id"), str)
            ]
        frontier = {d for tid in frontier for d in graph[tid] if isinstance(d, str)} - graph.keys()
    cycle = _find_cycle(graph, written.keys())
    if cycle:
        owner = cycle[0]
        raise Invalid(f"{paths[owner]}.dependencies", "dependencies would form a cycle: " + " → ".join(cycle))
    return statuses


def _find_cycle(graph: Mapping[str, list[str]], starts: Iterable[str]) -> list[str] | None:
    """A cycle through one of `starts`, as a path that returns to its first id; None if there is none."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in starts:
        if start not in state and (found := visit(start)):
            return found
    return None


def topological(written: Mapping[str, list[dict[str, str]]]) -> list[str]:
    """The written tasks with each after the written tasks it depends on (the graph is acyclic)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(tid: str) -> None:
        done.add(tid)
        for dep in written[tid]:
            if dep["task_id"] in written and dep["task_id"] not in done:
                visit(dep["task_id"])
        order.append(tid)

    for tid in written:
        if tid not in done:
            visit(tid)
    return order
