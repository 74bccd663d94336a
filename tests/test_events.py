"""The `task_events` outbox over HTTP: the `taskEvents` connection (order, filters, cursors, refusals), the
nested `events` fields and their MongoDB cost, and the record* mutations (seed 003 payloads, validation,
not-found, idempotency)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from bson import ObjectId

from app.demo.documents import synthetic_tree, write_documents
from app.demo.workflow import DEMO_WORKFLOW_ID, load_demo
from app.lifecycle.events import EventType, event_doc
from app.store.events import append_events
from tests.conftest import CommandLog, GraphQLClient, read_query
from tests.support.lifecycle_helpers import append_stamped, mutation, snapshot, task

TASK_EVENTS = read_query("TaskEvents.graphql")
RECORD_TOOL_CALL = read_query("RecordToolCall.graphql")

EVENTS = """query($taskId: ID, $workflowId: ID, $agentId: String, $types: [EventType!], $after: String, $first: Int) {
  taskEvents(taskId: $taskId, workflowId: $workflowId, agentId: $agentId, types: $types, after: $after, first: $first) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id cursor type taskId workflowId agentId } }
  }
}"""

RECORD_RESULT = """
  __typename
  ... on Error { message }
  ... on NotFoundError { id }
  ... on ValidationError { field }
  ... on RecordEventSuccess {
    event {
      __typename id cursor type taskId workflowId agentId timestamp
      ... on ToolCallEvent { toolName toolArgs correlationId }
      ... on ToolResultEvent { toolName status result errorMessage correlationId }
      ... on MemoryOperationEvent { operation keyOrQuery memoryStatus: status message }
    }
  }
"""

RECORD_TOOL_RESULT = f"""mutation($taskId: ID!, $toolName: String!, $status: String!, $result: JSON,
  $errorMessage: String, $agentId: String, $correlationId: String, $idempotencyKey: String) {{
  r: recordToolResult(taskId: $taskId, toolName: $toolName, status: $status, result: $result,
    errorMessage: $errorMessage, agentId: $agentId, correlationId: $correlationId,
    idempotencyKey: $idempotencyKey) {{ {RECORD_RESULT} }}
}}"""

RECORD_MEMORY = f"""mutation($taskId: ID!, $operation: String!, $keyOrQuery: String!, $status: String!,
  $message: String, $agentId: String, $idempotencyKey: String) {{
  r: recordMemoryOperation(taskId: $taskId, operation: $operation, keyOrQuery: $keyOrQuery, status: $status,
    message: $message, agentId: $agentId, idempotencyKey: $idempotencyKey) {{ {RECORD_RESULT} }}
}}"""

RECORD_CALL = f"""mutation($taskId: ID!, $toolName: String!, $toolArgs: JSON, $agentId: String,
  $correlationId: String, $idempotencyKey: String) {{
  r: recordToolCall(taskId: $taskId, toolName: $toolName, toolArgs: $toolArgs, agentId: $agentId,
    correlationId: $correlationId, idempotencyKey: $idempotencyKey) {{ {RECORD_RESULT} }}
}}"""

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def events_page(gql: GraphQLClient, **variables: Any) -> dict[str, Any]:
    return (await gql.data(EVENTS, variables))["taskEvents"]


def kinds(page: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["node"]["type"], e["node"]["taskId"]) for e in page["edges"]]


async def demo_with_events(gql: GraphQLClient, db: Any) -> None:
    """The demo workflow, with lifecycle events, plus a standalone task of another agent."""
    await load_demo(db)
    await db.agent_task_states.insert_one(task("solo", "pending", agent="SoloAgent"))
    for name, task_id in (
        ("completeTask", "beh_write_script"),  # releases beh_polish_script
        ("startTask", "solo"),
        ("startTask", "beh_select_voice"),
    ):
        r = (await gql.data(mutation(name, f'id: "{task_id}"')))["r"]
        assert r["__typename"] == "TaskTransitionSuccess", r


# ----------------------------------------------------------------------------------------- taskEvents


async def test_task_events_are_oldest_first_and_filter(gql: GraphQLClient, db: Any) -> None:
    await demo_with_events(gql, db)
    everything = await events_page(gql)
    stored = [e async for e in db.task_events.find().sort("seq", 1)]
    assert [e["node"]["id"] for e in everything["edges"]] == [str(e["seq"]) for e in stored]
    assert kinds(everything) == [
        ("STATUS_CHANGED", "beh_write_script"),
        ("TASK_COMPLETED", "beh_write_script"),
        ("STATUS_CHANGED", "beh_polish_script"),
        ("STATUS_CHANGED", "solo"),
        ("STATUS_CHANGED", "beh_select_voice"),
    ]
    assert everything["totalCount"] == 5
    assert all(e["cursor"] == e["node"]["cursor"] == e["node"]["id"] for e in everything["edges"])

    by_task = await events_page(gql, taskId="beh_write_script")
    assert kinds(by_task) == [("STATUS_CHANGED", "beh_write_script"), ("TASK_COMPLETED", "beh_write_script")]
    assert by_task["totalCount"] == 2

    by_workflow = await events_page(gql, workflowId=DEMO_WORKFLOW_ID)
    assert [t for _, t in kinds(by_workflow)] == [
        "beh_write_script",
        "beh_write_script",
        "beh_polish_script",
        "beh_select_voice",
    ]
    assert {e["node"]["workflowId"] for e in by_workflow["edges"]} == {DEMO_WORKFLOW_ID}

    by_agent = await events_page(gql, agentId="SoloAgent")
    assert kinds(by_agent) == [("STATUS_CHANGED", "solo")]
    assert by_agent["edges"][0]["node"]["workflowId"] is None

    by_type = await events_page(gql, types=["TASK_COMPLETED", "TASK_FAILED"])
    assert kinds(by_type) == [("TASK_COMPLETED", "beh_write_script")]
    combined = await events_page(
        gql, workflowId=DEMO_WORKFLOW_ID, types=["STATUS_CHANGED"], agentId="VoiceForgeAgent"
    )
    assert kinds(combined) == [("STATUS_CHANGED", "beh_select_voice")] and combined["totalCount"] == 1
    none = await events_page(gql, types=[])
    assert none["edges"] == [] and none["totalCount"] == 0
    assert (await events_page(gql, taskId="ghost"))["edges"] == []


async def test_pages_resume_exactly_after_the_cursor(gql: GraphQLClient, db: Any) -> None:
    await load_demo(db)
    docs = [
        event_doc(EventType.TOOL_CALL, "beh_write_script", DEMO_WORKFLOW_ID, "A", {"tool_name": f"t{i}"}, T0)
        for i in range(7)
    ]
    other = event_doc(EventType.TOOL_CALL, "elsewhere", "other_workflow", "A", {"tool_name": "x"}, T0)
    await append_stamped(db, [*docs[:4], other, *docs[4:]])
    expected = [str(d["seq"]) for d in docs]

    seen: list[str] = []
    after = None
    pages = []
    for _ in range(3):
        page = (await gql.data(TASK_EVENTS, {"workflowId": DEMO_WORKFLOW_ID, "after": after, "first": 3}))[
            "taskEvents"
        ]
        pages.append(page)
        seen += [e["cursor"] for e in page["edges"]]
        after = page["pageInfo"]["endCursor"]
    assert seen == expected  # no duplicate, no gap, other workflows left out
    assert [len(p["edges"]) for p in pages] == [3, 3, 1]
    assert [p["pageInfo"]["hasNextPage"] for p in pages] == [True, True, False]
    assert all(p["totalCount"] == 7 for p in pages)
    node = pages[0]["edges"][0]["node"]
    assert node["__typename"] == "ToolCallEvent" and node["toolName"] == "t0" and node["toolArgs"] == {}

    # An event committed after the last page is read is exactly what resuming from its end returns.
    late = event_doc(
        EventType.TOOL_CALL, "beh_write_script", DEMO_WORKFLOW_ID, "A", {"tool_name": "late"}, T0
    )
    await append_stamped(db, [late])
    page = (await gql.data(TASK_EVENTS, {"workflowId": DEMO_WORKFLOW_ID, "after": after}))["taskEvents"]
    assert [e["cursor"] for e in page["edges"]] == [str(late["seq"])]
    empty = await events_page(gql, workflowId=DEMO_WORKFLOW_ID, after=str(late["seq"]))
    assert empty["edges"] == [] and empty["pageInfo"]["hasNextPage"] is False
    assert empty["pageInfo"]["hasPreviousPage"] is True and empty["pageInfo"]["endCursor"] is None


async def test_page_size_zero_says_whether_events_exist(gql: GraphQLClient, db: Any) -> None:
    await append_stamped(db, [event_doc(EventType.TOOL_CALL, "t", None, "A", {"tool_name": "x"}, T0)])
    page = await events_page(gql, first=0)
    assert page["edges"] == [] and page["pageInfo"]["hasNextPage"] is True and page["totalCount"] == 1


@pytest.mark.parametrize(
    "after", ["HEAD", "nope", "0", "-5", "1.5", "0123456789ab", "6650f0c2a1b2c3d4e5f6a7b8ff", "9" * 40, ""]
)
async def test_a_cursor_not_issued_by_the_server_is_refused(gql: GraphQLClient, db: Any, after: str) -> None:
    error = await gql.error(EVENTS, {"after": after})
    assert error["message"] == "cursor was not issued by this server"
    assert error["extensions"]["code"] == "BAD_CURSOR"


async def test_a_list_cursor_is_not_an_event_cursor(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_many([task("a", "pending"), task("b", "pending")])
    list_cursor = (await gql.data("{ agentTasks(first: 1) { pageInfo { endCursor } } }"))["agentTasks"][
        "pageInfo"
    ]["endCursor"]
    error = await gql.error(EVENTS, {"after": list_cursor})
    assert error["extensions"]["code"] == "BAD_CURSOR"


@pytest.mark.parametrize("first", [-1, 101])
async def test_page_size_out_of_range_is_refused(gql: GraphQLClient, db: Any, first: int) -> None:
    error = await gql.error(EVENTS, {"first": first})
    assert error["message"] == f"`first` must be between 0 and 100, got {first}."
    assert error["extensions"]["code"] == "PAGE_SIZE_OUT_OF_RANGE"
    await db.sub_tasks.insert_one({"_id": "s", "task_id": "m"})
    error = await gql.error(f'{{ subTask(id: "s") {{ events(first: {first}) {{ id }} }} }}')
    assert error["extensions"]["code"] == "PAGE_SIZE_OUT_OF_RANGE"


# ------------------------------------------------------------------------------------- nested events

NESTED = """query($id: ID!) {
  metaWorkflowTask(id: $id) {
    events { type taskId }
    state { events { type } }
    subTasks {
      id
      events(first: 2) { type }
      behaviorTasks {
        id
        events { __typename type taskId cursor ... on TaskCompletedEvent { result } }
        state { events(types: [TASK_COMPLETED]) { type } }
      }
    }
  }
}"""


async def test_nested_events_on_every_task_type(gql: GraphQLClient, db: Any) -> None:
    await demo_with_events(gql, db)
    await gql.data(mutation("reportProgress", 'id: "sub_script", percentage: 10'))  # sub-task events
    await gql.data(mutation("reportProgress", 'id: "sub_script", percentage: 20'))
    await gql.data(mutation("reportProgress", 'id: "sub_script", percentage: 30'))
    tree = (await gql.data(NESTED, {"id": DEMO_WORKFLOW_ID}))["metaWorkflowTask"]
    assert tree["events"] == [] and tree["state"]["events"] == []
    script = next(s for s in tree["subTasks"] if s["id"] == "sub_script")
    assert script["events"] == [
        {"type": "TASK_PROGRESS"},
        {"type": "TASK_PROGRESS"},
    ]  # first: 2, oldest first
    write = next(b for b in script["behaviorTasks"] if b["id"] == "beh_write_script")
    assert [(e["__typename"], e["type"]) for e in write["events"]] == [
        ("StatusChangedEvent", "STATUS_CHANGED"),
        ("TaskCompletedEvent", "TASK_COMPLETED"),
    ]
    assert write["events"][1]["result"] == {}
    assert write["state"]["events"] == [{"type": "TASK_COMPLETED"}]
    polish = next(b for b in script["behaviorTasks"] if b["id"] == "beh_polish_script")
    assert [e["type"] for e in polish["events"]] == ["STATUS_CHANGED"] and polish["state"]["events"] == []

    data = await gql.data(
        """{ subTask(id: "sub_script") { events(first: 1) { cursor } }
             behaviorTask(id: "beh_select_voice") { events { type } }
             agentTask(id: "solo") { events { type agentId } }
             mine: agentTask(id: "beh_write_script") { events(types: [STATUS_CHANGED], first: 0) { type } } }"""
    )
    assert data["behaviorTask"]["events"] == [{"type": "STATUS_CHANGED"}]
    assert data["agentTask"]["events"] == [{"type": "STATUS_CHANGED", "agentId": "SoloAgent"}]
    assert data["mine"]["events"] == []
    # The nested list gives the first events; the root connection pages on from its last cursor.
    rest = await events_page(gql, taskId="sub_script", after=data["subTask"]["events"][0]["cursor"])
    assert [e["node"]["type"] for e in rest["edges"]] == ["TASK_PROGRESS", "TASK_PROGRESS"]


async def test_nested_events_cost_does_not_grow_with_the_tree(
    gql: GraphQLClient, db: Any, command_log: CommandLog
) -> None:
    reads = {}
    for workflow_id, size in (("small", (2, 2)), ("large", (5, 4))):
        docs = synthetic_tree(workflow_id, *size)
        await write_documents(db, docs)
        await append_stamped(
            db,
            [
                event_doc(EventType.TOOL_CALL, state["_id"], workflow_id, "A", {"tool_name": f"t{i}"}, T0)
                for state in docs["agent_task_states"]
                for i in range(3)
            ],
        )
        command_log.clear()
        tree = (await gql.data(NESTED, {"id": workflow_id}))["metaWorkflowTask"]
        assert len(tree["subTasks"]) == size[0]
        assert [e["type"] for e in tree["events"]] == ["TOOL_CALL"] * 3
        assert all(len(s["events"]) == 2 for s in tree["subTasks"])
        assert all(len(b["events"]) == 3 for s in tree["subTasks"] for b in s["behaviorTasks"])
        reads[workflow_id] = sorted(command_log.reads())
    assert reads["small"] == reads["large"]
    event_reads = [r for r in reads["large"] if r[1] == "task_events"]
    # One aggregate per level that asks for events (meta, its state, sub-tasks, behavior tasks, their states).
    assert event_reads and all(r[0] == "aggregate" for r in event_reads) and len(event_reads) <= 5


# ----------------------------------------------------------------------------------------- recording


async def test_record_tool_call_stores_the_seed_payload(gql: GraphQLClient, db: Any) -> None:
    await load_demo(db)
    before = await db.agent_task_states.find_one({"_id": "beh_write_script"})
    variables = {
        "taskId": "beh_write_script",
        "toolName": "web_search",
        "toolArgs": {"query": "AI ethics", "limit": 5, "filters": {"lang": ["en"]}},
        "correlationId": "call-7f3a",
    }
    r = (await gql.data(RECORD_TOOL_CALL, variables))["recordToolCall"]
    assert r["__typename"] == "RecordEventSuccess"
    event = r["event"]
    stored = await db.task_events.find_one({"seq": ObjectId(event["id"])})
    assert stored["type"] == "TOOL_CALL" and stored["task_id"] == "beh_write_script"
    assert stored["workflow_id"] == DEMO_WORKFLOW_ID
    assert stored["agent_id"] == "PodcastScriptWeaverAgent"  # the task's agent, by default
    assert isinstance(stored["timestamp"], dt.datetime)
    assert stored["payload"] == {
        "tool_name": "web_search",
        "tool_args": {"query": "AI ethics", "limit": 5, "filters": {"lang": ["en"]}},
        "agent_id": "PodcastScriptWeaverAgent",
        "correlation_id": "call-7f3a",
    }
    assert event == {
        "id": str(stored["seq"]),
        "cursor": str(stored["seq"]),
        "type": "TOOL_CALL",
        "taskId": "beh_write_script",
        "workflowId": DEMO_WORKFLOW_ID,
        "agentId": "PodcastScriptWeaverAgent",
        "timestamp": stored["timestamp"].isoformat(),
        "toolName": "web_search",
        "toolArgs": variables["toolArgs"],
        "correlationId": "call-7f3a",
    }
    # Reporting is not a transition: the state is untouched.
    assert await db.agent_task_states.find_one({"_id": "beh_write_script"}) == before

    # Defaults: toolArgs {}; an explicit agent; keys MongoDB treats specially are stored as sent.
    await db.agent_task_states.insert_one(task("solo", "pending"))
    r = (await gql.data(RECORD_CALL, {"taskId": "solo", "toolName": "calc", "agentId": "Helper"}))["r"]
    assert r["event"]["toolArgs"] == {} and r["event"]["agentId"] == "Helper"
    stored = await db.task_events.find_one({"seq": ObjectId(r["event"]["id"])})
    assert stored["workflow_id"] is None and stored["agent_id"] == "Helper"
    assert stored["payload"] == {
        "tool_name": "calc",
        "tool_args": {},
        "agent_id": "Helper",
        "correlation_id": None,
    }
    odd = {"q": {"$where": "sleep(1)", "a.b": 1}}
    r = (await gql.data(RECORD_CALL, {"taskId": "solo", "toolName": "calc", "toolArgs": odd}))["r"]
    assert r["event"]["toolArgs"] == odd
    assert (await db.task_events.find_one({"seq": ObjectId(r["event"]["id"])}))["payload"]["tool_args"] == odd


async def test_record_tool_result_stores_the_seed_payload(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "in_progress", agent="AgentA"))
    variables = {
        "taskId": "t1",
        "toolName": "web_search",
        "status": "failure",
        "result": [{"title": "partial"}, 3, None],
        "errorMessage": "HTTP 503",
        "correlationId": "call-1",
    }
    r = (await gql.data(RECORD_TOOL_RESULT, variables))["r"]
    assert r["__typename"] == "RecordEventSuccess"
    assert r["event"]["__typename"] == "ToolResultEvent" and r["event"]["status"] == "FAILURE"
    assert (
        r["event"]["result"] == [{"title": "partial"}, 3, None] and r["event"]["errorMessage"] == "HTTP 503"
    )
    stored = await db.task_events.find_one({"seq": ObjectId(r["event"]["id"])})
    assert (stored["type"], stored["task_id"], stored["agent_id"]) == ("TOOL_RESULT", "t1", "AgentA")
    assert stored["payload"] == {
        "tool_name": "web_search",
        "status": "FAILURE",
        "result": [{"title": "partial"}, 3, None],
        "error_message": "HTTP 503",
        "agent_id": "AgentA",
        "correlation_id": "call-1",
    }
    r = (await gql.data(RECORD_TOOL_RESULT, {"taskId": "t1", "toolName": "calc", "status": "Success"}))["r"]
    stored = await db.task_events.find_one({"seq": ObjectId(r["event"]["id"])})
    assert stored["payload"] == {
        "tool_name": "calc",
        "status": "SUCCESS",
        "result": None,
        "error_message": None,
        "agent_id": "AgentA",
        "correlation_id": None,
    }


async def test_record_memory_operation_stores_the_seed_payload(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "in_progress", agent="AgentA"))
    variables = {
        "taskId": "t1",
        "operation": "query",
        "keyOrQuery": "episodes about AI ethics",
        "status": "success",
        "message": "3 hits",
        "agentId": "MemoryAgent",
    }
    r = (await gql.data(RECORD_MEMORY, variables))["r"]
    assert r["event"]["__typename"] == "MemoryOperationEvent"
    assert (r["event"]["operation"], r["event"]["keyOrQuery"], r["event"]["memoryStatus"]) == (
        "query",
        "episodes about AI ethics",
        "SUCCESS",
    )
    stored = await db.task_events.find_one({"seq": ObjectId(r["event"]["id"])})
    assert (stored["type"], stored["agent_id"]) == ("MEMORY_OPERATION", "MemoryAgent")
    assert stored["payload"] == {
        "agent_id": "MemoryAgent",
        "operation": "query",
        "key_or_query": "episodes about AI ethics",
        "status": "SUCCESS",
        "message": "3 hits",
    }


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (RECORD_CALL, {"toolName": "calc"}),
        (RECORD_TOOL_RESULT, {"toolName": "calc", "status": "SUCCESS"}),
        (RECORD_MEMORY, {"operation": "get", "keyOrQuery": "k", "status": "SUCCESS"}),
    ],
)
async def test_recording_for_an_unknown_task_is_not_found(
    gql: GraphQLClient, db: Any, query: str, variables: dict[str, Any]
) -> None:
    r = (await gql.data(query, {"taskId": "ghost", **variables}))["r"]
    assert r == {"__typename": "NotFoundError", "message": "no task with id 'ghost'", "id": "ghost"}
    assert await db.task_events.count_documents({}) == 0


BIG = {"blob": "x" * 70_000}  # 70,011 bytes as compact JSON


@pytest.mark.parametrize(
    ("query", "variables", "field", "text"),
    [
        (RECORD_CALL, {"toolName": ""}, "toolName", "cannot be empty"),
        (RECORD_CALL, {"toolName": "   "}, "toolName", "cannot be empty"),
        (RECORD_CALL, {"toolName": "t" * 201}, "toolName", "at most 200 characters, got 201"),
        (RECORD_CALL, {"toolName": "calc", "toolArgs": [1, 2]}, "toolArgs", "must be an object"),
        (
            RECORD_CALL,
            {"toolName": "calc", "toolArgs": BIG},
            "toolArgs",
            "payload too large: 70011 bytes (limit 65536)",
        ),
        (RECORD_CALL, {"toolName": "calc", "agentId": ""}, "agentId", "cannot be empty"),
        (RECORD_CALL, {"toolName": "calc", "correlationId": "c" * 201}, "correlationId", "at most 200"),
        (RECORD_CALL, {"toolName": "calc", "idempotencyKey": ""}, "idempotencyKey", "1 to 200"),
        (RECORD_TOOL_RESULT, {"toolName": "calc", "status": "maybe"}, "status", "SUCCESS, FAILURE, ERROR"),
        (RECORD_TOOL_RESULT, {"toolName": "calc", "status": "ok", "result": 1}, "status", "got 'ok'"),
        (RECORD_TOOL_RESULT, {"toolName": "", "status": "ERROR"}, "toolName", "cannot be empty"),
        (
            RECORD_TOOL_RESULT,
            {"toolName": "calc", "status": "ERROR", "result": BIG},
            "result",
            "payload too large: 70011 bytes",
        ),
        (
            RECORD_TOOL_RESULT,
            {"toolName": "calc", "status": "ERROR", "result": ["x" * 70_000]},
            "result",
            "payload too large",
        ),
        (
            RECORD_MEMORY,
            {"operation": "get", "keyOrQuery": "k", "status": "ERROR"},
            "status",
            "SUCCESS, FAILURE",
        ),
        (
            RECORD_MEMORY,
            {"operation": "", "keyOrQuery": "k", "status": "SUCCESS"},
            "operation",
            "cannot be empty",
        ),
        (
            RECORD_MEMORY,
            {"operation": "o" * 201, "keyOrQuery": "k", "status": "SUCCESS"},
            "operation",
            "at most 200",
        ),
        (
            RECORD_MEMORY,
            {"operation": "get", "keyOrQuery": "", "status": "SUCCESS"},
            "keyOrQuery",
            "cannot be empty",
        ),
        (
            RECORD_MEMORY,
            {"operation": "get", "keyOrQuery": "k" * 2001, "status": "SUCCESS"},
            "keyOrQuery",
            "at most 2000 characters, got 2001",
        ),
    ],
)
async def test_invalid_reports_are_validation_errors_and_change_nothing(
    gql: GraphQLClient, db: Any, query: str, variables: dict[str, Any], field: str, text: str
) -> None:
    await db.agent_task_states.insert_one(task("t1", "in_progress"))
    before = await snapshot(db)
    r = (await gql.data(query, {"taskId": "t1", **variables}))["r"]
    assert r["__typename"] == "ValidationError" and r["field"] == field, r
    assert text in r["message"]
    assert await snapshot(db) == before


async def test_deeply_nested_payload_is_refused(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "in_progress"))
    deep: Any = 1
    for _ in range(60):
        deep = {"d": deep}
    before = await snapshot(db)
    r = (await gql.data(RECORD_CALL, {"taskId": "t1", "toolName": "calc", "toolArgs": deep}))["r"]
    assert (
        r["__typename"] == "ValidationError" and r["field"] == "toolArgs" and "nested deeper" in r["message"]
    )
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    ("variables", "field", "text"),
    [
        ({"toolArgs": {"a\x00b": 1}}, "toolArgs", "must not contain NUL"),
        ({"toolArgs": {"a": "\ud800"}}, "toolArgs", "unpaired surrogate"),
        ({"toolArgs": {"\udfff": 1}}, "toolArgs", "unpaired surrogate"),
        ({"toolArgs": {"x": float("nan")}}, "toolArgs", "not finite"),
        ({"toolArgs": {"x": [float("inf")]}}, "toolArgs", "not finite"),
        ({"toolName": "calc\ud800"}, "toolName", "unpaired surrogate"),
        ({"correlationId": "\udc00"}, "correlationId", "unpaired surrogate"),
    ],
)
async def test_payloads_mongodb_or_json_cannot_hold_are_validation_errors(
    client: Any, db: Any, variables: dict[str, Any], field: str, text: str
) -> None:
    """JSON lets a client send NUL in keys, lone surrogates and NaN: each must be refused as data, not
    masked as an unexpected error (BSON cannot encode the first two) or stored (NaN would make every
    later read of the event invalid JSON)."""
    await db.agent_task_states.insert_one(task("t1", "in_progress"))
    before = await snapshot(db)
    body = {"query": RECORD_CALL, "variables": {"taskId": "t1", "toolName": "calc", **variables}}
    # Python's json writes what httpx's encoder refuses (NaN, lone surrogates as \u escapes).
    response = await client.post(
        "/graphql", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    answer = response.json()
    assert "errors" not in answer, answer["errors"]
    r = answer["data"]["r"]
    assert r["__typename"] == "ValidationError" and r["field"] == field, r
    assert text in r["message"]
    assert await snapshot(db) == before


async def test_idempotency_key_records_once_and_returns_the_first_event(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "in_progress"))
    variables = {"taskId": "t1", "toolName": "calc", "toolArgs": {"x": 1}, "idempotencyKey": "call-1"}
    first = (await gql.data(RECORD_CALL, variables))["r"]
    second = (await gql.data(RECORD_CALL, variables))["r"]
    assert first["__typename"] == "RecordEventSuccess" and first == second
    assert await db.task_events.count_documents({}) == 1
    # Another key is another report; the same key for another mutation is refused.
    await gql.data(RECORD_CALL, {**variables, "idempotencyKey": "call-2"})
    assert await db.task_events.count_documents({}) == 2
    before = await snapshot(db)
    r = (
        await gql.data(
            RECORD_MEMORY,
            {
                "taskId": "t1",
                "operation": "get",
                "keyOrQuery": "k",
                "status": "SUCCESS",
                "idempotencyKey": "call-1",
            },
        )
    )["r"]
    assert r["__typename"] == "ValidationError" and r["field"] == "idempotencyKey"
    assert await snapshot(db) == before


async def test_event_positions_follow_commit_order(gql: GraphQLClient, db: Any) -> None:
    """A transaction that appended its event first but commits last gets the later position, and a reader
    that resumed after the fast one's cursor still gets it: nothing is skipped, nothing serializes."""
    import asyncio

    from app.store.transactions import in_transaction

    a_appended = asyncio.Event()
    b_committed = asyncio.Event()

    async def slow(session: Any) -> Any:
        event = event_doc(EventType.TOOL_CALL, "a", None, "A", {"tool_name": "slow"}, T0)
        await append_events(db, session, [event])
        a_appended.set()
        await b_committed.wait()  # still uncommitted while the other transaction commits
        return event["_id"]

    async def fast(session: Any) -> Any:
        event = event_doc(EventType.TOOL_CALL, "b", None, "B", {"tool_name": "fast"}, T0)
        await append_events(db, session, [event])
        return event["_id"]

    slow_task = asyncio.create_task(in_transaction(db, slow))
    await a_appended.wait()
    fast_id = await in_transaction(db, fast)  # no shared counter: it commits at once, before the slow one
    async with asyncio.timeout(60):
        while (first := await events_page(gql))["edges"] == []:
            await asyncio.sleep(0.01)
    assert [e["node"]["taskId"] for e in first["edges"]] == ["b"]
    b_committed.set()
    slow_id = await slow_task
    async with asyncio.timeout(60):
        while (rest := await events_page(gql, after=first["pageInfo"]["endCursor"]))["edges"] == []:
            await asyncio.sleep(0.01)
    assert [e["node"]["taskId"] for e in rest["edges"]] == ["a"]
    stored = [e["_id"] async for e in db.task_events.find().sort("seq", 1)]
    assert stored == [fast_id, slow_id]


async def test_an_event_of_an_unknown_type_reads_as_other(gql: GraphQLClient, db: Any) -> None:
    """Another program wrote an event type this server does not know: lists still read, as OtherEvent."""
    await append_stamped(db, [event_doc("AGENT_HEARTBEAT", "t", "wf", "A", {"beat": 1}, T0)])
    await append_stamped(db, [event_doc(EventType.TOOL_CALL, "t", "wf", "A", {"tool_name": "x"}, T0)])
    page = (
        await gql.data(
            """{ taskEvents(taskId: "t") { edges { node { __typename type
                 ... on OtherEvent { rawType payload } ... on ToolCallEvent { toolName } } } } }"""
        )
    )["taskEvents"]
    assert [e["node"] for e in page["edges"]] == [
        {"__typename": "OtherEvent", "type": "OTHER", "rawType": "AGENT_HEARTBEAT", "payload": {"beat": 1}},
        {"__typename": "ToolCallEvent", "type": "TOOL_CALL", "toolName": "x"},
    ]
