"""The documentation holds: the README fits on a screen and its links resolve; the configuration page is
the one `Settings` generates; and the examples of the README and of every page in docs/ run as written
against the demo (`make run`): their GraphQL blocks and inline mutations, the named operations in
`queries/` with the variables their comments give, and the REST curl sequence (docs/REST.md) with curl
against a real server process. `mkdocs build --strict` (in `make test`) checks the site's own links."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from typing import Any

import pytest
from graphql import OperationType, parse, validate
from graphql.language import OperationDefinitionNode
from pymongo import MongoClient

from app import settings_doc
from app.api.schema import build_schema
from app.demo.workflow import DEMO_WORKFLOW_ID
from app.settings import Settings
from app.settings_doc import group_of, render
from tests.conftest import ROOT
from tests.support.app import demo_server
from tests.support.servers import serve

README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = sorted((ROOT / "docs").glob("*.md"))
#: The README and every documentation page, one text: the examples may sit on any of them.
DOCS = "\n".join([README, *(page.read_text(encoding="utf-8") for page in PAGES)])
GRAPHQL_BLOCKS = re.findall(r"```graphql\n(.*?)```", DOCS, re.S)
INLINE_MUTATIONS = re.findall(r"`(mutation \{.*?\})`", DOCS)
QUERY_FILES = sorted((ROOT / "queries").glob("*.graphql"))


def variables_of(document: str) -> dict[str, Any] | None:
    """The JSON after `Variables:` in the document's comments (it may go on over several comment
    lines), or None when there is none."""
    lines = document.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("#") and "Variables:" in line), None)
    if start is None:
        return None
    text = lines[start].split("Variables:", 1)[1]
    for line in lines[start + 1 :]:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            if not line.startswith("#"):
                raise
            text += "\n" + line[1:]
    return json.loads(text)


def kind_of(document: str) -> OperationType:
    operations = [d for d in parse(document).definitions if isinstance(d, OperationDefinitionNode)]
    assert len(operations) == 1
    return operations[0].operation


def test_the_readme_fits_on_a_screen_and_its_links_resolve() -> None:
    lines = README.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), f"README links to {target}, which is not in the repository"


def test_the_configuration_page_is_generated_from_the_settings() -> None:
    page = (ROOT / "docs" / "CONFIGURATION.md").read_text(encoding="utf-8")
    assert page == render(), (
        "docs/CONFIGURATION.md is stale: agent-tasks settings-doc > docs/CONFIGURATION.md"
    )
    for name in Settings.model_fields:
        assert f"| `{name.upper()}` |" in page


def test_every_setting_is_filed_in_one_group() -> None:
    assert all(group_of(name) is not None for name in Settings.model_fields)
    with pytest.raises(ValueError, match="settings in no group"):
        original = settings_doc.GROUPS
        try:
            settings_doc.GROUPS = original[1:]
            render()
        finally:
            settings_doc.GROUPS = original


def test_the_readme_has_the_examples_this_module_runs() -> None:
    assert len(GRAPHQL_BLOCKS) >= 3 and INLINE_MUTATIONS
    assert not any("{$in" in block.replace(" ", "") for block in GRAPHQL_BLOCKS)  # not valid GraphQL


@pytest.mark.parametrize("document", GRAPHQL_BLOCKS + INLINE_MUTATIONS)
def test_every_readme_graphql_example_validates(document: str) -> None:
    assert validate(build_schema()._schema, parse(document)) == []


async def test_readme_and_named_operations_run_against_the_demo(settings: Settings, db: Any) -> None:
    runnable = [b for b in GRAPHQL_BLOCKS if kind_of(b) is not OperationType.SUBSCRIPTION]
    named = [p.read_text(encoding="utf-8") for p in QUERY_FILES]
    with_variables = [d for d in named if variables_of(d) is not None]
    assert len(with_variables) >= 6  # every single-operation file says what to send
    async with demo_server(settings) as gql:
        for document in runnable + with_variables:
            data = await gql.data(document, variables_of(document) or {})
            root = next(iter(data.values()))
            assert root, (document[:80], data)  # something came back: the examples use demo ids
            if kind_of(document) is OperationType.MUTATION:
                assert root["__typename"].endswith("Success"), root
            if "totalCount" in root:
                assert root["totalCount"] > 0, document[:80]
        for mutation in INLINE_MUTATIONS:
            data = await gql.data(mutation)
            assert all(r["__typename"] == "TaskTransitionSuccess" for r in data.values()), data
        # The README says the event of `reportProgress(percentage: 60)` carries progress 0.6.
        events = await gql.data(
            """query($w: ID!) { taskEvents(workflowId: $w, types: [TASK_PROGRESS], first: 100) {
                 edges { node { taskId ... on TaskProgressEvent { progress } } } } }""",
            {"w": DEMO_WORKFLOW_ID},
        )
        last = events["taskEvents"]["edges"][-1]["node"]
        assert last == {"taskId": "beh_write_script", "progress": 0.6}


# docs/REST.md's curl sequence against `make run`, and what each command answers.
README_CURL_STATUSES = [200, 200, 201, 200, 200, 409, 200, 409, 200]


def readme_curl_commands() -> list[list[str]]:
    """The commands of the README's sh block that starts with the demo workflow, as arguments."""
    block = next(b for b in re.findall(r"```sh\n(.*?)```", DOCS, re.S) if "meta_podcast_ai_ethics" in b)
    words = shlex.split(block.replace("\\\n", " "), comments=True)
    commands: list[list[str]] = []
    for word in words:
        if word == "curl":
            commands.append([])
        commands[-1].append(word)
    return commands


def test_the_readme_curl_sequence_runs_against_the_demo(settings: Settings) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    commands = readme_curl_commands()
    assert len(commands) == len(README_CURL_STATUSES)
    env = {"MONGODB_URI": settings.mongodb_uri or "", "MONGODB_DB": settings.mongodb_db}
    try:
        with serve(env, "--demo") as server:
            for command, status in zip(commands, README_CURL_STATUSES, strict=True):
                args = [a.replace("http://localhost:8000", server.url) for a in command]
                args[1:1] = ["-s", "-w", "\n%{http_code}"]
                done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
                assert done.returncode == 0, (command, done.stderr)
                body, code = done.stdout.rsplit("\n", 1)
                assert int(code) == status, (command, body)
                answer = json.loads(body)
                assert ("error" in answer) == (status >= 400), (command, answer)
            with MongoClient(settings.mongodb_uri) as mongo:
                db = mongo[settings.mongodb_db]
                assert db.sub_tasks.find_one({"_id": "sub_show_notes"})["is_finalized"] is True
                assert (
                    "sub_show_notes"
                    in db.meta_workflow_tasks.find_one({"_id": DEMO_WORKFLOW_ID})["sub_task_ids"]
                )
                assert db.behavior_tasks.find_one({"_id": "beh_notes_links"}) is None
                assert db.agent_task_states.find_one({"_id": "beh_notes_draft"})["priority"] == "urgent"
            server.stop()
    finally:
        with MongoClient(settings.mongodb_uri) as mongo:
            mongo.drop_database(settings.mongodb_db)
