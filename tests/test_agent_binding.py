"""Agent-bound callers act only on their agents' tasks (issue 18, finding 3), on every write path.

A key bound to agent A once reassigned B's task to A, raised B's task to URGENT and pushed its own task to
B through `updateAgentTask` / `PATCH /agent-tasks/{id}`, which were not agent-checked. Here every write
the API has is enumerated from the scopes table (`app/auth/scopes.py`: every GraphQL mutation, every REST
operation that is not a read), so a new write without a case fails `test_every_write_path_has_a_case`.
For each, over real HTTP against a server that requires keys, with a real key bound to agent A:

- each attack on B's task (or on A's task with B as the new agent, parent or subtree member) is refused:
  GraphQL answers the `ForbiddenError` member (code FORBIDDEN, `agentName` the agent at fault), REST 403
  `forbidden` with `agent_name`;
- the whole database is unchanged by the refusal (documents compared before and after), so no event and no
  idempotency answer was written;
- the same write on A's own task succeeds.

Each case builds its own two worlds (A's and B's: a workflow meta → sub-task → behavior task with states
and outputs, and a standalone task with a child) under a prefix of its own, on one server for the module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from app.auth.keys import KeyService
from app.auth.scopes import GRAPHQL, REST
from app.domain import Scope
from app.rest.routes import ROUTES
from tests.support.lifecycle_helpers import snapshot as everything
from tests.support.servers import ServerGroup, ServerProcess

R, W, A = Scope.READ, Scope.WRITE, Scope.ADMIN

#: Governed by scopes (`admin`), not by agents: a key is nobody's task.
KEY_MANAGEMENT = {"createApiKey", "revokeApiKey"}


# ------------------------------------------------------------------------------------------ the worlds


@dataclass(frozen=True)
class Ids:
    """One agent's tasks in a case: meta `m` → sub-task `s` → behavior task `b` (states and outputs), a
    standalone task `t` with a child `c`, and `new`, an id no task has yet."""

    m: str
    s: str
    b: str
    t: str
    c: str
    new: str


def ids(prefix: str, owner: str) -> Ids:
    return Ids(*(f"{prefix}-{owner}-{part}" for part in ("m", "s", "b", "t", "c", "new")))


def world(prefix: str, owner: str) -> list[Call]:
    """What an unbound admin creates for `owner` before each case."""
    i = ids(prefix, owner)
    state = f'{{agentName: "{owner}"}}'
    behavior = f'{{id: "{i.b}", state: {state}, output: {{behaviorDataPtr: {{}}}}}}'
    sub = f'{{id: "{i.s}", state: {state}, output: {{subTaskDataPtr: {{}}}}, behaviorTasks: [{behavior}]}}'
    return [
        Gql(
            f'createWorkflow(input: {{id: "{i.m}", state: {state}, output: {{taskDataPtr: {{}}}},'
            f" subTasks: [{sub}]}})"
        ),
        Gql(f'createAgentTask(input: {{id: "{i.t}", agentName: "{owner}"}})'),
        Gql(f'addSubtask(parentId: "{i.t}", input: {{id: "{i.c}", agentName: "{owner}"}})'),
    ]


# ------------------------------------------------------------------------------------------- the calls


@dataclass(frozen=True)
class Gql:
    """One mutation root field call, e.g. `startTask(id: "x")`."""

    field: str

    @property
    def query(self) -> str:
        nothing = " ... on NothingToClaim { message }" if self.field.startswith("claimTask(") else ""
        return (
            f"mutation {{ r: {self.field} {{ __typename"
            f" ... on ForbiddenError {{ agentName code }} ... on Error {{ message }}{nothing} }} }}"
        )


@dataclass(frozen=True)
class Rest:
    method: str
    path: str
    body: dict[str, Any] | None = None


Call = Gql | Rest


@dataclass(frozen=True)
class Case:
    """`attacks`: calls a key bound to A must be refused, with the agent the refusal names; `own`: the
    same write on A's own tasks, which must succeed; `prepare`: what the admin does first (both agents)."""

    attacks: list[tuple[Call, str | None]]
    own: Call
    prepare: list[Call] = field(default_factory=list)


CaseFor = Callable[[Ids, Ids], Case]  # (A's ids, B's ids) -> the case


def started(a: Ids, b: Ids) -> list[Call]:
    return [Gql(f'startTask(id: "{x.t}", leaseSeconds: 3600)') for x in (a, b)]


def without_output(field_name: str, task: Callable[[Ids], str]) -> Callable[[Ids, Ids], list[Call]]:
    return lambda a, b: [Gql(f'{field_name}(taskId: "{task(x)}")') for x in (a, b)]


def _lifecycle(
    field_name: str, args: str = "", prepare: Callable[[Ids, Ids], list[Call]] | None = None
) -> CaseFor:
    return lambda a, b: Case(
        attacks=[(Gql(f'{field_name}(id: "{b.t}"{args})'), "B")],
        own=Gql(f'{field_name}(id: "{a.t}"{args})'),
        prepare=prepare(a, b) if prepare else [],
    )


def _record(field_name: str, args: str) -> CaseFor:
    return lambda a, b: Case(
        attacks=[(Gql(f'{field_name}(taskId: "{b.t}", {args})'), "B")],
        own=Gql(f'{field_name}(taskId: "{a.t}", {args})'),
    )


def _create_meta(field_name: str) -> CaseFor:
    return lambda a, b: Case(
        attacks=[
            (Gql(f'{field_name}(input: {{id: "{a.new}", state: {{agentName: "B"}}}})'), "B"),
            # A's own workflow with a task of B's nested in it.
            (
                Gql(
                    f'{field_name}(input: {{id: "{a.new}", state: {{agentName: "A"}},'
                    f' subTasks: [{{id: "{b.new}", state: {{agentName: "B"}}}}]}})'
                ),
                "B",
            ),
            (Gql(f'{field_name}(input: {{id: "{a.new}"}})'), None),  # no agent: no bound caller's
        ],
        own=Gql(f'{field_name}(input: {{id: "{a.new}", state: {{agentName: "A"}}}})'),
    )


def _level(
    kind: str,
    task: Callable[[Ids], str],
    parent_field: str | None,
    parent: Callable[[Ids], str] | None,
    fields: str,
    output: str,
) -> dict[str, CaseFor]:
    """The cases of one hierarchy level (`kind`: MetaWorkflowTask, SubTask, BehaviorTask)."""
    out_name = {"MetaWorkflowTask": "TaskOutput"}.get(kind, f"{kind}Output")
    cases: dict[str, CaseFor] = {}
    if kind != "MetaWorkflowTask":
        assert parent is not None and parent_field is not None
        cases[f"create{kind}"] = lambda a, b: Case(
            attacks=[
                # A's new task under B's parent: B's task gains a child.
                (
                    Gql(
                        f'create{kind}(input: {{{parent_field}: "{parent(b)}", id: "{a.new}", state: {{agentName: "A"}}}})'
                    ),
                    "B",
                ),
                (
                    Gql(
                        f'create{kind}(input: {{{parent_field}: "{parent(a)}", id: "{a.new}", state: {{agentName: "B"}}}})'
                    ),
                    "B",
                ),
            ],
            own=Gql(
                f'create{kind}(input: {{{parent_field}: "{parent(a)}", id: "{a.new}", state: {{agentName: "A"}}}})'
            ),
        )
    else:
        cases["createMetaWorkflowTask"] = _create_meta("createMetaWorkflowTask")

    def update(a: Ids, b: Ids) -> Case:
        attacks: list[tuple[Call, str | None]] = [
            (Gql(f'update{kind}(id: "{task(b)}", input: {{{fields}}})'), "B")
        ]
        if parent is not None:
            # Moving A's task under B's parent, and B's task under A's.
            attacks.append(
                (Gql(f'update{kind}(id: "{task(a)}", input: {{{parent_field}: "{parent(b)}"}})'), "B")
            )
            attacks.append(
                (Gql(f'update{kind}(id: "{task(b)}", input: {{{parent_field}: "{parent(a)}"}})'), "B")
            )
        return Case(attacks=attacks, own=Gql(f'update{kind}(id: "{task(a)}", input: {{{fields}}})'))

    cases[f"update{kind}"] = update
    cases[f"delete{kind}"] = lambda a, b: Case(
        attacks=[(Gql(f'delete{kind}(id: "{task(b)}", cascade: true)'), "B")],
        own=Gql(f'delete{kind}(id: "{task(a)}", cascade: true)'),
    )
    cases[f"finalize{kind}"] = lambda a, b: Case(
        attacks=[(Gql(f'finalize{kind}(id: "{task(b)}")'), "B")], own=Gql(f'finalize{kind}(id: "{task(a)}")')
    )
    cases[f"create{out_name}"] = lambda a, b: Case(
        attacks=[(Gql(f'create{out_name}(taskId: "{task(b)}", input: {{{output}}})'), "B")],
        own=Gql(f'create{out_name}(taskId: "{task(a)}", input: {{{output}}})'),
        prepare=without_output(f"delete{out_name}", task)(a, b),
    )
    cases[f"update{out_name}"] = lambda a, b: Case(
        attacks=[(Gql(f'update{out_name}(taskId: "{task(b)}", input: {{{output}}})'), "B")],
        own=Gql(f'update{out_name}(taskId: "{task(a)}", input: {{{output}}})'),
    )
    cases[f"delete{out_name}"] = lambda a, b: Case(
        attacks=[(Gql(f'delete{out_name}(taskId: "{task(b)}")'), "B")],
        own=Gql(f'delete{out_name}(taskId: "{task(a)}")'),
    )
    return cases


def _update_agent_task(a: Ids, b: Ids) -> Case:
    update = 'updateAgentTask(id: "{}", input: {{{}}})'.format
    return Case(
        attacks=[
            # The issue's three attacks: take B's task, raise B's priority, push A's own task to B.
            (Gql(update(b.t, 'agentName: "A"')), "B"),
            (Gql(update(b.t, "priority: URGENT")), "B"),
            (Gql(update(a.t, 'agentName: "B"')), "B"),
            (Gql(update(a.t, "agentName: null")), None),
            (Gql(update(b.t, "dependencies: []")), "B"),
            (Gql(update(b.s, "priority: URGENT")), "B"),  # a hierarchy task's state
            (Gql(update(a.c, f'parentTaskId: "{b.t}"')), "B"),  # A's task moved under B's
            (Gql(update(b.c, f'parentTaskId: "{a.t}"')), "B"),
        ],
        own=Gql(update(a.t, "priority: URGENT")),
    )


def _bulk_gql(action: str) -> CaseFor:
    return lambda a, b: Case(attacks=[], own=Gql(f'{action}Tasks(agentName: "A")'))


def _bulk_rest(action: str) -> CaseFor:
    return lambda a, b: Case(
        attacks=[], own=Rest("POST", f"/agent-tasks/{action}", {"filter": {"agent_name": "A"}})
    )


def _steer(field: str, args: str) -> CaseFor:
    return lambda a, b: Case(
        attacks=[
            (Gql(f'{field}(scope: AGENT, key: "B"{args})'), "B"),
            (Gql(f'{field}(scope: WORKFLOW, key: "{a.m}"{args})'), None),
            (Gql(f'{field}(scope: KEY, key: "gpu"{args})'), None),
        ],
        own=Gql(f'{field}(scope: AGENT, key: "A"{args})'),
    )


GRAPHQL_CASES: dict[str, CaseFor] = {
    "claimTask": lambda a, b: Case(
        attacks=[(Gql('claimTask(agentName: "B")'), "B")],
        own=Gql('claimTask(agentName: "A", leaseSeconds: 3600)'),
    ),
    "claimTasks": lambda a, b: Case(
        attacks=[(Gql('claimTasks(agentName: "B", max: 5)'), "B")],
        own=Gql('claimTasks(agentName: "A", max: 5, leaseSeconds: 3600)'),
    ),
    "startTask": _lifecycle("startTask", ", leaseSeconds: 3600"),
    "heartbeatTask": _lifecycle("heartbeatTask", ", leaseSeconds: 3600", started),
    "reportProgress": _lifecycle("reportProgress", ", percentage: 50", started),
    "completeTask": _lifecycle("completeTask", "", started),
    "failTask": _lifecycle("failTask", ', error: "x"', started),
    "retryTask": _lifecycle("retryTask", "", lambda a, b: [Gql(f'cancelTask(id: "{x.t}")') for x in (a, b)]),
    "cancelTask": _lifecycle("cancelTask"),
    "rescheduleTask": _lifecycle("rescheduleTask", ', notBefore: "2030-01-01T00:00:00Z"'),
    "pauseTask": _lifecycle("pauseTask", ", scope: SUBTREE"),
    "resumeTask": _lifecycle("resumeTask", "", lambda a, b: [Gql(f'pauseTask(id: "{x.t}")') for x in (a, b)]),
    # Bulk actions narrow the filter to the key's agents (nothing of B's matches; see
    # test_bulk_actions_reach_only_the_keys_agents): there is no refusal to see.
    **{f"{action}Tasks": _bulk_gql(action) for action in ("retry", "cancel", "pause", "resume")},
    # Limits, rates and policies: an agent's own may be set by a key bound to it; another agent's, or a
    # workflow's or a concurrency key's (they span agents), are refused.
    "setConcurrencyLimit": _steer("setConcurrencyLimit", ", max: 3"),
    "clearConcurrencyLimit": _steer("clearConcurrencyLimit", ""),
    "setStartRateLimit": _steer("setStartRateLimit", ", max: 3, per: MINUTE"),
    "clearStartRateLimit": _steer("clearStartRateLimit", ""),
    "setClaimPolicy": lambda a, b: Case(
        attacks=[(Gql('setClaimPolicy(agentName: "B", policy: FAIR_BY_WORKFLOW)'), "B")],
        own=Gql('setClaimPolicy(agentName: "A", policy: FAIR_BY_WORKFLOW)'),
    ),
    # Narrowed to the key's agents too (test_purge_reaches_only_the_keys_agents).
    "purgeTasks": lambda a, b: Case(attacks=[], own=Gql("purgeTasks(filter: {}, dryRun: false)")),
    "recordToolCall": _record("recordToolCall", 'toolName: "x"'),
    "recordToolResult": _record("recordToolResult", 'toolName: "x", status: "SUCCESS"'),
    "recordMemoryOperation": _record(
        "recordMemoryOperation", 'operation: "read", keyOrQuery: "k", status: "SUCCESS"'
    ),
    "createWorkflow": _create_meta("createWorkflow"),
    **_level("MetaWorkflowTask", lambda x: x.m, None, None, 'personalityType: "p"', "taskDataPtr: {n: 1}"),
    **_level(
        "SubTask", lambda x: x.s, "taskId", lambda x: x.m, 'personalityType: "p"', "subTaskDataPtr: {n: 1}"
    ),
    **_level(
        "BehaviorTask",
        lambda x: x.b,
        "subTaskId",
        lambda x: x.s,
        'actionType: "p"',
        "behaviorDataPtr: {n: 1}",
    ),
    "createAgentTask": lambda a, b: Case(
        attacks=[
            (Gql(f'createAgentTask(input: {{id: "{a.new}", agentName: "B"}})'), "B"),
            (Gql(f'createAgentTask(input: {{id: "{a.new}", agentName: "A", parentTaskId: "{b.t}"}})'), "B"),
        ],
        own=Gql(f'createAgentTask(input: {{id: "{a.new}", agentName: "A", parentTaskId: "{a.t}"}})'),
    ),
    "addSubtask": lambda a, b: Case(
        attacks=[
            (Gql(f'addSubtask(parentId: "{b.t}", input: {{id: "{a.new}", agentName: "A"}})'), "B"),
            (Gql(f'addSubtask(parentId: "{a.t}", input: {{id: "{a.new}", agentName: "B"}})'), "B"),
        ],
        own=Gql(f'addSubtask(parentId: "{a.t}", input: {{id: "{a.new}", agentName: "A"}})'),
    ),
    "updateAgentTask": _update_agent_task,
    "deleteAgentTask": lambda a, b: Case(
        attacks=[(Gql(f'deleteAgentTask(id: "{b.c}")'), "B")], own=Gql(f'deleteAgentTask(id: "{a.c}")')
    ),
}


def _rest_level(
    path: str,
    id_field: str,
    task: Callable[[Ids], str],
    parent_field: str | None,
    parent: Callable[[Ids], str] | None,
    fields: dict[str, Any],
) -> dict[tuple[str, str], CaseFor]:
    def create(a: Ids, b: Ids) -> Case:
        body = {id_field: a.new, "state": {"agent_name": "A"}}
        attacks: list[tuple[Call, str | None]] = [
            (
                Rest(
                    "POST",
                    f"/{path}",
                    {
                        **body,
                        "state": {"agent_name": "B"},
                        **({parent_field: parent(a)} if parent and parent_field else {}),
                    },
                ),
                "B",
            )
        ]
        if parent is not None and parent_field is not None:
            attacks.append((Rest("POST", f"/{path}", {**body, parent_field: parent(b)}), "B"))
            body[parent_field] = parent(a)
        return Case(attacks=attacks, own=Rest("POST", f"/{path}", body))

    def update(a: Ids, b: Ids) -> Case:
        attacks: list[tuple[Call, str | None]] = [(Rest("PATCH", f"/{path}/{task(b)}", fields), "B")]
        if parent is not None and parent_field is not None:
            attacks.append((Rest("PATCH", f"/{path}/{task(a)}", {parent_field: parent(b)}), "B"))
        return Case(attacks=attacks, own=Rest("PATCH", f"/{path}/{task(a)}", fields))

    return {
        (path, "create"): create,
        (path, "update"): update,
        (path, "delete"): lambda a, b: Case(
            attacks=[(Rest("DELETE", f"/{path}/{task(b)}?cascade=true"), "B")],
            own=Rest("DELETE", f"/{path}/{task(a)}?cascade=true"),
        ),
        (path, "finalize"): lambda a, b: Case(
            attacks=[(Rest("POST", f"/{path}/{task(b)}/finalize"), "B")],
            own=Rest("POST", f"/{path}/{task(a)}/finalize"),
        ),
    }


def _rest_output(
    path: str, id_field: str, task: Callable[[Ids], str], fields: dict[str, Any]
) -> dict[tuple[str, str], CaseFor]:
    return {
        (path, "create"): lambda a, b: Case(
            attacks=[(Rest("POST", f"/{path}", {id_field: task(b), **fields}), "B")],
            own=Rest("POST", f"/{path}", {id_field: task(a), **fields}),
            prepare=[Rest("DELETE", f"/{path}/{task(x)}") for x in (a, b)],
        ),
        (path, "update"): lambda a, b: Case(
            attacks=[(Rest("PATCH", f"/{path}/{task(b)}", fields), "B")],
            own=Rest("PATCH", f"/{path}/{task(a)}", fields),
        ),
        (path, "delete"): lambda a, b: Case(
            attacks=[(Rest("DELETE", f"/{path}/{task(b)}"), "B")], own=Rest("DELETE", f"/{path}/{task(a)}")
        ),
    }


def _rest_agent_tasks(a: Ids, b: Ids) -> dict[str, Case]:
    return {
        "create": Case(
            attacks=[
                (Rest("POST", "/agent-tasks", {"task_id": a.new, "agent_name": "B"}), "B"),
                (
                    Rest(
                        "POST", "/agent-tasks", {"task_id": a.new, "agent_name": "A", "parent_task_id": b.t}
                    ),
                    "B",
                ),
            ],
            own=Rest("POST", "/agent-tasks", {"task_id": a.new, "agent_name": "A", "parent_task_id": a.t}),
        ),
        "update": Case(
            attacks=[
                # The issue's three attacks over REST.
                (Rest("PATCH", f"/agent-tasks/{b.t}", {"agent_name": "A"}), "B"),
                (Rest("PATCH", f"/agent-tasks/{b.t}", {"priority": "urgent"}), "B"),
                (Rest("PATCH", f"/agent-tasks/{a.t}", {"agent_name": "B"}), "B"),
                (Rest("PATCH", f"/agent-tasks/{a.c}", {"parent_task_id": b.t}), "B"),
            ],
            own=Rest("PATCH", f"/agent-tasks/{a.t}", {"priority": "urgent"}),
        ),
        "delete": Case(
            attacks=[(Rest("DELETE", f"/agent-tasks/{b.c}"), "B")], own=Rest("DELETE", f"/agent-tasks/{a.c}")
        ),
    }


def _agent_task_case(op: str) -> CaseFor:
    return lambda a, b: _rest_agent_tasks(a, b)[op]


def _steer_rest(method: str, path: str, body: dict[str, Any] | None) -> CaseFor:
    """A limit's route (`PUT`/`DELETE /concurrency-limits/{scope}/{key}`…), as `_steer` for GraphQL."""
    return lambda a, b: Case(
        attacks=[
            (Rest(method, f"/{path}/agent/B", body), "B"),
            (Rest(method, f"/{path}/workflow/{a.m}", body), None),
            (Rest(method, f"/{path}/key/gpu", body), None),
        ],
        own=Rest(method, f"/{path}/agent/A", body),
    )


REST_CASES: dict[tuple[str, str], CaseFor] = {
    # Limits, rates and policies, as over GraphQL (`_steer`).
    ("concurrency-limits", "set_concurrency_limit"): _steer_rest("PUT", "concurrency-limits", {"max": 3}),
    ("concurrency-limits", "clear_concurrency_limit"): _steer_rest("DELETE", "concurrency-limits", None),
    ("start-rate-limits", "set_start_rate_limit"): _steer_rest(
        "PUT", "start-rate-limits", {"max": 3, "per": "minute"}
    ),
    ("start-rate-limits", "clear_start_rate_limit"): _steer_rest("DELETE", "start-rate-limits", None),
    ("claim-policies", "set_claim_policy"): lambda a, b: Case(
        attacks=[(Rest("PUT", "/claim-policies/B", {"policy": "FAIR_BY_WORKFLOW"}), "B")],
        own=Rest("PUT", "/claim-policies/A", {"policy": "FAIR_BY_WORKFLOW"}),
    ),
    **_rest_level("meta-tasks", "task_id", lambda x: x.m, None, None, {"personality_type": "p"}),
    **_rest_level(
        "sub-tasks", "sub_task_id", lambda x: x.s, "task_id", lambda x: x.m, {"personality_type": "p"}
    ),
    **_rest_level(
        "behavior-tasks",
        "behavior_task_id",
        lambda x: x.b,
        "sub_task_id",
        lambda x: x.s,
        {"action_type": "p"},
    ),
    **_rest_output("task-outputs", "task_id", lambda x: x.m, {"task_data_ptr": {"n": 1}}),
    **_rest_output("sub-task-outputs", "sub_task_id", lambda x: x.s, {"sub_task_data_ptr": {"n": 1}}),
    **_rest_output(
        "behavior-task-outputs", "behavior_task_id", lambda x: x.b, {"behavior_data_ptr": {"n": 1}}
    ),
    **{("agent-tasks", op): _agent_task_case(op) for op in ("create", "update", "delete")},
    ("agent-tasks", "pause"): lambda a, b: Case(
        attacks=[
            (Rest("POST", f"/agent-tasks/{b.t}/pause"), "B"),
            (Rest("POST", f"/agent-tasks/{b.m}/pause?scope=subtree"), "B"),
        ],
        own=Rest("POST", f"/agent-tasks/{a.t}/pause?scope=subtree&reason=hold"),
    ),
    ("agent-tasks", "resume"): lambda a, b: Case(
        attacks=[(Rest("POST", f"/agent-tasks/{b.t}/resume"), "B")],
        own=Rest("POST", f"/agent-tasks/{a.t}/resume"),
        prepare=[Gql(f'pauseTask(id: "{x.t}")') for x in (a, b)],
    ),
    **{
        ("agent-tasks", f"{action}_many"): _bulk_rest(action)
        for action in ("retry", "cancel", "pause", "resume")
    },
    ("agent-tasks", "cancel"): lambda a, b: Case(
        attacks=[
            (Rest("POST", f"/agent-tasks/{b.t}/cancel"), "B"),
            (Rest("POST", f"/agent-tasks/{b.m}/cancel?scope=subtree"), "B"),
        ],
        own=Rest("POST", f"/agent-tasks/{a.t}/cancel?scope=subtree&reason=stop"),
    ),
}


def test_every_write_path_has_a_case() -> None:
    """A new mutation, or a new REST write, fails here until it has a case below (and is agent-checked)."""
    assert set(GRAPHQL_CASES) == set(GRAPHQL["Mutation"]) - KEY_MANAGEMENT
    writes = {
        (route.entity.path, route.operation.name) for route in ROUTES if REST[route.operation.name] is not R
    }
    assert set(REST_CASES) == writes


# ------------------------------------------------------------------------------------------- running


@dataclass
class Env:
    http: httpx.AsyncClient
    db: Any
    admin: dict[str, str]
    bound: dict[str, str]


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup) -> ServerProcess:
    """One server for the module (keys required, no rate limits, leases long enough that the sweeper never
    writes while a case compares the database), on a database of its own."""
    return module_servers.start(
        "binding", {"AUTH_MODE": "keys", "RATE_LIMITS": "off", "LEASE_SECONDS": "3600"}
    )


@pytest.fixture
async def env(server: ServerProcess, mongo_uri: str) -> Any:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    db = client[server.db_name]
    keys = KeyService(db)
    _, admin = await keys.create("admin", [R, W, A])
    _, bound = await keys.create("bound-to-A", [R, W, A], agents=["A"])
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, headers={"Content-Type": "application/json"}
    ) as http:
        yield Env(http, db, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {bound}"})
    await client.close()


async def call(env: Env, c: Call, headers: dict[str, str]) -> httpx.Response:
    if isinstance(c, Gql):
        return await env.http.post("/graphql", json={"query": c.query}, headers=headers)
    return await env.http.request(
        c.method, c.path, headers=headers, content=json.dumps(c.body) if c.body is not None else None
    )


async def succeed(env: Env, c: Call, headers: dict[str, str]) -> None:
    response = await call(env, c, headers)
    if isinstance(c, Gql):
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, (c, body)
        typename = body["data"]["r"]["__typename"]
        assert not typename.endswith("Error") and typename != "NothingToClaim", (c, body)
    else:
        assert response.status_code in (200, 201), (c, response.text)


async def stored(db: Any) -> dict[str, list[dict[str, Any]]]:
    """Every stored document but the keys' (a request moves `last_used_at`)."""
    return {name: docs for name, docs in (await everything(db)).items() if name != "api_keys"}


async def refused(env: Env, c: Call, agent: str | None) -> None:
    response = await call(env, c, env.bound)
    if isinstance(c, Gql):
        assert response.status_code == 200, response.text
        result = response.json()["data"]["r"]
        assert result["__typename"] == "ForbiddenError", (c, result)
        assert result["code"] == "FORBIDDEN" and result["agentName"] == agent, (c, result)
        assert "may act only for: A" in result["message"], result
    else:
        assert response.status_code == 403, (c, response.text)
        error = response.json()["error"]
        assert error["code"] == "forbidden" and error.get("agent_name") == agent, (c, error)
        assert "required_scope" not in error and "may act only for: A" in error["message"], error


async def run(env: Env, setup: list[Call], case: Case) -> None:
    """The admin's `setup` and the case's `prepare`; each attack refused with nothing written; then the
    case's own write."""
    for c in [*setup, *case.prepare]:
        await succeed(env, c, env.admin)
    for attack, agent in case.attacks:
        before = await stored(env.db)
        await refused(env, attack, agent)
        after = await stored(env.db)
        assert len(after.get("task_events", [])) == len(before.get("task_events", [])), attack  # no event
        assert after == before, attack
    await succeed(env, case.own, env.bound)


def worlds(prefix: str) -> tuple[list[Call], Ids, Ids]:
    return [*world(prefix, "A"), *world(prefix, "B")], ids(prefix, "A"), ids(prefix, "B")


@pytest.mark.parametrize("name", sorted(GRAPHQL_CASES))
async def test_graphql_write(env: Env, name: str) -> None:
    setup, a, b = worlds(f"g{name}")
    await run(env, setup, GRAPHQL_CASES[name](a, b))


@pytest.mark.parametrize("route", sorted(REST_CASES), ids=lambda r: f"{r[1]}-{r[0]}")
async def test_rest_write(env: Env, route: tuple[str, str]) -> None:
    setup, a, b = worlds(f"r{route[1]}-{route[0]}")
    await run(env, setup, REST_CASES[route](a, b))


async def test_subtrees_and_parents_of_mixed_trees(env: Env) -> None:
    """A task of A's is not A's to delete or move when it takes a task of B's along, or when B's task
    loses it as a child: cascades and moves check every task they touch."""
    setup: list[Call] = [
        Gql(
            'createWorkflow(input: {id: "x-Am", state: {agentName: "A"}, subTasks: ['
            '{id: "x-Bs", state: {agentName: "B"}},'
            ' {id: "x-As", state: {agentName: "A"}, behaviorTasks: [{id: "x-Bb", state: {agentName: "B"}}]}]})'
        ),
        Gql(
            'createWorkflow(input: {id: "x-Bm", state: {agentName: "B"},'
            ' subTasks: [{id: "x-As2", state: {agentName: "A"}}]})'
        ),
        Gql('createWorkflow(input: {id: "x-Am2", state: {agentName: "A"}})'),
        Gql('createMetaWorkflowTask(input: {id: "x-Nm"})'),  # no agent
        Gql('createAgentTask(input: {id: "x-Bt", agentName: "B"})'),
        Gql('addSubtask(parentId: "x-Bt", input: {id: "x-At", agentName: "A"})'),
    ]
    case = Case(
        attacks=[
            (Gql('deleteMetaWorkflowTask(id: "x-Am", cascade: true)'), "B"),  # B's sub-task goes with it
            (Gql('cancelTask(id: "x-Am", scope: SUBTREE)'), "B"),  # B's sub-task is cancelled with it
            (Rest("DELETE", "/meta-tasks/x-Am?cascade=true"), "B"),
            (Gql('deleteSubTask(id: "x-As", cascade: true)'), "B"),  # B's behavior task goes with it
            (Gql('updateSubTask(id: "x-As", input: {taskId: "x-Am2"})'), "B"),  # moves B's behavior task
            (Rest("PATCH", "/sub-tasks/x-As", {"task_id": "x-Am2"}), "B"),
            (Gql('deleteSubTask(id: "x-As2")'), "B"),  # B's meta task loses a child
            (Gql('updateSubTask(id: "x-As2", input: {taskId: "x-Am2"})'), "B"),  # ...to a move
            (Gql('updateSubTask(id: "x-As2", input: {taskId: "x-Nm"})'), None),  # a parent of nobody's
            (Gql('createSubTask(input: {taskId: "x-Nm", id: "x-new", state: {agentName: "A"}})'), None),
            (Gql('deleteAgentTask(id: "x-At")'), "B"),  # B's task loses a child
            (Gql('updateAgentTask(id: "x-At", input: {parentTaskId: null})'), "B"),
            (Rest("DELETE", "/agent-tasks/x-At"), "B"),
            # A refused request keeps no idempotency answer either (the database is compared).
            (Gql('updateAgentTask(id: "x-Bt", input: {agentName: "A"}, idempotencyKey: "x-key")'), "B"),
        ],
        own=Gql('updateSubTask(id: "x-As2", input: {personalityType: "p"})'),
    )
    await run(env, setup, case)


async def test_bulk_actions_reach_only_the_keys_agents(env: Env) -> None:
    """A bulk action by a key bound to A matches only A's tasks, whatever its filter says: B's tasks are
    neither counted nor changed (GraphQL and REST)."""
    setup, a, b = worlds("bulk")
    await run(env, setup, Case(attacks=[], own=Gql(f'updateAgentTask(id: "{a.t}", input: {{name: "n"}})')))
    ids = [a.t, a.c, b.t, b.c]
    before_b = [await env.db.agent_task_states.find_one({"_id": i}) for i in (b.t, b.c)]
    query = "mutation($f: JSON) { pauseTasks(filter: $f) { __typename ... on BulkActionSuccess { matched changedIds } } }"
    answer = await env.http.post(
        "/graphql", json={"query": query, "variables": {"f": {"task_id": {"$in": ids}}}}, headers=env.bound
    )
    result = answer.json()["data"]["pauseTasks"]
    assert result == {"__typename": "BulkActionSuccess", "matched": 2, "changedIds": sorted([a.t, a.c])}
    rest = await env.http.post(
        "/agent-tasks/cancel", json={"filter": {"task_id": {"$in": ids}}}, headers=env.bound
    )
    assert rest.status_code == 200 and sorted(rest.json()["changed_ids"]) == sorted([a.t, a.c]), rest.text
    assert [await env.db.agent_task_states.find_one({"_id": i}) for i in (b.t, b.c)] == before_b
    statuses = {d["_id"]: d["status"] async for d in env.db.agent_task_states.find({"_id": {"$in": ids}})}
    assert statuses == {a.t: "cancelled", a.c: "cancelled", b.t: "pending", b.c: "pending"}


async def test_the_issues_attacks_are_named_in_the_refusal(env: Env) -> None:
    """Finding 3 as reported: each answer says whose task it is and which agents the key may act for."""
    setup, a, b = worlds("issue")
    await run(env, setup, Case(attacks=[], own=Gql(f'updateAgentTask(id: "{a.t}", input: {{name: "n"}})')))
    take = await call(env, Gql(f'updateAgentTask(id: "{b.t}", input: {{agentName: "A"}})'), env.bound)
    message = take.json()["data"]["r"]["message"]
    assert message.startswith(f"task '{b.t}' belongs to agent 'B'; this caller (key ") and message.endswith(
        ") may act only for: A"
    )
    push = await call(env, Rest("PATCH", f"/agent-tasks/{a.t}", {"agent_name": "B"}), env.bound)
    assert push.status_code == 403
    assert push.json()["error"]["message"].startswith(
        f"task '{a.t}', given to its new agent, belongs to agent 'B'"
    )
    urgent = await call(env, Rest("PATCH", f"/agent-tasks/{b.t}", {"priority": "urgent"}), env.bound)
    assert urgent.status_code == 403 and urgent.json()["error"]["agent_name"] == "B"
    stored_b = await env.db.agent_task_states.find_one({"_id": b.t})
    assert stored_b["agent_name"] == "B" and stored_b["priority"] != "urgent" and stored_b["version"] == 1
    assert (await env.db.agent_task_states.find_one({"_id": a.t}))["agent_name"] == "A"
    # With B's task still B's, a claim for A cannot hand it out either.
    claim = await call(env, Gql('claimTask(agentName: "B")'), env.bound)
    assert claim.json()["data"]["r"]["__typename"] == "ForbiddenError"


async def test_purge_reaches_only_the_keys_agents(env: Env) -> None:
    """An agent-bound admin key purges its agents' finished work only: B's finished task, and a finished
    workflow of A's holding a task of B's, stay with their events."""
    setup: list[Call] = [
        Gql('createAgentTask(input: {id: "p-A", agentName: "A"})'),
        Gql('createAgentTask(input: {id: "p-B", agentName: "B"})'),
        Gql(
            'createWorkflow(input: {id: "p-Am", state: {agentName: "A"}, subTasks: ['
            '{id: "p-Bs", state: {agentName: "B"}}]})'
        ),
        *(Gql(f'cancelTask(id: "{t}")') for t in ("p-A", "p-B", "p-Am", "p-Bs")),
    ]
    for c in setup:
        await succeed(env, c, env.admin)
    response = await call(env, Gql("purgeTasks(filter: {}, dryRun: false)"), env.bound)
    assert response.json()["data"]["r"]["__typename"] == "PurgeTasksSuccess", response.text
    left = {d["_id"] async for d in env.db.agent_task_states.find({"_id": {"$regex": "^p-"}})}
    assert left == {"p-B", "p-Am", "p-Bs"}
    assert await env.db.task_events.count_documents({"task_id": "p-A"}) == 0
    assert await env.db.task_events.count_documents({"task_id": "p-B"}) > 0
