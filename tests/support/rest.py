"""The REST API's shared checks: the seed's example data, an error answer's shape, and every answer
against the OpenAPI document the server serves."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from app.rest.openapi import openapi_document
from app.rest.routes import ROUTES
from app.settings import Settings

# The documents behind the examples, created through the REST API itself: `meta123`/`mw1`/`sub123`/`agent1`
# are the values the seed's filters use.
SETUP_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "POST",
        "/meta-tasks",
        {
            "task_id": "meta123",
            "meta_workflow_id": "mw1",
            "dsl_workflow_id": "dsl1",
            "output": {"task_data_ptr": {"episode": 1}},
            "state": {"agent_name": "Orchestrator"},
            "sub_tasks": [
                {
                    "sub_task_id": "sub123",
                    "output": {"is_finalized_step": True, "processor_subject_ids": ["agent1"]},
                    "behavior_tasks": [
                        {
                            "behavior_task_id": "beh_a",
                            "action_type": "research",
                            "output": {"processor_subject_ids": ["agent1", "agent2"]},
                        },
                        {
                            "behavior_task_id": "beh_b",
                            "action_type": "draft",
                            "output": {"processor_subject_ids": ["agent3"]},
                        },
                        {"behavior_task_id": "beh_del", "action_type": "review"},
                        {
                            "behavior_task_id": "beh_out",
                            "action_type": "review",
                            "output": {"processor_subject_ids": ["agent1"]},
                        },
                    ],
                },
                {"sub_task_id": "sub_del", "personality_type": "researcher"},
                {
                    "sub_task_id": "sub_out",
                    "output": {"is_finalized_step": True, "output_framedb_ptr": {"frame": "f1"}},
                },
            ],
        },
    ),
    ("POST", "/meta-tasks", {"task_id": "meta_del", "meta_workflow_id": "mw1"}),
    (
        "POST",
        "/meta-tasks",
        {"task_id": "meta_out", "meta_workflow_id": "mw2", "output": {"task_data_ptr": {}}},
    ),
]


async def setup_seed_data(client: httpx.AsyncClient) -> None:
    for method, path, body in SETUP_REQUESTS:
        response = await client.request(method, path, json=body)
        assert response.status_code == 201, response.text


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error


def declared_codes(answer: dict[str, Any]) -> list[str]:
    """The error codes an error answer of the OpenAPI document declares."""
    narrowed = answer["content"]["application/json"]["schema"]["allOf"][1]
    return narrowed["properties"]["error"]["properties"]["code"]["enum"]


#: Path parameters that take the rest of the path (`routes.TAIL_PARAMETERS`: a key may hold `/`).
_TAIL = ("key", "agent_name")
#: The paths the route table serves under: the entities' and the steering resources'.
REST_PREFIXES = tuple(sorted({f"/{route.entity.path}" for route in ROUTES}))


def template_regex(template: str) -> re.Pattern[str]:
    def parameter(match: re.Match[str]) -> str:
        return ".+" if match[1] in _TAIL else "[^/]+"

    return re.compile(re.sub(r"\\\{(\w+)\\\}", parameter, re.escape(template)))


def check_declared(document: dict[str, Any], method: str, path: str, status: int, body: bytes) -> None:
    """The answer's status (and error code) is one the OpenAPI document declares for its operation; a
    405 only for a method the document has no operation for. The operation is found as the router finds
    it: the first path (in route table order) that matches and has the method."""
    if method == "HEAD" or not path.startswith((*REST_PREFIXES, "/openapi.json")):
        return
    matching = [
        item for template, item in document["paths"].items() if template_regex(template).fullmatch(path)
    ]
    operation = next((item[method.lower()] for item in matching if method.lower() in item), None)
    if operation is None:
        assert status == (405 if matching else 404), (method, path, status)
        return
    answer = operation["responses"].get(str(status))
    assert answer is not None, (
        f"{method} {path} answered {status}, not declared: {sorted(operation['responses'])}"
    )
    if status >= 400:
        code = json.loads(body)["error"]["code"]
        assert code in declared_codes(answer), f"{method} {path} answered {status} {code}: not declared"


def checking_answers(client: httpx.AsyncClient, settings: Settings) -> httpx.AsyncClient:
    """`client` (the app's, conftest), checking every answer it gets against the OpenAPI document the
    server serves (`check_declared`): a refusal it does not declare fails the test. (The override of the
    `client` fixture calling this is a plain function: an async fixture overriding the async `client`
    left the app's lifespan hanging at teardown.)"""
    document = openapi_document(settings)

    async def declared(response: httpx.Response) -> None:
        body = await response.aread()
        request = response.request
        check_declared(document, request.method, request.url.path, response.status_code, body)

    client.event_hooks["response"].append(declared)
    return client
