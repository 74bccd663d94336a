"""The GraphQL roots as code: every name in the SDL is written in the code, the sort inputs agree with the
store, and service field paths (domain, snake_case) are answered in GraphQL's naming."""

from __future__ import annotations

import re
import typing
from enum import Enum
from typing import Any

import pytest
from graphql import build_schema

from app.api.lists import ORDERS
from app.api.results import ValidationError, error_from, graphql_path
from app.lifecycle import state_machine as sm
from app.lifecycle.errors import Invalid
from tests.conftest import ROOT, GraphQLClient, read_query
from tests.support.lifecycle_helpers import snapshot

#: Scalars GraphQL or Strawberry define, not this code.
BUILT_IN = {"String", "Int", "Float", "Boolean", "ID", "DateTime"}

CREATE = read_query("CreateWorkflow.graphql")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def test_every_name_in_the_sdl_is_written_in_the_code() -> None:
    """A newcomer can grep for any type, field, argument or enum value of the schema (`createSubTask` is
    `create_sub_task`): nothing is generated under a name that appears nowhere."""
    schema = build_schema((ROOT / "schema/schema.graphql").read_text())
    source = "\n".join(path.read_text() for path in (ROOT / "app").rglob("*.py"))
    names: set[str] = set()
    for name, kind in schema.type_map.items():
        if name.startswith("__") or name in BUILT_IN:
            continue
        names.add(name)
        for field_name, field in (getattr(kind, "fields", None) or {}).items():
            names.add(_snake(field_name))
            names.update(_snake(arg) for arg in getattr(field, "args", None) or {})
        names.update(getattr(kind, "values", None) or {})
    missing = sorted(name for name in names if not re.search(rf"\b{re.escape(name)}\b", source))
    assert missing == []


@pytest.mark.parametrize(("node", "order"), list(ORDERS.items()), ids=lambda v: v.__name__)
def test_sort_fields_are_the_stores(node: Any, order: Any) -> None:
    """A `<Type>SortField` lists the store's sortable fields of that collection, the first the default."""
    field_enum: type[Enum] = typing.get_type_hints(order)["field"]
    assert tuple(member.value for member in field_enum) == node.spec.sort_fields
    assert order().field.value == node.spec.sort_fields[0]


@pytest.mark.parametrize(
    ("service", "graphql"),
    [
        ("input.task_id", "input.taskId"),
        ("input.sub_tasks[0].task_id", "input.subTasks[0].taskId"),
        ("input.sub_tasks[0].state.dependencies", "input.subTasks[0].state.dependencies"),
        (
            "input.sub_tasks[1].behavior_tasks[0].state.dependencies[2].status_expected",
            "input.subTasks[1].behaviorTasks[0].state.dependencies[2].statusExpected",
        ),
        ("tool_name", "toolName"),
        ("tool_args", "toolArgs"),
        ("idempotency_key", "idempotencyKey"),
        ("input", "input"),
        # The keys inside a JSON value are the client's own; the JSON field is named as GraphQL names it.
        ("input.meta_workflow_graph.my_key", "input.metaWorkflowGraph.my_key"),
        (
            "input.sub_tasks[0].output.sub_task_data_ptr.a_b[3]",
            "input.subTasks[0].output.subTaskDataPtr.a_b[3]",
        ),
    ],
)
def test_service_paths_in_graphql_naming(service: str, graphql: str) -> None:
    assert graphql_path(service) == graphql
    # Idempotent: a path already in GraphQL's naming (as the services wrote them until now) is unchanged.
    assert graphql_path(graphql) == graphql


def test_validation_errors_name_graphql_fields() -> None:
    error = error_from(Invalid("input.sub_tasks[0].parent_task_id", "bad"))
    assert isinstance(error, ValidationError) and error.field == "input.subTasks[0].parentTaskId"


def test_state_machine_arguments_are_reported_in_graphql_terms() -> None:
    """The state machine names its action's parameters in the domain's terms; GraphQL answers its own."""
    try:
        raise Invalid("execution_time_seconds", "negative") from sm.InvalidInput(
            "execution_time_seconds", "x"
        )
    except Invalid as exc:
        error = error_from(exc)
    assert isinstance(error, ValidationError) and error.field == "executionTimeSeconds"


async def test_a_nested_task_naming_another_parent_is_refused_in_graphql_terms(
    gql: GraphQLClient, db: Any
) -> None:
    before = await snapshot(db)
    workflow = {"id": "wf1", "subTasks": [{"id": "s1", "taskId": "elsewhere"}]}
    result = (await gql.data(CREATE, {"input": workflow, "key": None}))["createWorkflow"]
    assert result == {
        "__typename": "ValidationError",
        "message": "a nested task belongs to the task it is nested in",
        "field": "input.subTasks[0].taskId",
    }
    assert await snapshot(db) == before
