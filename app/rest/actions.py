"""What each REST operation does for each kind of entity: one call into the store or a service.

Tasks go to `Hierarchy.create/update/delete/finalize`, outputs to `put_output/delete_output`, agent tasks
to `create_standalone/update_state/delete_standalone`; reads go to `Store.find_by_ids`. Every rule lives in
those services; this module only maps validated bodies onto their arguments.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from app.lifecycle import pause
from app.lifecycle import state_machine as sm
from app.lifecycle.bulk import bulk_action
from app.lifecycle.cancel import cancel_subtree
from app.lifecycle.errors import Invalid, NotFound
from app.lifecycle.hierarchy import LEVELS, Level, NewTask
from app.rest.entities import Entity, Kind, children_field

if TYPE_CHECKING:
    from app.resources import AppState

Doc = dict[str, Any]


async def fetch(state: AppState, entity: Entity, entity_id: str) -> Doc:
    found = await state.store.find_by_ids(entity.spec, [entity_id])
    if entity_id not in found:
        raise NotFound(f"no {entity.label} with id '{entity_id}'", id=entity_id)
    return found[entity_id]


def new_task(level: Level, body: Doc, path: str = "body", parent_id: str | None = None) -> NewTask:
    """The service's `NewTask` from a validated create body, nested children included."""
    data = dict(body)
    task_id = data.pop(level.spec.id_field, None)
    state = data.pop("state", None) or {}
    output = data.pop("output", None)
    nested = children_field(level)
    children = (data.pop(nested, None) or []) if nested else []
    if parent_id is not None and level.parent_field:
        given = data.pop(level.parent_field, None)
        if given is not None and given != parent_id:
            raise Invalid(f"{path}.{level.parent_field}", "a nested task belongs to the task it is nested in")
    return NewTask(
        kind=level.kind,
        fields=data,
        state=state,
        output=output,
        children=[
            new_task(LEVELS[level.child_kind], child, f"{path}.{nested}[{n}]", task_id or "")  # type: ignore[index]
            for n, child in enumerate(children)
        ],
        id=task_id,
        path=path,
    )


async def create(state: AppState, entity: Entity, body: Doc, *, idempotency_key: str | None) -> Doc:
    """Create the entity; returns the stored document."""
    if entity.kind is Kind.TASK:
        written = await state.hierarchy.create(new_task(entity.level, body), idempotency_key=idempotency_key)  # type: ignore[arg-type]
        return written.doc  # type: ignore[return-value]
    if entity.kind is Kind.OUTPUT:
        fields = dict(body)
        task_id = fields.pop(entity.spec.id_field)
        return await state.hierarchy.put_output(entity.spec, task_id, fields, create=True)
    fields = dict(body)
    task_id = fields.pop(entity.spec.id_field, None)
    written = await state.hierarchy.create_standalone(task_id, fields, idempotency_key=idempotency_key)
    return written.doc  # type: ignore[return-value]


async def update(
    state: AppState,
    entity: Entity,
    entity_id: str,
    body: Doc,
    *,
    expected_version: int | None,
    idempotency_key: str | None,
) -> Doc:
    """Change the given fields; returns the stored document."""
    if entity.kind is Kind.TASK:
        written = await state.hierarchy.update(
            entity.level.kind,  # type: ignore[union-attr]
            entity_id,
            body,
            idempotency_key=idempotency_key,
        )
        return written.doc  # type: ignore[return-value]
    if entity.kind is Kind.OUTPUT:
        return await state.hierarchy.put_output(entity.spec, entity_id, body, create=False)
    written = await state.hierarchy.update_state(
        entity_id, body, expected_version=expected_version, idempotency_key=idempotency_key
    )
    return written.doc  # type: ignore[return-value]


async def delete(state: AppState, entity: Entity, entity_id: str, *, cascade: bool) -> list[str]:
    """Delete the entity (and its subtree with `cascade`); returns the deleted ids."""
    if entity.kind is Kind.TASK:
        written = await state.hierarchy.delete(entity.level.kind, entity_id, cascade=cascade)  # type: ignore[union-attr]
        return written.deleted_ids
    if entity.kind is Kind.OUTPUT:
        await state.hierarchy.delete_output(entity.spec, entity_id)
        return [entity_id]
    return (await state.hierarchy.delete_standalone(entity_id)).deleted_ids


async def cancel(
    state: AppState, task_id: str, *, subtree: bool, reason: str | None, idempotency_key: str | None
) -> Doc:
    """Cancel an agent task (`cancelTask`), with its subtree when `subtree`; its state afterwards."""
    if subtree:
        applied, _ = await cancel_subtree(state.lifecycle, task_id, reason)
        return applied.state
    action = functools.partial(sm.cancel, reason=reason)
    applied = await state.lifecycle.transition("cancel", task_id, action, idempotency_key=idempotency_key)
    return applied.state


async def finalize(state: AppState, entity: Entity, entity_id: str, *, idempotency_key: str | None) -> Doc:
    written = await state.hierarchy.finalize(entity.level.kind, entity_id, idempotency_key=idempotency_key)  # type: ignore[union-attr]
    return written.doc  # type: ignore[return-value]


async def pause_or_resume(
    state: AppState, action: str, task_id: str, *, subtree: bool, reason: str | None
) -> Doc:
    """Pause or resume an agent task (`pauseTask` / `resumeTask`), with its subtree when `subtree`; its state
    afterwards."""
    applied, _ = await pause.pause_or_resume(state.lifecycle, action, task_id, subtree=subtree, reason=reason)
    return applied.state


async def bulk(state: AppState, action: str, query: Doc, *, limit: int | None, reason: str | None) -> Doc:
    """A bulk action (`retryTasks`…) over a compiled filter; the counts and the ids changed."""
    settings = state.settings
    result = await bulk_action(
        state.lifecycle,
        action,
        query,
        reason=reason,
        limit=limit,
        max_tasks=settings.bulk_action_max_tasks,
        batch_size=settings.bulk_action_batch_size,
        time_limit_ms=settings.filter_max_time_ms,
    )
    return {
        "matched": result.matched,
        "changed": len(result.changed),
        "changed_ids": [str(i) for i in result.changed],
        "skipped": [{"reason": r, "count": n} for r, n in sorted(result.skipped.items())],
        "has_more": result.more,
        "limit": result.limit,
    }
