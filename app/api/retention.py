"""Retention over GraphQL (admin scope, app/auth/scopes.py): `purgeTasks`, which removes finished
workflows and standalone tasks matching a filter (a dry run unless told otherwise), and `storage`, each
collection's size as MongoDB reports it. Thin over `app.lifecycle.retention` and `app.store.retention`;
docs/RETENTION.md.
"""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from app.api.results import ForbiddenError, ValidationError
from app.domain import ErrorCode
from app.lifecycle.retention import PurgeReport, Retention
from app.store import retention as retention_store
from app.store.collections import AGENT_TASK_STATES
from app.store.failures import FilterTooSlow
from app.store.filters import FilterError, FilterLimits, compile_filter


@strawberry.type(description="How many documents of one collection a purge removed (or would remove).")
class PurgedCollection:
    name: str = strawberry.field(description="The collection.")
    documents: int = strawberry.field(description="Documents removed (a dry run: that would be removed).")


@strawberry.type(description="What `purgeTasks` did, or with `dryRun`, would do.")
class PurgeTasksSuccess:
    dry_run: bool = strawberry.field(description="True: nothing was removed, the counts say what would be.")
    matched: int = strawberry.field(
        description="Workflows and standalone tasks the filter matched (looked at)."
    )
    purged: int = strawberry.field(description="Of those, the finished ones removed (or that would be).")
    skipped: int = strawberry.field(
        description="Of those, the ones kept: not finished (a task in it is not completed, failed or"
        " cancelled), a standalone task that is still some task's parent, or one an unfinished task"
        " depends on."
    )
    more: bool = strawberry.field(
        description="Whether the filter matched more than PURGE_MAX_TASKS: call again for the rest."
    )
    collections: list[PurgedCollection] = strawberry.field(
        description="Documents removed (or that would be) per collection, events included."
    )


PurgeTasksResult = Annotated[
    # ForbiddenError like every write's result, so one client fragment fits all (an agent-bound key's
    # filter is narrowed to its agents, as for bulk actions).
    PurgeTasksSuccess | ValidationError | ForbiddenError,
    strawberry.union("PurgeTasksResult", description="Outcome of purgeTasks."),
]


@strawberry.type(description="One collection's size, from MongoDB's `$collStats`.")
class CollectionStorage:
    name: str = strawberry.field(description="The collection.")
    documents: int = strawberry.field(description="How many documents it holds.")
    size_bytes: float = strawberry.field(description="The documents' uncompressed size in bytes.")
    storage_bytes: float = strawberry.field(description="Bytes allocated on disk for the documents.")
    index_bytes: float = strawberry.field(description="Bytes of all its indexes.")


@strawberry.type(description="What the server's database holds.")
class Storage:
    collections: list[CollectionStorage] = strawberry.field(
        description="Every collection the server keeps, by name."
    )


def _retention(info: strawberry.Info) -> Retention:
    retention = info.context.app.retention
    assert retention is not None  # the lifespan always opens it
    return retention


def _success(report: PurgeReport) -> PurgeTasksSuccess:
    return PurgeTasksSuccess(
        dry_run=report.dry_run,
        matched=report.matched,
        purged=report.purged,
        skipped=report.skipped,
        more=report.more,
        collections=[PurgedCollection(name=n, documents=d) for n, d in report.counts.items()],
    )


@strawberry.type
class RetentionMutation:
    @strawberry.mutation(
        description="Remove the finished workflows (meta workflow tasks, with their sub-tasks, behavior"
        " tasks, outputs, states and events) and standalone tasks whose state matches `filter` (as"
        ' `agentTasks` takes it; e.g. {"updated_at": {"$lt": "2026-01-01T00:00:00Z"}}),'
        " at most PURGE_MAX_TASKS per call (admin). A dry run unless `dryRun: false`: count first."
        " Unfinished ones are skipped."
    )
    async def purge_tasks(
        self,
        info: strawberry.Info,
        filter: Annotated[
            JSON,
            strawberry.argument(
                description="A MongoDB-style query over the state's stored fields ({} matches all)."
            ),
        ],
        dry_run: Annotated[
            bool, strawberry.argument(description="True (default): count, remove nothing.")
        ] = True,
    ) -> PurgeTasksResult:
        settings = info.context.settings
        limits = FilterLimits(max_depth=settings.max_filter_depth, max_nodes=settings.max_filter_nodes)
        try:
            query = compile_filter(AGENT_TASK_STATES, filter, limits)
        except FilterError as exc:
            return ValidationError(message=str(exc), field="filter", code=ErrorCode.BAD_FILTER)
        try:
            report = await _retention(info).purge(
                query,
                dry_run=dry_run,
                limit=settings.purge_max_tasks,
                time_limit_ms=settings.filter_max_time_ms if query else None,
            )
        except FilterTooSlow as exc:
            return ValidationError(message=f"{exc}", field="filter", code=ErrorCode.FILTER_TOO_SLOW)
        except FilterError as exc:
            return ValidationError(message=str(exc), field="filter", code=ErrorCode.BAD_FILTER)
        return _success(report)


@strawberry.type
class RetentionQuery:
    @strawberry.field(description="Each collection's document count and sizes (admin).")
    async def storage(self, info: strawberry.Info) -> Storage:
        figures = await retention_store.storage(_retention(info).db)
        return Storage(
            collections=[
                CollectionStorage(
                    name=f.name,
                    documents=f.documents,
                    size_bytes=f.size_bytes,
                    storage_bytes=f.storage_bytes,
                    index_bytes=f.index_bytes,
                )
                for f in figures
            ]
        )
