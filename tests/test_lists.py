"""Root list fields: typed arguments, allow-listed filters, ordering, keyset pagination and refusals."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from app.demo.documents import synthetic_tree, write_documents
from app.demo.workflow import load_demo
from tests.conftest import GraphQLClient, read_query

STATES = """query($filter: JSON, $first: Int, $after: String, $status: [TaskStatus!], $order: AgentTaskOrder) {
  agentTasks(filter: $filter, first: $first, after: $after, status: $status, orderBy: $order) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id status agentName createdAt } }
  }
}"""


def ids(conn: dict[str, Any]) -> list[str]:
    return [e["node"]["id"] for e in conn["edges"]]


async def test_seed_002_query_examples(gql: GraphQLClient, db: Any) -> None:
    await load_demo(db)
    data = await gql.data(
        """{
          metaWorkflowTasks(filter: {meta_workflow_id: "mw_podcast_episode"}) { edges { node { id } } }
          subTasks(filter: {task_id: "meta_podcast_ai_ethics"}) { totalCount }
          behaviorTasks(filter: {sub_task_id: "sub_script"}) { edges { node { id } } }
          taskOutputs(filter: {task_id: "meta_podcast_ai_ethics"}) { edges { node { taskId } } }
          subTaskOutputs(filter: {is_finalized_step: true}) { edges { node { subTaskId } } }
        }"""
    )
    assert ids(data["metaWorkflowTasks"]) == ["meta_podcast_ai_ethics"]
    assert data["subTasks"]["totalCount"] == 3
    assert sorted(ids(data["behaviorTasks"])) == [
        "beh_outline_script",
        "beh_polish_script",
        "beh_write_script",
    ]
    assert [e["node"]["taskId"] for e in data["taskOutputs"]["edges"]] == ["meta_podcast_ai_ethics"]
    assert [e["node"]["subTaskId"] for e in data["subTaskOutputs"]["edges"]] == ["sub_snippet"]

    query = read_query("BehaviorOutputsBySubject.graphql")
    out = await gql.data(query, {"filter": {"processor_subject_ids": {"$in": ["SnippetCraftAgent"]}}})
    conn = out["behaviorTaskOutputs"]
    assert conn["totalCount"] == 3
    assert {e["node"]["behaviorTaskId"] for e in conn["edges"]} == {
        "beh_research_topic",
        "beh_draft_snippet",
        "beh_review_snippet",
    }


async def test_typed_arguments_and_the_named_list_query(gql: GraphQLClient, db: Any) -> None:
    await load_demo(db)
    data = await gql.data(
        read_query("AgentTasks.graphql"), {"agentName": "VoiceForgeAgent", "status": ["RETRYING", "FAILED"]}
    )
    conn = data["agentTasks"]
    assert conn["totalCount"] == 1
    node = conn["edges"][0]["node"]
    assert node["id"] == "beh_select_voice"
    assert node["lastError"] == {"message": "Voice catalogue timed out"}
    assert node["task"] == {"__typename": "BehaviorTask", "id": "beh_select_voice"}

    data = await gql.data(
        """{ agentTasks(status: [AWAITING_DEPENDENCY], filter: {agent_name: "VoiceForgeAgent"}) { totalCount } }"""
    )
    assert data["agentTasks"]["totalCount"] == 3  # the sub-task and two of its behaviors


async def test_pagination_walks_every_item_once_in_order(gql: GraphQLClient, db: Any) -> None:
    await write_documents(db, synthetic_tree("wf", 4, 5))  # 25 states
    order = {"field": "CREATED_AT", "direction": "DESC"}
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        conn = (await gql.data(STATES, {"first": 7, "after": after, "order": order}))["agentTasks"]
        assert conn["totalCount"] == 25
        assert conn["pageInfo"]["hasPreviousPage"] is (after is not None)
        seen += ids(conn)
        pages += 1
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
        assert after == conn["edges"][-1]["cursor"]
    assert pages == 4
    assert len(seen) == len(set(seen)) == 25
    # all created_at are equal in the synthetic tree, so ties are broken by id, descending
    assert seen == sorted(seen, reverse=True)


async def test_default_order_is_by_id_and_first_zero_counts_only(gql: GraphQLClient, db: Any) -> None:
    await load_demo(db)
    conn = (await gql.data(STATES, {"first": 0}))["agentTasks"]
    assert conn["edges"] == [] and conn["totalCount"] == 14
    conn = (await gql.data(STATES, {"first": 100}))["agentTasks"]
    assert ids(conn) == sorted(ids(conn)) and len(ids(conn)) == 14


@pytest.mark.parametrize(
    ("filter_", "message"),
    [
        ({"$where": "sleep(1000)"}, "operator '$where' is not allowed (JavaScript is never run)"),
        (
            {"status": {"$function": {"body": "x", "args": [], "lang": "js"}}},
            "operator '$function' is not allowed",
        ),
        ({"$and": [{"status": {"$accumulator": {}}}]}, "operator '$accumulator' is not allowed"),
        ({"$expr": {"$gt": ["$attempts", 1]}}, "operator '$expr' is not allowed"),
        ({"status": {"$foo": 1}}, "unknown operator '$foo'"),
        ({"secret": 1}, "unknown field 'secret' on agent_task_states"),
        ({"status": {"$in": "pending"}}, "$in expects a list"),
        ({"attempts": {"$gt": "many"}}, "expected a number"),
        (["status"], "filter must be a JSON object, got list"),
        (
            {"$and": [{"$and": [{"$and": [{"$and": [{"$and": [{"$and": [{"status": "x"}]}]}]}]}]}]},
            "nested too deep",
        ),
        ({"status": {"$in": [f"s{i}" for i in range(300)]}}, "filter is too large"),
    ],
)
async def test_unsafe_or_malformed_filters_are_refused(
    gql: GraphQLClient, db: Any, filter_: Any, message: str
) -> None:
    await load_demo(db)
    error = await gql.error(STATES, {"filter": filter_})
    assert message in error["message"]
    assert error["extensions"]["code"] == "BAD_FILTER"
    assert error["path"] == ["agentTasks"]


async def test_filter_given_as_a_malformed_json_string_is_refused(gql: GraphQLClient, db: Any) -> None:
    error = await gql.error(STATES, {"filter": '{"status": '})
    assert (
        "filter is not valid JSON" in error["message"] or "filter must be a JSON object" in error["message"]
    )


async def test_page_size_over_the_cap_is_refused(gql: GraphQLClient) -> None:
    error = await gql.error(STATES, {"first": 101})
    assert error["message"] == "`first` must be between 0 and 100, got 101."
    assert error["extensions"]["code"] == "PAGE_SIZE_OUT_OF_RANGE"
    error = await gql.error(STATES, {"first": -1})
    assert "got -1" in error["message"]


async def test_cursors_not_issued_by_the_server_are_refused(gql: GraphQLClient, db: Any) -> None:
    await write_documents(db, synthetic_tree("wf", 2, 2))
    conn = (await gql.data(STATES, {"first": 2}))["agentTasks"]
    good = conn["pageInfo"]["endCursor"]
    forged = base64.urlsafe_b64encode(b'{"s":"_id:1","v":"a","i":"a"}').decode().rstrip("=")
    tampered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    for bad in (forged, tampered, "not-a-cursor", ""):
        error = await gql.error(STATES, {"first": 2, "after": bad})
        assert error["message"] == "cursor was not issued by this server", bad
        assert error["extensions"]["code"] == "BAD_CURSOR"
    # a real cursor used with another order is refused too, with its own message
    error = await gql.error(STATES, {"first": 2, "after": good, "order": {"field": "CREATED_AT"}})
    assert "cursor belongs to another ordering" in error["message"]


async def test_cursor_survives_a_server_restart(gql: GraphQLClient, db: Any, settings: Any) -> None:
    """The signing key lives in the database, so a cursor stays valid for another process on it."""
    import httpx

    from app.server import create_app

    await write_documents(db, synthetic_tree("wf", 2, 2))
    first = (await gql.data(STATES, {"first": 3}))["agentTasks"]
    other = create_app(settings)
    async with (
        other.router.lifespan_context(other),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://localhost") as http,
    ):
        answer = await http.post(
            "/graphql",
            json={"query": STATES, "variables": {"first": 3, "after": first["pageInfo"]["endCursor"]}},
        )
    second = answer.json()["data"]["agentTasks"]
    assert set(ids(first)).isdisjoint(ids(second)) and len(ids(second)) == 3


async def test_hostile_documents_are_refused_before_they_run(gql: GraphQLClient, command_log: Any) -> None:
    nested = "parent { " * 13 + "id" + " }" * 13
    deep = await gql.error(f'{{ agentTask(id: "b") {{ {nested} }} }}')
    assert deep["extensions"] == {"code": "QUERY_TOO_DEEP", "depth": 14, "limit": 12}
    assert "MAX_QUERY_DEPTH" in deep["message"]
    lists = "subTask { behaviorTasks { " * 5 + "id" + " } }" * 5  # within the depth, refused for its cost
    assert (await gql.error(f'{{ behaviorTask(id: "b") {{ {lists} }} }}'))["extensions"]["code"] == (
        "QUERY_TOO_COSTLY"
    )
    aliases = " ".join(f'a{i}: agentTask(id: "x") {{ id }}' for i in range(51))
    assert (await gql.error(f"{{ {aliases} }}"))["extensions"] == {
        "code": "TOO_MANY_ALIASES",
        "aliases": 51,
        "limit": 50,
    }
    tokens = " ".join(f"a{i}: __typename" for i in range(7000))
    assert "token" in (await gql.error(f"{{ {tokens} }}"))["message"].lower()
    assert command_log.reads() == []  # none of them reached MongoDB
