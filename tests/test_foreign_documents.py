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


#: The spellings of issue 24 (and their neighbours), each stored as another program wrote it.
FOREIGN_SPELLINGS = {"canceled": "cancelled", "In-Progress": "in_progress", "inprogress": "in_progress"}


async def test_analytics_counts_foreign_spellings_under_their_status(gql: GraphQLClient, db: Any) -> None:
    """The aggregation's normaliser is generated from the domain's tables: it counts what the readers show."""
    await db.agent_task_states.insert_many(
        [
            {
                "_id": f"a{i}",
                "agent_name": "Foreign",
                "status": spelling,
                "created_at": "2026-11-20T15:00:00Z",
            }
            for i, spelling in enumerate([*FOREIGN_SPELLINGS, "Awaiting Dependencies", "", None])
        ]
    )
    stats = (await gql.data('{ agentStats(agentName: "Foreign") { total byStatus { status count } } }'))[
        "agentStats"
    ]
    counts = {row["status"]: row["count"] for row in stats["byStatus"] if row["count"]}
    assert stats["total"] == 6
    assert counts == {"CANCELLED": 1, "IN_PROGRESS": 2, "AWAITING_DEPENDENCY": 1, "PENDING": 2}


def test_the_pipeline_and_the_python_normaliser_agree() -> None:
    """Both readings come from one table: every alias and separator is in the pipeline's expression."""
    from app import domain
    from app.store.analytics import normalise_stages

    text = repr(normalise_stages(domain.utcnow()))
    for alias, status in domain.STATUS_ALIASES.items():
        assert repr(alias) in text and domain.normalise_status(alias) == status
    for separator in domain.STATUS_SEPARATORS:
        assert repr(separator) in text


async def test_a_transition_on_a_foreign_spelling(gql: GraphQLClient, db: Any) -> None:
    """The state machine reads the spellings as the readers do: a stored "In-Progress" or "inprogress"
    completes, a stored "canceled" retries (the moves allowed from in_progress and cancelled)."""
    await db.agent_task_states.insert_many(
        [
            {"_id": f"t{i}", "agent_name": "X", "status": spelling, "attempts": 1}
            for i, spelling in enumerate(FOREIGN_SPELLINGS)
        ]
    )
    result = "__typename ... on TaskTransitionSuccess { state { status } events { type } }"
    retried = await gql.data(f'mutation {{ r: retryTask(id: "t0") {{ {result} }} }}')
    assert retried["r"]["state"]["status"] == "RETRYING", retried
    for task_id in ("t1", "t2"):
        done = await gql.data(f'mutation {{ r: completeTask(id: "{task_id}") {{ {result} }} }}')
        assert done["r"]["state"]["status"] == "COMPLETED", done
    events = [e async for e in db.task_events.find({"type": "STATUS_CHANGED"}).sort("task_id", 1)]
    assert [(e["task_id"], e["payload"]["from_status"], e["payload"]["to_status"]) for e in events] == [
        ("t0", "cancelled", "retrying"),
        ("t1", "in_progress", "completed"),
        ("t2", "in_progress", "completed"),
    ]


async def test_expected_status_reads_as_the_task_status_enum(gql: GraphQLClient, db: Any) -> None:
    """`expectedStatus` is a `TaskStatus` read like every stored status; the deprecated `statusExpected`
    string is unchanged for existing clients."""
    dependencies = [
        {"task_id": "d0", "status_expected": "completed"},
        {"task_id": "d1", "status_expected": "In-Progress"},
        {"task_id": "d2", "status_expected": "canceled"},
        {"task_id": "d3"},
        {"task_id": "d4", "status_expected": "bogus"},
    ]
    await db.agent_task_states.insert_one(
        {"_id": "t", "agent_name": "X", "status": "pending", "dependencies": dependencies}
    )
    data = await gql.data('{ agentTask(id: "t") { dependencies { taskId statusExpected expectedStatus } } }')
    assert data["agentTask"]["dependencies"] == [
        {"taskId": "d0", "statusExpected": "completed", "expectedStatus": "COMPLETED"},
        {"taskId": "d1", "statusExpected": "In-Progress", "expectedStatus": "IN_PROGRESS"},
        {"taskId": "d2", "statusExpected": "canceled", "expectedStatus": "CANCELLED"},
        {"taskId": "d3", "statusExpected": "completed", "expectedStatus": "COMPLETED"},
        {"taskId": "d4", "statusExpected": "bogus", "expectedStatus": None},
    ]
