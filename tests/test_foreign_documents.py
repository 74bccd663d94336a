"""Documents another program wrote straight into the collections, in the seeds' own shape (no server
fields such as `version`, timestamps as ISO strings, a capitalised status) read like the server's own."""

from __future__ import annotations

from typing import Any

from tests.conftest import GraphQLClient

SEED_000_EXAMPLE = {
    "_id": "task_agent_snippet_abc123",
    "task_id": "task_agent_snippet_abc123",
    "agent_name": "SnippetCraftAgent",
    "triggering_event_id": "api_req_xyz789",
    "input_parameters": {"topic_id": "tech_ai_ethics"},
    "status": "in_progress",
    "progress_percentage": 40,
    "current_step": "Querying LLM for snippet text",
    "attempts": 1,
    "last_error": None,
    "output_references": {},
    "dependencies": [],
    "created_at": "2023-10-26T14:00:00Z",
    "updated_at": "2023-10-26T14:05:00Z",
}


async def test_seed_000_example_reads_as_is(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(dict(SEED_000_EXAMPLE))
    state = (
        await gql.data(
            """{ agentTask(id: "task_agent_snippet_abc123") {
                id taskId agentName status progressPercentage currentStep attempts lastError { message }
                inputParameters outputReferences dependencies { taskId } createdAt updatedAt expiresAt
                version priority taskKind task { id } } }"""
        )
    )["agentTask"]
    assert state == {
        "id": "task_agent_snippet_abc123",
        "taskId": "task_agent_snippet_abc123",
        "agentName": "SnippetCraftAgent",
        "status": "IN_PROGRESS",
        "progressPercentage": 40,
        "currentStep": "Querying LLM for snippet text",
        "attempts": 1,
        "lastError": None,
        "inputParameters": {"topic_id": "tech_ai_ethics"},
        "outputReferences": {},
        "dependencies": [],
        "createdAt": "2023-10-26T14:00:00+00:00",
        "updatedAt": "2023-10-26T14:05:00+00:00",
        "expiresAt": None,
        "version": 0,
        "priority": "MEDIUM",
        "taskKind": None,
        "task": None,
    }


async def test_seed_002_documents_without_optional_fields(gql: GraphQLClient, db: Any) -> None:
    await db.meta_workflow_tasks.insert_one({"_id": "m1", "task_id": "m1", "sub_task_ids": ["s1"]})
    await db.sub_tasks.insert_one(
        {
            "_id": "s1",
            "sub_task_id": "s1",
            "task_id": "m1",
            "behavior_task_ids": ["b1"],
            "prev_sub_task_id": None,
        }
    )
    await db.behavior_tasks.insert_one({"_id": "b1", "sub_task_id": "s1", "action_type": None})
    await db.agent_task_states.insert_one({"_id": "b1", "agent_name": "X", "status": "Completed"})
    tree = (
        await gql.data(
            """{ metaWorkflowTask(id: "m1") { metaWorkflowId isFinalized metaWorkflowGraph
                 progress { total percentage completed }
                 subTasks { id prevSubTaskId behaviorTasks { id actionType state { status task { __typename } } } } } }"""
        )
    )["metaWorkflowTask"]
    assert tree["metaWorkflowId"] == "" and tree["isFinalized"] is False and tree["metaWorkflowGraph"] == {}
    behavior = tree["subTasks"][0]["behaviorTasks"][0]
    # no task_kind on the state: the task is found by looking in the three collections
    assert behavior == {
        "id": "b1",
        "actionType": "",
        "state": {"status": "COMPLETED", "task": {"__typename": "BehaviorTask"}},
    }
    assert tree["progress"] == {"total": 2, "percentage": 100.0, "completed": 1}


async def test_progress_reads_capitalised_statuses(gql: GraphQLClient, db: Any) -> None:
    await db.meta_workflow_tasks.insert_one({"_id": "m1", "sub_task_ids": ["s1", "s2"]})
    await db.sub_tasks.insert_many([{"_id": "s1", "task_id": "m1"}, {"_id": "s2", "task_id": "m1"}])
    await db.agent_task_states.insert_many(
        [
            {"_id": "s1", "status": "In Progress", "progress_percentage": 40},
            {"_id": "s2", "status": "Completed"},
        ]
    )
    progress = await gql.data(
        '{ metaWorkflowTask(id: "m1") { progress { inProgress completed percentage } } }'
    )
    assert progress["metaWorkflowTask"]["progress"] == {"inProgress": 1, "completed": 1, "percentage": 70.0}


async def test_every_spelling_the_state_machine_accepts_reads_over_graphql(
    gql: GraphQLClient, db: Any
) -> None:
    """One normaliser for foreign statuses: what the state machine accepts, the GraphQL reader shows (a
    stored "canceled" once failed the whole query with "Cannot return null for non-nullable field")."""
    spellings = {
        "canceled": "CANCELLED",
        "In-Progress": "IN_PROGRESS",
        "inprogress": "IN_PROGRESS",
        "In Progress": "IN_PROGRESS",
        "COMPLETED": "COMPLETED",
        " awaiting dependencies ": "AWAITING_DEPENDENCY",
        "": "PENDING",
        None: "PENDING",
    }
    docs = [
        {**SEED_000_EXAMPLE, "_id": f"t{i}", "task_id": f"t{i}", "status": spelling}
        for i, spelling in enumerate(spellings)
    ]
    await db.agent_task_states.insert_many(docs)
    for i, wanted in enumerate(spellings.values()):
        data = await gql.data(f'{{ agentTask(id: "t{i}") {{ status }} }}')
        assert data["agentTask"]["status"] == wanted, (list(spellings)[i], data)
    listed = await gql.data("{ agentTasks(first: 100) { edges { node { id status } } } }")
    assert {e["node"]["id"]: e["node"]["status"] for e in listed["agentTasks"]["edges"]} == {
        f"t{i}": wanted for i, wanted in enumerate(spellings.values())
    }
