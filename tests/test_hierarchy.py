"""Hierarchy writes over HTTP: createWorkflow (all or nothing), CRUD per level with both sides of every
link kept in sync, moves, cascade deletes, finalization, outputs and standalone agent tasks."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import GraphQLClient, read_query
from tests.support.lifecycle_helpers import snapshot

WORKFLOW: dict[str, Any] = {
    "id": "wf1",
    "metaWorkflowId": "mw1",
    "state": {"agentName": "Orchestrator"},
    "output": {"taskDataPtr": {"episode": 1}},
    "subTasks": [
        {
            "id": "s1",
            "personalityType": "researcher",
            "state": {"agentName": "SnippetCraftAgent", "priority": "HIGH"},
            "behaviorTasks": [
                {"id": "b1", "actionType": "research", "state": {"agentName": "SnippetCraftAgent"}},
                {
                    "id": "b2",
                    "actionType": "draft",
                    "state": {"agentName": "SnippetCraftAgent", "dependencies": [{"taskId": "b1"}]},
                    "output": {"processorSubjectIds": ["agent1"]},
                },
            ],
        },
        {
            "id": "s2",
            "state": {"agentName": "PodcastScriptWeaverAgent", "dependencies": [{"taskId": "s1"}]},
            "behaviorTasks": [{"id": "b3", "state": {"agentName": "PodcastScriptWeaverAgent"}}],
        },
    ],
}
CREATE = read_query("CreateWorkflow.graphql")

RESULT = """__typename ... on Error { message } ... on ValidationError { field } ... on TransitionError { currentStatus }"""


async def create_workflow(
    gql: GraphQLClient, workflow: dict[str, Any] = WORKFLOW, key: str | None = None
) -> dict[str, Any]:
    return (await gql.data(CREATE, {"input": workflow, "key": key}))["createWorkflow"]


async def test_create_workflow_writes_the_whole_tree_in_one_go(gql: GraphQLClient, db: Any) -> None:
    result = await create_workflow(gql)
    assert result["__typename"] == "MetaWorkflowTaskSuccess", result
    task = result["task"]
    assert task["subTaskIds"] == ["s1", "s2"]
    assert task["subTasks"][0]["behaviorTaskIds"] == ["b1", "b2"]
    assert task["subTasks"][1]["prevSubTaskId"] == "s1"  # chained in list order by default
    assert [s["state"]["status"] for s in task["subTasks"]] == ["PENDING", "AWAITING_DEPENDENCY"]
    assert sorted(e["taskId"] for e in result["events"]) == ["b1", "b2", "b3", "s1", "s2", "wf1"]
    assert {e["type"] for e in result["events"]} == {"TASK_CREATED"}

    assert (await db.sub_tasks.find_one({"_id": "s1"}))["task_id"] == "wf1"
    assert (await db.behavior_tasks.find_one({"_id": "b2"}))["sub_task_id"] == "s1"
    b2 = await db.agent_task_states.find_one({"_id": "b2"})
    assert (
        b2["status"] == "awaiting_dependency"
        and b2["workflow_id"] == "wf1"
        and b2["task_kind"] == "behavior_task"
    )
    assert b2["dependencies"] == [{"task_id": "b1", "status_expected": "completed"}]
    assert (await db.agent_task_states.find_one({"_id": "s1"}))["priority"] == "high"
    assert (await db.task_outputs.find_one({"_id": "wf1"}))["task_data_ptr"] == {"episode": 1}
    assert (await db.behavior_task_outputs.find_one({"_id": "b2"}))["processor_subject_ids"] == ["agent1"]
    assert await db.agent_task_states.count_documents({}) == 6
    assert await db.task_events.count_documents({"workflow_id": "wf1", "type": "TASK_CREATED"}) == 6


async def test_generated_ids_are_uuid4(gql: GraphQLClient, db: Any) -> None:
    result = await create_workflow(gql, {"subTasks": [{"behaviorTasks": [{}]}]})
    task = result["task"]
    assert len(task["id"]) == 36 and task["id"].count("-") == 4
    sub = task["subTasks"][0]
    assert (await db.sub_tasks.find_one({"_id": sub["id"]}))["task_id"] == task["id"]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            lambda w: w["subTasks"][1]["behaviorTasks"][0].update(id="b1"),
            "input",
            "the same id is used twice",
        ),
        (
            lambda w: w["subTasks"][1]["behaviorTasks"][0]["state"].update(dependencies=[{"taskId": "nope"}]),
            "input.subTasks[1].behaviorTasks[0].state.dependencies",
            "unknown task 'nope'",
        ),
        (
            lambda w: w["subTasks"][0]["state"].update(dependencies=[{"taskId": "s2"}]),
            "input.subTasks[0].state.dependencies",
            "cycle",
        ),
        (
            lambda w: w["subTasks"][1].update(prevSubTaskId="zzz"),
            "input.subTasks[1].prevSubTaskId",
            "not a sub-task",
        ),
        (
            lambda w: w["output"].update(taskDataPtr={"blob": "x" * 300_000}),
            "input.output",
            "payload too large",
        ),
    ],
)
async def test_create_workflow_is_all_or_nothing(
    gql: GraphQLClient, db: Any, change: Any, field: str, message: str
) -> None:
    import copy

    workflow = copy.deepcopy(WORKFLOW)
    change(workflow)
    before = await snapshot(db)
    result = await create_workflow(gql, workflow)
    assert result["__typename"] == "ValidationError", result
    assert result["field"] == field and message in result["message"]
    assert await snapshot(db) == before  # nothing at all was written


async def test_existing_id_is_refused_and_nothing_written(gql: GraphQLClient, db: Any) -> None:
    await create_workflow(gql)
    before = await snapshot(db)
    result = await create_workflow(gql, {"id": "new", "subTasks": [{"id": "s1"}]})
    assert result["__typename"] == "ConflictError" and "already exists" in result["message"]
    assert await snapshot(db) == before


async def test_create_workflow_with_idempotency_key_applies_once(gql: GraphQLClient, db: Any) -> None:
    first = await create_workflow(gql, {"subTasks": [{}]}, key="wf-req-1")
    second = await create_workflow(gql, {"subTasks": [{}]}, key="wf-req-1")
    assert first == second
    assert await db.meta_workflow_tasks.count_documents({}) == 1


async def test_create_child_links_it_into_its_parent(gql: GraphQLClient, db: Any) -> None:
    await create_workflow(gql)
    r = (
        await gql.data(
            f"""mutation {{ r: createBehaviorTask(input: {{id: "b9", subTaskId: "s2", actionType: "tts",
                 state: {{agentName: "VoiceForgeAgent", dependencies: [{{taskId: "b3"}}]}}}}) {{
                 {RESULT} ... on BehaviorTaskSuccess {{ task {{ id subTask {{ behaviorTaskIds }} state {{ status workflowId }} }} }} }} }}"""
        )
    )["r"]
    assert r["task"] == {
        "id": "b9",
        "subTask": {"behaviorTaskIds": ["b3", "b9"]},
        "state": {"status": "AWAITING_DEPENDENCY", "workflowId": "wf1"},
    }

    r = (await gql.data(f'mutation {{ r: createSubTask(input: {{taskId: "ghost"}}) {{ {RESULT} }} }}'))["r"]
    assert r["__typename"] == "NotFoundError" and "ghost" in r["message"]
    r = (await gql.data(f"mutation {{ r: createSubTask(input: {{}}) {{ {RESULT} }} }}"))["r"]
    assert r == {
        "__typename": "ValidationError",
        "message": "a sub-task needs its parent's id",
        "field": "input.taskId",
    }


async def test_update_and_move_keep_both_sides_in_sync(gql: GraphQLClient, db: Any) -> None:
    await create_workflow(gql)
    r = (
        await gql.data(
            f"""mutation {{ r: updateBehaviorTask(id: "b2", input: {{subTaskId: "s2", actionSubType: "v2"}}) {{
                 {RESULT} ... on BehaviorTaskSuccess {{ task {{ subTaskId actionSubType }} events {{ type }} }} }} }}"""
        )
    )["r"]
    assert r["task"] == {"subTaskId": "s2", "actionSubType": "v2"}
    assert r["events"] == [{"type": "TASK_UPDATED"}]
    assert (await db.sub_tasks.find_one({"_id": "s1"}))["behavior_task_ids"] == ["b1"]
    assert (await db.sub_tasks.find_one({"_id": "s2"}))["behavior_task_ids"] == ["b3", "b2"]


async def test_delete_with_children_needs_cascade(gql: GraphQLClient, db: Any) -> None:
    await create_workflow(gql)
    before = await snapshot(db)
    r = (await gql.data(f'mutation {{ r: deleteSubTask(id: "s1") {{ {RESULT} }} }}'))["r"]
    assert r["__typename"] == "ConflictError" and "pass cascade: true" in r["message"]
    assert await snapshot(db) == before
    # s2 depends on s1: even a cascade is refused while another task depends on the subtree
    r = (await gql.data(f'mutation {{ r: deleteSubTask(id: "s1", cascade: true) {{ {RESULT} }} }}'))["r"]
    assert r["__typename"] == "ConflictError" and "depends on" in r["message"]
    assert await snapshot(db) == before


async def test_cascade_delete_removes_the_subtree_atomically(gql: GraphQLClient, db: Any) -> None:
    await create_workflow(gql)
    r = (
        await gql.data(
            f'mutation {{ r: deleteMetaWorkflowTask(id: "wf1", cascade: true) {{ {RESULT} ... on DeleteSuccess {{ deletedIds events {{ type }} }} }} }}'
        )
    )["r"]
    assert sorted(r["deletedIds"]) == ["b1", "b2", "b3", "s1", "s2", "wf1"]
    for name in (
        "meta_workflow_tasks",
        "sub_tasks",
        "behavior_tasks",
        "task_outputs",
        "behavior_task_outputs",
        "agent_task_states",
    ):
        assert await db[name].count_documents({}) == 0, name
    assert await db.task_events.count_documents({"type": "TASK_DELETED", "task_id": "wf1"}) == 1


async def test_delete_a_leaf_unlinks_it(gql: GraphQLClient, db: Any) -> None:
    await create_workflow(gql)
    r = (
        await gql.data(
            f'mutation {{ r: deleteBehaviorTask(id: "b3") {{ {RESULT} ... on DeleteSuccess {{ deletedIds }} }} }}'
        )
    )["r"]
    assert r["deletedIds"] == ["b3"]
    assert (await db.sub_tasks.find_one({"_id": "s2"}))["behavior_task_ids"] == []
    assert await db.agent_task_states.find_one({"_id": "b3"}) is None


async def test_finalize_is_one_way_and_recorded_in_the_meta_output(gql: GraphQLClient, db: Any) -> None:
    await create_workflow(gql)
    r = (
        await gql.data(
            f'mutation {{ r: finalizeSubTask(id: "s1") {{ {RESULT} ... on SubTaskSuccess {{ task {{ isFinalized }} }} }} }}'
        )
    )["r"]
    assert r["task"] == {"isFinalized": True}
    assert (await db.task_outputs.find_one({"_id": "wf1"}))["finalized_sub_task_ids"] == ["s1"]
    before = await snapshot(db)
    for mutation in (
        'finalizeSubTask(id: "s1")',
        'updateSubTask(id: "s1", input: {personalityType: "x"})',
        'deleteSubTask(id: "s1", cascade: true)',
        'createBehaviorTask(input: {subTaskId: "s1"})',
        'updateBehaviorTask(id: "b3", input: {subTaskId: "s1"})',
        'createSubTaskOutput(taskId: "s1", input: {isFinalizedStep: true})',
    ):
        r = (await gql.data(f"mutation {{ r: {mutation} {{ {RESULT} }} }}"))["r"]
        assert r["__typename"] == "TransitionError", (mutation, r)
        assert "finalized" in r["message"]
    assert await snapshot(db) == before


async def test_outputs_crud(gql: GraphQLClient, db: Any) -> None:
    await create_workflow(gql)
    out = "... on SubTaskOutput { subTaskId processorSubjectIds isFinalizedStep }"
    r = (
        await gql.data(
            f'mutation {{ r: createSubTaskOutput(taskId: "s1", input: {{processorSubjectIds: ["a"]}}) {{ {RESULT} {out} }} }}'
        )
    )["r"]
    assert r == {
        "__typename": "SubTaskOutput",
        "subTaskId": "s1",
        "processorSubjectIds": ["a"],
        "isFinalizedStep": False,
    }
    r = (await gql.data(f'mutation {{ r: createSubTaskOutput(taskId: "s1", input: {{}}) {{ {RESULT} }} }}'))[
        "r"
    ]
    assert r["__typename"] == "ConflictError" and "already has an output" in r["message"]
    r = (
        await gql.data(
            f'mutation {{ r: updateSubTaskOutput(taskId: "s1", input: {{isFinalizedStep: true}}) {{ {RESULT} {out} }} }}'
        )
    )["r"]
    assert r["processorSubjectIds"] == ["a"] and r["isFinalizedStep"] is True
    r = (await gql.data(f'mutation {{ r: deleteSubTaskOutput(taskId: "s1") {{ {RESULT} }} }}'))["r"]
    assert r["__typename"] == "SubTaskOutput"
    assert await db.sub_task_outputs.find_one({"_id": "s1"}) is None
    r = (await gql.data(f'mutation {{ r: createTaskOutput(taskId: "ghost", input: {{}}) {{ {RESULT} }} }}'))[
        "r"
    ]
    assert r["__typename"] == "NotFoundError"


AGENT_TASK = f"""__typename {RESULT} ... on AgentTaskSuccess {{ state {{ id status priority version agentName parentTaskId dependencies {{ taskId }} }} events {{ type }} }}"""


async def test_standalone_agent_tasks(gql: GraphQLClient, db: Any) -> None:
    r = (
        await gql.data(
            f'mutation {{ r: createAgentTask(input: {{id: "a1", agentName: "SnippetCraftAgent", priority: URGENT}}) {{ {AGENT_TASK} }} }}'
        )
    )["r"]
    assert (
        r["state"]["status"] == "PENDING"
        and r["state"]["priority"] == "URGENT"
        and r["events"] == [{"type": "TASK_CREATED"}]
    )
    r = (
        await gql.data(
            f'mutation {{ r: createAgentTask(input: {{id: "a2", agentName: "X", parentTaskId: "a1", dependencies: [{{taskId: "a1"}}]}}) {{ {AGENT_TASK} }} }}'
        )
    )["r"]
    assert r["state"]["status"] == "AWAITING_DEPENDENCY" and r["state"]["parentTaskId"] == "a1"
    # a cycle through an update is refused
    before = await snapshot(db)
    r = (
        await gql.data(
            f'mutation {{ r: updateAgentTask(id: "a1", input: {{dependencies: [{{taskId: "a2"}}]}}) {{ {AGENT_TASK} }} }}'
        )
    )["r"]
    assert r["__typename"] == "ValidationError" and "cycle: a1 → a2 → a1" in r["message"]
    assert await snapshot(db) == before
    # dropping a2's dependency releases it
    r = (
        await gql.data(
            f'mutation {{ r: updateAgentTask(id: "a2", input: {{dependencies: []}}, expectedVersion: 1) {{ {AGENT_TASK} }} }}'
        )
    )["r"]
    assert r["state"]["status"] == "PENDING" and r["state"]["version"] == 2
    assert [e["type"] for e in r["events"]] == ["STATUS_CHANGED", "TASK_UPDATED"]
    r = (await gql.data(f'mutation {{ r: deleteAgentTask(id: "a1") {{ {RESULT} }} }}'))["r"]
    assert r["__typename"] == "ConflictError" and "parent" in r["message"]
    r = (
        await gql.data(
            f'mutation {{ r: deleteAgentTask(id: "a2") {{ {RESULT} ... on DeleteSuccess {{ deletedIds }} }} }}'
        )
    )["r"]
    assert r["deletedIds"] == ["a2"]
    assert await db.agent_task_states.find_one({"_id": "a2"}) is None


async def test_agent_runtime_operations_from_queries_dir(gql: GraphQLClient, db: Any) -> None:
    await create_workflow(gql)
    doc = read_query("AgentRuntime.graphql")
    claimed = await gql.http.post(
        "/graphql",
        json={"query": doc, "operationName": "Claim", "variables": {"agentName": "SnippetCraftAgent"}},
    )
    claim = claimed.json()["data"]["claimTask"]
    assert claim["state"]["id"] == "s1"  # high priority beats b1
    task_id, version = claim["state"]["id"], claim["state"]["version"]

    async def run(name: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = await gql.http.post(
            "/graphql", json={"query": doc, "operationName": name, "variables": variables}
        )
        return next(iter(response.json()["data"].values()))

    progress = await run("Progress", {"id": task_id, "percentage": 50, "step": "half", "version": version})
    assert progress["state"]["progressPercentage"] == 50
    done = await run("Complete", {"id": task_id, "result": {"ok": True}, "key": "k1"})
    assert done["state"]["status"] == "COMPLETED" and done["event"]["type"] == "TASK_COMPLETED"
    # completing s1 released s2
    assert (await db.agent_task_states.find_one({"_id": "s2"}))["status"] == "pending"
    claim = await run("Claim", {"agentName": "SnippetCraftAgent"})
    failed = await run("Fail", {"id": claim["state"]["id"], "error": "boom", "isFinal": True})
    assert failed["state"]["status"] == "FAILED" and failed["state"]["lastError"] == {"message": "boom"}


async def test_a_child_cannot_be_left_without_a_parent(gql: GraphQLClient, db: Any) -> None:
    await create_workflow(gql)
    before = await snapshot(db)
    r = (
        await gql.data(f'mutation {{ r: updateSubTask(id: "s2", input: {{taskId: null}}) {{ {RESULT} }} }}')
    )["r"]
    assert r == {
        "__typename": "ValidationError",
        "message": "a sub-task needs a parent; give another id to move it",
        "field": "input.taskId",
    }
    assert await snapshot(db) == before


async def test_null_dependencies_clear_them(gql: GraphQLClient, db: Any) -> None:
    await create_workflow(gql)
    r = (
        await gql.data(
            f'mutation {{ r: updateAgentTask(id: "s2", input: {{dependencies: null}}) {{ {AGENT_TASK} }} }}'
        )
    )["r"]
    assert (
        r["state"]["dependencies"] == [] and r["state"]["status"] == "PENDING"
    )  # released: nothing to wait for


async def test_a_taken_id_is_a_conflict_over_rest_too(gql: GraphQLClient, client: Any, db: Any) -> None:
    await create_workflow(gql)
    answer = await client.post("/sub-tasks", json={"sub_task_id": "s1", "task_id": "wf1"})
    assert answer.status_code == 409 and "already exists" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("variables", "field", "text"),
    [
        ({"metaWorkflowGraph": {"a\x00b": 1}}, "input.metaWorkflowGraph", "NUL"),
        ({"metaWorkflowGraph": {"x": "\ud800"}}, "input.metaWorkflowGraph.x", "unpaired surrogate"),
        ({"state": {"inputParameters": {"n": float("nan")}}}, "input.state.inputParameters.n", "not finite"),
        (
            {"subTasks": [{"output": {"subTaskDataPtr": {"big": 2**70}}}]},
            "input.subTasks[0].output.subTaskDataPtr.big",
            "64-bit",
        ),
    ],
)
async def test_values_mongodb_cannot_store_are_validation_errors(
    gql: GraphQLClient, db: Any, variables: dict[str, Any], field: str, text: str
) -> None:
    """GraphQL's JSON scalar lets a client send NUL keys, lone surrogates, NaN and huge integers: each is
    refused as data naming where it is (not an unexpected error), and nothing is written."""
    import json

    before = await snapshot(db)
    # Python's json writes what httpx's own encoder would refuse (NaN, lone surrogates as \\u escapes).
    body = json.dumps({"query": CREATE, "variables": {"input": variables}})
    answer = await gql.http.post("/graphql", content=body, headers={"Content-Type": "application/json"})
    result = answer.json()["data"]["createWorkflow"]
    assert result["__typename"] == "ValidationError", result
    assert result["field"] == field and text in result["message"]
    assert await snapshot(db) == before
