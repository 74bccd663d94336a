"""The whole workflow tree over GraphQL: shape, order, nested relations, progress, and its MongoDB cost."""

from __future__ import annotations

from typing import Any

import pytest

from app.demo.documents import synthetic_tree, write_documents
from app.demo.workflow import DEMO_WORKFLOW_ID, load_demo
from tests.conftest import CommandLog, GraphQLClient, read_query

TREE = read_query("WorkflowTree.graphql")


async def test_demo_tree_in_one_query(gql: GraphQLClient, db: Any) -> None:
    await load_demo(db)
    tree = (await gql.data(TREE, {"id": DEMO_WORKFLOW_ID}))["metaWorkflowTask"]

    assert tree["id"] == DEMO_WORKFLOW_ID
    assert tree["metaWorkflowId"] == "mw_podcast_episode"
    assert [s["id"] for s in tree["subTasks"]] == ["sub_snippet", "sub_script", "sub_voice"]
    script = tree["subTasks"][1]
    assert [b["id"] for b in script["behaviorTasks"]] == [
        "beh_outline_script",
        "beh_write_script",
        "beh_polish_script",
    ]
    assert script["prevSubTaskId"] == "sub_snippet"
    assert script["state"]["agentName"] == "PodcastScriptWeaverAgent"
    assert script["state"]["dependencies"] == [
        {"taskId": "sub_snippet", "expectedStatus": "COMPLETED", "satisfied": True}
    ]
    write = script["behaviorTasks"][1]
    assert write["state"]["status"] == "IN_PROGRESS"
    assert write["state"]["progressPercentage"] == 40
    assert write["output"] is None  # not produced yet
    outline = script["behaviorTasks"][0]
    assert outline["output"]["processorSubjectIds"] == ["PodcastScriptWeaverAgent"]
    polish = script["behaviorTasks"][2]["state"]
    assert polish["status"] == "AWAITING_DEPENDENCY"
    assert polish["dependencies"] == [
        {"taskId": "beh_write_script", "expectedStatus": "COMPLETED", "satisfied": False}
    ]
    retrying = tree["subTasks"][2]["behaviorTasks"][0]["state"]
    assert retrying["status"] == "RETRYING"
    assert retrying["lastError"]["message"] == "Voice catalogue timed out"
    assert retrying["lastError"]["timestamp"].endswith("+00:00")
    assert tree["output"]["finalizedSubTaskIds"] == ["sub_snippet"]

    progress = tree["progress"]
    assert progress["total"] == 12  # 3 sub-tasks + 9 behavior tasks
    counts = {c["status"]: c["count"] for c in progress["counts"]}
    assert counts["COMPLETED"] == 5  # sub_snippet, its 3 behaviors, the outline
    assert counts["IN_PROGRESS"] == 2
    assert counts["AWAITING_DEPENDENCY"] == 4
    assert counts["RETRYING"] == 1
    assert sum(counts.values()) == 12
    # leaves are the 9 behavior tasks: 4 completed (400) + writing at 40 → 440 / 9
    assert progress["percentage"] == pytest.approx(48.89)


async def test_relations_upwards_and_sideways(gql: GraphQLClient, db: Any) -> None:
    await load_demo(db)
    data = await gql.data(
        """{
          behaviorTask(id: "beh_polish_script") {
            subTask { id metaTask { id } previousSubTask { id } }
            state { dependencies { task { __typename id } state { status } } task { __typename id } }
          }
          agentTask(id: "task_agent_snippet_abc123") { task { id } agentName }
          subTask(id: "nope") { id }
        }"""
    )
    beh = data["behaviorTask"]
    assert beh["subTask"] == {
        "id": "sub_script",
        "metaTask": {"id": DEMO_WORKFLOW_ID},
        "previousSubTask": {"id": "sub_snippet"},
    }
    assert beh["state"]["task"] == {"__typename": "BehaviorTask", "id": "beh_polish_script"}
    assert beh["state"]["dependencies"] == [
        {"task": {"__typename": "BehaviorTask", "id": "beh_write_script"}, "state": {"status": "IN_PROGRESS"}}
    ]
    assert data["agentTask"] == {
        "task": None,
        "agentName": "SnippetCraftAgent",
    }  # standalone: no hierarchy task
    assert data["subTask"] is None


async def test_tree_cost_does_not_grow_with_the_tree(
    gql: GraphQLClient, db: Any, command_log: CommandLog
) -> None:
    """The same WorkflowTree query over a 3×3 and a 20×20 tree sends the same MongoDB reads."""
    reads = {}
    for workflow_id, size in (("small", (3, 3)), ("large", (20, 20))):
        await write_documents(db, synthetic_tree(workflow_id, *size))
        command_log.clear()
        tree = (await gql.data(TREE, {"id": workflow_id}))["metaWorkflowTask"]
        assert len(tree["subTasks"]) == size[0]
        assert all(len(s["behaviorTasks"]) == size[1] for s in tree["subTasks"])
        assert tree["progress"]["total"] == size[0] * (1 + size[1])
        reads[workflow_id] = sorted(command_log.reads())
    assert reads["small"] == reads["large"]
    # One batched find per collection per level: the meta level (task, state, output), the sub-task level
    # (tasks, states, outputs) and the behavior level (tasks, states, outputs). Dependency states and the
    # progress roll-up are served from the same batches.
    assert reads["large"] == sorted(
        [("find", "meta_workflow_tasks")]
        + [("find", "agent_task_states")] * 3
        + [("find", "task_outputs"), ("find", "sub_tasks"), ("find", "sub_task_outputs")]
        + [("find", "behavior_tasks"), ("find", "behavior_task_outputs")]
    )


async def test_loading_the_demo_again_keeps_what_was_changed(db: Any) -> None:
    await load_demo(db)
    await db.agent_task_states.update_one({"_id": "beh_write_script"}, {"$set": {"progress_percentage": 90}})
    await load_demo(db)  # `make run` again
    assert (await db.agent_task_states.find_one({"_id": "beh_write_script"}))["progress_percentage"] == 90
    await load_demo(db, reset=True)
    assert (await db.agent_task_states.find_one({"_id": "beh_write_script"}))["progress_percentage"] == 40
